//! `chexlab run` / `chexlab demo`: the whole study as stages — synth → label → eval-labels → shard → train →
//! evaluate → report.
//!
//! Each stage writes `RUN_DIR/stages/<stage>.json` with the hash of its inputs (the config sections it reads and
//! the hash of the stage before it). A re-run skips a stage whose marker matches, redoes a stale one (its outputs
//! are cleared first), and `--from STAGE` forces that stage and every later one. A stage interrupted before its
//! marker was written is redone; training resumes from its latest checkpoint.
//!
//! Under `mpirun`/`srun` every rank runs this: the distributed stages (BERT labeler training, image classifier
//! training, evaluation) use all ranks; the others run on rank 0 while the rest wait at a barrier.
//!
//! VisualCheXbert needs an image model's probabilities (`bert.teacher`). Without one, the label stage trains a
//! teacher classifier on the first rule-labeler source's labels (as the original used a classifier trained on
//! report labels) in `RUN_DIR/teacher/`, scores the training split with it, and starts VisualCheXbert from the
//! run's CheXbert labeler when there is one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::comm::Communicator;
use crate::config::{
    Config, DatasetKind, LabelerKind, SourceConfig, SourceKind, UncertaintyPolicy,
};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::report::LabelerAgreement;
use crate::eval::results::SplitScores;
use crate::eval::score::{ScoreJob, evaluate_run};
use crate::labelers::bert::BertReportLabeler;
use crate::labelers::bert::model::HeadKind;
use crate::labelers::bert::pipeline::train_labeler;
use crate::labelers::rules::RuleLabeler;
use crate::labelers::{ReportLabeler, label_dataset};
use crate::run_dir::{ReplicateId, RunDir};
use crate::shard::ShardSet;
use crate::train::{Resume, TrainOptions};

/// The stages, in order.
#[derive(
    clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Stage {
    /// Generate the synthetic world (synthetic datasets only).
    Synth,
    /// Run (and train) the labelers on the reports.
    Label,
    /// Score the labelers against report and image truth.
    EvalLabels,
    /// Join images and label sources into Parquet shards.
    Shard,
    /// Train one classifier per label source.
    Train,
    /// Score the test split with each classifier.
    Evaluate,
    /// Write the report.
    Report,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Synth,
        Stage::Label,
        Stage::EvalLabels,
        Stage::Shard,
        Stage::Train,
        Stage::Evaluate,
        Stage::Report,
    ];

    /// The stage's name, as `--from` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Synth => "synth",
            Stage::Label => "label",
            Stage::EvalLabels => "eval-labels",
            Stage::Shard => "shard",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Report => "report",
        }
    }

    /// The stage named `s`.
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The config sections the stage reads (their JSON goes into its input hash).
    fn inputs(self, cfg: &Config) -> serde_json::Value {
        use serde_json::json;
        match self {
            Stage::Synth => json!({"dataset": cfg.dataset, "seed": cfg.seed}),
            Stage::Label => {
                json!({"sources": cfg.sources, "bert": cfg.bert, "schedule": cfg.schedule,
                                   "model": cfg.model, "optimizer": cfg.optimizer})
            }
            Stage::EvalLabels => json!({}),
            Stage::Shard => json!({"shard": cfg.shard, "image_size": cfg.model.image_size}),
            Stage::Train => {
                json!({"model": cfg.model, "optimizer": cfg.optimizer, "schedule": cfg.schedule,
                                   "distributed": cfg.distributed, "study": cfg.study})
            }
            Stage::Evaluate | Stage::Report => {
                json!({"evaluation": cfg.evaluation, "study": cfg.study})
            }
        }
    }
}

/// `stages/<stage>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// The stage.
    pub stage: Stage,
    /// Hash of its inputs.
    pub inputs_sha256: String,
    /// How long it took.
    pub seconds: f64,
}

