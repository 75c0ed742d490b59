//! The `[bert]` config section: encoder sizes, vocabulary and the BERT labelers' training.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// BERT labelers (CheXbert, VisualCheXbert): encoder, vocabulary and training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BertSection {
    /// A tokenizer (`tokenizer.json` or `vocab.txt`); none: a WordPiece vocabulary of `vocab_size` is trained on
    /// the training reports.
    pub tokenizer: Option<PathBuf>,
    /// Size of a trained vocabulary.
    pub vocab_size: usize,
    /// Encoder weights to start from (Hugging Face BERT checkpoint); its `config.json` beside it sets the sizes.
    pub pretrained: Option<PathBuf>,
    /// Encoder sizes when training from scratch.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Maximum tokens per report, with `[CLS]` and `[SEP]` (longer reports are cut and counted).
    pub max_len: usize,
    /// Dropout in the encoder and before the heads.
    pub dropout: f64,
    /// Adam learning rate (CheXbert used 2e-5 from a pretrained encoder; a small encoder from scratch needs more).
    pub lr: f64,
    /// Reports per training batch, per rank.
    pub batch_size: usize,
    /// Epochs on the rule labeler's labels (CheXbert) or the teacher's probabilities (VisualCheXbert).
    pub epochs: usize,
    /// CheXbert: epochs of fine-tuning on the expert labels, at `finetune_lr`.
    pub finetune_epochs: usize,
    /// CheXbert: learning rate of the expert fine-tuning.
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
