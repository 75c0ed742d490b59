//! Training one classifier on one label source: data from the shards (loaded ahead on a background thread),
//! BCE with the source's uncertainty policy, Adam with warm-up/decay, global-norm clipping and gradient
//! accumulation over a flat gradient buffer, validation AUROC, best/last-K checkpoints, early stopping, and exact
//! resume.

pub mod checkpoint;
pub mod grads;
pub mod loss;
pub mod schedule;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, ModelConfig, OptimizerConfig, ScheduleConfig, UncertaintyPolicy, hex};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::auroc;
use crate::model::{DenseNet, DenseNetConfig};
use crate::observations::{Label, LabelRow, Observation};
use crate::shard::{RowRef, Sample, ShardSet};
use checkpoint::CheckpointMeta;
use schedule::LrSchedule;

/// Pixel normalisation: `(p / 255 − MEAN) / STD` (the grey mean and spread of ImageNet's channel statistics).
pub const PIXEL_MEAN: f32 = 0.449;
pub const PIXEL_STD: f32 = 0.226;

/// Everything that determines a training run's result; hashed into every checkpoint so that a resume with other
/// settings is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Label source trained on.
    pub source: String,
    pub uncertainty: UncertaintyPolicy,
    /// Label source validation AUROC is measured against.
    pub reference: String,
    /// The classifier; its `observations` are the outputs trained and evaluated.
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub seed: u64,
    /// The shard set's `config_hash` (same data, same order).
    pub shards: String,
}

