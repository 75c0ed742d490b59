//! A BERT encoder (as Hugging Face `BertModel`, post-LayerNorm, erf GELU) and the CheXbert / VisualCheXbert head sets.
//!
//! Field names follow Hugging Face's module paths closely (see [`super::import::map_key`]) so that a checkpoint maps
//! key by key. Dropout is active only when the model runs on an autodiff device (training).

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::observations::{ColumnOrder, N_OBS, Observation};

use super::tokenizer::Padded;

/// Sizes of a BERT encoder; reads (and writes) a Hugging Face `config.json` (other keys there are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    #[serde(default = "default_positions")]
    /// Longest sequence (positions).
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    /// Token types (segments).
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    /// Dropout on hidden states.
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    /// Dropout on attention probabilities.
    pub attention_probs_dropout_prob: f64,
    /// Hugging Face writes `"gelu"`; only the exact (erf) GELU is implemented.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// A configuration with the given sizes and BERT's defaults for the rest.
    pub fn new(
        vocab: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        intermediate: usize,
    ) -> Self {
        BertConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            max_position_embeddings: default_positions(),
            type_vocab_size: default_type_vocab(),
            layer_norm_eps: default_eps(),
            hidden_dropout_prob: default_dropout(),
            attention_probs_dropout_prob: default_dropout(),
            hidden_act: default_act(),
        }
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not a BERT config: {e}")))?;
        config.validate().map_err(|e| Error::format(path, e))?;
        Ok(config)
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act {:?} is not supported (only \"gelu\")",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return Err(
                "vocab_size, num_hidden_layers and intermediate_size must be positive".into(),
            );
        }
        Ok(())
    }

    /// Builds a randomly initialised encoder (BERT's N(0, 0.02) for weights).
    pub fn init(&self, device: &Device) -> Bert {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let linear = |i, o| {
            LinearConfig::new(i, o)
                .with_initializer(normal.clone())
                .init(device)
        };
        let norm = || {
            LayerNormConfig::new(self.hidden_size)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let embedding = |n| {
            EmbeddingConfig::new(n, self.hidden_size)
                .with_initializer(normal.clone())
                .init(device)
        };
        let hidden_dropout = DropoutConfig::new(self.hidden_dropout_prob).init();
        let (h, i) = (self.hidden_size, self.intermediate_size);
        Bert {
            embeddings: Embeddings {
                word_embeddings: embedding(self.vocab_size),
                position_embeddings: embedding(self.max_position_embeddings),
                token_type_embeddings: embedding(self.type_vocab_size),
                layer_norm: norm(),
                dropout: hidden_dropout.clone(),
            },
            layers: (0..self.num_hidden_layers)
                .map(|_| Layer {
                    attention: Attention {
                        query: linear(h, h),
                        key: linear(h, h),
                        value: linear(h, h),
                        output: linear(h, h),
                        output_norm: norm(),
                        probs_dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                        dropout: hidden_dropout.clone(),
                        heads: self.num_attention_heads,
                    },
                    intermediate: linear(h, i),
                    output: linear(i, h),
                    output_norm: norm(),
                    dropout: hidden_dropout.clone(),
                })
                .collect(),
        }
    }
}

/// Word + position + token-type embeddings, LayerNorm, dropout.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// Token embeddings.
    pub word_embeddings: Embedding,
    /// Position embeddings.
    pub position_embeddings: Embedding,
    /// Segment embeddings.
    pub token_type_embeddings: Embedding,
    /// Normalisation of their sum.
    pub layer_norm: LayerNorm,
    /// Dropout after it.
    pub dropout: Dropout,
}

/// Multi-head self-attention with its output projection, residual and LayerNorm.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Projection of the heads' concatenation.
    pub output: Linear,
    /// Normalisation after the residual.
    pub output_norm: LayerNorm,
    /// Dropout on attention probabilities.
    pub probs_dropout: Dropout,
    /// Dropout on the output.
    pub dropout: Dropout,
    /// Attention heads.
    pub heads: usize,
}

/// One encoder layer: attention, then the GELU feed-forward block with residual and LayerNorm.
#[derive(Module, Debug)]
pub struct Layer {
    /// Self-attention.
    pub attention: Attention,
    /// Feed-forward up-projection.
    pub intermediate: Linear,
    /// Feed-forward down-projection.
    pub output: Linear,
    /// Normalisation after the residual.
    pub output_norm: LayerNorm,
    /// Dropout on the output.
    pub dropout: Dropout,
}

