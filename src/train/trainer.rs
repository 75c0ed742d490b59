//! One classifier's training on the ranks of a communicator, as a [`Trainer`] with a method per phase: start
//! (checks, model, optimizer, resume, schedule), an epoch of steps with a background loader, an optimizer update
//! (one all-reduce carrying gradient, loss and stop flag), validation with rank 0's decisions, checkpoints, and
//! the summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, CheckpointMeta};
use super::log::{MetricsLog, MetricsRow};
use super::run::{
    TrainOptions, TrainSummary, check_in_step, model_bytes, state_sha256, sync_from_root,
};
use super::schedule::LrSchedule;
use super::{
    EXTRA, Resume, RunFiles, TrainSettings, apply, build_model, check_settings, gradients, grads,
    load_model_bytes, loss, optimizer,
};
use crate::comm::{Communicator, SharedError, broadcast_json};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::score::{auroc_table, mean_auroc, predict_distributed};
use crate::model::DenseNet;
use crate::observations::Observation;
use crate::shard::{Batch, BatchPos, RowRef, ShardSet, load_batch};

/// What rank 0 decided after a validation, for all ranks.
#[derive(Serialize, Deserialize)]
struct Decision {
    best: Option<(f64, u64)>,
    since_best: u32,
    stop: bool,
    error: Option<SharedError>,
}

/// The run's shape, fixed at the start: batches, steps and the learning-rate schedule.
struct Plan {
    batch_size: usize,
    accum: usize,
    steps_per_epoch: u64,
    total_steps: u64,
    lr: LrSchedule,
    valid_rows: Vec<RowRef>,
    size: usize,
    channels: usize,
    /// `1 / (ranks × accumulation)`: what turns the summed gradient into the mean.
    inv: f32,
}

/// Counters for the metrics rows and the summary.
struct Tally {
    start: Instant,
    images_seen: u64,
    window_images: u64,
    window_start: Instant,
    loss_sum: f64,
    loss_n: f64,
    last_norm: Option<f64>,
    allreduce_s: f64,
    step_s: f64,
    last_table: Vec<(String, Option<f64>)>,
}

/// A training run in progress on this rank.
pub(crate) struct Trainer<'a> {
    shards: &'a ShardSet,
    s: &'a TrainSettings,
    opts: &'a TrainOptions,
    comm: &'a dyn Communicator,
    files: RunFiles,
    obs: Vec<Observation>,
    device: Device,
    ad: Device,
    optim: ModuleOptimizer,
    meta: CheckpointMeta,
    /// The work of the processes before this one (from the checkpoint resumed).
    base: checkpoint::Totals,
    log: Option<MetricsLog>,
    plan: Plan,
    tally: Tally,
    progress: indicatif::ProgressBar,
    /// The loader's own threads (see [`TrainOptions::loader_threads`]).
    loader: Arc<rayon::ThreadPool>,
    stopped_early: bool,
    preempted: bool,
}