impl TrainSettings {
    /// Settings for training `source` from an experiment config on a shard set.
    pub fn from_config(cfg: &Config, source: &str, shards: &ShardSet) -> Result<Self> {
        let src = cfg
            .sources
            .iter()
            .find(|s| s.name == source)
            .ok_or_else(|| {
                Error::Config(format!(
                    "no label source '{source}' in the config (it has: {})",
                    cfg.sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Ok(TrainSettings {
            source: source.to_string(),
            uncertainty: src.uncertainty,
            reference: reference_source(cfg.evaluation.reference.as_deref(), source, shards),
            model: cfg.model.clone(),
            optimizer: cfg.optimizer.clone(),
            schedule: cfg.schedule.clone(),
            seed: cfg.seed,
            shards: shards.index.config_hash.clone(),
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("settings serialise")
    }

    /// SHA-256 of the settings' JSON.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.json().to_string().as_bytes()))
    }

    fn observations(&self) -> Result<Vec<Observation>> {
        self.model
            .observations
            .iter()
            .map(|n| {
                Observation::from_name(n)
                    .ok_or_else(|| Error::Config(format!("unknown observation '{n}'")))
            })
            .collect()
    }
}

/// The label source evaluation compares against: the configured one, else `truth` when present, else the
/// classifier's own source.
pub fn reference_source(configured: Option<&str>, source: &str, shards: &ShardSet) -> String {
    match configured {
        Some(r) => r.to_string(),
        None if shards.index.sources.iter().any(|s| s == "truth") => "truth".into(),
        None => source.to_string(),
    }
}

/// How to start.
#[derive(Clone, Debug, PartialEq)]
pub enum Resume {
    /// A fresh run; refused when the output directory already holds checkpoints.
    Fresh,
    /// The newest valid checkpoint in the output directory, or fresh when there is none.
    Auto,
    /// This checkpoint file.
    From(PathBuf),
}

/// What a finished run reports (also written to `summary.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub source: String,
    pub steps: u64,
    pub epochs_started: u64,
    pub images_seen: u64,
    pub best: Option<(f64, u64)>,
    pub stopped_early: bool,
    pub seconds: f64,
    pub images_per_s: f64,
    pub last_valid_auroc: Vec<(String, Option<f64>)>,
}

/// One batch, decoded and normalised.
pub struct Batch {
    pub x: Vec<f32>,
    pub n: usize,
    pub labels: Vec<LabelRow>,
}

/// Turns shard samples into a normalised `[n, channels, size, size]` batch (grey pixels repeated over channels).
pub fn to_batch(samples: Vec<Sample>, size: u32, channels: usize, path: &Path) -> Result<Batch> {
    let plane = (size * size) as usize;
    let mut x = Vec::with_capacity(samples.len() * plane * channels);
    let mut labels = Vec::with_capacity(samples.len());
    let n = samples.len();
    for s in samples {
        if s.pixels.len() != plane || s.width as u32 != size || s.height as u32 != size {
            return Err(Error::format(
                path,
                format!(
                    "image {}: {}x{} with {} bytes, but the model is configured for {size}x{size} \
                     (re-shard with image size {size}, or set model.image_size)",
                    s.image_id,
                    s.width,
                    s.height,
                    s.pixels.len()
                ),
            ));
        }
        for _ in 0..channels {
            x.extend(
                s.pixels
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD),
            );
        }
        labels.push(s.labels);
    }
    Ok(Batch { x, n, labels })
}

/// Paths of a training run's outputs.
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.ckpt")
    }
    pub fn metrics_csv(&self) -> PathBuf {
        self.dir.join("metrics.csv")
    }
    pub fn metrics_jsonl(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    pub fn summary(&self) -> PathBuf {
        self.dir.join("summary.json")
    }
}

fn bytes_of(b: Bytes) -> Vec<u8> {
    b.to_vec()
}

/// Adam as configured.
pub fn optimizer(o: &OptimizerConfig) -> ModuleOptimizer {
    let mut cfg = AdamConfig::new()
        .with_beta_1(o.beta1 as f32)
        .with_beta_2(o.beta2 as f32)
        .with_epsilon(o.eps as f32);
    if o.weight_decay > 0.0 {
        cfg = cfg.with_weight_decay(Some(WeightDecayConfig::new(o.weight_decay as f32)));
    }
    cfg.init()
}

/// Initialises `cfg` from `seed`. Burn's generator is process-global, so every draw this crate makes happens under
/// one lock, from seeding to the last draw: concurrent initialisations (tests, several sources in one process)
/// cannot interleave.
pub fn seeded_init(cfg: &DenseNetConfig, seed: u64, device: &Device) -> DenseNet {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    cfg.init(device)
}

/// Builds the configured model on `device` (seeded), with pretrained weights when configured.
pub fn build_model(s: &TrainSettings, device: &Device) -> Result<DenseNet> {
    let model = seeded_init(
        &DenseNetConfig::from_model_config(&s.model)?,
        s.seed,
        device,
    );
    match &s.model.pretrained {
        Some(path) => {
            let (model, report) = crate::model::import::load_torchvision(model, path)?;
            tracing::info!(
                "loaded {} tensors from {}{}{}",
                report.loaded,
                path.display(),
                if report.stem_summed {
                    "; 3-channel stem summed to 1"
                } else {
                    ""
                },
                match report.head_replaced {
                    Some((a, b)) => format!("; head replaced ({a} → {b} outputs)"),
                    None => String::new(),
                }
            );
            Ok(model)
        }
        None => Ok(model),
    }
}

/// Loads a checkpoint's model (on `device`) after checking it was trained with `settings` when given.
pub fn load_model(path: &Path, s: &TrainSettings, device: &Device) -> Result<DenseNet> {
    let (meta, model_bytes, _) = checkpoint::load(path)?;
    check_settings(path, &meta, s)?;
    let model = seeded_init(
        &DenseNetConfig::from_model_config(&s.model)?,
        s.seed,
        device,
    );
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(model_bytes))
        .map_err(|e| Error::format(path, format!("model record: {e:?}")))?;
    model.try_load_record(record).map_err(|e| {
        Error::format(
            path,
            format!("model record does not fit the configured model: {e:?}"),
        )
    })
}

fn check_settings(path: &Path, meta: &CheckpointMeta, s: &TrainSettings) -> Result<()> {
    if meta.config_hash != s.hash() {
        let keys = checkpoint::differing_keys(&meta.config, &s.json());
        return Err(Error::Config(format!(
            "{} was written with other training settings; differing keys: {}. Train into a new directory, \
             or restore the checkpoint's settings.",
            path.display(),
            if keys.is_empty() {
                "(none found; the hash differs)".into()
            } else {
                keys.join(", ")
            }
        )));
    }
    Ok(())
}

/// Scores `rows` with `model` (inference mode): probabilities `[rows × observations]`, with each row's labels of
/// `source`.
pub fn predict(
    model: &DenseNet,
    shards: &ShardSet,
    rows: &[RowRef],
    source: &str,
    s: &TrainSettings,
    device: &Device,
) -> Result<(Vec<f32>, Vec<Sample>)> {
    let obs = s.observations()?;
    let picks: Vec<usize> = obs.iter().map(|o| o.index()).collect();
    let _ = picks;
    let mut probs = Vec::with_capacity(rows.len() * obs.len());
    let mut meta = Vec::with_capacity(rows.len());
    let chunk = 64;
    let pb = crate::progress::bar(rows.len() as u64, "scoring");
    for part in rows.chunks(chunk) {
        let samples = shards.read(part, source)?;
        let kept: Vec<Sample> = samples
            .iter()
            .map(|s| Sample {
                pixels: Vec::new(),
                ..s.clone()
            })
            .collect();
        let b = to_batch(
            samples,
            s.model.image_size,
            s.model.in_channels,
            &shards.dir,
        )?;
        let size = s.model.image_size as usize;
        let x = Tensor::<4>::from_data(
            TensorData::new(b.x, [b.n, s.model.in_channels, size, size]),
            device,
        );
        let p = burn::tensor::activation::sigmoid(model.forward(x));
        probs.extend(
            p.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 probabilities"),
        );
        meta.extend(kept);
        pb.inc(part.len() as u64);
    }
    pb.finish_and_clear();
    Ok((probs, meta))
}

/// Per-observation AUROC of `probs` against the samples' labels (uncertain reference labels are left out).
pub fn auroc_table(
    probs: &[f32],
    samples: &[Sample],
    obs: &[Observation],
) -> Vec<(String, Option<f64>)> {
    obs.iter()
        .enumerate()
        .map(|(j, &o)| {
            let (mut sc, mut y) = (Vec::new(), Vec::new());
            for (i, s) in samples.iter().enumerate() {
                match s.labels.get(o) {
                    Label::Uncertain => continue,
                    l => {
                        sc.push(probs[i * obs.len() + j]);
                        y.push(l == Label::Positive);
                    }
                }
            }
            (o.name().to_string(), auroc(&sc, &y))
        })
        .collect()
}

/// Mean of the defined AUROCs.
pub fn mean_auroc(table: &[(String, Option<f64>)]) -> Option<f64> {
    let v: Vec<f64> = table.iter().filter_map(|(_, a)| *a).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Appends rows to metrics.csv / metrics.jsonl; on resume, first drops rows past the checkpoint's step.
struct MetricsLog {
    csv: std::fs::File,
    jsonl: std::fs::File,
    csv_path: PathBuf,
    obs: Vec<String>,
}

impl MetricsLog {
    fn open(files: &RunFiles, obs: &[String], keep_until: Option<u64>) -> Result<Self> {
        let (csv_path, jsonl_path) = (files.metrics_csv(), files.metrics_jsonl());
        let header = {
            let mut h = vec![
                "step",
                "epoch",
                "kind",
                "loss",
                "lr",
                "images_per_s",
                "grad_norm",
                "mean_auroc",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
            h.extend(
                obs.iter()
                    .map(|o| format!("auroc_{}", o.to_lowercase().replace(' ', "_"))),
            );
            h.join(",")
        };
        let keep = |path: &Path, csv: bool| -> Result<String> {
            let Some(limit) = keep_until else {
                return Ok(if csv {
                    format!("{header}\n")
                } else {
                    String::new()
                });
            };
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut out = String::new();
            for (i, line) in text.lines().enumerate() {
                let step = if csv {
                    if i == 0 {
                        out.push_str(&format!("{header}\n"));
                        continue;
                    }
                    line.split(',').next().and_then(|s| s.parse::<u64>().ok())
                } else {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                };
                if step.is_some_and(|s| s <= limit) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            if csv && out.is_empty() {
                out = format!("{header}\n");
            }
            Ok(out)
        };
        let csv_text = keep(&csv_path, true)?;
        let jsonl_text = keep(&jsonl_path, false)?;
        crate::io::write_atomic(&csv_path, csv_text.as_bytes())?;
        crate::io::write_atomic(&jsonl_path, jsonl_text.as_bytes())?;
        let append = |p: &Path| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))
        };
        Ok(MetricsLog {
            csv: append(&csv_path)?,
            jsonl: append(&jsonl_path)?,
            csv_path,
            obs: obs.to_vec(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        step: u64,
        epoch: u64,
        kind: &str,
        loss: Option<f64>,
        lr: f64,
        ips: Option<f64>,
        grad_norm: Option<f64>,
        table: Option<&[(String, Option<f64>)]>,
    ) -> Result<()> {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let mean = table.and_then(mean_auroc);
        let mut cells = vec![
            step.to_string(),
            epoch.to_string(),
            kind.to_string(),
            f(loss),
            format!("{lr:.3e}"),
            f(ips),
            f(grad_norm),
            f(mean),
        ];
        let mut json = serde_json::json!({
            "step": step, "epoch": epoch, "kind": kind, "loss": loss, "lr": lr,
            "images_per_s": ips, "grad_norm": grad_norm, "mean_auroc": mean,
        });
        for (k, o) in self.obs.iter().enumerate() {
            let a = table.and_then(|t| t.get(k)).and_then(|(_, a)| *a);
            cells.push(f(a));
            json["auroc"][o] = serde_json::json!(a);
        }
        let io = |e| Error::io(&self.csv_path, e);
        writeln!(self.csv, "{}", cells.join(",")).map_err(io)?;
        writeln!(self.jsonl, "{json}").map_err(io)?;
        Ok(())
    }
}

/// Trains one classifier with `threads` compute threads. `out` receives checkpoints, metrics and `summary.json`.
///
/// The tensor work runs in its own thread pool: with one thread (the default; on CPU one rank per core is faster
/// anyway) the result is bit-for-bit reproducible, with more the backend's parallel reductions may split work
/// differently from run to run.
pub fn train(
    shards: &ShardSet,
    s: &TrainSettings,
    out: &Path,
    resume: Resume,
    threads: usize,
) -> Result<TrainSummary> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("chexlab-train-{i}"))
        .build()
        .map_err(|e| Error::Config(format!("cannot start {threads} compute threads: {e}")))?;
    pool.install(|| train_in_pool(shards, s, out, resume))
}

fn train_in_pool(
    shards: &ShardSet,
    s: &TrainSettings,
    out: &Path,
    resume: Resume,
) -> Result<TrainSummary> {
    let (rank, world) = (0usize, 1usize);
    let obs = s.observations()?;
    for name in [&s.source, &s.reference] {
        if !shards.index.sources.iter().any(|x| x == name) {
            return Err(Error::Config(format!(
                "label source '{name}' is not in the shards at {} (they hold: {})",
                shards.dir.display(),
                shards.index.sources.join(", ")
            )));
        }
    }
    let files = RunFiles {
        dir: out.to_path_buf(),
    };
    std::fs::create_dir_all(files.checkpoints()).map_err(|e| Error::io(files.checkpoints(), e))?;

    let device = Device::flex();
    let ad = device.clone().autodiff();
    let mut model = build_model(s, &ad)?;
    let mut optim = optimizer(&s.optimizer);

    let resumed = match resume {
        Resume::Fresh => {
            if let Some((_, p)) = checkpoint::list(&files.checkpoints()).last() {
                return Err(Error::Config(format!(
                    "{} already holds checkpoints ({}); resume with --resume auto, or train into a new directory",
                    out.display(),
                    p.display()
                )));
            }
            None
        }
        Resume::Auto => checkpoint::latest_valid(&files.checkpoints()),
        Resume::From(p) => {
            let (meta, m, o) = checkpoint::load(&p)?;
            Some((p, meta, m, o))
        }
    };
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
    if let Some((path, m, model_bytes, optim_bytes)) = &resumed {
        check_settings(path, m, s)?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(model_bytes.clone()))
            .map_err(|e| Error::format(path, format!("model record: {e:?}")))?;
        model = model
            .try_load_record(record)
            .map_err(|e| Error::format(path, format!("model record: {e:?}")))?;
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(optim_bytes.clone()))
            .map_err(|e| Error::format(path, format!("optimizer record: {e:?}")))?;
        optim = optim.load_record(record);
        meta = m.clone();
        tracing::info!(
            "resuming {} from {} (step {})",
            s.source,
            path.display(),
            meta.step
        );
    }
    let mut log = MetricsLog::open(
        &files,
        &s.model.observations,
        resumed.as_ref().map(|r| r.1.step),
    )?;