/// The BERT encoder.
#[derive(Module, Debug)]
pub struct Bert {
    /// Embeddings.
    pub embeddings: Embeddings,
    /// Encoder layers.
    pub layers: Vec<Layer>,
}

impl Attention {
    fn forward(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let [b, t, h] = x.dims();
        let d = h / self.heads;
        let split = |y: Tensor<3>| y.reshape([b, t, self.heads, d]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt() + key_bias;
        let probs = self.probs_dropout.forward(softmax(scores, 3));
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b, t, h]);
        self.output_norm
            .forward(self.dropout.forward(self.output.forward(context)) + x)
    }
}

impl Layer {
    fn forward(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let a = self.attention.forward(x, key_bias);
        let i = gelu(self.intermediate.forward(a.clone()));
        self.output_norm
            .forward(self.dropout.forward(self.output.forward(i)) + a)
    }
}

impl Bert {
    /// Hidden size.
    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    /// Maximum sequence length (position embeddings).
    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }

    /// Last hidden state `[batch, tokens, hidden]` of `ids` `[batch, tokens]`; `mask` `[batch, tokens]` is 1 for real
    /// tokens and 0 for padding (padded keys get no attention). Token types are all 0 (one segment).
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .unsqueeze::<2>()
            .expand([b, t]);
        let types = Tensor::<2, Int>::zeros([b, t], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let mut x = e.dropout.forward(e.layer_norm.forward(x));
        // Large negative (not -inf) so that a fully padded row stays finite, as in Hugging Face.
        let key_bias = ((mask - 1.0) * 1e9).reshape([b, 1, 1, t]);
        for layer in &self.layers {
            x = layer.forward(x, key_bias.clone());
        }
        x
    }
}

/// Which head set sits on the `[CLS]` vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// 13 heads of 4 classes (blank, positive, negative, uncertain) and No Finding with 2 (blank, positive).
    Chexbert,
    /// 14 single logits: the probability that the image shows the observation.
    Visualchexbert,
}

impl HeadKind {
    /// The labeler's name, as in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Chexbert => "chexbert",
            HeadKind::Visualchexbert => "visualchexbert",
        }
    }

    /// Outputs per head, in CheXbert's observation order ([`ColumnOrder::Chexbert`], No Finding last).
    pub fn head_sizes(self) -> [usize; N_OBS] {
        match self {
            HeadKind::Chexbert => {
                let mut s = [4; N_OBS];
                s[N_OBS - 1] = 2;
                s
            }
            HeadKind::Visualchexbert => [1; N_OBS],
        }
    }

    /// The observation of each head.
    pub fn observations(self) -> [Observation; N_OBS] {
        ColumnOrder::Chexbert.observations()
    }
}

/// A BERT report labeler: encoder, dropout on the `[CLS]` vector, one linear head per observation.
#[derive(Module, Debug)]
pub struct BertLabeler {
    /// The encoder.
    pub bert: Bert,
    /// Dropout on `[CLS]`.
    pub dropout: Dropout,
    /// One head per observation.
    pub heads: Vec<Linear>,
}

impl BertLabeler {
    /// A fresh labeler of `kind` over `bert`.
    pub fn new(bert: Bert, kind: HeadKind, dropout: f64, device: &Device) -> Self {
        let h = bert.hidden_size();
        let heads = kind
            .head_sizes()
            .iter()
            .map(|&n| {
                LinearConfig::new(h, n)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.02,
                    })
                    .init(device)
            })
            .collect();
        BertLabeler {
            bert,
            dropout: DropoutConfig::new(dropout).init(),
            heads,
        }
    }

    /// The head set this model carries.
    pub fn kind(&self) -> HeadKind {
        if self.heads.first().is_some_and(|h| h.weight.dims()[1] == 1) {
            HeadKind::Visualchexbert
        } else {
            HeadKind::Chexbert
        }
    }

    /// [`BertLabeler::forward`] on a padded batch, built on `device`.
    pub fn forward_padded(&self, p: Padded, device: &Device) -> Tensor<2> {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(p.ids, [p.rows, p.len]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(p.mask, [p.rows, p.len]), device);
        self.forward(ids, mask)
    }

    /// Every head's logits side by side, `[batch, sum of head sizes]` (54 for CheXbert, 14 for VisualCheXbert).
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let hidden = self.bert.forward(ids, mask);
        let [b, _, h] = hidden.dims();
        let cls = self.dropout.forward(hidden.narrow(1, 0, 1).reshape([b, h]));
        Tensor::cat(
            self.heads
                .iter()
                .map(|head| head.forward(cls.clone()))
                .collect(),
            1,
        )
    }
}
