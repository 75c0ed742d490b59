//! Experiment configuration: one TOML file describes a whole study (dataset, label sources, model, optimiser,
//! schedule, distribution, evaluation, seed, run directory). `--set a.b=value` overrides any key. Unknown keys
//! are errors naming the key. The resolved config is written into the run directory so every run can be
//! reproduced and a resume can refuse a different config.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::comm::{Backend, ComputeDevice, DistributedConfig, LrScaling, SourceSchedule};
pub use crate::data::synth::ImageFormat;
pub use crate::data::{DatasetConfig, DatasetKind};
use crate::error::{Error, Result};
pub use crate::eval::EvaluationConfig;
use crate::io::{hex, write_atomic};
pub use crate::labelers::bert::BertSection;
pub use crate::labelers::{LabelerKind, SourceConfig, SourceKind};
pub use crate::learn::OptimizerConfig;
pub use crate::model::{Arch, ModelConfig, Precision};
use crate::observations::Observation;
pub use crate::observations::UncertaintyPolicy;
use crate::run_dir::{ReplicateId, RunDir};
pub use crate::shard::ShardConfig;
use crate::shard::{ShardSet, ShardSpec};
pub use crate::train::{LrDecay, ScheduleConfig};
use crate::train::{TrainJob, TrainSettings};

/// The embedded default config (`configs/demo.toml`), used by `chexlab demo`.
pub const DEMO_TOML: &str = include_str!("../configs/demo.toml");

/// A whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Master seed; every random choice derives from it.
    pub seed: u64,
    /// Where every stage writes its outputs.
    pub run_dir: PathBuf,
    /// The dataset and its layout.
    pub dataset: DatasetConfig,
    /// The label sources to compare; each trains `study.replicates` classifiers.
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    /// The study's design: replicates per label source.
    pub study: StudyConfig,
    /// A grid of corruption rates, expanded into `kind = "corrupted"` sources when the config is read (the
    /// resolved config lists the sources, not the grid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
    #[serde(default)]
    /// How shards are written.
    pub shard: ShardConfig,
    #[serde(default)]
    /// The classifier.
    pub model: ModelConfig,
    #[serde(default)]
    /// Adam's settings.
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    /// Epochs, batches, learning-rate schedule, validation and checkpoints.
    pub schedule: ScheduleConfig,
    #[serde(default)]
    /// Ranks, devices and collectives.
    pub distributed: DistributedConfig,
    #[serde(default)]
    /// Bootstrap intervals and the reference labels.
    pub evaluation: EvaluationConfig,
    #[serde(default)]
    /// The BERT labelers.
    pub bert: BertSection,
}

/// The study's design beyond its label sources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudyConfig {
    /// Classifiers trained per label source, on the same shards, differing only in their training seed
    /// (initialisation, order, augmentation). With more than one, every AUROC and difference is a mean over
    /// replicates and its interval resamples replicates as well as test images, so it includes training noise.
    pub replicates: u32,
}

impl Default for StudyConfig {
    fn default() -> Self {
        StudyConfig { replicates: 1 }
    }
}

/// `[sweep]`: corrupted copies of one base source at every combination of the listed rates — the dose–response's
/// points (an empty list stands for `[0]`) — or at the listed label F1 values against the base (`target_f1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// The source corrupted.
    pub base: String,
    /// Shares of positives made negative.
    #[serde(default)]
    pub missed: Vec<f64>,
    /// Shares of positives made uncertain.
    #[serde(default)]
    pub uncertain: Vec<f64>,
    /// Shares of the other cells made positive.
    #[serde(default)]
    pub false_positive: Vec<f64>,
    /// Label F1 values against the base, each within (0, 1), instead of rates: each is reached by missed
    /// positives alone, at `missed = 2(1 − F1)/(2 − F1)`, since a copy that only misses a share m of its base's
    /// positives has F1 (2 − 2m)/(2 − m) against it whatever an observation's prevalence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_f1: Vec<f64>,
    /// How the copies treat uncertain labels in the loss.
    #[serde(default)]
    pub uncertainty: UncertaintyPolicy,
}

