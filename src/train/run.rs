//! The training loop, data-parallel over the ranks of a communicator.
//!
//! Every rank reads its own slice of each epoch's permutation, computes gradients on its batch, and the flat
//! gradient buffer (with the batch loss and a stop flag appended) is summed across ranks in one all-reduce,
//! divided by the number of ranks × accumulation steps, clipped, and applied by every rank to its identical copy of
//! the model. Rank 0 broadcasts the model at the start (and after a resume); at each validation the ranks check
//! that their parameters agree (one all-reduce of a checksum), take rank 0's BatchNorm statistics, score their
//! share of the valid split, and rank 0 — which alone writes logs and checkpoints — broadcasts its decisions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::trainer::Trainer;
use super::{Resume, TrainSettings, load_model_bytes};
use crate::comm::{Communicator, SourceSchedule};
use crate::error::{Error, Result};
use crate::io::hex;
use crate::model::{DenseNet, DenseNetConfig, state_values, trainable_values};
use crate::run_dir::ReplicateId;
use crate::shard::ShardSet;

/// Exit code of a run stopped by SIGTERM/SIGUSR2 after writing its checkpoint: "try again later" (EX_TEMPFAIL);
/// the Slurm scripts requeue the job on it.
pub const EXIT_PREEMPTED: i32 = 75;

/// How a training run is executed (none of it changes the result).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Fresh, the newest valid checkpoint, or a given one.
    pub resume: Resume,
    /// Tensor compute threads per rank. With one thread training is bit-for-bit reproducible; with more the
    /// backend's parallel reductions may split work differently from run to run.
    pub threads: usize,
    /// Threads that read, decode and augment the next batches while the compute threads train
    /// (`distributed.loader_threads`); their own pool, so a rank never spreads over the node's every core.
    pub loader_threads: usize,
    /// Set (by a signal handler) to checkpoint at the next step and stop.
    pub stop: Option<Arc<AtomicBool>>,
    /// Where the rank computes (`distributed.device`).
    pub device: crate::comm::ComputeDevice,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            resume: Resume::Fresh,
            threads: 1,
            loader_threads: 2,
            stop: None,
            device: crate::comm::ComputeDevice::Cpu,
        }
    }
}

/// What a run reports (rank 0 also writes it to `summary.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The label source trained on.
    pub source: String,
    /// Its replicate, from 1 (absent from the JSON for 1).
    #[serde(
        default = "crate::run_dir::first_replicate",
        skip_serializing_if = "crate::run_dir::is_first_replicate"
    )]
    pub replicate: u32,
    /// Ranks that trained it.
    pub ranks: usize,
    /// Optimizer steps taken in all.
    pub steps: u64,
    /// Epochs begun.
    pub epochs_started: u64,
    /// Images seen by all ranks together, over the whole run (every resumed part included).
    pub images_seen: u64,
    /// Best validation mean AUROC and its step.
    pub best: Option<(f64, u64)>,
    /// Stopped by early stopping.
    pub stopped_early: bool,
    /// Stopped by a signal after checkpointing; rerun with `--resume auto`.
    pub preempted: bool,
    /// Wall time of the training loops, over the whole run.
    pub seconds: f64,
    /// Training throughput, all ranks together.
    pub images_per_s: f64,
    /// Images/s over the time spent in training steps only (no start-up, validation or checkpoints).
    pub step_images_per_s: f64,
    /// Seconds spent in the per-step gradient all-reduce, and its share of the time in training steps.
    pub allreduce_seconds: f64,
    /// The all-reduce's share of the step time.
    pub allreduce_share: f64,
    /// AUROC per observation at the last validation.
    pub last_valid_auroc: Vec<(String, Option<f64>)>,
    /// SHA-256 of each rank's final parameters and statistics: all equal when the ranks stayed in step.
    pub rank_state_sha256: Vec<String>,
}

/// The communicator, handed to the compute pool's thread. SAFETY: `train` blocks in `ThreadPool::install` while
/// the closure runs, so exactly one thread uses the communicator at any time (MPI is initialised with
/// `MPI_THREAD_SERIALIZED` for this reason).
struct CommRef<'a>(&'a dyn Communicator);
unsafe impl Send for CommRef<'_> {}
unsafe impl Sync for CommRef<'_> {}

