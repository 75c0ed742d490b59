//! The BERT report labelers: CheXbert (4-class heads: blank, positive, negative, uncertain) and VisualCheXbert
//! (what the *image* shows, from the report: 14 sigmoid outputs turned into 0/1 by per-observation logistic
//! regressions over the 14 probabilities).
//!
//! A trained labeler is a directory: `labeler.json` ([`LabelerMeta`]: head kind, encoder sizes, sequence length,
//! VisualCheXbert's calibration), `tokenizer.json` and `model.bin` (the Burn record). A published CheXbert /
//! VisualCheXbert `.pth` loads too ([`BertReportLabeler::load`] with a tokenizer).

pub(crate) mod config;
pub mod import;
pub mod model;
pub mod pipeline;
pub mod tokenizer;
pub mod train;
pub mod vocab;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::Module;
use burn::tensor::Device;
use burn::tensor::activation::sigmoid;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::observations::{Label, LabelRow, N_OBS};
pub use config::BertSection;
use model::{BertConfig, BertLabeler, HeadKind};
use tokenizer::{Encoded, ReportTokenizer};

/// Per-observation logistic regressions over VisualCheXbert's 14 probabilities: observation `i` is positive when
/// `σ(weights[i] · p + bias[i]) ≥ 0.5`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Per observation, the weights over the 14 probabilities.
    pub weights: Vec<[f64; N_OBS]>,
    /// Per observation, the intercept.
    pub bias: Vec<f64>,
}

impl Calibration {
    /// The identity rule: positive when the observation's own probability is at least 0.5.
    pub fn identity() -> Self {
        let mut weights = vec![[0.0; N_OBS]; N_OBS];
        for (i, w) in weights.iter_mut().enumerate() {
            w[i] = 1.0;
        }
        Calibration {
            weights,
            bias: vec![-0.5; N_OBS],
        }
    }

    /// 0/1 decision per head from the 14 head probabilities (both in head order).
    pub fn decide(&self, probs: &[f32]) -> [bool; N_OBS] {
        std::array::from_fn(|i| {
            let z: f64 = self.bias[i]
                + self.weights[i]
                    .iter()
                    .zip(probs)
                    .map(|(w, &p)| w * f64::from(p))
                    .sum::<f64>();
            z >= 0.0
        })
    }
}

/// `labeler.json`: what a labeler directory holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelerMeta {
    /// Head set.
    pub kind: HeadKind,
    /// Encoder sizes.
    pub bert: BertConfig,
    /// Maximum tokens per report (with `[CLS]` and `[SEP]`).
    pub max_len: usize,
    /// Dropout on the `[CLS]` vector during training.
    pub dropout: f64,
    /// VisualCheXbert's decision rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// A BERT labeler ready to label reports.
pub struct BertReportLabeler {
    /// What the labeler is.
    pub meta: LabelerMeta,
    /// Its vocabulary.
    pub tokenizer: ReportTokenizer,
    /// Its network.
    pub model: BertLabeler,
    device: Device,
    /// Reports per forward pass.
    pub batch_size: usize,
    truncated: AtomicU64,
}

/// File names inside a labeler directory.
pub const META_FILE: &str = "labeler.json";
/// File of a labeler directory's tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File of a labeler directory's model record.
pub const MODEL_FILE: &str = "model.bin";

impl BertReportLabeler {
    /// Wraps a model (moved to the inference device, dropout off).
    pub fn new(meta: LabelerMeta, tokenizer: ReportTokenizer, model: BertLabeler) -> Self {
        let device = Device::flex();
        let tokenizer = tokenizer.with_max_len(meta.max_len.min(meta.bert.max_position_embeddings));
        BertReportLabeler {
            meta,
            tokenizer,
            model: model.valid().to_device(&device),
            device,
            batch_size: 32,
            truncated: AtomicU64::new(0),
        }
    }

    /// Moves the model to `device` (a rank's GPU, see [`crate::comm::compute_device`]) for inference.
    pub fn on_device(self, device: Device) -> Self {
        BertReportLabeler {
            model: self.model.to_device(&device),
            device,
            ..self
        }
    }

    /// Loads a labeler directory written by [`BertReportLabeler::save`], or a published CheXbert / VisualCheXbert
    /// checkpoint file (`.pth`/`.bin`/`.safetensors`) with `tokenizer` (a `vocab.txt` or `tokenizer.json`; the
    /// checkpoint's encoder sizes are read off its tensors, attention heads from a `config.json` beside it or 64
    /// values per head).
    pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<Self> {
        let device = Device::flex();
        if path.is_dir() {
            let (meta, tok, bytes) = read_dir(path, tokenizer)?;
            let model = BertLabeler::new(meta.bert.init(&device), meta.kind, meta.dropout, &device);
            let model = load_record(model, bytes, &path.join(MODEL_FILE))?;
            return Ok(Self::new(meta, tok, model));
        }
        let tok_path = tokenizer.ok_or_else(|| {
            Error::Config(format!(
                "{}: a checkpoint file needs --tokenizer (its vocab.txt or tokenizer.json)",
                path.display()
            ))
        })?;
        let tok = ReportTokenizer::from_path(tok_path)?;
        let checkpoint = import::Checkpoint::read(path)?;
        let bert = checkpoint.config(None)?;
        let kind = checkpoint.head_kind()?;
        let model = BertLabeler::new(bert.init(&device), kind, 0.1, &device);
        let (model, loaded) = checkpoint.load_labeler(model)?;
        tracing::info!("loaded {loaded} tensors ({kind:?}) from {}", path.display());
        let meta = LabelerMeta {
            kind,
            max_len: tokenizer::MAX_LEN.min(bert.max_position_embeddings),
            bert,
            dropout: 0.1,
            calibration: (kind == HeadKind::Visualchexbert).then(Calibration::identity),
        };
        Ok(Self::new(meta, tok, model))
    }