impl Sweep {
    /// The grid's sources, named `<base>_m<missed>_u<uncertain>_f<false_positive>` in percent (`truth_m25_u0_f3`);
    /// the all-zero point is left out (it is the base).
    pub fn sources(&self) -> Result<Vec<SourceConfig>> {
        let list = |v: &[f64]| if v.is_empty() { vec![0.0] } else { v.to_vec() };
        let pct = |r: f64| {
            let p = r * 100.0;
            if (p - p.round()).abs() < 1e-9 {
                format!("{}", p.round() as i64)
            } else {
                format!("{p}").replace('.', "p")
            }
        };
        let source = |name: String, rates: crate::labelers::corrupt::Rates| SourceConfig {
            name,
            kind: SourceKind::Corrupted,
            labeler: None,
            path: None,
            uncertainty: self.uncertainty,
            base: Some(self.base.clone()),
            rates: Some(rates),
        };
        let mut out = Vec::new();
        if !self.target_f1.is_empty() {
            if !(self.missed.is_empty()
                && self.uncertain.is_empty()
                && self.false_positive.is_empty())
            {
                return Err(Error::Config(
                    "sweep: target_f1 sets the rates; leave missed, uncertain and false_positive out".into(),
                ));
            }
            for &t in &self.target_f1 {
                if !(t > 0.0 && t < 1.0) {
                    return Err(Error::Config(format!(
                        "sweep: target_f1 {t} must be within (0, 1) (1 is the base itself)"
                    )));
                }
                let rates = crate::labelers::corrupt::Rates {
                    missed: 2.0 * (1.0 - t) / (2.0 - t),
                    ..Default::default()
                };
                out.push(source(format!("{}_f1_{}", self.base, pct(t)), rates));
            }
            return Ok(out);
        }
        for &m in &list(&self.missed) {
            for &u in &list(&self.uncertain) {
                for &f in &list(&self.false_positive) {
                    if m == 0.0 && u == 0.0 && f == 0.0 {
                        continue;
                    }
                    let rates = crate::labelers::corrupt::Rates {
                        missed: m,
                        uncertain: u,
                        false_positive: f,
                    };
                    let name = format!("{}_m{}_u{}_f{}", self.base, pct(m), pct(u), pct(f));
                    rates.validate(&format!("sweep ({name})"))?;
                    out.push(source(name, rates));
                }
            }
        }
        if out.is_empty() {
            return Err(Error::Config(
                "sweep: no rate above zero, so no corrupted source".into(),
            ));
        }
        Ok(out)
    }
}

/// The most replicates per source a config may ask for (a typo guard: each is a full training run).
pub const MAX_REPLICATES: u32 = 1000;

/// Applies one `a.b.c=value` override to a TOML document. `value` is parsed as a TOML value when it is one
/// (`3`, `1e-4`, `true`, `[1, 2]`, `"x"`), else taken as a string. Array elements are addressed by index
/// (`sources.0.uncertainty`) or, for arrays of tables with a `name`, by name (`sources.rules.uncertainty`).
pub fn apply_override(doc: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--set '{assignment}': expected KEY=VALUE")))?;
    let key = key.trim();
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Config(format!(
            "--set '{assignment}': empty key segment"
        )));
    }
    if !doc.is_table() {
        return Err(Error::Config("a config document is a table".into()));
    }
    let mut node: &mut toml::Value = doc;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let so_far = parts[..i].join(".");
        node = match node {
            toml::Value::Table(t) => {
                if last {
                    t.insert(part.to_string(), value);
                    return Ok(());
                }
                t.entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(items) => {
                let idx = match part.parse::<usize>() {
                    Ok(i) => i,
                    Err(_) => items
                        .iter()
                        .position(|it| it.get("name").and_then(|n| n.as_str()) == Some(part))
                        .ok_or_else(|| {
                            Error::Config(format!("--set '{key}': no element named '{part}'"))
                        })?,
                };
                let len = items.len();
                let item = items.get_mut(idx).ok_or_else(|| {
                    Error::Config(format!(
                        "--set '{key}': index {idx} out of range (len {len})"
                    ))
                })?;
                if last {
                    *item = value;
                    return Ok(());
                }
                item
            }
            _ => {
                return Err(Error::Config(format!(
                    "--set '{key}': '{so_far}' is not a table"
                )));
            }
        };
    }
    unreachable!("loop returns on the last segment")
}

/// Where in the config text the value at `key` sits, as " (line L, column C)", or nothing when it cannot be told:
/// the document is deserialized again from its text, whose parser keeps spans, and the place is used when the
/// error comes from the same key.
fn place_in_file(text: &str, key: &str) -> String {
    let Ok(de) = toml::de::Deserializer::parse(text) else {
        return String::new();
    };
    let Err(e) = serde_path_to_error::deserialize::<_, Config>(de) else {
        return String::new();
    };
    if e.path().to_string() != key {
        return String::new();
    }
    match e.into_inner().span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" (line {line}, column {column})")
        }
        None => String::new(),
    }
}

