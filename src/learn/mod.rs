//! The training core shared by image (DenseNet) and report (BERT) training: the optimizer and its config
//! section, gradients as one flat buffer, the masked BCE loss, and seeded initialisation. Neither trainer's
//! internals live here, so the labelers train without importing image training.

pub mod grads;
pub mod loss;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Optimiser section (Adam).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Learning rate (before warm-up, decay and scaling).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (0: none).
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

/// Runs `init` with Burn's process-global generator seeded to `seed`, under one lock (the BERT labelers' initialisation;
/// the DenseNet draws from its own stream, [`DenseNetConfig::init_seeded`](crate::model::DenseNetConfig::init_seeded)).
pub fn with_seed<T>(seed: u64, device: &Device, init: impl FnOnce() -> T) -> T {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    init()
}

/// One optimizer step with a flat gradient tensor (already averaged, accumulated and clipped as wanted; values
/// past the layout are ignored).
pub fn apply<M: burn::module::Module>(
    model: M,
    optim: &mut ModuleOptimizer,
    layout: &grads::GradLayout,
    flat: &Tensor<1>,
    lr: f64,
) -> M {
    let g = grads::unflatten_tensor(layout, flat, &model);
    optim.step(lr, model, g)
}

/// The items (of `0..n`) rank `rank` of `world` takes in `epoch`: a permutation by (seed, epoch), dealt
/// round-robin, the remainder dropped so every rank gets the same count. Another epoch gives another order.
pub fn deal(n: usize, rank: usize, world: usize, epoch: u64, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    assert!(world > 0 && rank < world, "rank {rank} of world {world}");
    let mut items: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ epoch.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0x5EED,
    );
    items.shuffle(&mut rng);
    let per_rank = n / world;
    items
        .into_iter()
        .skip(rank)
        .step_by(world)
        .take(per_rank)
        .collect()
}
