//! Experiment configuration: one TOML file describes a whole study (dataset, label sources, model, optimiser,
//! schedule, distribution, evaluation, seed, run directory). `--set a.b=value` overrides any key. Unknown keys
//! are errors naming the key. The resolved config is written into the run directory so every run can be
//! reproduced and a resume can refuse a different config.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::OnBadRecord;
use crate::data::report::SectionChoice;
use crate::error::{Error, Result};
use crate::io::{hex, write_atomic};
use crate::model::ModelConfig;
pub use crate::model::Precision;
use crate::observations::Observation;
use crate::shard::ShardSpec;

/// The embedded default config (`configs/demo.toml`), used by `chexlab demo`.
pub const DEMO_TOML: &str = include_str!("../configs/demo.toml");

/// File name of the resolved config in a run directory.
pub const RESOLVED_NAME: &str = "config.resolved.toml";

/// A whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Master seed; every random choice derives from it.
    pub seed: u64,
    /// Where every stage writes its outputs.
    pub run_dir: PathBuf,
    pub dataset: DatasetConfig,
    /// The label sources to compare; each trains one classifier.
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub shard: ShardConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub distributed: DistributedConfig,
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    #[serde(default)]
    pub bert: BertSection,
}

/// BERT labelers (CheXbert, VisualCheXbert): encoder, vocabulary and training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BertSection {
    /// A tokenizer (`tokenizer.json` or `vocab.txt`); none: a WordPiece vocabulary of `vocab_size` is trained on
    /// the training reports.
    pub tokenizer: Option<PathBuf>,
    pub vocab_size: usize,
    /// Encoder weights to start from (Hugging Face BERT checkpoint); its `config.json` beside it sets the sizes.
    pub pretrained: Option<PathBuf>,
    /// Encoder sizes when training from scratch.
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Maximum tokens per report, with `[CLS]` and `[SEP]` (longer reports are cut and counted).
    pub max_len: usize,
    pub dropout: f64,
    /// Adam learning rate (CheXbert used 2e-5 from a pretrained encoder; a small encoder from scratch needs more).
    pub lr: f64,
    pub batch_size: usize,
    /// Epochs on the rule labeler's labels (CheXbert) or the teacher's probabilities (VisualCheXbert).
    pub epochs: usize,
    /// CheXbert: epochs of fine-tuning on the expert labels, at `finetune_lr`.
    pub finetune_epochs: usize,
    pub finetune_lr: f64,
    /// CheXbert: how many training studies have expert report labels (drawn by seed).
    pub expert_studies: usize,
    /// Expert report labels (per study); relative paths are under the dataset root.
    pub expert_labels: PathBuf,
    /// VisualCheXbert: start from a trained CheXbert labeler directory (its tokenizer and encoder), as the
    /// original VisualCheXbert started from CheXbert. Relative paths are under `run_dir`.
    pub init_from: Option<PathBuf>,
    /// VisualCheXbert: per-study probabilities of an image model to regress (`study_id` + observation columns
    /// with values in [0, 1]; observations without a column are left out of the loss).
    pub teacher: Option<PathBuf>,
    /// VisualCheXbert: image labels of the validation studies, to fit the per-observation logistic regressions.
    pub dev_labels: PathBuf,
    /// Reports per inference forward pass.
    pub infer_batch: usize,
}

impl Default for BertSection {
    fn default() -> Self {
        BertSection {
            tokenizer: None,
            vocab_size: 3000,
            pretrained: None,
            hidden: 128,
            layers: 2,
            heads: 4,
            intermediate: 512,
            max_len: 128,
            dropout: 0.1,
            lr: 5e-4,
            batch_size: 32,
            epochs: 3,
            finetune_epochs: 6,
            finetune_lr: 2e-4,
            expert_studies: 300,
            expert_labels: PathBuf::from("truth/report_labels.csv"),
            init_from: None,
            teacher: None,
            dev_labels: PathBuf::from("truth/image_labels.csv"),
            infer_batch: 32,
        }
    }
}

/// Which dataset layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// chexlab's synthetic world, generated into `root` (MIMIC-CXR-JPG layout plus truth files).
    Synthetic,
    /// CheXpert (`root` holds `train.csv`, `valid.csv`).
    Chexpert,
    /// MIMIC-CXR-JPG.
    Mimic,
}

/// Image encoding of the synthetic world.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Lossless PNG.
    #[default]
    Png,
    /// JPEG at quality 92.
    Jpeg,
    /// Raw 8-bit grey pixels.
    Raw,
}