    let sched = &s.schedule;
    let (bs, accum) = (sched.batch_size, sched.grad_accum);
    let train_rows = shards
        .assignment(Split::Train, rank, world, 0, s.seed)
        .len();
    let batches_per_epoch = (train_rows / bs) as u64;
    let steps_per_epoch = batches_per_epoch / accum as u64;
    if steps_per_epoch == 0 {
        return Err(Error::Config(format!(
            "the train split has {train_rows} images per rank: fewer than one optimizer step of \
             batch_size {bs} × grad_accum {accum}"
        )));
    }
    let total_steps = sched
        .max_steps
        .unwrap_or(sched.epochs as u64 * steps_per_epoch);
    let lr = LrSchedule::new(s.optimizer.lr, &s.optimizer, sched, total_steps);
    let valid_rows = shards.rows(Split::Valid);
    let size = s.model.image_size as usize;
    let chans = s.model.in_channels;

    let pb = crate::progress::bar(total_steps, &s.source);
    pb.set_position(meta.step);
    let start = Instant::now();
    let (mut window_images, mut window_start) = (0u64, Instant::now());
    let mut images_seen = 0u64;
    let mut stopped_early = false;
    let mut last_table = Vec::new();
    let mut loss_sum = 0f64;
    let mut loss_n = 0u64;
    let mut last_norm = None;

