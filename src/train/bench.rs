//! One training step measured on one device, and the reference it is checked against (`chexlab bench-step`;
//! `benches/gpu/check.sh` runs it on the CPU and on a GPU and compares). The model is initialised on the CPU from
//! the seed and copied to the device, and the batch is a fixed function of the seed, so every device starts from
//! the same numbers: the first step's gradient is written out for the comparison, then steps are timed.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::{apply, gradients, optimizer};
use crate::comm::ComputeDevice;
use crate::error::{Error, Result};
use crate::learn::OptimizerConfig;
use crate::model::Precision;
use crate::model::{Arch, DenseNet, DenseNetConfig, ModelConfig};

/// What to measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepBench {
    /// The DenseNet (`small`: the demo's, growth 12, blocks 2-2-2, stem 16).
    pub arch: Arch,
    /// Image side.
    pub size: usize,
    /// Images per step.
    pub batch: usize,
    /// Timed steps, after `warmup` untimed ones.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Seed of the weights and the batch.
    pub seed: u64,
    /// Where the step runs.
    pub device: ComputeDevice,
    /// As training's `model.precision` (bf16: mixed precision with fp32 master weights).
    pub precision: Precision,
}

/// What was measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepBenchResult {
    /// What was measured.
    pub spec: StepBench,
    /// Loss of the first step (before any update).
    pub first_loss: f32,
    /// L2 norm of the first step's gradient.
    pub first_grad_norm: f64,
    /// Loss of the last step run (the batch is the same every step, so a working step makes it fall).
    pub last_loss: f32,
    /// With a gradient file: the number of values of each parameter's gradient in it, in order, so the file can
    /// be compared tensor by tensor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grad_tensors: Vec<usize>,
    /// Wall time of the timed steps.
    pub seconds: f64,
    /// Training throughput.
    pub images_per_s: f64,
}

/// The DenseNets the step benches measure (1 channel, 14 outputs); `small` is the demo's.
pub fn model_config(arch: Arch) -> Result<DenseNetConfig> {
    DenseNetConfig::from_model_config(&ModelConfig {
        arch,
        in_channels: 1,
        observations: crate::observations::OBSERVATIONS.to_vec(),
        ..ModelConfig::default()
    })
}

/// Runs the measurement; the first step's flat gradient goes to `grads_out` (little-endian f32) when given.
pub fn bench_step(spec: &StepBench, grads_out: Option<&Path>) -> Result<StepBenchResult> {
    let cfg = model_config(spec.arch)?;
    let inner = crate::comm::compute_device(spec.device, 0)?;
    let ad = inner.clone().autodiff();
    // Same initial weights on every device: drawn on the CPU, then loaded onto the device.
    let cpu = Device::flex().autodiff();
    let bytes = super::run::model_bytes(&cfg.init_seeded(spec.seed, &cpu))?;
    let model: DenseNet = crate::model::load_record(
        cfg.init(&ad),
        bytes,
        Path::new("<bench model>"),
        "the bench model",
    )?;
    let n = spec.batch * spec.size * spec.size;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i as u64 * 7919 + spec.seed) % 255) as f32 / 255.0 - 0.5)
        .collect();
    let y: Vec<f32> = (0..spec.batch * 14)
        .map(|i| (i as u64 + spec.seed).is_multiple_of(3) as u8 as f32)
        .collect();
    let mask = vec![1.0f32; y.len()];
    let shape = [spec.batch, 1, spec.size, spec.size];
    let mut optim = optimizer(&OptimizerConfig::default());

    let (layout, flat) = gradients(&model, x.clone(), shape, &y, &mask, &ad, spec.precision);
    let first_loss = super::step_loss(&layout, &flat);
    let first_grad_norm = super::grads::norm_tensor(&flat, layout.len());
    let mut grad_tensors = Vec::new();
    if let Some(path) = grads_out {
        grad_tensors = layout.tensor_lengths();
        let host: Vec<f32> = flat
            .clone()
            .slice(0..layout.len())
            .into_data()
            .try_to_vec()
            .map_err(|e| Error::model("reading the gradient", e))?;
        let bytes: Vec<u8> = host.iter().flat_map(|v| v.to_le_bytes()).collect();
        crate::io::write_atomic(path, &bytes)?;
    }
    let mut model = apply(model, &mut optim, &layout, &flat, 1e-4);
    let mut start = Instant::now();
    let mut last_loss = first_loss;
    for i in 0..spec.warmup + spec.steps {
        if i == spec.warmup {
            start = Instant::now();
        }
        // Reading the norm back (as training does) waits for the device.
        let (layout, flat) = gradients(&model, x.clone(), shape, &y, &mask, &ad, spec.precision);
        let _ = super::grads::norm_tensor(&flat, layout.len());
        // Only the last step's loss is read back: one more device read per timed step would skew the timing.
        if i + 1 == spec.warmup + spec.steps {
            last_loss = super::step_loss(&layout, &flat);
        }
        model = apply(model, &mut optim, &layout, &flat, 1e-4);
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(StepBenchResult {
        spec: spec.clone(),
        first_loss,
        first_grad_norm,
        last_loss,
        grad_tensors,
        seconds,
        images_per_s: (spec.steps * spec.batch) as f64 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(steps: usize) -> StepBench {
        StepBench {
            arch: Arch::Small,
            size: 32,
            batch: 2,
            steps,
            warmup: 0,
            seed: 3,
            device: ComputeDevice::Cpu,
            precision: Precision::F32,
        }
    }

    #[test]
    fn the_first_gradient_is_a_function_of_the_seed() {
        // One compute thread, as training's default: with more, Flex's parallel reductions may sum in another
        // order from run to run, and the gradient differs in its last bits.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(first_gradient_is_a_function_of_the_seed);
    }

    fn first_gradient_is_a_function_of_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let ra = bench_step(&spec(1), Some(&a)).unwrap();
        let rb = bench_step(&spec(0), Some(&b)).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(ra.first_loss, rb.first_loss);
        assert!(ra.first_grad_norm > 0.0 && ra.images_per_s > 0.0);
        // The layout names every value of the file; one step on the same batch lowers the loss.
        let values = std::fs::read(&a).unwrap().len() / 4;
        assert_eq!(ra.grad_tensors.iter().sum::<usize>(), values);
        assert!(ra.grad_tensors.len() > 10, "{:?}", ra.grad_tensors);
        assert!(ra.last_loss < ra.first_loss, "{ra:?}");
        assert_eq!(rb.last_loss, rb.first_loss, "no step after the first");
        let other = bench_step(&StepBench { seed: 4, ..spec(0) }, None).unwrap();
        assert_ne!(other.first_loss, ra.first_loss);
    }
}
