//! DenseNet (Huang et al. 2017) laid out exactly as torchvision's `densenet121/169/201`: a 7×7 stride-2 stem with
//! batch norm and 3×3 max pool, dense blocks of BN-ReLU-conv1×1 (bottleneck `bn_size × growth`) → BN-ReLU-conv3×3
//! (`growth`) layers whose outputs are concatenated, transitions (BN-ReLU-conv1×1 halving the channels, 2×2 average
//! pool) between blocks, a final batch norm, ReLU, global average pool and a linear head.
//!
//! Field names follow torchvision's state-dict keys (`conv0`, `norm0`, `norm1`, `conv1`, ...) so that weight import
//! is a renaming of block/layer indices only (see [`crate::model::import`]).

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, AvgPool2d, AvgPool2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use super::config::{Arch, ModelConfig};
use super::kernels::{conv2d, norm_relu};
use crate::error::{Error, Result};

/// Architecture hyper-parameters of a DenseNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseNetConfig {
    /// Channels each dense layer adds (32 in the ImageNet models).
    pub growth_rate: usize,
    /// Dense layers per block (`[6, 12, 24, 16]` for DenseNet-121).
    pub block_config: Vec<usize>,
    /// Channels out of the stem (64 in the ImageNet models).
    pub num_init_features: usize,
    /// Bottleneck width as a multiple of the growth rate (4).
    pub bn_size: usize,
    /// Image channels (1 for radiographs, 3 for ImageNet).
    pub in_channels: usize,
    /// Outputs of the linear head.
    pub num_classes: usize,
}

impl DenseNetConfig {
    /// torchvision `densenet121`.
    pub fn densenet121(in_channels: usize, num_classes: usize) -> Self {
        Self::imagenet(vec![6, 12, 24, 16], in_channels, num_classes)
    }

    /// torchvision `densenet169`.
    pub fn densenet169(in_channels: usize, num_classes: usize) -> Self {
        Self::imagenet(vec![6, 12, 32, 32], in_channels, num_classes)
    }

    /// torchvision `densenet201`.
    pub fn densenet201(in_channels: usize, num_classes: usize) -> Self {
        Self::imagenet(vec![6, 12, 48, 32], in_channels, num_classes)
    }

    fn imagenet(block_config: Vec<usize>, in_channels: usize, num_classes: usize) -> Self {
        DenseNetConfig {
            growth_rate: 32,
            block_config,
            num_init_features: 64,
            bn_size: 4,
            in_channels,
            num_classes,
        }
    }