/// Trains one classifier, data-parallel over the ranks of `comm`; `out` (shared by the ranks) receives
/// checkpoints, metrics and `summary.json`.
pub fn train(
    shards: &ShardSet,
    s: &TrainSettings,
    out: &Path,
    opts: &TrainOptions,
    comm: &dyn Communicator,
) -> Result<TrainSummary> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("chexlab-train-{i}"))
        .build()
        .map_err(|e| {
            Error::Config(format!(
                "cannot start {} compute threads: {e}",
                opts.threads
            ))
        })?;
    let comm = CommRef(comm);
    pool.install(|| {
        let comm = &comm;
        let (mut trainer, mut model) = Trainer::start(shards, s, out, opts, comm.0)?;
        while !trainer.done() {
            model = trainer.epoch(model)?;
        }
        trainer.finish(model)
    })
}

pub(crate) fn model_bytes(model: &DenseNet) -> Result<Vec<u8>> {
    model.settle_running_stats();
    let b = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::model("serialising the model", e))?;
    Ok(b.to_vec())
}

/// Makes every rank's model rank 0's (parameters and BatchNorm statistics).
///
/// The other ranks load rank 0's record into a fresh model: loading into the trained one would leave BatchNorm's
/// per-thread running-statistics updates in place, to be merged back over the loaded values.
pub(crate) fn sync_from_root(
    model: DenseNet,
    comm: &dyn Communicator,
    s: &TrainSettings,
    device: &Device,
) -> Result<DenseNet> {
    model.settle_running_stats();
    if comm.size() == 1 {
        return Ok(model);
    }
    let mut bytes = if comm.rank() == 0 {
        model_bytes(&model)?
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(&mut bytes, 0)?;
    if comm.rank() == 0 {
        return Ok(model);
    }
    drop(model);
    // Parameters are drawn lazily, so this fresh model draws nothing before the record replaces them.
    let fresh = DenseNetConfig::from_model_config(&s.model)?.init(device);
    load_model_bytes(fresh, bytes, Path::new("<model broadcast from rank 0>"), s)
}

/// SHA-256 over a model's values.
pub fn state_sha256(model: &DenseNet) -> String {
    model.settle_running_stats();
    let mut h = Sha256::new();
    for v in state_values(model) {
        h.update(v.to_le_bytes());
    }
    hex(&h.finalize())
}

/// Checks that the ranks' trainable parameters agree: each rank's checksum against the mean over ranks. (The
/// BatchNorm statistics legitimately differ between validations: each rank's come from its own batches.)
pub(crate) fn check_in_step(model: &DenseNet, comm: &dyn Communicator, step: u64) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let sum: f64 = trainable_values(model).iter().map(|&v| v as f64).sum();
    let mut v = [sum as f32];
    comm.all_reduce_sum_f32(&mut v)?;
    let mean = v[0] / comm.size() as f32;
    let off = (sum as f32 - mean).abs() > 1e-5 * mean.abs().max(1.0);
    if crate::comm::any(comm, off)? {
        return Err(Error::distributed(
            Some(comm.rank()),
            "parameter check",
            format!(
                "ranks diverged at step {step}: rank {} parameter checksum {sum:.6e} vs mean {mean:.6e} over {} ranks",
                comm.rank(),
                comm.size()
            ),
        ));
    }
    Ok(())
}