/// Dataset section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub kind: DatasetKind,
    /// Dataset directory (relative paths are relative to the working directory).
    pub root: PathBuf,
    /// MIMIC only: where the report `.txt` files live, when not under `root`.
    #[serde(default)]
    pub reports_root: Option<PathBuf>,
    /// Which report section the labelers read.
    #[serde(default)]
    pub sections: SectionChoice,
    #[serde(default)]
    pub on_bad_record: OnBadRecord,
    /// Synthetic only: number of studies.
    #[serde(default = "defaults::studies")]
    pub studies: u64,
    /// Synthetic only: rendered image size in pixels.
    #[serde(default = "defaults::synth_image_size")]
    pub image_size: u32,
    /// Synthetic only: image encoding.
    #[serde(default)]
    pub format: ImageFormat,
    /// Fraction of the training patients (drawn by `seed`) held out as the validation split.
    #[serde(default)]
    pub holdout_fraction: f64,
    /// The dataset's validation split serves as the test split (CheXpert without `test.csv`; set
    /// `holdout_fraction` for a validation split).
    #[serde(default)]
    pub valid_as_test: bool,
}

/// What produces a label source's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A built-in labeler run on the reports (`labeler` names it).
    Labeler,
    /// A labeled CSV produced elsewhere (`path`).
    External,
    /// The dataset's own label columns (CheXpert CSV, MIMIC `-chexpert`/`-negbio` via `path`).
    Dataset,
    /// The synthetic world's image truth (an oracle source).
    Truth,
}

/// Built-in labelers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelerKind {
    /// The CheXpert-style rule labeler.
    Chexpert,
    /// CheXbert (BERT, four classes per observation).
    Chexbert,
    /// VisualCheXbert (BERT trained toward image labels).
    Visualchexbert,
}

/// How uncertain (`-1`) labels enter the loss.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UncertaintyPolicy {
    /// Masked out of the loss.
    #[default]
    Ignore,
    /// Treated as negative.
    Zeros,
    /// Treated as positive.
    Ones,
}

/// One label source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Identifier used in column names, directories and reports (`[a-z0-9_]+`).
    pub name: String,
    pub kind: SourceKind,
    #[serde(default)]
    pub labeler: Option<LabelerKind>,
    /// CSV for `external`/`dataset` sources, or a trained model directory for BERT labelers.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub uncertainty: UncertaintyPolicy,
}

/// Shard section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardConfig {
    /// Target shard size in MB.
    pub target_mb: f64,
    /// Store pre-resized pixels (true) or the original encoded bytes (false).
    pub pre_resize: bool,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            target_mb: 256.0,
            pre_resize: true,
        }
    }
}

/// Optimiser section (Adam).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (none when absent).
    pub grad_clip: Option<f64>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: None,
        }
    }
}

/// Learning-rate decay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    #[default]
    Constant,
    Cosine,
    Step,
}

/// Schedule section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub epochs: u32,
    /// Stop after this many optimizer steps, if set (overrides `epochs`).
    pub max_steps: Option<u64>,
    /// Per-rank batch size.
    pub batch_size: usize,
    pub grad_accum: usize,
    pub decay: LrDecay,
    pub warmup_steps: u64,
    /// Step decay only: multiply by `step_gamma` every `step_every` steps.
    pub step_every: u64,
    pub step_gamma: f64,
    /// Validate every N steps (0: once per epoch).
    pub valid_every: u64,
    /// Keep the last K checkpoints (plus the best).
    pub keep_last: usize,
    /// Stop when the valid metric has not improved for this many validations.
    pub early_stop_patience: Option<u32>,
    /// Write a training row to metrics.csv every N optimizer steps.
    pub log_every: u64,
    /// Also checkpoint every N steps between validations (0: only at validations and at the end).
    pub checkpoint_every: u64,
    /// Training-time augmentation (`[schedule.augment]`; off by default).
    pub augment: crate::data::augment::AugmentConfig,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            epochs: 3,
            max_steps: None,
            batch_size: 16,
            grad_accum: 1,
            decay: LrDecay::Constant,
            warmup_steps: 0,
            step_every: 1000,
            step_gamma: 0.1,
            valid_every: 0,
            keep_last: 2,
            early_stop_patience: None,
            log_every: 10,
            checkpoint_every: 0,
            augment: crate::data::augment::AugmentConfig::default(),
        }
    }
}

/// Communication backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// MPI when launched under mpirun/srun, NCCL on GPUs when available, else single process.
    #[default]
    Auto,
    Single,
    Mpi,
    Nccl,
}

/// Where a rank computes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDevice {
    /// Burn's Flex CPU backend.
    #[default]
    Cpu,
    /// Burn's CUDA backend on the rank's GPU (a chexlab built with the `cuda` feature).
    Cuda,
}

/// How label sources share the ranks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceSchedule {
    /// Concurrent groups when the world size divides, else sequential.
    #[default]
    Auto,
    Concurrent,
    Sequential,
}