    /// Writes the labeler directory (each file atomically; `labeler.json` last).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        self.tokenizer.save(&dir.join(TOKENIZER_FILE))?;
        let bytes = self
            .model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| Error::model("serialising the labeler model", e))?;
        crate::io::write_atomic(dir.join(MODEL_FILE), &bytes)?;
        let meta = serde_json::to_vec_pretty(&self.meta).expect("labeler meta serialises");
        crate::io::write_atomic(dir.join(META_FILE), &meta)
    }

    /// Reports cut to the maximum length so far.
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Raw head outputs for encoded reports, one row per report: CheXbert's 54 logits, or VisualCheXbert's 14
    /// probabilities. Reports are sorted by length and run in batches of similar length, in parallel.
    pub fn outputs(&self, encoded: &[Encoded]) -> Vec<Vec<f32>> {
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].ids.len());
        let batches: Vec<&[usize]> = order.chunks(self.batch_size.max(1)).collect();
        let done: Vec<Vec<Vec<f32>>> = batches
            .par_iter()
            .map(|idx| {
                let rows: Vec<&Encoded> = idx.iter().map(|&i| &encoded[i]).collect();
                self.forward_rows(&rows)
            })
            .collect();
        let mut out = vec![Vec::new(); encoded.len()];
        for (idx, rows) in batches.iter().zip(done) {
            for (&i, r) in idx.iter().zip(rows) {
                out[i] = r;
            }
        }
        out
    }

    fn forward_rows(&self, rows: &[&Encoded]) -> Vec<Vec<f32>> {
        let mut logits = self
            .model
            .forward_padded(self.tokenizer.pad(rows), &self.device);
        if self.meta.kind == HeadKind::Visualchexbert {
            logits = sigmoid(logits);
        }
        let width = logits.dims()[1];
        let v: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 logits");
        v.chunks(width).map(<[f32]>::to_vec).collect()
    }

    /// Turns one report's head outputs into labels.
    pub fn decode(&self, out: &[f32]) -> LabelRow {
        let obs = self.meta.kind.observations();
        let mut row = LabelRow::default();
        match self.meta.kind {
            HeadKind::Chexbert => {
                let mut at = 0;
                for (o, n) in obs.iter().zip(self.meta.kind.head_sizes()) {
                    let head = &out[at..at + n];
                    at += n;
                    let class = (0..n)
                        .max_by(|&a, &b| head[a].total_cmp(&head[b]))
                        .unwrap_or(0);
                    row.set(*o, class_label(class));
                }
            }
            HeadKind::Visualchexbert => {
                let cal = self
                    .meta
                    .calibration
                    .clone()
                    .unwrap_or_else(Calibration::identity);
                for (o, pos) in obs.iter().zip(cal.decide(out)) {
                    row.set(
                        *o,
                        if pos {
                            Label::Positive
                        } else {
                            Label::Negative
                        },
                    );
                }
            }
        }
        row
    }

    /// Labels a batch of reports.
    pub fn label_texts(&self, reports: &[&str]) -> Result<Vec<LabelRow>> {
        let encoded: Vec<Encoded> = reports
            .par_iter()
            .map(|r| self.tokenizer.encode(r))
            .collect::<Result<_>>()?;
        let cut = encoded.iter().filter(|e| e.truncated).count() as u64;
        self.truncated.fetch_add(cut, Ordering::Relaxed);
        Ok(self
            .outputs(&encoded)
            .iter()
            .map(|o| self.decode(o))
            .collect())
    }
}

/// CheXbert's classes: 0 blank, 1 positive, 2 negative, 3 uncertain.
pub fn class_label(class: usize) -> Label {
    match class {
        1 => Label::Positive,
        2 => Label::Negative,
        3 => Label::Uncertain,
        _ => Label::Blank,
    }
}

/// The class CheXbert's head is trained toward for `label` (No Finding's head has only blank/positive).
pub fn label_class(label: Label) -> usize {
    match label {
        Label::Blank => 0,
        Label::Positive => 1,
        Label::Negative => 2,
        Label::Uncertain => 3,
    }
}

/// The parts of a labeler directory: its description, its tokenizer (or `tokenizer` instead) and the bytes of its
/// model record (to be loaded onto whichever device the caller needs).
pub(crate) fn read_dir(
    dir: &Path,
    tokenizer: Option<&Path>,
) -> Result<(LabelerMeta, ReportTokenizer, Vec<u8>)> {
    let meta_path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
    let meta: LabelerMeta = serde_json::from_str(&text)
        .map_err(|e| Error::format(&meta_path, format!("not a labeler description: {e}")))?;
    meta.bert
        .validate()
        .map_err(|e| Error::format(&meta_path, e))?;
    let tok = ReportTokenizer::from_path(tokenizer.unwrap_or(&dir.join(TOKENIZER_FILE)))?;
    let model_path = dir.join(MODEL_FILE);
    let bytes = std::fs::read(&model_path).map_err(|e| Error::io(&model_path, e))?;
    Ok((meta, tok, bytes))
}

/// Loads a labeler's Burn record into `model`.
pub(crate) fn load_record(model: BertLabeler, bytes: Vec<u8>, what: &Path) -> Result<BertLabeler> {
    crate::model::load_record(model, bytes, what, "labeler.json")
}

impl super::ReportLabeler for BertReportLabeler {
    fn label_batch(&self, reports: &[&str]) -> Result<Vec<LabelRow>> {
        self.label_texts(reports)
    }

    fn truncated(&self) -> u64 {
        BertReportLabeler::truncated(self)
    }
}