impl Config {
    /// Parses a config from TOML text with overrides applied; `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Config> {
        // Display, not message(): it gives the line and column of a syntax error.
        let table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        let mut doc = toml::Value::Table(table);
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        // The key path of a type or range error ("model.arch: unknown variant ..."), whether the value came from
        // the file or from --set.
        let cfg: Config = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let from = if overrides
                .iter()
                .any(|o| o.split('=').next().map(str::trim) == Some(key.as_str()))
            {
                format!("--set {key}")
            } else {
                format!("{origin}: {key}{}", place_in_file(text, &key))
            };
            Error::Config(format!("{from}: {}", inner.message()))
        })?;
        let mut cfg = cfg;
        if let Some(sweep) = cfg.sweep.take() {
            cfg.sources.extend(sweep.sources()?);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a config file with overrides applied.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// The embedded demo config with overrides applied.
    pub fn demo(overrides: &[String]) -> Result<Config> {
        Config::from_toml_str(DEMO_TOML, "embedded demo config", overrides)
    }

    /// Checks cross-field constraints that types cannot express.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.sources.is_empty() {
            return bad("at least one [[sources]] entry is needed".into());
        }
        crate::data::synth::style::check_difficulty(
            "dataset.report_difficulty",
            self.dataset.report_difficulty,
        )?;
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let ok = !s.name.is_empty()
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return bad(format!(
                    "sources[{i}].name '{}' must match [a-z0-9_]+",
                    s.name
                ));
            }
            if !names.insert(s.name.as_str()) {
                return bad(format!("sources[{i}].name '{}' is used twice", s.name));
            }
            match s.kind {
                SourceKind::Labeler if s.labeler.is_none() => {
                    return bad(format!(
                        "sources.{}: kind = \"labeler\" needs labeler = chexpert|chexbert|visualchexbert",
                        s.name
                    ));
                }
                SourceKind::External if s.path.is_none() => {
                    return bad(format!(
                        "sources.{}: kind = \"external\" needs path = \"labels.csv\"",
                        s.name
                    ));
                }
                _ if s.kind != SourceKind::Corrupted && (s.base.is_some() || s.rates.is_some()) => {
                    return bad(format!(
                        "sources.{}: base and rates belong to kind = \"corrupted\" sources",
                        s.name
                    ));
                }
                SourceKind::Corrupted => {
                    self.corruption_of(s)?;
                    s.rates
                        .expect("checked")
                        .validate(&format!("sources.{}", s.name))?;
                }
                SourceKind::Truth if self.dataset.kind != DatasetKind::Synthetic => {
                    return bad(format!(
                        "sources.{}: kind = \"truth\" exists only for synthetic datasets",
                        s.name
                    ));
                }
                _ => {}
            }
        }
        if !(1..=MAX_REPLICATES).contains(&self.study.replicates) {
            return bad(format!(
                "study.replicates {} must be within 1..={MAX_REPLICATES}",
                self.study.replicates
            ));
        }
        if !(0.0..1.0).contains(&self.dataset.holdout_fraction) {
            return bad(format!(
                "dataset.holdout_fraction {} must be within [0, 1)",
                self.dataset.holdout_fraction
            ));
        }
        if self.dataset.test_labels.is_some() {
            if self.dataset.kind != DatasetKind::Chexpert {
                return bad(
                    "dataset.test_labels is CheXpert's test set: it needs kind = \"chexpert\""
                        .into(),
                );
            }
            if self.dataset.valid_as_test {
                return bad(
                    "dataset.test_labels and dataset.valid_as_test both make a test split: set valid_as_test = false"
                        .into(),
                );
            }
        }
        if self.dataset.valid_as_test && self.dataset.holdout_fraction == 0.0 {
            return bad(
                "dataset.valid_as_test leaves no validation split: set dataset.holdout_fraction too".into(),
            );
        }
        if !(16..=512).contains(&self.dataset.image_size) {
            return bad(format!(
                "dataset.image_size {} must be within 16..=512",
                self.dataset.image_size
            ));
        }
        if !(16..=1024).contains(&self.model.image_size) {
            return bad(format!(
                "model.image_size {} must be within 16..=1024",
                self.model.image_size
            ));
        }
        if !(self.shard.target_mb > 0.0 && self.shard.target_mb.is_finite()) {
            return bad(format!(
                "shard.target_mb {} must be positive",
                self.shard.target_mb
            ));
        }
        if !(64..=65_535).contains(&self.shard.max_image_side) {
            return bad(format!(
                "shard.max_image_side {} must be within 64..=65535",
                self.shard.max_image_side
            ));
        }
        if !matches!(self.model.in_channels, 1 | 3) {
            return bad(format!(
                "model.in_channels {} must be 1 or 3",
                self.model.in_channels
            ));
        }
        if self.model.observations.is_empty() {
            return bad("model.observations must name at least one observation".into());
        }
        let mut seen = std::collections::HashSet::new();
        for o in &self.model.observations {
            if !seen.insert(o) {
                return bad(format!(
                    "model.observations: '{}' is listed twice",
                    o.name()
                ));
            }
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return bad(format!(
                "optimizer.lr {} must be positive",
                self.optimizer.lr
            ));
        }
        if self.schedule.batch_size == 0 || self.schedule.grad_accum == 0 {
            return bad("schedule.batch_size and schedule.grad_accum must be at least 1".into());
        }
        // Zero steps would "train" nothing and still exit 0 with no best checkpoint.
        match self.schedule.max_steps {
            Some(0) => return bad("schedule.max_steps must be at least 1 (or left out)".into()),
            None if self.schedule.epochs == 0 => {
                return bad(
                    "schedule.epochs must be at least 1 (or set schedule.max_steps)".into(),
                );
            }
            _ => {}
        }
        if !(self.evaluation.ci > 0.0 && self.evaluation.ci < 1.0) {
            return bad(format!(
                "evaluation.ci {} must be within (0, 1)",
                self.evaluation.ci
            ));
        }
        Ok(())
    }

    /// The observations the model predicts, resolved.
    pub fn observations(&self) -> Vec<Observation> {
        self.model.observations.clone()
    }

    /// Every classifier of the study for the sources `names`, replicate by replicate (each source's first replicate,
    /// then each source's second, …): the order in which sequential training takes them, so that an interrupted
    /// study has every source's first replicates first. `only` keeps one replicate.
    pub fn replicates(&self, names: &[String], only: Option<u32>) -> Result<Vec<ReplicateId>> {
        let n = self.study.replicates;
        if let Some(k) = only
            && !(1..=n).contains(&k)
        {
            return Err(Error::Config(format!(
                "replicate {k}: the study has replicates 1..={n} (study.replicates = {n})"
            )));
        }
        Ok((1..=n)
            .filter(|k| only.is_none_or(|o| o == *k))
            .flat_map(|k| names.iter().map(move |s| ReplicateId::new(s.clone(), k)))
            .collect())
    }

    /// The settings for training replicate `id` on a shard set.
    pub fn train_settings(&self, id: &ReplicateId, shards: &ShardSet) -> Result<TrainSettings> {
        let cfg = self;
        let source = id.source.as_str();
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
            reference: crate::train::reference_source(
                cfg.evaluation.reference.as_deref(),
                source,
                shards,
            ),
            model: cfg.model.clone(),
            optimizer: cfg.optimizer.clone(),
            schedule: cfg.schedule.clone(),
            seed: crate::train::replicate_seed(cfg.seed, id.replicate),
            replicate: id.replicate,
            lr_scaling: cfg.distributed.lr_scaling,
            shards: shards.index.config_hash.clone(),
        })
    }

    /// One training job per replicate of `ids`: its settings on `shards` and its directory
    /// (`RUN_DIR/train/<run>`).
    pub fn train_jobs(&self, ids: &[ReplicateId], shards: &ShardSet) -> Result<Vec<TrainJob>> {
        let mut names: Vec<&str> = Vec::new();
        for id in ids {
            if !names.contains(&id.source.as_str()) {
                names.push(&id.source);
            }
        }
        // Sources each measured against their own labels give AUROCs that do not compare.
        if names.len() > 1
            && self.evaluation.reference.is_none()
            && !shards.index.sources.iter().any(|s| s == "truth")
        {
            return Err(Error::Config(format!(
                "{} label sources ({}) and no reference: each classifier would be scored against its own \
                 source's labels, and their AUROCs would not compare. Set [evaluation] reference to one label \
                 source for all of them — radiologist labels where you have them (the shards hold: {})",
                names.len(),
                names.join(", "),
                shards.index.sources.join(", ")
            )));
        }
        ids.iter()
            .map(|id| {
                Ok(TrainJob {
                    settings: self.train_settings(id, shards)?,
                    out: self.run().train(&id.dir_name()),
                })
            })
            .collect()
    }

    /// How the report describes this study (see [`crate::eval::report::Study`]).
    pub fn report_study(&self) -> crate::eval::report::Study {
        let d = &self.dataset;
        let obs = self.observations();
        let configuration = format!(
            "Dataset: {} at `{}`{}. Seed {}. Model: {} at {} px, {} input channel(s), predicting {}. Adam lr {:.1e}, \
             batch {} per rank, {} epoch(s).",
            serde_name(&d.kind),
            d.root.display(),
            if d.kind == DatasetKind::Synthetic {
                format!(
                    " ({} studies, report style {} at difficulty {})",
                    d.studies,
                    serde_name(&d.report_style),
                    d.report_difficulty
                )
            } else {
                String::new()
            },
            self.seed,
            self.model.arch,
            self.model.image_size,
            self.model.in_channels,
            obs.iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
            self.optimizer.lr,
            self.schedule.batch_size,
            self.schedule.epochs,
        );
        let sources = self
            .sources
            .iter()
            .map(|s| {
                format!(
                    "`{}` ({}{}, uncertain labels: {})",
                    s.name,
                    serde_name(&s.kind),
                    s.labeler
                        .map(|l| format!(" {}", serde_name(&l)))
                        .unwrap_or_default(),
                    serde_name(&s.uncertainty)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        crate::eval::report::Study {
            configuration,
            sources,
            observations: obs,
        }
    }

    /// What BERT labeler training reads of this config.
    pub fn bert_job(&self) -> crate::labelers::bert::pipeline::BertJob<'_> {
        crate::labelers::bert::pipeline::BertJob {
            bert: &self.bert,
            dataset: &self.dataset,
            optimizer: &self.optimizer,
            run_dir: &self.run_dir,
            seed: self.seed,
            device: self.distributed.device,
        }
    }

    /// The shard spec of this config: label sources come from the labeler outputs of the run directory
    /// (`RUN_DIR/labels/<name>.csv`), external CSVs, the dataset's own labels, or the synthetic world's image truth.
    pub fn shard_spec(&self) -> Result<ShardSpec> {
        use crate::shard::writer::{LabelInput, SplitPlan};
        let cfg = self;
        let mut sources = Vec::new();
        for s in &cfg.sources {
            let Some(path) = cfg.labels_csv(s) else {
                // Validation allows no other source without a file.
                sources.push((s.name.clone(), LabelInput::Dataset));
                continue;
            };
            if !path.is_file() {
                return Err(Error::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("labels of source '{}' not found (label first)", s.name),
                    ),
                ));
            }
            sources.push((s.name.clone(), LabelInput::Csv(path)));
        }
        Ok(ShardSpec {
            dataset: cfg.dataset.root.clone(),
            sources,
            target_mb: cfg.shard.target_mb,
            pre_resize: cfg.shard.pre_resize,
            max_image_side: cfg.shard.max_image_side,
            image_size: cfg.model.image_size,
            seed: cfg.seed,
            on_bad_record: cfg.dataset.on_bad_record,
            splits: SplitPlan {
                holdout_fraction: cfg.dataset.holdout_fraction,
                valid_as_test: cfg.dataset.valid_as_test,
                test_labels: cfg.dataset.test_labels.clone(),
            },
        })
    }

    /// The CSV that holds source `s`'s labels: the world's image truth, its file, or what the label stage writes
    /// (labelers, corrupted sources); `None` for the dataset's own labels read from the dataset itself.
    pub fn labels_csv(&self, s: &SourceConfig) -> Option<PathBuf> {
        match (s.kind, &s.path) {
            (SourceKind::Truth, _) => Some(self.dataset.root.join("truth/image_labels.csv")),
            (SourceKind::External | SourceKind::Dataset, p) => p.clone(),
            (SourceKind::Labeler | SourceKind::Corrupted, _) => Some(self.run().labels_of(&s.name)),
        }
    }

    /// The sources on the dose–response's curve of random label errors: every corrupted source and its base.
    pub fn dose_curve(&self) -> Vec<String> {
        let mut curve: Vec<String> = Vec::new();
        for s in self
            .sources
            .iter()
            .filter(|s| s.kind == SourceKind::Corrupted)
        {
            for name in [Some(&s.name), s.base.as_ref()].into_iter().flatten() {
                if !curve.contains(name) {
                    curve.push(name.clone());
                }
            }
        }
        curve
    }

    /// A corrupted source's base labels file and rates.
    pub fn corruption_of(
        &self,
        s: &SourceConfig,
    ) -> Result<(PathBuf, crate::labelers::corrupt::Rates)> {
        let missing = || {
            Error::Config(format!(
                "sources.{}: kind = \"corrupted\" needs base and rates",
                s.name
            ))
        };
        let base = s.base.as_deref().ok_or_else(missing)?;
        let rates = s.rates.ok_or_else(missing)?;
        let b = self
            .sources
            .iter()
            .find(|x| x.name == base)
            .ok_or_else(|| {
                Error::Config(format!(
                    "sources.{}.base '{base}' is not a source of the config",
                    s.name
                ))
            })?;
        let file = match b.kind {
            SourceKind::Corrupted => None,
            _ => self.labels_csv(b),
        }
        .ok_or_else(|| {
            Error::Config(format!(
                "sources.{}.base '{base}': a base is a source with a labels file (truth, a labeler, an external \
                 CSV or dataset labels with a path), not a corrupted one",
                s.name
            ))
        })?;
        Ok((file, rates))
    }

    /// The run directory.
    pub fn run(&self) -> RunDir {
        RunDir::new(&self.run_dir)
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises")
    }

    /// SHA-256 of the resolved TOML, hex.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.to_toml().as_bytes()))
    }

    /// Writes `config.resolved.toml` into the run directory (atomically) and returns its path.
    pub fn write_resolved(&self) -> Result<PathBuf> {
        let path = self.run().resolved_config();
        write_atomic(&path, self.to_toml().as_bytes())?;
        Ok(path)
    }
}