    /// The architecture a `[model]` config section names, with one output per configured observation.
    pub fn from_model_config(m: &ModelConfig) -> Result<Self> {
        let (c, n) = (m.in_channels, m.observations.len());
        let cfg = match m.arch {
            Arch::Densenet121 => Self::densenet121(c, n),
            Arch::Densenet169 => Self::densenet169(c, n),
            Arch::Densenet201 => Self::densenet201(c, n),
            Arch::Small => DenseNetConfig {
                growth_rate: m.growth_rate,
                block_config: m.block_config.clone(),
                num_init_features: m.init_features,
                bn_size: 4,
                in_channels: c,
                num_classes: n,
            },
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        if self.growth_rate == 0
            || self.block_config.is_empty()
            || self.block_config.contains(&0)
            || self.num_init_features == 0
            || self.bn_size == 0
            || !(self.in_channels == 1 || self.in_channels == 3)
            || self.num_classes == 0
        {
            return Err(Error::Config(format!(
                "invalid DenseNet configuration {self:?}: sizes must be positive, in_channels 1 or 3"
            )));
        }
        Ok(())
    }

    /// Channels entering the final batch norm.
    pub fn num_features(&self) -> usize {
        let mut c = self.num_init_features;
        for (i, &n) in self.block_config.iter().enumerate() {
            c += n * self.growth_rate;
            if i + 1 < self.block_config.len() {
                c /= 2;
            }
        }
        c
    }

    /// Builds the model with torchvision's initialisation, drawn from a ChaCha8 stream of `seed`: Kaiming-normal
    /// convolutions (fan in, gain √2), unit BN, a uniform ±1/√fan-in head with zero bias. The weights are a function
    /// of the seed alone — unlike [`init`](Self::init)'s, which Burn draws lazily from the device's one global
    /// generator, so any other thread drawing at the same time changes them.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> DenseNet {
        use rand::{Rng, SeedableRng};
        let rng = &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xD05E_11E7);
        let mut conv = |c: &mut Conv2d| {
            let shape: [usize; 4] = c.weight.lazy_shape().dims();
            let std = (2.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt();
            c.weight = drawn(shape, device, || (std * standard_normal(rng)) as f32);
        };
        let mut m = self.init(device);
        conv(&mut m.conv0);
        for block in &mut m.blocks {
            for layer in &mut block.layers {
                conv(&mut layer.conv1);
                conv(&mut layer.conv2);
            }
        }
        for t in &mut m.transitions {
            conv(&mut t.conv);
        }
        // Burn's linear weight is [in, out].
        let shape: [usize; 2] = m.classifier.weight.lazy_shape().dims();
        let bound = 1.0 / (shape[0] as f32).sqrt();
        m.classifier.weight = drawn(shape, device, || rng.random_range(-bound..bound));
        m.classifier.bias = Some(drawn([shape[1]], device, || 0.0));
        m
    }

    /// Builds the model with torchvision's initialisation (Kaiming-normal convolutions, unit BN), drawn lazily
    /// by Burn: a skeleton for weights loaded next; [`init_seeded`](Self::init_seeded) for a model to train.
    pub fn init(&self, device: &Device) -> DenseNet {
        let conv = |cin: usize, cout: usize, k: usize, stride: usize, pad: usize| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .with_initializer(Initializer::KaimingNormal {
                    gain: std::f64::consts::SQRT_2,
                    fan_out_only: false,
                })
                .init(device)
        };
        let bn = |c: usize| BatchNormConfig::new(c).init(device);
        let mut c = self.num_init_features;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (i, &n) in self.block_config.iter().enumerate() {
            let layers = (0..n)
                .map(|j| {
                    let cin = c + j * self.growth_rate;
                    let mid = self.bn_size * self.growth_rate;
                    DenseLayer {
                        norm1: bn(cin),
                        conv1: conv(cin, mid, 1, 1, 0),
                        norm2: bn(mid),
                        conv2: conv(mid, self.growth_rate, 3, 1, 1),
                    }
                })
                .collect();
            blocks.push(DenseBlock { layers });
            c += n * self.growth_rate;
            if i + 1 < self.block_config.len() {
                transitions.push(Transition {
                    norm: bn(c),
                    conv: conv(c, c / 2, 1, 1, 0),
                    pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                });
                c /= 2;
            }
        }
        DenseNet {
            conv0: conv(self.in_channels, self.num_init_features, 7, 2, 3),
            norm0: bn(self.num_init_features),
            pool0: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            blocks,
            transitions,
            norm5: bn(c),
            gap: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            classifier: LinearConfig::new(c, self.num_classes)
                .with_initializer(Initializer::KaimingUniform {
                    gain: 1.0 / 3f64.sqrt(),
                    fan_out_only: false,
                })
                .init(device),
        }
    }
}

