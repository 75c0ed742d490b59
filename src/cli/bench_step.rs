//! `chexlab bench-step`: time one DenseNet training step on a device.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use chexlab::config::{ComputeDevice, Precision};
use chexlab::model::Arch;
use chexlab::train::bench::{StepBench, bench_step};

/// Arguments of `chexlab bench-step`.
#[derive(Args)]
pub struct BenchStepArgs {
    /// DenseNet variant (small: the demo's growth 12, blocks 2-2-2, stem 16).
    #[arg(long, value_enum, default_value_t = Arch::Densenet121)]
    arch: Arch,
    /// Image side in pixels.
    #[arg(long = "image-size", visible_alias = "size", default_value_t = 224)]
    size: usize,
    /// Images per step.
    #[arg(long = "batch-size", visible_alias = "batch", default_value_t = 16)]
    batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seed of the weights and the batch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the step runs.
    #[arg(long, value_enum, default_value_t = ComputeDevice::Cpu)]
    device: ComputeDevice,
    /// Arithmetic (bf16: training's mixed precision — bf16 convolutions, fp32 BatchNorm, loss and weights).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Write the first step's flat gradient here (little-endian f32).
    #[arg(long)]
    grads_out: Option<PathBuf>,
}

impl BenchStepArgs {
    /// Measures and prints one JSON line.
    pub fn run(self) -> Result<()> {
        let spec = StepBench {
            arch: self.arch,
            size: self.size,
            batch: self.batch,
            steps: self.steps,
            warmup: self.warmup,
            seed: self.seed,
            device: self.device,
            precision: self.precision,
        };
        let result = bench_step(&spec, self.grads_out.as_deref())?;
        println!("{}", serde_json::to_string(&result)?);
        Ok(())
    }
}