/// An enum's name as written in configs.
fn serde_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_validate() {
        let demo = Config::demo(&[]).unwrap();
        assert_eq!(demo.dataset.kind, DatasetKind::Synthetic);
        assert_eq!(demo.sources.len(), 6);
        assert_eq!(demo.study.replicates, 2);
        assert_eq!(demo.dose_curve(), ["truth_m25", "truth", "truth_m50"]);
        crate::model::DenseNetConfig::from_model_config(&demo.model).unwrap();
        for f in ["chexpert.toml", "mimic.toml", "synthetic-large.toml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(f);
            let cfg = Config::load(&p, &[]).unwrap_or_else(|e| panic!("{f}: {e}"));
            crate::model::DenseNetConfig::from_model_config(&cfg.model)
                .unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn overrides_reach_nested_keys_array_elements_and_parse_types() {
        let cfg = Config::demo(&[
            "optimizer.lr=3e-4".into(),
            "schedule.max_steps=10".into(),
            "sources.chexpert.uncertainty=zeros".into(),
            "sources.1.uncertainty=\"ones\"".into(),
            "model.block_config=[1, 1]".into(),
            "run_dir=/tmp/x y".into(),
        ])
        .unwrap();
        assert_eq!(cfg.optimizer.lr, 3e-4);
        assert_eq!(cfg.schedule.max_steps, Some(10));
        assert_eq!(cfg.sources[0].uncertainty, UncertaintyPolicy::Zeros);
        assert_eq!(cfg.sources[1].uncertainty, UncertaintyPolicy::Ones);
        assert_eq!(cfg.model.block_config, vec![1, 1]);
        assert_eq!(cfg.run_dir, PathBuf::from("/tmp/x y"));
    }

    #[test]
    fn a_type_error_in_the_file_names_key_line_and_column() {
        let text = DEMO_TOML.replacen("[optimizer]", "[optimizer]\nweight_decay = \"eight\"", 1);
        let line = text
            .lines()
            .position(|l| l.starts_with("weight_decay = \"eight\""))
            .unwrap()
            + 1;
        let err = Config::from_toml_str(&text, "run.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "run.toml: optimizer.weight_decay (line {line}, column 16)"
            )),
            "{err}"
        );
        // The same error from --set is blamed on the override, with no line.
        let err = Config::demo(&["optimizer.weight_decay=\"eight\"".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--set optimizer.weight_decay: "), "{err}");
    }

    #[test]
    fn a_schedule_of_zero_steps_is_refused() {
        for (set, key) in [
            (vec!["schedule.epochs=0"], "schedule.epochs"),
            (vec!["schedule.max_steps=0"], "schedule.max_steps"),
        ] {
            let set: Vec<String> = set.into_iter().map(String::from).collect();
            let err = Config::demo(&set).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("at least 1"), "{err}");
        }
        // Steps set: zero epochs do not matter.
        Config::demo(&["schedule.epochs=0".into(), "schedule.max_steps=5".into()]).unwrap();
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = Config::demo(&["optimizer.learning_rate=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("learning_rate"), "{err}");
        let err = Config::from_toml_str(&format!("{DEMO_TOML}\nbogus = 1\n"), "x.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus") && err.contains("x.toml"), "{err}");
        let err = Config::demo(&["sources.nope.uncertainty=ones".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no element named 'nope'"), "{err}");
        let err = Config::demo(&["seed.x=1".into()]).unwrap_err().to_string();
        assert!(err.contains("'seed' is not a table"), "{err}");
        let err = Config::demo(&["noequals".into()]).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn replicates_come_replicate_by_replicate_with_seeds_of_their_own() {
        let cfg = Config::demo(&["study.replicates=3".into()]).unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        let dirs: Vec<String> = cfg
            .replicates(&names, None)
            .unwrap()
            .iter()
            .map(ReplicateId::dir_name)
            .collect();
        assert_eq!(dirs, ["a", "b", "a.r2", "b.r2", "a.r3", "b.r3"]);
        let only: Vec<String> = cfg
            .replicates(&names, Some(2))
            .unwrap()
            .iter()
            .map(ReplicateId::dir_name)
            .collect();
        assert_eq!(only, ["a.r2", "b.r2"]);
        let err = cfg.replicates(&names, Some(4)).unwrap_err().to_string();
        assert!(err.contains("replicates 1..=3"), "{err}");
        // Replicate 1 trains with the study's seed (single-run studies are unchanged); the others with seeds of
        // their own, the same on every call.
        let seeds: Vec<u64> = (1..=3)
            .map(|k| crate::train::replicate_seed(cfg.seed, k))
            .collect();
        assert_eq!(seeds[0], cfg.seed);
        assert!(seeds[1] != seeds[0] && seeds[2] != seeds[1] && seeds[2] != seeds[0]);
        assert_eq!(crate::train::replicate_seed(cfg.seed, 2), seeds[1]);
        assert_ne!(crate::train::replicate_seed(cfg.seed + 1, 2), seeds[1]);
        for bad in ["study.replicates=0", "study.replicates=1001"] {
            let err = Config::demo(&[bad.into()]).unwrap_err().to_string();
            assert!(err.contains("study.replicates"), "{err}");
        }
        let err = Config::demo(&["study.repeats=2".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("repeats"), "{err}");
    }

    #[test]
    fn corrupted_sources_name_a_base_with_a_file_and_valid_rates() {
        let with =
            |extra: &str| Config::from_toml_str(&format!("{DEMO_TOML}\n{extra}"), "c.toml", &[]);
        let ok = with(
            "[[sources]]\nname = \"noisy\"\nkind = \"corrupted\"\nbase = \"truth\"\nrates = { missed = 0.2 }\n",
        )
        .unwrap();
        assert_eq!(
            ok.dose_curve(),
            ["truth_m25", "truth", "truth_m50", "noisy"]
        );
        let noisy = ok.sources.iter().find(|s| s.name == "noisy").unwrap();
        let (file, rates) = ok.corruption_of(noisy).unwrap();
        assert!(file.ends_with("truth/image_labels.csv"), "{file:?}");
        assert_eq!((rates.missed, rates.false_positive), (0.2, 0.0));
        for (extra, needle) in [
            (
                "base = \"nope\"\nrates = { missed = 0.2 }",
                "'nope' is not a source",
            ),
            ("base = \"truth\"", "needs base and rates"),
            (
                "base = \"truth\"\nrates = { missed = 1.2 }",
                "rates.missed = 1.2",
            ),
            ("base = \"truth\"\nrates = { lost = 0.1 }", "lost"),
        ] {
            let e = with(&format!(
                "[[sources]]\nname = \"noisy\"\nkind = \"corrupted\"\n{extra}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let e = with(
            "[[sources]]\nname = \"a\"\nkind = \"corrupted\"\nbase = \"truth\"\nrates = { missed = 0.1 }\n\
             [[sources]]\nname = \"b\"\nkind = \"corrupted\"\nbase = \"a\"\nrates = { missed = 0.1 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a corrupted one"), "{e}");
        let e = Config::demo(&["sources.truth.base=\"chexpert\"".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("belong to kind = \"corrupted\""), "{e}");
    }

    #[test]
    fn a_sweep_expands_into_corrupted_sources_the_resolved_config_lists() {
        let cfg = Config::from_toml_str(
            &format!(
                "{DEMO_TOML}\n[sweep]\nbase = \"truth\"\nmissed = [0.25, 0.5]\nfalse_positive = [0, 0.025]\n"
            ),
            "c.toml",
            &[],
        )
        .unwrap();
        let names: Vec<&str> = cfg
            .sources
            .iter()
            .filter(|s| s.kind == SourceKind::Corrupted && s.name.contains("_u"))
            .map(|s| s.name.as_str())
            .collect();
        assert!(
            names.contains(&"truth_m25_u0_f0") && names.contains(&"truth_m50_u0_f2p5"),
            "{names:?}"
        );
        assert_eq!(
            names
                .iter()
                .filter(|n| n.ends_with("_u0_f0") || n.contains("_u0_f"))
                .count(),
            names.len()
        );
        assert!(cfg.sweep.is_none());
        // The resolved config reads back as itself (the grid is not expanded twice).
        let again = Config::from_toml_str(&cfg.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(again, cfg);
        let e = Config::from_toml_str(
            &format!("{DEMO_TOML}\n[sweep]\nbase = \"truth\"\nmissed = [1.5]\n"),
            "c.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sweep (truth_m150_u0_f0).rates.missed"), "{e}");
        let e = Config::from_toml_str(
            &format!("{DEMO_TOML}\n[sweep]\nbase = \"truth\"\n"),
            "c.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no rate above zero"), "{e}");
    }

    #[test]
    fn a_sweep_of_target_f1_values_misses_the_share_of_positives_that_gives_each() {
        let cfg = Config::from_toml_str(
            &format!("{DEMO_TOML}\n[sweep]\nbase = \"truth\"\ntarget_f1 = [0.9, 0.75]\n"),
            "c.toml",
            &[],
        )
        .unwrap();
        let swept: Vec<_> = cfg
            .sources
            .iter()
            .filter(|s| s.name.starts_with("truth_f1_"))
            .collect();
        assert_eq!(
            swept.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["truth_f1_90", "truth_f1_75"]
        );
        for (s, t) in swept.iter().zip([0.9, 0.75]) {
            let m = s.rates.unwrap().missed;
            // A copy missing a share m of n positives keeps (1 − m)n of them and adds none: F1 = 2(1 − m)/(2 − m).
            assert!((2.0 * (1.0 - m) / (2.0 - m) - t).abs() < 1e-12, "{m}");
            assert_eq!(s.rates.unwrap().false_positive, 0.0);
        }
        for (extra, needle) in [
            ("target_f1 = [1.0]", "within (0, 1)"),
            (
                "target_f1 = [0.8]\nmissed = [0.1]",
                "target_f1 sets the rates",
            ),
        ] {
            let e = Config::from_toml_str(
                &format!("{DEMO_TOML}\n[sweep]\nbase = \"truth\"\n{extra}\n"),
                "c.toml",
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn validation_catches_inconsistent_values() {
        for (set, needle) in [
            ("sources.0.name=Bad Name", "must match"),
            ("sources.1.name=chexpert", "used twice"),
            ("model.arch=resnet50", "model.arch"),
            (
                "dataset.report_difficulty=2.5",
                "dataset.report_difficulty 2.5",
            ),
            ("dataset.report_style=\"florid\"", "report_style"),
            (
                "model.observations=[\"Lung\"]",
                "unknown observation 'Lung'",
            ),
            ("optimizer.lr=0", "optimizer.lr"),
            ("dataset.image_size=8", "dataset.image_size"),
            ("dataset.kind=chexpert", "only for synthetic"),
            ("evaluation.ci=1.5", "evaluation.ci"),
            ("shard.max_image_side=10", "shard.max_image_side"),
            (
                "dataset.test_labels=groundtruth.csv",
                "it needs kind = \"chexpert\"",
            ),
            ("shard.target_mb=0", "shard.target_mb"),
        ] {
            let err = Config::demo(&[set.into()]).unwrap_err().to_string();
            assert!(err.contains(needle), "{set}: {err}");
        }
    }

    #[test]
    fn resolved_config_round_trips_and_hash_tracks_content() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let cfg = Config::demo(&[format!("run_dir=\"{}\"", run_dir.display())]).unwrap();
        let path = cfg.write_resolved().unwrap();
        let back = Config::load(&path, &[]).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.hash(), cfg.hash());
        let other = Config::demo(&["seed=8".into()]).unwrap();
        assert_ne!(other.hash(), Config::demo(&[]).unwrap().hash());
    }
}