/// A trainable parameter of `shape` whose values `next` gives in order.
fn drawn<const D: usize>(
    shape: [usize; D],
    device: &Device,
    mut next: impl FnMut() -> f32,
) -> Param<Tensor<D>> {
    let v: Vec<f32> = (0..shape.iter().product()).map(|_| next()).collect();
    Param::from_tensor(Tensor::from_data(
        burn::tensor::TensorData::new(v, shape),
        device,
    ))
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl rand::Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One BN-ReLU-conv1×1-BN-ReLU-conv3×3 layer of a dense block.
#[derive(Module, Debug)]
pub struct DenseLayer {
    /// Bottleneck normalisation.
    pub norm1: BatchNorm,
    /// Bottleneck 1×1 convolution.
    pub conv1: Conv2d,
    /// Normalisation before the 3×3 convolution.
    pub norm2: BatchNorm,
    /// The 3×3 convolution adding `growth` channels.
    pub conv2: Conv2d,
}

impl DenseLayer {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(&self.conv1, norm_relu(&self.norm1, x));
        conv2d(&self.conv2, norm_relu(&self.norm2, y))
    }
}

/// Casts trainable parameters to a dtype, as new leaves with the same ids (so gradients map back onto the
/// original model's parameters).
struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dt = self.0;
        param.map(|t| {
            if t.is_require_grad() {
                t.cast(dt).detach().require_grad()
            } else {
                t.cast(dt)
            }
        })
    }
}

/// A dense block: each layer sees the concatenation of the block input and every earlier layer's output.
#[derive(Module, Debug)]
pub struct DenseBlock {
    /// The block's layers.
    pub layers: Vec<DenseLayer>,
}

impl DenseBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // Growing the concatenation one layer at a time gives each layer the same input as torchvision's
        // `torch.cat(prev_features)`.
        self.layers.iter().fold(x, |acc, layer| {
            let y = layer.forward(acc.clone());
            Tensor::cat(vec![acc, y], 1)
        })
    }
}

/// BN-ReLU-conv1×1-avgpool between blocks.
#[derive(Module, Debug)]
pub struct Transition {
    /// Normalisation.
    pub norm: BatchNorm,
    /// 1×1 convolution halving the channels.
    pub conv: Conv2d,
    /// 2×2 average pool.
    pub pool: AvgPool2d,
}

impl Transition {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(conv2d(&self.conv, norm_relu(&self.norm, x)))
    }
}

/// A DenseNet classifier; `forward` returns logits `[batch, num_classes]`.
#[derive(Module, Debug)]
pub struct DenseNet {
    /// Stem convolution (7×7, stride 2).
    pub conv0: Conv2d,
    /// Stem normalisation.
    pub norm0: BatchNorm,
    /// Stem max pool.
    pub pool0: MaxPool2d,
    /// Dense blocks.
    pub blocks: Vec<DenseBlock>,
    /// Transitions between them.
    pub transitions: Vec<Transition>,
    /// Final normalisation.
    pub norm5: BatchNorm,
    /// Global average pool.
    pub gap: AdaptiveAvgPool2d,
    /// The linear head.
    pub classifier: Linear,
}

fn frozen(bn: BatchNorm) -> BatchNorm {
    BatchNorm {
        training: Param::from_bool(false),
        ..bn
    }
}

impl DenseNet {
    /// Every BatchNorm normalises with its running statistics, also in training (its scale and shift still
    /// learn): the usual choice when fine-tuning pretrained weights with small per-rank batches, and it makes
    /// data-parallel training over W ranks equal to training on one W-times larger batch.
    pub fn freeze_batchnorm(self) -> Self {
        self.map_layers(&mut frozen, &mut |c| c, &mut |l| l)
    }

    /// Rebuilds the network with every BatchNorm, convolution and the classifier passed through a function.
    fn map_layers(
        self,
        bn: &mut impl FnMut(BatchNorm) -> BatchNorm,
        conv: &mut impl FnMut(Conv2d) -> Conv2d,
        linear: &mut impl FnMut(Linear) -> Linear,
    ) -> Self {
        DenseNet {
            conv0: conv(self.conv0),
            norm0: bn(self.norm0),
            blocks: self
                .blocks
                .into_iter()
                .map(|b| DenseBlock {
                    layers: b
                        .layers
                        .into_iter()
                        .map(|l| DenseLayer {
                            norm1: bn(l.norm1),
                            conv1: conv(l.conv1),
                            norm2: bn(l.norm2),
                            conv2: conv(l.conv2),
                        })
                        .collect(),
                })
                .collect(),
            transitions: self
                .transitions
                .into_iter()
                .map(|t| Transition {
                    norm: bn(t.norm),
                    conv: conv(t.conv),
                    ..t
                })
                .collect(),
            norm5: bn(self.norm5),
            classifier: linear(self.classifier),
            ..self
        }
    }