impl<'a> Trainer<'a> {
    /// Checks the sources, builds the model and optimizer, resumes from the checkpoint rank 0 picks (the same on
    /// every rank afterwards), and plans the run.
    pub(crate) fn start(
        shards: &'a ShardSet,
        s: &'a TrainSettings,
        out: &Path,
        opts: &'a TrainOptions,
        comm: &'a dyn Communicator,
    ) -> Result<(Self, DenseNet)> {
        let root = comm.rank() == 0;
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
        let loader = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.loader_threads.max(1))
            .thread_name(|i| format!("chexlab-loader-{i}"))
            .build()
            .map_err(|e| {
                Error::Config(format!(
                    "cannot start {} loader threads: {e}",
                    opts.loader_threads
                ))
            })?;
        let device = crate::comm::compute_device(opts.device, comm.local_rank())?;
        let ad = device.clone().autodiff();
        let model = build_model(s, &ad)?;
        let plan = plan(shards, s, comm)?;
        let layout = checkpoint::Layout {
            ranks: comm.size() as u64,
            batch_size: plan.batch_size as u64,
            accum: plan.accum as u64,
            steps_per_epoch: plan.steps_per_epoch,
            total_steps: plan.total_steps,
        };
        let progress = if root {
            crate::progress::bar(plan.total_steps, &s.id().dir_name())
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut t = Trainer {
            shards,
            s,
            opts,
            comm,
            obs: s.observations()?,
            device,
            ad,
            optim: optimizer(&s.optimizer),
            meta: CheckpointMeta {
                step: 0,
                epoch: 0,
                batch: 0,
                best: None,
                since_best: 0,
                config_hash: s.hash(),
                config: s.json(),
                layout: Some(layout),
                totals: Default::default(),
                model_len: 0,
                model_sha256: String::new(),
                optim_len: 0,
                optim_sha256: String::new(),
            },
            base: Default::default(),
            log: None,
            plan,
            tally: Tally {
                start: Instant::now(),
                images_seen: 0,
                window_images: 0,
                window_start: Instant::now(),
                loss_sum: 0.0,
                loss_n: 0.0,
                last_norm: None,
                allreduce_s: 0.0,
                step_s: 0.0,
                last_table: Vec::new(),
            },
            progress,
            loader: Arc::new(loader),
            stopped_early: false,
            preempted: false,
            files,
        };
        let (model, resumed) = t.resume(model)?;
        if root {
            t.log = Some(MetricsLog::open(
                &t.files,
                &s.model.observations,
                resumed.then_some(t.meta.step),
            )?);
        }
        t.progress.set_position(t.meta.step);
        t.tally.start = Instant::now();
        t.tally.window_start = Instant::now();
        Ok((t, model))
    }

