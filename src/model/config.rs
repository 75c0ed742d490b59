//! The `[model]` config section: which DenseNet, at what size, predicting which observations.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::observations::Observation;

/// A DenseNet variant.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// torchvision's DenseNet-121 (growth 32, blocks 6-12-24-16, stem 64).
    #[default]
    Densenet121,
    /// DenseNet-169 (blocks 6-12-32-32).
    Densenet169,
    /// DenseNet-201 (blocks 6-12-48-32).
    Densenet201,
    /// A small DenseNet sized by `growth_rate`, `block_config` and `init_features`.
    Small,
}

impl Arch {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Densenet121 => "densenet121",
            Arch::Densenet169 => "densenet169",
            Arch::Densenet201 => "densenet201",
            Arch::Small => "small",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Model section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The DenseNet variant.
    pub arch: Arch,
    /// Small variant only: channels each dense layer adds.
    pub growth_rate: usize,
    /// Small variant only: dense layers per block.
    pub block_config: Vec<usize>,
    /// Small variant only: channels out of the stem.
    pub init_features: usize,
    /// Training image size in pixels.
    pub image_size: u32,
    /// Input channels (1 for radiographs; 3 to match an unadapted ImageNet stem).
    pub in_channels: usize,
    /// Optional torchvision weights to start from.
    pub pretrained: Option<PathBuf>,
    /// Normalise with BatchNorm's running statistics in training too (scale and shift still learn): for
    /// fine-tuning pretrained weights with small per-rank batches.
    pub freeze_bn: bool,
    /// Observations the classifier predicts and is evaluated on, by their CheXpert names.
    #[serde(with = "observation_names")]
    pub observations: Vec<Observation>,
    /// Arithmetic of training steps: `f32`, or `bf16` (mixed precision: convolutions and the classifier in
    /// bfloat16; BatchNorm, the loss and the weights the optimizer updates in fp32). Evaluation runs in fp32.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// Arithmetic of training steps (see [`ModelConfig::precision`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Single precision throughout.
    #[default]
    F32,
    /// Mixed precision with bfloat16 (fp32's exponent range, so no loss scaling), fp32 master weights.
    Bf16,
}

impl Precision {
    // Not serialised when f32, so that settings hashes of runs from before the option existed still match.
    fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: Arch::Densenet121,
            growth_rate: 12,
            block_config: vec![2, 2, 2],
            init_features: 16,
            image_size: 320,
            in_channels: 1,
            pretrained: None,
            freeze_bn: false,
            observations: vec![
                Observation::Atelectasis,
                Observation::Cardiomegaly,
                Observation::Consolidation,
                Observation::Edema,
                Observation::PleuralEffusion,
            ],
            precision: Precision::F32,
        }
    }
}

/// Observations as their CheXpert names (`"Pleural Effusion"`), as configs and settings hashes have them.
mod observation_names {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::observations::Observation;

    pub fn serialize<S: Serializer>(obs: &[Observation], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(obs.iter().map(|o| o.name()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Observation>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|n| {
                Observation::from_name(n)
                    .ok_or_else(|| D::Error::custom(format!("unknown observation '{n}'")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_serialises_as_names() {
        let m = ModelConfig::default();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["arch"], "densenet121");
        assert_eq!(json["observations"][4], "Pleural Effusion");
        let back: ModelConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        let err =
            serde_json::from_value::<ModelConfig>(serde_json::json!({"observations": ["Lung"]}))
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown observation 'Lung'"), "{err}");
    }
}