/// How the ranks share `jobs` training runs: `Some(k)` when `k` equal groups of ranks train concurrently, group `g`
/// taking runs `g`, `g + k`, `g + 2k`, … in turn; `None` when all ranks train the runs one after another.
/// `auto` forms as many groups as divide both the ranks and the runs (their greatest common divisor), so every
/// group has as many ranks and as many runs as every other; `concurrent` insists on one group per run.
pub fn source_groups(
    schedule: crate::comm::SourceSchedule,
    jobs: usize,
    world: usize,
) -> Result<Option<usize>> {
    use crate::comm::SourceSchedule::*;
    let divides = jobs > 1 && world >= jobs && world.is_multiple_of(jobs);
    match schedule {
        Sequential => Ok(None),
        Auto => Ok(Some(gcd(jobs, world)).filter(|&k| k > 1)),
        Concurrent if divides || jobs == 1 => Ok(Some(jobs)),
        Concurrent => Err(Error::Config(format!(
            "distributed.schedule = concurrent needs the number of ranks ({world}) to be a multiple of the \
             number of training runs ({jobs}: label sources × study.replicates); use auto (groups that take \
             runs in turn) or sequential, or launch a multiple of {jobs} ranks"
        ))),
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One training run (a label source's replicate), as seen by a rank that took part in it.
pub struct SourceRun {
    /// The classifier trained.
    pub id: ReplicateId,
    /// This rank's rank within the ranks that trained it (0 reports).
    pub group_rank: usize,
    /// Its summary (complete on the run's rank 0).
    pub summary: TrainSummary,
}

/// One classifier to train: its settings and the directory it trains into.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// Everything that determines the run.
    pub settings: TrainSettings,
    /// Its output directory (`RUN_DIR/train/<run>`).
    pub out: PathBuf,
}

/// Trains `jobs`: on concurrent groups of ranks, each taking its share of the runs in turn, when the schedule says
/// so ([`source_groups`]), else one after another on all ranks. A run stopped for preemption ends its group's
/// turn (the stop flag reaches every rank). Returns the runs this rank took part in.
pub fn train_sources(
    jobs: &[TrainJob],
    schedule: SourceSchedule,
    shards: &ShardSet,
    opts: &TrainOptions,
    comm: &dyn Communicator,
) -> Result<Vec<SourceRun>> {
    let in_turn = |mine: Vec<&TrainJob>, c: &dyn Communicator| -> Result<Vec<SourceRun>> {
        let mut runs = Vec::new();
        for job in mine {
            let run = SourceRun {
                id: job.settings.id(),
                group_rank: c.rank(),
                summary: train(shards, &job.settings, &job.out, opts, c)?,
            };
            let stop = run.summary.preempted;
            runs.push(run);
            if stop {
                break;
            }
        }
        Ok(runs)
    };
    match source_groups(schedule, jobs.len(), comm.size())? {
        Some(k) => {
            let per = comm.size() / k;
            let g = comm.rank() / per;
            let sub = comm.split(g)?;
            let mine: Vec<&TrainJob> = jobs.iter().skip(g).step_by(k).collect();
            if sub.rank() == 0 {
                tracing::info!(
                    "ranks {}..{} train {}",
                    g * per,
                    (g + 1) * per - 1,
                    mine.iter()
                        .map(|j| format!("'{}'", j.settings.id().dir_name()))
                        .collect::<Vec<_>>()
                        .join(", then ")
                );
            }
            let runs = in_turn(mine, sub.as_ref())?;
            comm.barrier()?;
            Ok(runs)
        }
        None => in_turn(jobs.iter().collect(), comm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::SourceSchedule::*;

    #[test]
    fn sources_share_ranks_as_scheduled() {
        assert_eq!(source_groups(Auto, 4, 8).unwrap(), Some(4));
        // Two groups of three ranks, two runs each; two groups of one rank, two runs each.
        assert_eq!(source_groups(Auto, 4, 6).unwrap(), Some(2));
        assert_eq!(source_groups(Auto, 4, 2).unwrap(), Some(2));
        assert_eq!(source_groups(Auto, 3, 8).unwrap(), None);
        assert_eq!(source_groups(Auto, 6, 4).unwrap(), Some(2));
        assert_eq!(source_groups(Auto, 1, 8).unwrap(), None);
        assert_eq!(source_groups(Sequential, 2, 2).unwrap(), None);
        assert_eq!(source_groups(Concurrent, 2, 4).unwrap(), Some(2));
        let err = source_groups(Concurrent, 3, 4).unwrap_err().to_string();
        assert!(
            err.contains("multiple of the number of training runs (3"),
            "{err}"
        );
    }
}