    /// Loads the checkpoint rank 0 picks (a refusal is everyone's error), then gives every rank rank 0's model.
    /// Returns whether it resumed.
    fn resume(&mut self, mut model: DenseNet) -> Result<(DenseNet, bool)> {
        let (s, comm) = (self.s, self.comm);
        let pick: Result<Option<PathBuf>> = if comm.rank() == 0 {
            let dir = self.files.checkpoints();
            match &self.opts.resume {
                Resume::Fresh => match checkpoint::list(&dir).last() {
                    Some((_, p)) => Err(Error::Input(format!(
                        "{} already holds checkpoints ({}); resume with --resume auto, or train into a new \
                         directory",
                        self.files.dir.display(),
                        p.display()
                    ))),
                    None => Ok(None),
                },
                Resume::Auto => checkpoint::latest_valid(&dir).map(|c| c.map(|c| c.0)),
                Resume::From(p) => Ok(Some(p.clone())),
            }
        } else {
            Ok(None)
        };
        let pick = crate::comm::share_outcome(comm, pick, 0)?;
        if let Some(path) = &pick {
            let (m, model_b, optim_b) = checkpoint::load(path)?;
            check_settings(path, &m, s)?;
            let now = self
                .meta
                .layout
                .clone()
                .expect("a new run records its layout");
            checkpoint::check_layout(path, m.layout.as_ref(), &now)?;
            model = load_model_bytes(model, model_b, path, s)?;
            let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(optim_b))
                .map_err(|e| Error::format(path, format!("optimizer record: {e:?}")))?;
            self.optim =
                std::mem::replace(&mut self.optim, optimizer(&s.optimizer)).load_record(record);
            self.base = m.totals;
            self.meta = CheckpointMeta {
                layout: Some(now),
                ..m
            };
            if comm.rank() == 0 {
                tracing::info!(
                    "resuming {} from {} (step {})",
                    s.id().dir_name(),
                    path.display(),
                    self.meta.step
                );
            }
        }
        Ok((sync_from_root(model, comm, s, &self.ad)?, pick.is_some()))
    }

    /// Whether the run has ended: all steps taken, stopped early, or preempted.
    pub(crate) fn done(&self) -> bool {
        self.meta.step >= self.plan.total_steps || self.stopped_early || self.preempted
    }

    /// The rest of the current epoch, from the saved batch position on: a loader thread reads and decodes the
    /// next batches while this one computes.
    pub(crate) fn epoch(&mut self, model: DenseNet) -> Result<DenseNet> {
        let (shards, s) = (self.shards, self.s);
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let epoch = self.meta.epoch;
        let rows = shards.assignment(Split::Train, rank, world, epoch, s.seed);
        let first = self.meta.batch as usize;
        let (bs, accum) = (self.plan.batch_size, self.plan.accum);
        let (size, chans) = (self.plan.size, self.plan.channels);
        // Each optimizer step takes `accum` batches; a trailing partial step is dropped.
        let last = self.plan.steps_per_epoch as usize * accum;
        if first >= last && first > 0 {
            // Only a checkpoint without a recorded layout gets here; without this the loop would spin.
            return Err(Error::Input(format!(
                "{}: the saved position (batch {first} of epoch {epoch}) lies past this run's epoch of {last} \
                 batches: the checkpoint was written with another rank count or batch size; resume with those, or \
                 train into a new directory",
                self.s.id().dir_name()
            )));
        }
        std::thread::scope(|scope| -> Result<DenseNet> {
            let mut model = model;
            let (tx, rx) = mpsc::sync_channel::<Result<Batch>>(2);
            let (rows, loader) = (&rows, self.loader.clone());
            scope.spawn(move || {
                for b in first..last {
                    let pos = BatchPos {
                        seed: s.seed,
                        epoch,
                        batch: b,
                        rank,
                    };
                    let batch = loader.install(|| {
                        load_batch(
                            shards,
                            &rows[b * bs..(b + 1) * bs],
                            &s.source,
                            size,
                            chans,
                            &s.schedule.augment,
                            pos,
                        )
                    });
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            });
            let mut acc: Option<(grads::GradLayout, Tensor<1>)> = None;
            for b in first..last {
                let batch = rx.recv().expect("loader thread ended early")?;
                acc = Some(self.accumulate(&model, batch, acc.take()));
                if !(b + 1).is_multiple_of(accum) {
                    continue;
                }
                let grad = acc.take().expect("accumulated gradient");
                let stop;
                (model, stop) = self.update(model, grad, (b + 1, last), epoch)?;
                if stop {
                    break;
                }
            }
            Ok(model)
        })
    }

    /// Forward and backward on one batch, added to the gradient accumulated so far.
    fn accumulate(
        &mut self,
        model: &DenseNet,
        batch: Batch,
        acc: Option<(grads::GradLayout, Tensor<1>)>,
    ) -> (grads::GradLayout, Tensor<1>) {
        let t_step = Instant::now();
        let (size, chans) = (self.plan.size, self.plan.channels);
        let (y, mask) = loss::targets(&batch.labels, &self.obs, self.s.uncertainty);
        let (layout, flat) = gradients(
            model,
            batch.x,
            [batch.n, chans, size, size],
            &y,
            &mask,
            &self.ad,
            self.s.model.precision,
        );
        let images = (batch.n * self.comm.size()) as u64;
        self.tally.images_seen += images;
        self.tally.window_images += images;
        self.tally.step_s += t_step.elapsed().as_secs_f64();
        match acc {
            Some((layout, sum)) => (layout, sum + flat),
            None => (layout, flat),
        }
    }

    /// One optimizer step on the accumulated gradient: a single all-reduce carries the gradient, the loss (summed
    /// over the micro-batches already) and the stop flag, without leaving the device (NCCL) or through the host
    /// (MPI); then averaging and clipping in one scaling, the update, the metrics row, and a validation or
    /// checkpoint when due. Returns the model and whether the epoch loop stops here.
    fn update(
        &mut self,
        model: DenseNet,
        (layout, mut flat): (grads::GradLayout, Tensor<1>),
        (next_batch, last): (usize, usize),
        epoch: u64,
    ) -> Result<(DenseNet, bool)> {
        let epoch_end = next_batch == last;
        let t_update = Instant::now();
        let stop_here = self
            .opts
            .stop
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed));
        let n = layout.len();
        if stop_here {
            flat = flat.slice_assign(
                n + 1..n + 2,
                Tensor::from_data(TensorData::new(vec![1f32], [1]), (&self.device, DType::F32)),
            );
        }
        let t = Instant::now();
        // Numbered from 1, as the progress bar counts: the step this all-reduce completes.
        self.comm.set_step(self.meta.step + 1);
        let flat = self.comm.all_reduce_sum_tensor(flat)?;
        let extra: Vec<f32> = flat
            .clone()
            .slice(n..n + EXTRA)
            .into_data()
            .try_to_vec()
            .map_err(|e| Error::model("reading the step's loss", e))?;
        self.tally.allreduce_s += t.elapsed().as_secs_f64();
        let stop_any = extra[1] > 0.0;
        let inv = self.plan.inv;
        self.tally.loss_sum += (extra[0] * inv) as f64;
        self.tally.loss_n += 1.0;
        let norm = grads::norm_tensor(&flat, n) * f64::from(inv);
        let scale = match self.s.optimizer.grad_clip {
            Some(max) if norm > max && norm > 0.0 => (max / norm) as f32 * inv,
            _ => inv,
        };
        let flat = flat.mul_scalar(scale);
        self.tally.last_norm = Some(norm);
        let rate = self.plan.lr.at(self.meta.step);
        let mut model = apply(model, &mut self.optim, &layout, &flat, rate);
        self.tally.step_s += t_update.elapsed().as_secs_f64();
        self.meta.step += 1;
        self.meta.batch = next_batch as u64;
        if epoch_end {
            self.meta.epoch += 1;
            self.meta.batch = 0;
        }
        if self.comm.rank() == 0 {
            // What a batch log's progress line shows besides the step: the loss and the all-reduce's share.
            self.progress.set_message(format!(
                "{} loss {:.4} all-reduce {:.0} %",
                self.s.id().dir_name(),
                extra[0] * inv,
                100.0 * self.tally.allreduce_s / self.tally.step_s.max(1e-9)
            ));
        }
        self.progress.set_position(self.meta.step);
        self.log_train(epoch, rate)?;

        let (sched, step) = (&self.s.schedule, self.meta.step);
        let validate = (sched.valid_every > 0 && step.is_multiple_of(sched.valid_every))
            || (sched.valid_every == 0 && epoch_end)
            || step == self.plan.total_steps;
        if validate {
            let stop_early;
            (model, stop_early) = self.validate(model, epoch, rate)?;
            if stop_early {
                self.stopped_early = true;
                return Ok((model, true));
            }
        } else if stop_any
            || (sched.checkpoint_every > 0 && step.is_multiple_of(sched.checkpoint_every))
        {
            model = sync_from_root(model, self.comm, self.s, &self.ad)?;
            if self.comm.rank() == 0 {
                self.save(&model, &self.meta, false)?;
            }
            self.comm.barrier()?;
        }
        if stop_any {
            if self.comm.rank() == 0 {
                tracing::warn!(
                    "{}: stop requested; checkpoint at step {step} written, exiting for requeue",
                    self.s.id().dir_name(),
                );
            }
            self.preempted = true;
            return Ok((model, true));
        }
        Ok((model, step >= self.plan.total_steps))
    }

    /// Rank 0's training row, every `log_every` steps.
    fn log_train(&mut self, epoch: u64, rate: f64) -> Result<()> {
        let every = self.s.schedule.log_every;
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        if every == 0 || !self.meta.step.is_multiple_of(every) {
            return Ok(());
        }
        let t = &mut self.tally;
        let ips = t.window_images as f64 / t.window_start.elapsed().as_secs_f64();
        let mean_loss = t.loss_sum / t.loss_n;
        log.row(&MetricsRow {
            step: self.meta.step,
            epoch,
            kind: "train",
            loss: Some(mean_loss),
            lr: rate,
            images_per_s: Some(ips),
            grad_norm: t.last_norm,
            auroc: None,
        })?;
        self.progress
            .set_message(format!("{} loss {mean_loss:.4}", self.s.id().dir_name()));
        (t.loss_sum, t.loss_n, t.window_images, t.window_start) = (0.0, 0.0, 0, Instant::now());
        Ok(())
    }

    /// Validation: the ranks check they are in step, take rank 0's model, score their share of the valid split;
    /// rank 0 logs, checkpoints (best too when it improved) and decides on early stopping for everyone. Returns
    /// the model and whether to stop early.
    fn validate(&mut self, model: DenseNet, epoch: u64, rate: f64) -> Result<(DenseNet, bool)> {
        let (s, comm) = (self.s, self.comm);
        check_in_step(&model, comm, self.meta.step)?;
        let model = sync_from_root(model, comm, s, &self.ad)?;
        let scored = predict_distributed(
            &model.valid(),
            self.shards,
            &self.plan.valid_rows,
            &s.reference,
            &s.model,
            &self.device,
            comm,
        )?;
        let mut failed = None;
        let mut decision = Decision {
            best: self.meta.best,
            since_best: self.meta.since_best,
            stop: false,
            error: None,
        };
        if let Some(sc) = scored {
            let table = auroc_table(&sc, &self.obs);
            let mean = mean_auroc(&table);
            let improved = match (mean, self.meta.best) {
                (Some(m), Some((b, _))) => m > b,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if improved {
                decision.best = Some((mean.unwrap_or_default(), self.meta.step));
                decision.since_best = 0;
            } else {
                decision.since_best += 1;
            }
            decision.stop = s
                .schedule
                .early_stop_patience
                .is_some_and(|p| decision.since_best >= p);
            tracing::info!(
                "{} step {} valid mean AUROC {}",
                s.id().dir_name(),
                self.meta.step,
                mean.map(|m| format!("{m:.4}")).unwrap_or("n/a".into())
            );
            let mut m2 = self.meta.clone();
            (m2.best, m2.since_best) = (decision.best, decision.since_best);
            let row = MetricsRow {
                step: self.meta.step,
                epoch,
                kind: "valid",
                loss: None,
                lr: rate,
                images_per_s: None,
                grad_norm: None,
                auroc: Some(&table),
            };
            let written = self
                .log
                .as_mut()
                .expect("rank 0 logs")
                .row(&row)
                .and_then(|_| self.save(&model, &m2, improved));
            decision.error = written.as_ref().err().map(SharedError::of);
            failed = written.err();
            self.tally.last_table = table;
        }
        let d = broadcast_json(comm, &decision, 0)?;
        if let Some(e) = d.error {
            // Rank 0 keeps its own error (with its source); the others re-raise its kind.
            return Err(failed.unwrap_or_else(|| e.raise(0)));
        }
        (self.meta.best, self.meta.since_best) = (d.best, d.since_best);
        if d.stop && comm.rank() == 0 {
            tracing::info!(
                "{}: early stop at step {} (no improvement in {} validations)",
                s.id().dir_name(),
                self.meta.step,
                self.meta.since_best
            );
        }
        Ok((model, d.stop))
    }

    /// Saves a checkpoint (rank 0), keeping the last K; `best` also copies it to `best.ckpt`.
    fn save(&self, model: &DenseNet, meta: &CheckpointMeta, best: bool) -> Result<()> {
        let meta = &CheckpointMeta {
            totals: self.totals(),
            ..meta.clone()
        };
        let m = model_bytes(model)?;
        let o = self
            .optim
            .to_record()
            .into_bytes()
            .map_err(|e| Error::model("serialising the optimizer", e))?
            .to_vec();
        let dir = self.files.checkpoints();
        checkpoint::save(
            &dir.join(checkpoint::step_name(meta.step)),
            meta.clone(),
            &m,
            &o,
        )?;
        if best {
            checkpoint::save(&self.files.best(), meta.clone(), &m, &o)?;
        }
        checkpoint::prune(&dir, self.s.schedule.keep_last)
    }

    /// The work done on the run so far: the earlier processes' and this one's.
    fn totals(&self) -> checkpoint::Totals {
        let t = &self.tally;
        self.base
            + checkpoint::Totals {
                images_seen: t.images_seen,
                seconds: t.start.elapsed().as_secs_f64(),
                step_seconds: t.step_s,
                allreduce_seconds: t.allreduce_s,
            }
    }

    /// The run's summary (rank 0 also writes `summary.json`), with every rank's final state hash. Counts cover the
    /// whole run, resumes included; a resume that found the run finished keeps the summary it has.
    pub(crate) fn finish(self, model: DenseNet) -> Result<TrainSummary> {
        self.progress.finish_and_clear();
        let hashes = self.comm.gather_bytes(state_sha256(&model).as_bytes(), 0)?;
        if self.comm.rank() == 0
            && self.tally.images_seen == 0
            && !self.preempted
            && let Ok(text) = std::fs::read_to_string(self.files.summary())
            && let Ok(kept) = serde_json::from_str::<TrainSummary>(&text)
            && kept.steps == self.meta.step
        {
            return Ok(kept);
        }
        let t = self.totals();
        let summary = TrainSummary {
            source: self.s.source.clone(),
            replicate: self.s.replicate,
            ranks: self.comm.size(),
            steps: self.meta.step,
            epochs_started: self.meta.epoch + u64::from(self.meta.batch > 0),
            images_seen: t.images_seen,
            best: self.meta.best,
            stopped_early: self.stopped_early,
            preempted: self.preempted,
            seconds: t.seconds,
            images_per_s: t.images_seen as f64 / t.seconds.max(1e-9),
            step_images_per_s: t.images_seen as f64 / t.step_seconds.max(1e-9),
            allreduce_seconds: t.allreduce_seconds,
            allreduce_share: t.allreduce_seconds / t.step_seconds.max(1e-9),
            last_valid_auroc: self.tally.last_table.clone(),
            rank_state_sha256: hashes
                .unwrap_or_default()
                .into_iter()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect(),
        };
        if self.comm.rank() == 0 {
            crate::io::write_atomic(
                self.files.summary(),
                serde_json::to_string_pretty(&summary)
                    .expect("summary serialises")
                    .as_bytes(),
            )?;
        }
        Ok(summary)
    }
}

/// Steps per epoch and in all, the global batch and the learning-rate schedule (logged by rank 0).
fn plan(shards: &ShardSet, s: &TrainSettings, comm: &dyn Communicator) -> Result<Plan> {
    let (rank, world) = (comm.rank(), comm.size());
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
    if rank == 0 {
        tracing::info!(
            "{}: {world} rank(s) × batch {bs} × accumulation {accum} = global batch {global_batch}; \
             lr {base_lr:.3e} ({:?} scaling); {total_steps} steps, {steps_per_epoch} per epoch",
            s.id().dir_name(),
            s.lr_scaling
        );
    }
    Ok(Plan {
        batch_size: bs,
        accum,
        steps_per_epoch,
        total_steps,
        lr: LrSchedule::new(base_lr, sched, total_steps),
        valid_rows: shards.rows(Split::Valid),
        size: s.model.image_size as usize,
        channels: s.model.in_channels,
        inv: 1.0 / (world * accum) as f32,
    })
}