/// What a pipeline run did, per stage: `Some(seconds)` when it ran, `None` when it was up to date or not needed.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    /// Each stage and its seconds (none: up to date or not applicable).
    pub stages: Vec<(Stage, Option<f64>)>,
    /// The report's headline table, when the report stage ran or was up to date.
    pub headline: Option<String>,
    /// `report.md`, when there is one.
    pub report: Option<PathBuf>,
    /// Training stopped for preemption: exit for requeue.
    pub preempted: bool,
}

fn marker_path(cfg: &Config, stage: Stage) -> PathBuf {
    cfg.run().stages().join(format!("{}.json", stage.name()))
}

fn read_marker(cfg: &Config, stage: Stage) -> Option<Marker> {
    serde_json::from_slice(&std::fs::read(marker_path(cfg, stage)).ok()?).ok()
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Runs the study of `cfg`; `from` forces that stage and the later ones; `to` stops after that stage.
pub fn run(
    cfg: &Config,
    from: Option<Stage>,
    to: Option<Stage>,
    comm: &dyn Communicator,
    stop: Option<Arc<AtomicBool>>,
) -> Result<RunOutcome> {
    let root = comm.rank() == 0;
    let mut out = RunOutcome::default();
    let mut upstream = String::new();
    let mut forced = false;
    for stage in Stage::ALL {
        if to.is_some_and(|t| stage > t) {
            break;
        }
        forced |= from == Some(stage);
        let inputs = serde_json::json!({"stage": stage.name(), "config": stage.inputs(cfg), "upstream": upstream});
        let hash = crate::io::hex(&Sha256::digest(inputs.to_string().as_bytes()));
        upstream = hash.clone();
        if stage == Stage::Synth && cfg.dataset.kind != DatasetKind::Synthetic {
            out.stages.push((stage, None));
            continue;
        }
        let marker = read_marker(cfg, stage);
        let done = marker.as_ref().is_some_and(|m| m.inputs_sha256 == hash);
        if done && !forced {
            if root {
                tracing::info!("stage {}: up to date", stage.name());
            }
            out.stages.push((stage, None));
            if stage == Stage::Report {
                let md = cfg.run().report_md();
                out.headline = std::fs::read_to_string(&md).ok().map(|t| headline_of(&t));
                out.report = Some(md);
            }
            continue;
        }
        // Stale (another marker) or forced: start the stage from scratch. No marker: an interrupted stage,
        // which resumes where it can (training from its checkpoints).
        let fresh = marker.is_some() || forced;
        if root {
            tracing::info!(
                "stage {}: {}",
                stage.name(),
                if fresh && marker.is_some() {
                    "redoing"
                } else {
                    "running"
                }
            );
            let stages = cfg.run().stages();
            std::fs::create_dir_all(&stages).map_err(|e| Error::io(&stages, e))?;
            let _ = std::fs::remove_file(marker_path(cfg, stage));
        }
        let t = std::time::Instant::now();
        let preempted = run_stage(cfg, stage, fresh, comm, stop.clone(), &mut out)?;
        if preempted {
            out.preempted = true;
            return Ok(out);
        }
        let seconds = t.elapsed().as_secs_f64();
        if root {
            let m = Marker {
                stage,
                inputs_sha256: hash,
                seconds,
            };
            crate::io::write_atomic(
                marker_path(cfg, stage),
                &serde_json::to_vec_pretty(&m).expect("marker"),
            )?;
            tracing::info!("stage {}: done in {seconds:.0} s", stage.name());
        }
        comm.barrier()?;
        out.stages.push((stage, Some(seconds)));
    }
    Ok(out)
}

/// The headline of a `report.md`, as writing it returned it: the result in words, then the per-source AUROC table.
fn headline_of(md: &str) -> String {
    let table: String = md
        .lines()
        .skip_while(|l| !l.starts_with("## Test AUROC"))
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    match md.lines().find(|l| l.starts_with("**In short.**")) {
        Some(words) => format!("{words}\n\n{table}"),
        None => table,
    }
}

/// The `evaluate` stage of a run from its config: scores `split` with the best checkpoint of each of `sources`
/// (one without is skipped, or an error when `strict`) and writes `results.json`; rank 0's scores by run.
pub fn evaluate(
    cfg: &Config,
    run: &RunDir,
    split: Split,
    sources: &[ReplicateId],
    strict: bool,
    comm: &dyn Communicator,
) -> Result<Vec<(String, SplitScores)>> {
    let observations = cfg.observations();
    let job = ScoreJob {
        run,
        split,
        sources,
        strict,
        evaluation: &cfg.evaluation,
        observations: &observations,
        seed: cfg.seed,
        device: cfg.distributed.device,
        curve: &cfg.dose_curve(),
    };
    let load = |id: &ReplicateId, shards: &ShardSet, device: &burn::tensor::Device| {
        let s = cfg.train_settings(id, shards)?;
        crate::train::load_best(&run.train(&id.dir_name()), &s, device)
    };
    evaluate_run(&job, &load, comm)
}

/// Runs `body` (the work called `what`) on rank 0 only; the others wait for it however long it takes, as long as
/// rank 0 is alive ([`Communicator::alone`]), and learn whether it failed.
fn on_root(comm: &dyn Communicator, what: &str, body: impl FnOnce() -> Result<()>) -> Result<()> {
    let mut body = Some(body);
    let mut r = Ok(());
    comm.alone(0, what, &mut || {
        if let Some(b) = body.take() {
            r = b();
        }
    })?;
    if comm.rank() == 0
        && let Err(e) = &r
    {
        tracing::error!("{e}");
    }
    crate::comm::share_outcome(comm, r, 0)
}

/// The names of the config's label sources.
fn source_names(cfg: &Config) -> Vec<String> {
    cfg.sources.iter().map(|s| s.name.clone()).collect()
}

fn labels_path(cfg: &Config, name: &str) -> PathBuf {
    cfg.run().labels_of(name)
}

/// Labels every study's report of the dataset into the source's label file, on rank 0 with the labeler `make`
/// builds there (every rank calls this; a failure on rank 0 is every rank's error).
fn label_all(
    cfg: &Config,
    name: &str,
    comm: &dyn Communicator,
    make: impl FnOnce() -> Result<Box<dyn ReportLabeler>>,
) -> Result<()> {
    on_root(comm, &format!("labelling the reports for '{name}'"), || {
        let run = label_dataset(
            make()?.as_ref(),
            &cfg.dataset.root,
            cfg.dataset.reports_root.as_deref(),
            cfg.dataset.sections,
            &labels_path(cfg, name),
            cfg.dataset.on_bad_record,
        )?;
        tracing::info!("{name}: labelled {} reports", run.reports);
        Ok(())
    })
}

fn run_stage(
    cfg: &Config,
    stage: Stage,
    fresh: bool,
    comm: &dyn Communicator,
    stop: Option<Arc<AtomicBool>>,
    out: &mut RunOutcome,
) -> Result<bool> {
    match stage {
        Stage::Synth => on_root(comm, "the synthetic world", || synth_world(cfg))?,
        Stage::Label => return label_sources(cfg, fresh, comm, stop),
        Stage::EvalLabels => on_root(comm, "scoring the labelers", || label_agreement(cfg))?,
        Stage::Shard => on_root(comm, "writing the shards", || {
            let dir = cfg.run().shards();
            if fresh {
                remove(&dir)?;
            }
            let index = crate::shard::write_shards(&cfg.shard_spec()?, &dir)?;
            tracing::info!(
                "{} shards, {} images",
                index.shards.len(),
                index.splits.values().sum::<u64>()
            );
            Ok(())
        })?,
        Stage::Train => return train_classifiers(cfg, fresh, comm, stop),
        Stage::Evaluate => {
            // Redone: scores of classifiers the study no longer has (a source or replicate dropped) must not
            // reach results.json, which gathers every eval/<run>/ there is.
            if fresh {
                on_root(comm, "removing earlier scores", || {
                    remove(&cfg.run().eval_root())
                })?;
            }
            let ids = cfg.replicates(&source_names(cfg), None)?;
            evaluate(cfg, &cfg.run(), Split::Test, &ids, true, comm)?;
        }
        Stage::Report => {
            let mut headline = None;
            on_root(comm, "the report", || {
                let r = crate::eval::report::write_report(
                    &cfg.run(),
                    Split::Test,
                    &cfg.report_study(),
                )?;
                headline = Some(r.headline);
                Ok(())
            })?;
            out.headline = headline;
            out.report = Some(cfg.run().report_md());
        }
    }
    Ok(false)
}

/// The synth stage (rank 0): generates the synthetic world, unless a complete one with the same settings is there.
fn synth_world(cfg: &Config) -> Result<()> {
    let d = &cfg.dataset;
    let sc = crate::data::synth::SynthConfig {
        studies: d.studies,
        image_size: d.image_size,
        seed: cfg.seed,
        format: d.format,
        report_style: d.report_style,
        report_difficulty: d.report_difficulty,
        ..crate::data::synth::SynthConfig::default()
    };
    // A complete world made with the same settings is kept (generation is deterministic).
    if let Some(m) = crate::data::synth::read_manifest(&d.root)?
        && m.config == sc
    {
        tracing::info!(
            "synthetic world in {} is complete and current",
            d.root.display()
        );
        return Ok(());
    }
    let s = crate::data::synth::generate(&d.root, &sc)?;
    tracing::info!(
        "synthetic world: {} studies, {} images in {}",
        s.studies,
        s.images,
        d.root.display()
    );
    Ok(())
}

/// The label stage: every built-in labeler source's labels into `RUN_DIR/labels/<source>.csv`, training the BERT
/// labelers first (data-parallel) unless their source names a trained one. Returns whether it stopped for
/// preemption (while training VisualCheXbert's teacher).
fn label_sources(
    cfg: &Config,
    fresh: bool,
    comm: &dyn Communicator,
    stop: Option<Arc<AtomicBool>>,
) -> Result<bool> {
    let run = cfg.run();
    if fresh {
        on_root(comm, "removing earlier labels", || {
            remove(&run.labels())?;
            remove(&run.labelers())?;
            remove(run.teacher().path())
        })?;
    }
    std::fs::create_dir_all(run.labels()).map_err(|e| Error::io(run.labels(), e))?;
    let labelers: Vec<&SourceConfig> = cfg
        .sources
        .iter()
        .filter(|s| s.kind == SourceKind::Labeler)
        .collect();
    // Rules and CheXbert first: VisualCheXbert starts from them.
    let order = |s: &&SourceConfig| match s.labeler {
        Some(LabelerKind::Chexpert) => 0,
        Some(LabelerKind::Chexbert) => 1,
        _ => 2,
    };
    let mut labelers = labelers;
    labelers.sort_by_key(order);
    let mut chexbert_dir = None;
    for s in labelers {
        match s.labeler {
            Some(LabelerKind::Chexpert) => {
                label_all(cfg, &s.name, comm, || Ok(Box::new(RuleLabeler::default())))?
            }
            Some(kind @ (LabelerKind::Chexbert | LabelerKind::Visualchexbert)) => {
                let head = if kind == LabelerKind::Chexbert {
                    HeadKind::Chexbert
                } else {
                    HeadKind::Visualchexbert
                };
                let dir = match &s.path {
                    Some(p) => p.clone(),
                    None => {
                        let dir = run.labeler(&s.name);
                        let mut c = cfg.clone();
                        if head == HeadKind::Visualchexbert {
                            if c.bert.init_from.is_none() {
                                c.bert.init_from = chexbert_dir.clone();
                            }
                            if c.bert.teacher.is_none() {
                                match teacher(cfg, comm, stop.clone())? {
                                    Some(p) => c.bert.teacher = Some(p),
                                    // Preempted: the teacher resumes from its checkpoint next time.
                                    None => return Ok(true),
                                }
                            }
                        }
                        let r = train_labeler(&c.bert_job(), head, &dir, comm)?;
                        if comm.rank() == 0 {
                            for sc in &r.scores {
                                tracing::info!(
                                    "{}: test reports: report weighted F1 {:?}, image mean positive F1 {:?}",
                                    sc.labeler,
                                    sc.report_weighted_f1,
                                    sc.image_mean_positive_f1
                                );
                            }
                        }
                        dir
                    }
                };
                if head == HeadKind::Chexbert {
                    // Absolute: `bert.init_from` is otherwise taken relative to the run directory.
                    chexbert_dir = Some(std::path::absolute(&dir).map_err(|e| Error::io(&dir, e))?);
                }
                label_all(cfg, &s.name, comm, || {
                    let mut l = BertReportLabeler::load(&dir, None)?.on_device(
                        crate::comm::compute_device(cfg.distributed.device, comm.local_rank())?,
                    );
                    l.batch_size = cfg.bert.infer_batch;
                    Ok(Box::new(l))
                })?;
            }
            None => {
                return Err(Error::Config(format!(
                    "sources.{}: labeler missing",
                    s.name
                )));
            }
        }
    }
    // Corrupted sources last: their bases' labels exist now.
    on_root(comm, "corrupting labels", || corrupt_sources(cfg))?;
    Ok(false)
}

/// Writes every `kind = "corrupted"` source's labels (rank 0), all drawn under the study's seed so that sources
/// corrupted from one base at rising rates are nested.
fn corrupt_sources(cfg: &Config) -> Result<()> {
    for s in cfg
        .sources
        .iter()
        .filter(|s| s.kind == SourceKind::Corrupted)
    {
        let (base, rates) = cfg.corruption_of(s)?;
        let out = labels_path(cfg, &s.name);
        let c = crate::labelers::corrupt::corrupt_labels(&base, &out, &rates, cfg.seed)?;
        tracing::info!(
            "{}: {} rows of '{}' with {} of {} positives missed, {} made uncertain, {} of {} others made \
             positive",
            s.name,
            c.rows,
            s.base.as_deref().unwrap_or("?"),
            c.missed,
            c.positives,
            c.uncertain,
            c.false_positives,
            c.others
        );
    }
    Ok(())
}

/// The eval-labels stage (rank 0): each source's labels against the dataset's report and image truth.
fn label_agreement(cfg: &Config) -> Result<()> {
    let mut table = std::collections::BTreeMap::new();
    let report_truth = cfg.dataset.root.join("truth/report_labels.csv");
    let image_truth = cfg.dataset.root.join("truth/image_labels.csv");
    for s in &cfg.sources {
        // Image truth is a point of the dose–response too: label F1 1 against itself, by construction.
        let Some(file) = cfg.labels_csv(s) else {
            continue;
        };
        let metrics = |truth: &Path| -> Option<crate::labelers::metrics::LabelMetrics> {
            if !truth.is_file() {
                return None;
            }
            crate::labelers::metrics::evaluate(&file, truth, UncertaintyPolicy::Ones)
                .map_err(|e| tracing::warn!("{}: {e}", s.name))
                .ok()
        };
        let image = metrics(&image_truth);
        table.insert(
            s.name.clone(),
            LabelerAgreement {
                report_weighted_f1: metrics(&report_truth).and_then(|m| m.weighted_f1),
                image_mean_positive_f1: image.as_ref().and_then(|m| m.mean_positive_f1),
                image_positive_f1: image
                    .iter()
                    .flat_map(|m| &m.binary)
                    .filter(|b| b.positive.support > 0)
                    .map(|b| (b.observation.clone(), b.positive.f1))
                    .collect(),
            },
        );
    }
    let json = serde_json::to_vec_pretty(&table).expect("label metrics");
    crate::io::write_atomic(cfg.run().label_metrics(), &json)
}

/// The train stage: one classifier per source; returns whether a group was preempted (every rank learns it).
fn train_classifiers(
    cfg: &Config,
    fresh: bool,
    comm: &dyn Communicator,
    stop: Option<Arc<AtomicBool>>,
) -> Result<bool> {
    if fresh {
        on_root(comm, "removing earlier training", || {
            remove(&cfg.run().train_root())
        })?;
    }
    let shards = crate::shard::ShardSet::open(&cfg.run().shards())?;
    let opts = TrainOptions {
        resume: Resume::Auto,
        threads: cfg.distributed.compute_threads,
        loader_threads: cfg.distributed.loader_threads,
        stop,
        device: cfg.distributed.device,
    };
    let jobs = cfg.train_jobs(&cfg.replicates(&source_names(cfg), None)?, &shards)?;
    let runs = crate::train::train_sources(&jobs, cfg.distributed.schedule, &shards, &opts, comm)?;
    // Every rank learns whether any group was preempted.
    crate::comm::any(comm, runs.iter().any(|r| r.summary.preempted))
}

/// Trains VisualCheXbert's teacher (an image classifier on the first rule-labeler source, or the first source with
/// report-derived labels) in `RUN_DIR/teacher/` and scores the training split; returns the predictions file, or
/// `None` when the training was stopped for preemption (on every rank alike).
fn teacher(
    cfg: &Config,
    comm: &dyn Communicator,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Option<PathBuf>> {
    let src = cfg
        .sources
        .iter()
        .find(|s| s.labeler == Some(LabelerKind::Chexpert))
        .or_else(|| cfg.sources.iter().find(|s| s.labeler == Some(LabelerKind::Chexbert)))
        .ok_or_else(|| {
            Error::Config(
                "VisualCheXbert needs bert.teacher (an image model's probabilities), or a chexpert/chexbert labeler \
                 source to train a teacher classifier on"
                    .into(),
            )
        })?;
    let mut t = cfg.clone();
    t.run_dir = cfg.run().teacher().path().to_path_buf();
    // One teacher, whatever the study's replicates.
    t.study = crate::config::StudyConfig::default();
    let id = ReplicateId::new(src.name.clone(), 1);
    t.sources = vec![SourceConfig {
        name: src.name.clone(),
        kind: SourceKind::External,
        labeler: None,
        path: Some(labels_path(cfg, &src.name)),
        uncertainty: src.uncertainty,
        base: None,
        rates: None,
    }];
    on_root(comm, "the teacher's shards", || {
        t.write_resolved()?;
        let dir = t.run().shards();
        crate::shard::write_shards(&t.shard_spec()?, &dir)?;
        Ok(())
    })?;
    let shards = crate::shard::ShardSet::open(&t.run().shards())?;
    let opts = TrainOptions {
        resume: Resume::Auto,
        threads: t.distributed.compute_threads,
        loader_threads: t.distributed.loader_threads,
        stop,
        device: t.distributed.device,
    };
    let jobs = t.train_jobs(std::slice::from_ref(&id), &shards)?;
    let runs = crate::train::train_sources(&jobs, t.distributed.schedule, &shards, &opts, comm)?;
    if crate::comm::any(comm, runs.iter().any(|r| r.summary.preempted))? {
        return Ok(None);
    }
    evaluate(
        &t,
        &t.run(),
        Split::Train,
        std::slice::from_ref(&id),
        true,
        comm,
    )?;
    // Absolute: `bert.teacher` is otherwise taken relative to the dataset root.
    let path = t.run().eval(&id.dir_name()).join("predictions_train.csv");
    std::path::absolute(&path)
        .map(Some)
        .map_err(|e| Error::io(&path, e))
}