    'epochs: while meta.step < total_steps {
        let epoch = meta.epoch;
        let rows = shards.assignment(Split::Train, rank, world, epoch, s.seed);
        let first = meta.batch as usize;
        // Each optimizer step takes `accum` batches; a trailing partial step is dropped.
        let last = (steps_per_epoch as usize) * accum;
        model = std::thread::scope(|scope| -> Result<DenseNet> {
            let mut model = model;
            let (tx, rx) = mpsc::sync_channel::<Result<Batch>>(2);
            let rows_ref = &rows;
            scope.spawn(move || {
                for b in first..last {
                    let part = &rows_ref[b * bs..(b + 1) * bs];
                    let batch = shards
                        .read(part, &s.source)
                        .and_then(|smp| to_batch(smp, size as u32, chans, &shards.dir));
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            });
            let mut acc: Option<(grads::GradLayout, Vec<f32>)> = None;
            for b in first..last {
                let batch = rx.recv().expect("loader thread ended early")?;
                let (y, mask) = loss::targets(&batch.labels, &obs, s.uncertainty);
                let (loss, layout, flat) = gradients(
                    &model,
                    batch.x,
                    [batch.n, chans, size, size],
                    &y,
                    &mask,
                    &ad,
                );
                loss_sum += loss as f64;
                loss_n += 1;
                match &mut acc {
                    Some((_, sum)) => sum.iter_mut().zip(&flat).for_each(|(a, v)| *a += v),
                    None => acc = Some((layout, flat)),
                }
                images_seen += batch.n as u64;
                window_images += batch.n as u64;
                if (b + 1) % accum != 0 {
                    continue;
                }
                let (layout, mut flat) = acc.take().expect("accumulated gradient");
                if accum > 1 {
                    let inv = 1.0 / accum as f32;
                    flat.iter_mut().for_each(|v| *v *= inv);
                }
                let norm = match s.optimizer.grad_clip {
                    Some(max) => grads::clip_norm(&mut flat, max),
                    None => grads::norm(&flat),
                };
                last_norm = Some(norm);
                let rate = lr.at(meta.step);
                model = apply(model, &mut optim, &layout, &flat, rate, &device);
                meta.step += 1;
                meta.batch = (b + 1) as u64;
                pb.set_position(meta.step);
                if sched.log_every > 0 && meta.step.is_multiple_of(sched.log_every) {
                    let ips = window_images as f64 / window_start.elapsed().as_secs_f64();
                    log.row(
                        meta.step,
                        epoch,
                        "train",
                        Some(loss_sum / loss_n as f64),
                        rate,
                        Some(ips),
                        last_norm,
                        None,
                    )?;
                    pb.set_message(format!("{} loss {:.4}", s.source, loss_sum / loss_n as f64));
                    (loss_sum, loss_n, window_images, window_start) = (0.0, 0, 0, Instant::now());
                }
                let end_of_epoch = b + 1 == last;
                if end_of_epoch {
                    meta.epoch += 1;
                    meta.batch = 0;
                }
                let validate = (sched.valid_every > 0
                    && meta.step.is_multiple_of(sched.valid_every))
                    || (sched.valid_every == 0 && end_of_epoch)
                    || meta.step == total_steps;
                if validate {
                    let (probs, smp) = predict(
                        &model.valid(),
                        shards,
                        &valid_rows,
                        &s.reference,
                        s,
                        &device,
                    )?;
                    let table = auroc_table(&probs, &smp, &obs);
                    let mean = mean_auroc(&table);
                    log.row(
                        meta.step,
                        epoch,
                        "valid",
                        None,
                        rate,
                        None,
                        None,
                        Some(&table),
                    )?;
                    let improved = match (mean, meta.best) {
                        (Some(m), Some((b, _))) => m > b,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if improved {
                        meta.best = Some((mean.unwrap_or_default(), meta.step));
                        meta.since_best = 0;
                    } else {
                        meta.since_best += 1;
                    }
                    tracing::info!(
                        "{} step {} valid mean AUROC {}",
                        s.source,
                        meta.step,
                        mean.map(|m| format!("{m:.4}")).unwrap_or("n/a".into())
                    );
                    last_table = table;
                    let (m_bytes, o_bytes) = snapshot(&model, &optim)?;
                    let path = files.checkpoints().join(checkpoint::step_name(meta.step));
                    checkpoint::save(&path, meta.clone(), &m_bytes, &o_bytes)?;
                    if improved {
                        checkpoint::save(&files.best(), meta.clone(), &m_bytes, &o_bytes)?;
                    }
                    checkpoint::prune(&files.checkpoints(), sched.keep_last)?;
                    if sched
                        .early_stop_patience
                        .is_some_and(|p| meta.since_best >= p)
                    {
                        tracing::info!(
                            "{}: early stop at step {} (no improvement in {} validations)",
                            s.source,
                            meta.step,
                            meta.since_best
                        );
                        stopped_early = true;
                        return Ok(model);
                    }
                } else if sched.checkpoint_every > 0
                    && meta.step.is_multiple_of(sched.checkpoint_every)
                {
                    let (m_bytes, o_bytes) = snapshot(&model, &optim)?;
                    let path = files.checkpoints().join(checkpoint::step_name(meta.step));
                    checkpoint::save(&path, meta.clone(), &m_bytes, &o_bytes)?;
                    checkpoint::prune(&files.checkpoints(), sched.keep_last)?;
                }
                if meta.step >= total_steps {
                    return Ok(model);
                }
            }
            Ok(model)
        })?;
        if stopped_early {
            break 'epochs;
        }
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let summary = TrainSummary {
        source: s.source.clone(),
        steps: meta.step,
        epochs_started: meta.epoch + u64::from(meta.batch > 0),
        images_seen,
        best: meta.best,
        stopped_early,
        seconds,
        images_per_s: images_seen as f64 / seconds.max(1e-9),
        last_valid_auroc: last_table,
    };
    crate::io::write_atomic(
        files.summary(),
        serde_json::to_string_pretty(&summary)
            .expect("summary serialises")
            .as_bytes(),
    )?;
    Ok(summary)
}

/// Forward and backward pass on one batch: the loss and the flat gradient (see [`grads`]). `device` is the
/// autodiff device the model lives on.
pub fn gradients(
    model: &DenseNet,
    x: Vec<f32>,
    shape: [usize; 4],
    y: &[f32],
    mask: &[f32],
    device: &Device,
) -> (f32, grads::GradLayout, Vec<f32>) {
    let x = Tensor::<4>::from_data(TensorData::new(x, shape), device);
    let loss = loss::bce_with_logits(model.forward(x), y, mask, device);
    let value = loss.clone().into_scalar::<f32>();
    let g = GradientsParams::from_grads(loss.backward(), model);
    let (layout, flat) = grads::flatten(&g, model);
    (value, layout, flat)
}

/// One optimizer step with a flat gradient (already averaged, accumulated and clipped as wanted). `inner` is the
/// model's device without autodiff, where gradients live.
pub fn apply(
    model: DenseNet,
    optim: &mut ModuleOptimizer,
    layout: &grads::GradLayout,
    flat: &[f32],
    lr: f64,
    inner: &Device,
) -> DenseNet {
    let g = grads::unflatten(layout, flat, &model, inner);
    optim.step(lr, model, g)
}

fn snapshot(model: &DenseNet, optim: &ModuleOptimizer) -> Result<(Vec<u8>, Vec<u8>)> {
    let m = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Config(format!("serialising the model: {e:?}")))?;
    let o = optim
        .to_record()
        .into_bytes()
        .map_err(|e| Error::Config(format!("serialising the optimizer: {e:?}")))?;
    Ok((bytes_of(m), bytes_of(o)))
}

/// Per-image probabilities and per-observation AUROC of one trained classifier on one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitScores {
    pub source: String,
    pub reference: String,
    pub split: String,
    pub checkpoint_step: u64,
    pub images: usize,
    /// Positives per observation in the reference labels.
    pub positives: Vec<(String, usize)>,
    pub auroc: Vec<(String, Option<f64>)>,
    pub mean_auroc: Option<f64>,
}

