//! The `[distributed]` config section: backend, device, how sources share the ranks, timeouts.

use serde::{Deserialize, Serialize};

/// Communication backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// MPI when launched under mpirun/srun, NCCL on GPUs when available, else single process.
    #[default]
    Auto,
    /// One process, no communication.
    Single,
    /// MPI for everything (gradients on the host).
    Mpi,
    /// NCCL for the gradient all-reduce on GPUs, MPI for the rest; refused where NCCL is unavailable.
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
    /// Each source on its own group of ranks, at the same time.
    Concurrent,
    /// One source after another, each on all ranks.
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
    /// How ranks talk.
    pub backend: Backend,
    /// `cpu` or `cuda` (one GPU per rank: the only visible one, else the local rank's).
    pub device: ComputeDevice,
    /// How label sources share the ranks.
    pub schedule: SourceSchedule,
    /// How the learning rate follows the global batch.
    pub lr_scaling: LrScaling,
    /// Threads per rank that read, decode and augment the next training batches, in their own pool beside the
    /// compute threads (the Slurm scripts give it the task's `--cpus-per-task`). The result does not depend on it.
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