/// Learning-rate scaling with the global batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScaling {
    /// `lr` is used as is, whatever the world size.
    #[default]
    None,
    /// `lr × (global batch / batch_size)`, the global batch being `batch_size × ranks × grad_accum`.
    Linear,
}

/// Distributed section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    pub backend: Backend,
    /// `cpu` or `cuda` (one GPU per rank: the only visible one, else the local rank's).
    pub device: ComputeDevice,
    pub schedule: SourceSchedule,
    pub lr_scaling: LrScaling,
    /// Loader threads per rank.
    pub loader_threads: usize,
    /// Tensor compute threads per rank. 1 (the default) makes training bit-for-bit reproducible; on CPU, one
    /// rank per core is the faster way to use cores anyway.
    pub compute_threads: usize,
    /// Seconds a collective may take before the job is aborted.
    pub collective_timeout_s: u64,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig {
            backend: Backend::Auto,
            device: ComputeDevice::Cpu,
            schedule: SourceSchedule::Auto,
            lr_scaling: LrScaling::None,
            loader_threads: 2,
            compute_threads: 1,
            collective_timeout_s: 600,
        }
    }
}

/// Evaluation section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationConfig {
    /// Bootstrap resamples for confidence intervals.
    pub bootstrap: u32,
    /// Confidence level.
    pub ci: f64,
    /// Label source that validation and test AUROC are measured against (default: `truth` when the shards hold
    /// it, else each classifier's own source).
    pub reference: Option<String>,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            bootstrap: 1000,
            ci: 0.95,
            reference: None,
        }
    }
}

mod defaults {
    pub fn studies() -> u64 {
        3000
    }
    pub fn synth_image_size() -> u32 {
        64
    }
}

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
                format!("{origin}: {key}")
            };
            Error::Config(format!("{from}: {}", inner.message()))
        })?;
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
                SourceKind::Truth if self.dataset.kind != DatasetKind::Synthetic => {
                    return bad(format!(
                        "sources.{}: kind = \"truth\" exists only for synthetic datasets",
                        s.name
                    ));
                }
                _ => {}
            }
        }
        if !(0.0..1.0).contains(&self.dataset.holdout_fraction) {
            return bad(format!(
                "dataset.holdout_fraction {} must be within [0, 1)",
                self.dataset.holdout_fraction
            ));
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

    /// The shard spec of this config: label sources come from the labeler outputs of the run directory
    /// (`RUN_DIR/labels/<name>.csv`), external CSVs, the dataset's own labels, or the synthetic world's image truth.
    pub fn shard_spec(&self) -> Result<ShardSpec> {
        use crate::shard::writer::{LabelInput, SplitPlan};
        let cfg = self;
        let mut sources = Vec::new();
        for s in &cfg.sources {
            let path = match (s.kind, &s.path) {
                (SourceKind::Dataset, None) => {
                    sources.push((s.name.clone(), LabelInput::Dataset));
                    continue;
                }
                (SourceKind::Truth, _) => cfg.dataset.root.join("truth/image_labels.csv"),
                (SourceKind::External | SourceKind::Dataset, Some(p)) => p.clone(),
                (SourceKind::External, None) => {
                    return Err(Error::Config(format!(
                        "sources.{}: a path to its labeled CSV is needed",
                        s.name
                    )));
                }
                (SourceKind::Labeler, _) => {
                    cfg.run_dir.join("labels").join(format!("{}.csv", s.name))
                }
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
            image_size: cfg.model.image_size,
            seed: cfg.seed,
            on_bad_record: cfg.dataset.on_bad_record,
            splits: SplitPlan {
                holdout_fraction: cfg.dataset.holdout_fraction,
                valid_as_test: cfg.dataset.valid_as_test,
            },
        })
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
        let path = self.run_dir.join(RESOLVED_NAME);
        write_atomic(&path, self.to_toml().as_bytes())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_validate() {
        let demo = Config::demo(&[]).unwrap();
        assert_eq!(demo.dataset.kind, DatasetKind::Synthetic);
        assert_eq!(demo.sources.len(), 4);
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
    fn validation_catches_inconsistent_values() {
        for (set, needle) in [
            ("sources.0.name=Bad Name", "must match"),
            ("sources.1.name=chexpert", "used twice"),
            ("model.arch=resnet50", "model.arch"),
            (
                "model.observations=[\"Lung\"]",
                "unknown observation 'Lung'",
            ),
            ("optimizer.lr=0", "optimizer.lr"),
            ("dataset.image_size=8", "dataset.image_size"),
            ("dataset.kind=chexpert", "only for synthetic"),
            ("evaluation.ci=1.5", "evaluation.ci"),
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
