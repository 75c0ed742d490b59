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

/// How the ranks share the label sources: `Some(groups)` when each of `groups` equal groups of ranks trains one
/// source concurrently, `None` when all ranks train the sources one after another.
pub fn source_groups(
    schedule: crate::comm::SourceSchedule,
    sources: usize,
    world: usize,
) -> Result<Option<usize>> {
    use crate::comm::SourceSchedule::*;
    let divides = sources > 1 && world >= sources && world.is_multiple_of(sources);
    match schedule {
        Sequential => Ok(None),
        Auto => Ok(divides.then_some(sources)),
        Concurrent if divides || sources == 1 => Ok(Some(sources)),
        Concurrent => Err(Error::Config(format!(
            "distributed.schedule = concurrent needs the number of ranks ({world}) to be a multiple of the \
             number of label sources ({sources}); use sequential, or launch a multiple of {sources} ranks"
        ))),
    }
}

/// One label source's training run, as seen by the rank that took part in it.
pub struct SourceRun {
    /// The label source.
    pub source: String,
    /// This rank's rank within the ranks that trained the source (0 reports).
    pub group_rank: usize,
    /// Its summary (complete on the source's rank 0).
    pub summary: TrainSummary,
}

/// One classifier to train: its settings and the directory it trains into.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// Everything that determines the run.
    pub settings: TrainSettings,
    /// Its output directory (`RUN_DIR/train/<source>`).
    pub out: PathBuf,
}

/// Trains `jobs`: concurrently on groups of ranks when the schedule says so, else one after another on all
/// ranks. Returns the runs this rank took part in.
pub fn train_sources(
    jobs: &[TrainJob],
    schedule: SourceSchedule,
    shards: &ShardSet,
    opts: &TrainOptions,
    comm: &dyn Communicator,
) -> Result<Vec<SourceRun>> {
    let run_one = |job: &TrainJob, c: &dyn Communicator| -> Result<SourceRun> {
        Ok(SourceRun {
            source: job.settings.source.clone(),
            group_rank: c.rank(),
            summary: train(shards, &job.settings, &job.out, opts, c)?,
        })
    };
    let sources: Vec<&str> = jobs.iter().map(|j| j.settings.source.as_str()).collect();
    match source_groups(schedule, jobs.len(), comm.size())? {
        Some(k) => {
            let per = comm.size() / k;
            let g = comm.rank() / per;
            let sub = comm.split(g)?;
            if sub.rank() == 0 {
                tracing::info!(
                    "ranks {}..{} train '{}'",
                    g * per,
                    (g + 1) * per - 1,
                    sources[g]
                );
            }
            let run = run_one(&jobs[g], sub.as_ref())?;
            comm.barrier()?;
            Ok(vec![run])
        }
        None => {
            let mut runs = Vec::new();
            for job in jobs {
                let run = run_one(job, comm)?;
                let stop = run.summary.preempted;
                runs.push(run);
                if stop {
                    break;
                }
            }
            Ok(runs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::SourceSchedule::*;

    #[test]
    fn sources_share_ranks_as_scheduled() {
        assert_eq!(source_groups(Auto, 4, 8).unwrap(), Some(4));
        assert_eq!(source_groups(Auto, 4, 6).unwrap(), None);
        assert_eq!(source_groups(Auto, 4, 2).unwrap(), None);
        assert_eq!(source_groups(Auto, 1, 8).unwrap(), None);
        assert_eq!(source_groups(Sequential, 2, 2).unwrap(), None);
        assert_eq!(source_groups(Concurrent, 2, 4).unwrap(), Some(2));
        let err = source_groups(Concurrent, 3, 4).unwrap_err().to_string();
        assert!(
            err.contains("multiple of the number of label sources (3)"),
            "{err}"
        );
    }
}
