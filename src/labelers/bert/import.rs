//! Loads Hugging Face BERT checkpoints (`model.safetensors`, `pytorch_model.bin`) and the published CheXbert /
//! VisualCheXbert checkpoints (a `torch.save` of `{"model_state_dict": DataParallel(model).state_dict(), ...}`:
//! keys `module.bert.*` and `module.linear_heads.N.*`) into [`Bert`] / [`BertLabeler`].
//!
//! Keys the model has no use for are skipped by name: the pooler (`pooler.*`), pre-training heads (`cls.*`) and the
//! `position_ids` buffer. Any other key that does not fit, a missing key or a wrong shape is an error listing them
//! all (as `model::import` does for DenseNet weights).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::import::{PackTensor, apply_all, read_tensors};

use super::model::{Bert, BertConfig, BertLabeler, HeadKind};

/// What a checkpoint key is to this crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// The module path inside [`BertLabeler`] (encoder keys start with `bert.`, heads with `heads.`).
    Path(String),
    /// A key BERT checkpoints carry that the labeler does not use (pooler, pre-training heads, position ids).
    Unused,
    /// Anything else.
    Unknown,
}

/// Maps one Hugging Face / CheXbert key to the [`BertLabeler`] path.
pub fn map_key(key: &str) -> Key {
    let key = key.strip_prefix("module.").unwrap_or(key);
    let key = key.strip_prefix("model_state_dict.").unwrap_or(key);
    let key = key.strip_prefix("module.").unwrap_or(key);
    if let Some(rest) = key.strip_prefix("linear_heads.") {
        return match rest.split_once('.') {
            Some((n, p @ ("weight" | "bias"))) if n.parse::<usize>().is_ok() => {
                Key::Path(format!("heads.{n}.{p}"))
            }
            _ => Key::Unknown,
        };
    }
    let key = key.strip_prefix("bert.").unwrap_or(key);
    if key.starts_with("pooler.") || key.starts_with("cls.") || key.ends_with("position_ids") {
        return Key::Unused;
    }
    // TensorFlow-converted checkpoints name LayerNorm parameters gamma/beta.
    let param = |p: &str| match p {
        "weight" | "gamma" => Some("weight"),
        "bias" | "beta" => Some("bias"),
        _ => None,
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mapped = match parts.as_slice() {
        [
            "embeddings",
            e @ ("word_embeddings" | "position_embeddings" | "token_type_embeddings"),
            "weight",
        ] => Some(format!("embeddings.{e}.weight")),
        ["embeddings", "LayerNorm", p] => param(p).map(|p| format!("embeddings.layer_norm.{p}")),
        ["encoder", "layer", n, rest @ ..] if n.parse::<usize>().is_ok() => {
            let path = match rest {
                ["attention", "self", m @ ("query" | "key" | "value"), p] => {
                    param(p).map(|p| format!("attention.{m}.{p}"))
                }
                ["attention", "output", "dense", p] => {
                    param(p).map(|p| format!("attention.output.{p}"))
                }
                ["attention", "output", "LayerNorm", p] => {
                    param(p).map(|p| format!("attention.output_norm.{p}"))
                }
                ["intermediate", "dense", p] => param(p).map(|p| format!("intermediate.{p}")),
                ["output", "dense", p] => param(p).map(|p| format!("output.{p}")),
                ["output", "LayerNorm", p] => param(p).map(|p| format!("output_norm.{p}")),
                _ => None,
            };
            path.map(|p| format!("layers.{n}.{p}"))
        }
        _ => None,
    };
    match mapped {
        Some(p) => Key::Path(format!("bert.{p}")),
        None => Key::Unknown,
    }
}

/// A checkpoint file read once: its tensors renamed to [`BertLabeler`] paths, and the keys that fit nowhere.
/// Everything a caller needs — the sizes, the head set, the weights — comes from this one read (a published
/// CheXbert checkpoint is about 440 MB).
pub struct Checkpoint {
    path: PathBuf,
    tensors: Vec<PackTensor>,
    unknown: Vec<String>,
}

impl Checkpoint {
    /// Reads every tensor of `path` (PyTorch or safetensors).
    pub fn read(path: &Path) -> Result<Self> {
        let mut tensors = Vec::new();
        let mut unknown = Vec::new();
        for mut t in read_tensors(path)? {
            match map_key(&t.name) {
                Key::Path(p) => {
                    t.name = p;
                    tensors.push(t);
                }
                Key::Unused => {}
                Key::Unknown => unknown.push(t.name.clone()),
            }
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
            unknown,
        })
    }

    fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.to_vec())
    }

    /// The encoder sizes: from a `config.json` next to the checkpoint when there is one, else read off the
    /// tensors, with `heads` attention heads (not visible in the weights; BERT's convention is 64 values per head).
    pub fn config(&self, heads: Option<usize>) -> Result<BertConfig> {
        let beside = self.path.with_file_name("config.json");
        if beside.is_file() {
            return BertConfig::from_file(&beside);
        }
        let path = &self.path;
        let missing =
            |what: &str| Error::format(path, format!("no {what} tensor: not a BERT checkpoint"));
        let words = self
            .dims("bert.embeddings.word_embeddings.weight")
            .ok_or_else(|| missing("word embedding"))?;
        let positions = self
            .dims("bert.embeddings.position_embeddings.weight")
            .ok_or_else(|| missing("position embedding"))?;
        let types = self
            .dims("bert.embeddings.token_type_embeddings.weight")
            .ok_or_else(|| missing("token type embedding"))?;
        let inter = self
            .dims("bert.layers.0.intermediate.weight")
            .ok_or_else(|| missing("layer 0 intermediate"))?;
        let layers = self
            .tensors
            .iter()
            .filter_map(|t| {
                t.name
                    .strip_prefix("bert.layers.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1);
        let hidden = words[1];
        let mut config = BertConfig::new(
            words[0],
            hidden,
            layers,
            heads.unwrap_or((hidden / 64).max(1)),
            inter[0],
        );
        config.max_position_embeddings = positions[0];
        config.type_vocab_size = types[0];
        config.validate().map_err(|e| Error::format(path, e))?;
        Ok(config)
    }

    /// The head set the checkpoint carries (from its first head's size).
    pub fn head_kind(&self) -> Result<HeadKind> {
        let first = self.dims("heads.0.weight").ok_or_else(|| {
            Error::format(
                &self.path,
                "no linear_heads.0.weight: not a CheXbert / VisualCheXbert checkpoint",
            )
        })?;
        Ok(if first[0] == 1 {
            HeadKind::Visualchexbert
        } else {
            HeadKind::Chexbert
        })
    }

    /// Loads every weight (encoder and heads) into `model`.
    pub fn load_labeler(self, model: BertLabeler) -> Result<(BertLabeler, usize)> {
        apply_all(
            model,
            self.tensors,
            self.unknown,
            &self.path,
            "the BERT labeler",
            |_| false,
        )
    }

    /// Loads the encoder weights into `bert` (heads in the checkpoint are ignored).
    pub fn load_encoder(self, bert: Bert) -> Result<(Bert, usize)> {
        let tensors = self
            .tensors
            .into_iter()
            .filter_map(|mut t| {
                t.name = t.name.strip_prefix("bert.")?.to_string();
                Some(t)
            })
            .collect();
        apply_all(
            bert,
            tensors,
            self.unknown,
            &self.path,
            "the BERT encoder",
            |_| false,
        )
    }
}

/// The encoder sizes of a checkpoint (see [`Checkpoint::config`]); a `config.json` beside it spares reading it.
pub fn infer_config(path: &Path, heads: Option<usize>) -> Result<BertConfig> {
    let beside = path.with_file_name("config.json");
    if beside.is_file() {
        return BertConfig::from_file(&beside);
    }
    Checkpoint::read(path)?.config(heads)
}

/// Loads every weight of a CheXbert / VisualCheXbert checkpoint (encoder and heads) into `model`.
pub fn load_labeler(model: BertLabeler, path: &Path) -> Result<(BertLabeler, usize)> {
    Checkpoint::read(path)?.load_labeler(model)
}

/// Loads the encoder weights of a BERT checkpoint (Hugging Face or a labeler's; heads there are ignored) into `bert`.
pub fn load_encoder(bert: Bert, path: &Path) -> Result<(Bert, usize)> {
    Checkpoint::read(path)?.load_encoder(bert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hugging_face_and_chexbert_keys() {
        let p = |s: &str| Key::Path(s.to_string());
        let cases = [
            (
                "embeddings.word_embeddings.weight",
                p("bert.embeddings.word_embeddings.weight"),
            ),
            (
                "bert.embeddings.LayerNorm.gamma",
                p("bert.embeddings.layer_norm.weight"),
            ),
            (
                "module.bert.encoder.layer.11.attention.self.key.bias",
                p("bert.layers.11.attention.key.bias"),
            ),
            (
                "encoder.layer.0.attention.output.dense.weight",
                p("bert.layers.0.attention.output.weight"),
            ),
            (
                "encoder.layer.0.attention.output.LayerNorm.bias",
                p("bert.layers.0.attention.output_norm.bias"),
            ),
            (
                "encoder.layer.3.intermediate.dense.weight",
                p("bert.layers.3.intermediate.weight"),
            ),
            (
                "encoder.layer.3.output.dense.bias",
                p("bert.layers.3.output.bias"),
            ),
            (
                "encoder.layer.3.output.LayerNorm.weight",
                p("bert.layers.3.output_norm.weight"),
            ),
            ("module.linear_heads.13.weight", p("heads.13.weight")),
            ("embeddings.position_ids", Key::Unused),
            ("bert.pooler.dense.weight", Key::Unused),
            ("cls.predictions.bias", Key::Unused),
            ("encoder.layer.x.output.dense.bias", Key::Unknown),
            ("linear_heads.0.scale", Key::Unknown),
            ("classifier.weight", Key::Unknown),
        ];
        for (k, want) in cases {
            assert_eq!(map_key(k), want, "{k}");
        }
    }
}