/// Scores `split` with the best checkpoint in `train_dir`, writes `predictions_<split>.csv` (image id, one
/// probability per observation, then the reference labels) and `scores_<split>.json` into `out`.
pub fn evaluate(
    shards: &ShardSet,
    s: &TrainSettings,
    train_dir: &Path,
    split: Split,
    out: &Path,
) -> Result<SplitScores> {
    let files = RunFiles {
        dir: train_dir.to_path_buf(),
    };
    let best = files.best();
    let (meta, _, _) = checkpoint::load(&best)?;
    let device = Device::flex();
    let model = load_model(&best, s, &device)?;
    let rows = shards.rows(split);
    let (probs, samples) = predict(&model, shards, &rows, &s.reference, s, &device)?;
    let obs = s.observations()?;
    let table = auroc_table(&probs, &samples, &obs);
    let name = split.name();
    let csv_path = out.join(format!("predictions_{name}.csv"));
    let mut w = crate::io::csv_writer(&csv_path)?;
    let mut header = vec!["image_id".to_string()];
    header.extend(obs.iter().map(|o| format!("p_{}", o.snake_name())));
    header.extend(obs.iter().map(|o| format!("ref_{}", o.snake_name())));
    w.write_record(&header)
        .map_err(|e| Error::csv(&csv_path, e))?;
    for (i, smp) in samples.iter().enumerate() {
        let mut rec = vec![smp.image_id.clone()];
        rec.extend((0..obs.len()).map(|j| format!("{:.6}", probs[i * obs.len() + j])));
        rec.extend(obs.iter().map(|&o| smp.labels.get(o).as_csv().to_string()));
        w.write_record(&rec).map_err(|e| Error::csv(&csv_path, e))?;
    }
    crate::io::commit_csv(w, &csv_path)?;
    let scores = SplitScores {
        source: s.source.clone(),
        reference: s.reference.clone(),
        split: name.to_string(),
        checkpoint_step: meta.step,
        images: samples.len(),
        positives: obs
            .iter()
            .map(|&o| {
                let n = samples
                    .iter()
                    .filter(|x| x.labels.get(o) == Label::Positive)
                    .count();
                (o.name().to_string(), n)
            })
            .collect(),
        mean_auroc: mean_auroc(&table),
        auroc: table,
    };
    crate::io::write_atomic(
        out.join(format!("scores_{name}.json")),
        serde_json::to_string_pretty(&scores)
            .expect("scores serialise")
            .as_bytes(),
    )?;
    Ok(scores)
}
