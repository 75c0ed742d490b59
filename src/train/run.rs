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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::{self, CheckpointMeta};
use super::log::MetricsLog;
use super::schedule::LrSchedule;
use super::{
    EXTRA, Resume, RunFiles, TrainSettings, apply, build_model, check_settings, gradients, grads,
    load_model_bytes, loss, optimizer,
};
use crate::comm::{Communicator, SourceSchedule, broadcast_json};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::score::{auroc_table, mean_auroc, predict_distributed};
use crate::io::hex;
use crate::model::{DenseNet, DenseNetConfig, state_values, trainable_values};
use crate::shard::ShardSet;
use crate::shard::{Batch, BatchPos, load_batch};

/// Exit code of a run stopped by SIGTERM/SIGUSR2 after writing its checkpoint: "try again later" (EX_TEMPFAIL);
/// the Slurm scripts requeue the job on it.
pub const EXIT_PREEMPTED: i32 = 75;

/// How a training run is executed (none of it changes the result).
#[derive(Clone, Debug)]
pub struct TrainOptions {
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
    pub source: String,
    pub ranks: usize,
    pub steps: u64,
    pub epochs_started: u64,
    /// Images seen by all ranks together in this process's lifetime (not counting a resumed part).
    pub images_seen: u64,
    pub best: Option<(f64, u64)>,
    pub stopped_early: bool,
    /// Stopped by a signal after checkpointing; rerun with `--resume auto`.
    pub preempted: bool,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Images/s over the time spent in training steps only (no start-up, validation or checkpoints).
    pub step_images_per_s: f64,
    /// Seconds spent in the per-step gradient all-reduce, and its share of the time in training steps.
    pub allreduce_seconds: f64,
    pub allreduce_share: f64,
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
        train_in_pool(shards, s, out, opts, comm.0)
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
fn sync_from_root(
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
fn check_in_step(model: &DenseNet, comm: &dyn Communicator, step: u64) -> Result<()> {
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

/// What rank 0 decided after a validation, for all ranks.
#[derive(Serialize, Deserialize)]
struct Decision {
    best: Option<(f64, u64)>,
    since_best: u32,
    stop: bool,
    error: Option<crate::comm::SharedError>,
}

fn train_in_pool(
    shards: &ShardSet,
    s: &TrainSettings,
    out: &Path,
    opts: &TrainOptions,
    comm: &dyn Communicator,
) -> Result<TrainSummary> {
    let (rank, world) = (comm.rank(), comm.size());
    let root = rank == 0;
    let obs = s.observations()?;
    for name in [&s.source, &s.reference] {
        if !shards.index.sources.iter().any(|x| x == name) {
            return Err(Error::Input(format!(
                "label source '{name}' is not in the shards at {} (they hold: {})",
                shards.dir.display(),
                shards.index.sources.join(", ")
            )));
        }
    }
    let files = RunFiles {
        dir: out.to_path_buf(),
    };
    if root {
        std::fs::create_dir_all(files.checkpoints())
            .map_err(|e| Error::io(files.checkpoints(), e))?;
    }

    let device = crate::comm::compute_device(opts.device, comm.local_rank())?;
    let ad = device.clone().autodiff();
    let mut model = build_model(s, &ad)?;
    let mut optim = optimizer(&s.optimizer);

    // Rank 0 picks the checkpoint to resume from; a refusal is everyone's error.
    let pick: Result<Option<PathBuf>> = if root {
        match &opts.resume {
            Resume::Fresh => match checkpoint::list(&files.checkpoints()).last() {
                Some((_, p)) => Err(Error::Input(format!(
                    "{} already holds checkpoints ({}); resume with --resume auto, or train into a new directory",
                    out.display(),
                    p.display()
                ))),
                None => Ok(None),
            },
            Resume::Auto => Ok(checkpoint::latest_valid(&files.checkpoints()).map(|c| c.0)),
            Resume::From(p) => Ok(Some(p.clone())),
        }
    } else {
        Ok(None)
    };
    let pick = crate::comm::share_outcome(comm, pick, 0)?;
    let mut meta = CheckpointMeta {
        step: 0,
        epoch: 0,
        batch: 0,
        best: None,
        since_best: 0,
        config_hash: s.hash(),
        config: s.json(),
        model_len: 0,
        model_sha256: String::new(),
        optim_len: 0,
        optim_sha256: String::new(),
    };
    if let Some(path) = &pick {
        let (m, model_b, optim_b) = checkpoint::load(path)?;
        check_settings(path, &m, s)?;
        model = load_model_bytes(model, model_b, path, s)?;
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(optim_b))
            .map_err(|e| Error::format(path, format!("optimizer record: {e:?}")))?;
        optim = optim.load_record(record);
        meta = m;
        if root {
            tracing::info!(
                "resuming {} from {} (step {})",
                s.source,
                path.display(),
                meta.step
            );
        }
    }
    model = sync_from_root(model, comm, s, &ad)?;
    let mut log = if root {
        Some(MetricsLog::open(
            &files,
            &s.model.observations,
            pick.as_ref().map(|_| meta.step),
        )?)
    } else {
        None
    };

    let sched = &s.schedule;
    let (bs, accum) = (sched.batch_size, sched.grad_accum);
    let train_rows = shards
        .assignment(Split::Train, rank, world, 0, s.seed)
        .len();
    let steps_per_epoch = (train_rows / bs / accum) as u64;
    if steps_per_epoch == 0 {
        return Err(Error::Input(format!(
            "the train split has {train_rows} images per rank ({world} ranks): fewer than one optimizer step of \
             batch_size {bs} × grad_accum {accum}"
        )));
    }
    let total_steps = sched
        .max_steps
        .unwrap_or(sched.epochs as u64 * steps_per_epoch);
    let global_batch = bs * world * accum;
    let base_lr = match s.lr_scaling {
        crate::comm::LrScaling::None => s.optimizer.lr,
        crate::comm::LrScaling::Linear => s.optimizer.lr * (world * accum) as f64,
    };
    if root {
        tracing::info!(
            "{}: {world} rank(s) × batch {bs} × accumulation {accum} = global batch {global_batch}; \
             lr {base_lr:.3e} ({:?} scaling); {total_steps} steps, {steps_per_epoch} per epoch",
            s.source,
            s.lr_scaling
        );
    }
    let lr = LrSchedule::new(base_lr, sched, total_steps);
    let valid_rows = shards.rows(Split::Valid);
    let size = s.model.image_size as usize;
    let chans = s.model.in_channels;

    let pb = if root {
        crate::progress::bar(total_steps, &s.source)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_position(meta.step);
    let start = Instant::now();
    let (mut window_images, mut window_start) = (0u64, Instant::now());
    let mut images_seen = 0u64;
    let (mut stopped_early, mut preempted) = (false, false);
    let mut last_table = Vec::new();
    let (mut loss_sum, mut loss_n) = (0f64, 0f64);
    let mut last_norm = None;
    let inv = 1.0 / (world * accum) as f32;
    let (mut allreduce_s, mut step_s) = (0f64, 0f64);

    // Saves a checkpoint (rank 0), keeping the last K; `best` also copies it to best.ckpt.
    let save = |model: &DenseNet,
                optim: &ModuleOptimizer,
                meta: &CheckpointMeta,
                best: bool|
     -> Result<()> {
        let m = model_bytes(model)?;
        let o = optim
            .to_record()
            .into_bytes()
            .map_err(|e| Error::model("serialising the optimizer", e))?
            .to_vec();
        checkpoint::save(
            &files.checkpoints().join(checkpoint::step_name(meta.step)),
            meta.clone(),
            &m,
            &o,
        )?;
        if best {
            checkpoint::save(&files.best(), meta.clone(), &m, &o)?;
        }
        checkpoint::prune(&files.checkpoints(), sched.keep_last)
    };

    while meta.step < total_steps && !stopped_early && !preempted {
        let epoch = meta.epoch;
        let rows = shards.assignment(Split::Train, rank, world, epoch, s.seed);
        let first = meta.batch as usize;
        // Each optimizer step takes `accum` batches; a trailing partial step is dropped.
        let last = steps_per_epoch as usize * accum;
        model = std::thread::scope(|scope| -> Result<DenseNet> {
            let mut model = model;
            let (tx, rx) = mpsc::sync_channel::<Result<Batch>>(2);
            let rows = &rows;
            scope.spawn(move || {
                for b in first..last {
                    let pos = BatchPos {
                        seed: s.seed,
                        epoch,
                        batch: b,
                        rank,
                    };
                    let batch = load_batch(
                        shards,
                        &rows[b * bs..(b + 1) * bs],
                        &s.source,
                        size,
                        chans,
                        &s.schedule.augment,
                        pos,
                    );
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            });
            let mut acc: Option<(grads::GradLayout, Tensor<1>)> = None;
            for b in first..last {
                let batch = rx.recv().expect("loader thread ended early")?;
                let t_step = Instant::now();
                let (y, mask) = loss::targets(&batch.labels, &obs, s.uncertainty);
                let (layout, flat) = gradients(
                    &model,
                    batch.x,
                    [batch.n, chans, size, size],
                    &y,
                    &mask,
                    &ad,
                    s.model.precision,
                );
                acc = Some(match acc.take() {
                    Some((layout, sum)) => (layout, sum + flat),
                    None => (layout, flat),
                });
                images_seen += (batch.n * world) as u64;
                window_images += (batch.n * world) as u64;
                step_s += t_step.elapsed().as_secs_f64();
                if !(b + 1).is_multiple_of(accum) {
                    continue;
                }
                let t_update = Instant::now();
                let (layout, mut flat) = acc.take().expect("accumulated gradient");
                // One all-reduce carries the gradient, the loss (summed over the micro-batches already) and
                // the stop flag, without leaving the device (NCCL) or through the host (MPI).
                let stop_here = opts
                    .stop
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Relaxed));
                let n = layout.len();
                if stop_here {
                    flat = flat.slice_assign(
                        n + 1..n + 2,
                        Tensor::from_data(TensorData::new(vec![1f32], [1]), (&device, DType::F32)),
                    );
                }
                let t = Instant::now();
                // Numbered from 1, as the progress bar counts: the step this all-reduce completes.
                comm.set_step(meta.step + 1);
                let flat = comm.all_reduce_sum_tensor(flat)?;
                let extra: Vec<f32> = flat
                    .clone()
                    .slice(n..n + EXTRA)
                    .into_data()
                    .try_to_vec()
                    .map_err(|e| Error::model("reading the step's loss", e))?;
                allreduce_s += t.elapsed().as_secs_f64();
                let stop_any = extra[1] > 0.0;
                loss_sum += (extra[0] * inv) as f64;
                loss_n += 1.0;
                // Average over ranks and micro-batches, and clip, in one scaling.
                let norm = grads::norm_tensor(&flat, n) * f64::from(inv);
                let scale = match s.optimizer.grad_clip {
                    Some(max) if norm > max && norm > 0.0 => (max / norm) as f32 * inv,
                    _ => inv,
                };
                let flat = flat.mul_scalar(scale);
                last_norm = Some(norm);
                let rate = lr.at(meta.step);
                model = apply(model, &mut optim, &layout, &flat, rate);
                step_s += t_update.elapsed().as_secs_f64();
                meta.step += 1;
                meta.batch = (b + 1) as u64;
                if b + 1 == last {
                    meta.epoch += 1;
                    meta.batch = 0;
                }
                pb.set_position(meta.step);
                if let Some(log) = log.as_mut()
                    && sched.log_every > 0
                    && meta.step.is_multiple_of(sched.log_every)
                {
                    let ips = window_images as f64 / window_start.elapsed().as_secs_f64();
                    let mean_loss = loss_sum / loss_n;
                    log.row(
                        meta.step,
                        epoch,
                        "train",
                        Some(mean_loss),
                        rate,
                        Some(ips),
                        last_norm,
                        None,
                    )?;
                    pb.set_message(format!("{} loss {mean_loss:.4}", s.source));
                    (loss_sum, loss_n, window_images, window_start) = (0.0, 0.0, 0, Instant::now());
                }
                let validate = (sched.valid_every > 0
                    && meta.step.is_multiple_of(sched.valid_every))
                    || (sched.valid_every == 0 && b + 1 == last)
                    || meta.step == total_steps;
                if validate {
                    check_in_step(&model, comm, meta.step)?;
                    model = sync_from_root(model, comm, s, &ad)?;
                    let scored = predict_distributed(
                        &model.valid(),
                        shards,
                        &valid_rows,
                        &s.reference,
                        &s.model,
                        &device,
                        comm,
                    )?;
                    let mut failed = None;
                    let mut decision = Decision {
                        best: meta.best,
                        since_best: meta.since_best,
                        stop: false,
                        error: None,
                    };
                    if let Some(sc) = scored {
                        let table = auroc_table(&sc, &obs);
                        let mean = mean_auroc(&table);
                        let improved = match (mean, meta.best) {
                            (Some(m), Some((b, _))) => m > b,
                            (Some(_), None) => true,
                            (None, _) => false,
                        };
                        if improved {
                            decision.best = Some((mean.unwrap_or_default(), meta.step));
                            decision.since_best = 0;
                        } else {
                            decision.since_best += 1;
                        }
                        decision.stop = sched
                            .early_stop_patience
                            .is_some_and(|p| decision.since_best >= p);
                        tracing::info!(
                            "{} step {} valid mean AUROC {}",
                            s.source,
                            meta.step,
                            mean.map(|m| format!("{m:.4}")).unwrap_or("n/a".into())
                        );
                        let mut m2 = meta.clone();
                        (m2.best, m2.since_best) = (decision.best, decision.since_best);
                        let written = log
                            .as_mut()
                            .expect("rank 0 logs")
                            .row(
                                meta.step,
                                epoch,
                                "valid",
                                None,
                                rate,
                                None,
                                None,
                                Some(&table),
                            )
                            .and_then(|_| save(&model, &optim, &m2, improved));
                        decision.error = written.as_ref().err().map(crate::comm::SharedError::of);
                        failed = written.err();
                        last_table = table;
                    }
                    let d = broadcast_json(comm, &decision, 0)?;
                    if let Some(e) = d.error {
                        // Rank 0 keeps its own error (with its source); the others re-raise its kind.
                        return Err(failed.unwrap_or_else(|| e.raise(0)));
                    }
                    (meta.best, meta.since_best) = (d.best, d.since_best);
                    if d.stop {
                        if root {
                            tracing::info!(
                                "{}: early stop at step {} (no improvement in {} validations)",
                                s.source,
                                meta.step,
                                meta.since_best
                            );
                        }
                        stopped_early = true;
                        return Ok(model);
                    }
                } else if stop_any
                    || (sched.checkpoint_every > 0
                        && meta.step.is_multiple_of(sched.checkpoint_every))
                {
                    model = sync_from_root(model, comm, s, &ad)?;
                    if root {
                        save(&model, &optim, &meta, false)?;
                    }
                    comm.barrier()?;
                }
                if stop_any {
                    if root {
                        tracing::warn!(
                            "{}: stop requested; checkpoint at step {} written, exiting for requeue",
                            s.source,
                            meta.step
                        );
                    }
                    preempted = true;
                    return Ok(model);
                }
                if meta.step >= total_steps {
                    return Ok(model);
                }
            }
            Ok(model)
        })?;
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let hashes = comm.gather_bytes(state_sha256(&model).as_bytes(), 0)?;
    let summary = TrainSummary {
        source: s.source.clone(),
        ranks: world,
        steps: meta.step,
        epochs_started: meta.epoch + u64::from(meta.batch > 0),
        images_seen,
        best: meta.best,
        stopped_early,
        preempted,
        seconds,
        images_per_s: images_seen as f64 / seconds.max(1e-9),
        step_images_per_s: images_seen as f64 / step_s.max(1e-9),
        allreduce_seconds: allreduce_s,
        allreduce_share: allreduce_s / step_s.max(1e-9),
        last_valid_auroc: last_table,
        rank_state_sha256: hashes
            .unwrap_or_default()
            .into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect(),
    };
    if root {
        crate::io::write_atomic(
            files.summary(),
            serde_json::to_string_pretty(&summary)
                .expect("summary serialises")
                .as_bytes(),
        )?;
    }
    Ok(summary)
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
    pub source: String,
    /// This rank's rank within the ranks that trained the source (0 reports).
    pub group_rank: usize,
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