    /// Every BatchNorm layer, in module order.
    pub fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.norm0];
        for (i, b) in self.blocks.iter().enumerate() {
            for l in &b.layers {
                v.extend([&l.norm1, &l.norm2]);
            }
            if let Some(t) = self.transitions.get(i) {
                v.push(&t.norm);
            }
        }
        v.push(&self.norm5);
        v
    }

    /// Folds BatchNorm's pending running-statistics updates into the values that records, visitors and
    /// inference read. Burn applies a training step's update lazily, at the layer's next training forward; call
    /// this before saving, hashing or comparing a model that has just trained.
    pub fn settle_running_stats(&self) {
        for bn in self.batchnorms() {
            bn.running_mean.value_sync();
            bn.running_var.value_sync();
        }
    }

    /// A copy whose convolutions and classifier compute in `dtype` (mixed precision with bf16); BatchNorm keeps
    /// its dtype and shares its running statistics with `self`. The copy's parameters are leaves with the same
    /// ids as `self`'s, so its gradients apply to `self` (the fp32 master weights).
    pub fn with_conv_dtype(&self, dtype: FloatDType) -> DenseNet {
        self.clone().map_layers(
            &mut |b| b,
            &mut |c| c.map(&mut CastParams(dtype)),
            &mut |l| l.map(&mut CastParams(dtype)),
        )
    }

    /// Logits for a batch of images `[batch, channels, height, width]`, in the classifier's dtype; the input is
    /// cast to the first convolution's.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = x.cast(self.conv0.weight.val().dtype());
        let mut x = self
            .pool0
            .forward(norm_relu(&self.norm0, conv2d(&self.conv0, x)));
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            if let Some(t) = self.transitions.get(i) {
                x = t.forward(x);
            }
        }
        let x = self.gap.forward(norm_relu(&self.norm5, x));
        let [b, c, _, _] = x.dims();
        self.classifier.forward(x.reshape([b, c]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two blocks of one and two layers, 3 outputs.
    fn tiny() -> DenseNetConfig {
        DenseNetConfig {
            growth_rate: 4,
            block_config: vec![1, 2],
            num_init_features: 8,
            bn_size: 2,
            in_channels: 1,
            num_classes: 3,
        }
    }

    #[test]
    fn densenet121_has_torchvision_parameter_count() {
        // torchvision densenet121 (3 channels, 1000 classes): 7,978,856 parameters + 83,648 BN running statistics
        // (Burn counts both) = the 8,062,504 state-dict values without `num_batches_tracked`.
        let cfg = DenseNetConfig::densenet121(3, 1000);
        assert_eq!(cfg.num_features(), 1024);
        let m = cfg.init(&Device::flex());
        assert_eq!(m.num_params(), 8_062_504);
    }

    #[test]
    fn small_variant_runs_forward() {
        let cfg = tiny();
        let dev = Device::flex();
        let m = cfg.init(&dev);
        let x = Tensor::<4>::ones([2, 1, 32, 32], &dev);
        assert_eq!(m.forward(x).dims(), [2, 3]);
    }

    #[test]
    fn seeded_weights_do_not_depend_on_other_threads_drawing() {
        use burn::tensor::Distribution;
        let cfg = tiny();
        let dev = Device::flex();
        let quiet = crate::model::state_values(&cfg.init_seeded(9, &dev));
        // Another thread draws from the device's global generator all the while (as other tests, or dropout in a
        // BERT labeler's training, do).
        let stop = std::sync::atomic::AtomicBool::new(false);
        let busy = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = Tensor::<1>::random([64], Distribution::Default, &Device::flex())
                        .into_data();
                }
            });
            let v: Vec<Vec<f32>> = (0..20)
                .map(|_| crate::model::state_values(&cfg.init_seeded(9, &dev)))
                .collect();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            v
        });
        assert!(busy.iter().all(|v| *v == quiet));
        assert_ne!(
            quiet,
            crate::model::state_values(&cfg.init_seeded(10, &dev))
        );
        // torchvision's scale: Kaiming-normal stem (fan in 49: sd 0.2), zero head bias.
        let m = cfg.init_seeded(9, &dev);
        let w = crate::model::state_values(&m.conv0);
        let sd = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        assert!((sd - 0.2).abs() < 0.05, "stem sd {sd}");
        let bias = m.classifier.bias.as_ref().unwrap().val().into_data();
        assert!(bias.iter::<f32>().all(|b| b == 0.0));
    }

    /// The CPU kernels (GEMM convolutions, fused batch norm + ReLU) against Burn's own operations, both in fp32,
    /// measured against the same network in f64 (Burn's operations; the kernels are fp32-only): the kernels'
    /// logits and input gradient through a whole training-mode network must be at least as close to f64.
    #[test]
    fn cpu_kernels_are_as_accurate_as_burns_operations() {
        use burn::tensor::Distribution;
        let dev = Device::flex().autodiff();
        let cfg = DenseNetConfig {
            growth_rate: 6,
            block_config: vec![3, 3],
            num_init_features: 8,
            bn_size: 2,
            in_channels: 1,
            num_classes: 5,
        };
        let x = Tensor::<4>::random([3, 1, 40, 40], Distribution::Default, &dev).into_data();
        let r = Tensor::<2>::random([3, 5], Distribution::Default, &dev).into_data();
        // A fresh model per run: running statistics are shared between clones, and each run updates them.
        let run = |dt: FloatDType, burn_only: bool| {
            let m = cfg.init_seeded(3, &dev).map(&mut CastParams(dt));
            crate::model::kernels::BURN_ONLY.set(burn_only);
            let x = Tensor::<4>::from_data(x.clone(), &dev)
                .cast(dt)
                .require_grad();
            let y = m.forward(x.clone());
            let g = (y.clone() * Tensor::<2>::from_data(r.clone(), &dev).cast(dt))
                .sum()
                .backward();
            crate::model::kernels::BURN_ONLY.set(false);
            let values = |t: Tensor<4>| {
                t.cast(FloatDType::F64)
                    .into_data()
                    .try_to_vec::<f64>()
                    .unwrap()
            };
            (values(y.unsqueeze()), values(x.grad(&g).unwrap()))
        };
        let (y64, dx64) = run(FloatDType::F64, true);
        let (ours, burn) = (run(FloatDType::F32, false), run(FloatDType::F32, true));
        let err = |a: &[f64], b: &[f64]| {
            let d: f64 = a.iter().zip(b).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
            (d / b.iter().map(|b| b * b).sum::<f64>()).sqrt()
        };
        let (ey, edx) = (err(&ours.0, &y64), err(&ours.1, &dx64));
        let (by, bdx) = (err(&burn.0, &y64), err(&burn.1, &dx64));
        eprintln!(
            "from f64: logits kernels {ey:.2e}, Burn {by:.2e}; input gradient kernels {edx:.2e}, Burn {bdx:.2e}"
        );
        assert!(ours.0 != burn.0, "the kernels did not run");
        assert!(
            ey <= 1.5 * by + 1e-7,
            "logits: kernels {ey:.2e} from f64, Burn {by:.2e}"
        );
        assert!(
            edx <= 1.5 * bdx + 1e-7,
            "input gradient: kernels {edx:.2e} from f64, Burn {bdx:.2e}"
        );
    }
}
