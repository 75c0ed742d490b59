//! Communication between ranks: the [`Communicator`] trait and its implementations — one process
//! ([`single::Single`]), ranks as threads of one process for tests ([`threads::Threads`]), and MPI processes
//! ([`mpi::Mpi`], feature `mpi`). Every collective is numbered; the sequence number, operation and rank are logged
//! at debug level so that a hang or a mismatch can be traced to the collective where ranks parted ways.

pub mod single;
pub mod threads;
pub mod watch;

#[cfg(feature = "mpi")]
pub mod mpi;

#[cfg(feature = "nccl")]
pub mod nccl;

use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};

/// What ranks need from each other.
pub trait Communicator {
    /// This process's rank in the communicator.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Rank among the ranks on this node (picks the GPU, the CPU set).
    fn local_rank(&self) -> usize;
    /// Element-wise sum across ranks, in place; every rank ends with the same values.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// Element-wise sum of an fp32 tensor across ranks, on the tensor's device. This default copies it to the
    /// host for [`all_reduce_sum_f32`](Communicator::all_reduce_sum_f32) and back; NCCL reduces the device
    /// buffer in place.
    fn all_reduce_sum_tensor(&self, t: Tensor<1>) -> Result<Tensor<1>> {
        all_reduce_through_host(self, t)
    }
    /// Replaces `buf` on every rank with `root`'s bytes (any length).
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Every rank's bytes, in rank order, on `root`; `None` elsewhere.
    fn gather_bytes(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>>;
    /// Waits for every rank.
    fn barrier(&self) -> Result<()>;
    /// Splits into sub-communicators of the ranks with the same `color`, ordered by rank.
    fn split(&self, color: usize) -> Result<Box<dyn Communicator>>;
    /// Ends every rank of the job now with `code` (used when one rank fails, so that no rank waits forever).
    fn abort(&self, code: i32) -> !;
    /// How long a collective may wait for the other ranks before it fails (see [`watch`]); unwatched
    /// communicators ignore it.
    fn set_collective_timeout(&self, _timeout: std::time::Duration) {}
    /// The training step the next collectives belong to, for the messages of collectives that time out.
    fn set_step(&self, _step: u64) {}
    /// A new arrival board over these ranks (collective), for collectives that run beside this communicator
    /// (NCCL's); `None` when this communicator has none.
    fn arrival_board(&self) -> Result<Option<Box<dyn watch::Arrivals>>> {
        Ok(None)
    }
}

/// [`Communicator::all_reduce_sum_tensor`] through host memory: the tensor is read back, summed with
/// [`Communicator::all_reduce_sum_f32`] and written to its device again.
pub fn all_reduce_through_host<C: Communicator + ?Sized>(
    comm: &C,
    t: Tensor<1>,
) -> Result<Tensor<1>> {
    if comm.size() == 1 {
        return Ok(t);
    }
    let device = t.device();
    let mut v: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .map_err(|e| Error::Distributed(format!("all-reduce: reading the tensor: {e:?}")))?;
    comm.all_reduce_sum_f32(&mut v)?;
    let n = v.len();
    Ok(Tensor::from_data(
        TensorData::new(v, [n]),
        (&device, burn::tensor::DType::F32),
    ))
}

/// Sequence numbers of collectives, for debug logs.
#[derive(Debug, Default)]
pub struct Seq(std::sync::atomic::AtomicU64);

impl Seq {
    /// Logs and returns the next sequence number of `op` on `rank`.
    pub fn next(&self, op: &str, rank: usize) -> u64 {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(seq = n, op, rank, "collective");
        n
    }
}

/// Broadcasts a value as JSON from `root`.
pub fn broadcast_json<T: serde::Serialize + serde::de::DeserializeOwned>(
    comm: &dyn Communicator,
    value: &T,
    root: usize,
) -> Result<T> {
    let mut buf = if comm.rank() == root {
        serde_json::to_vec(value).expect("serialisable")
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(&mut buf, root)?;
    serde_json::from_slice(&buf)
        .map_err(|e| Error::Config(format!("broadcast from rank {root}: {e}")))
}

/// Which launcher started this process, from the environment: `Some(world size)` under mpirun/srun.
pub fn launched_world_size() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// The communicator for this process: MPI when launched by mpirun/srun (and built with `mpi`), else one process.
pub fn from_env() -> Result<Box<dyn Communicator>> {
    #[cfg(feature = "mpi")]
    {
        if launched_world_size().is_some() || std::env::var("PMIX_RANK").is_ok() {
            return Ok(Box::new(mpi::Mpi::init()?));
        }
    }
    #[cfg(not(feature = "mpi"))]
    {
        if let Some(n) = launched_world_size().filter(|&n| n > 1) {
            return Err(Error::Config(format!(
                "launched as one of {n} MPI ranks, but this chexlab was built without the `mpi` feature \
                 (cargo build --release --features mpi)"
            )));
        }
    }
    Ok(Box::new(single::Single))
}

/// [`from_env`], with the collective timeout of `dist` (`distributed.collective_timeout_s`): what every command
/// that has a config starts from.
pub fn from_config(dist: &crate::config::DistributedConfig) -> Result<Box<dyn Communicator>> {
    let comm = from_env()?;
    comm.set_collective_timeout(std::time::Duration::from_secs(dist.collective_timeout_s));
    Ok(comm)
}

/// The GPU of a rank: the only one when one is visible (Slurm's `--gpus-per-task` or `CUDA_VISIBLE_DEVICES` per
/// rank), else the local rank's, refused when the node has fewer GPUs than ranks.
pub fn gpu_ordinal(local_rank: usize, devices: usize) -> Result<usize> {
    match devices {
        0 => Err(Error::Config("no GPU visible to this rank".into())),
        1 => Ok(0),
        n if local_rank < n => Ok(local_rank),
        n => Err(Error::Config(format!(
            "local rank {local_rank} has no GPU of its own: {n} GPUs on this node for more ranks \
             (launch one rank per GPU: --ntasks-per-node = --gpus-per-node)"
        ))),
    }
}

/// The Burn device a rank computes on.
pub fn compute_device(
    kind: crate::config::ComputeDevice,
    local_rank: usize,
) -> Result<burn::tensor::Device> {
    match kind {
        crate::config::ComputeDevice::Cpu => Ok(burn::tensor::Device::flex()),
        crate::config::ComputeDevice::Cuda => cuda_device(local_rank),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(local_rank: usize) -> Result<burn::tensor::Device> {
    // SAFETY: only tries to dlopen the driver library (cudarc panics on use when it is missing).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Config(
            "distributed.device = \"cuda\", but no CUDA driver (libcuda.so) could be loaded".into(),
        ));
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| Error::Config(format!("CUDA driver: {e}")))?;
    let ordinal = gpu_ordinal(local_rank, count.max(0) as usize)?;
    tracing::info!(
        local_rank,
        ordinal,
        "computing on CUDA device {ordinal} of {count}"
    );
    Ok(burn::tensor::Device::cuda(ordinal))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_local_rank: usize) -> Result<burn::tensor::Device> {
    Err(Error::Config(
        "distributed.device = \"cuda\" needs a chexlab built with the `cuda` feature (launch/build-cuda.sh)"
            .into(),
    ))
}

/// The communicator training uses, after `distributed.backend`: NCCL for the gradient all-reduce (`nccl`, or
/// `auto` on GPUs when every rank can use it — decided together, so no rank diverges), else `ctrl` itself.
pub fn for_training(
    ctrl: Box<dyn Communicator>,
    dist: &crate::config::DistributedConfig,
) -> Result<Box<dyn Communicator>> {
    use crate::config::{Backend, ComputeDevice};
    let wants = match dist.backend {
        Backend::Nccl => true,
        Backend::Auto => dist.device == ComputeDevice::Cuda && ctrl.size() > 1,
        Backend::Mpi | Backend::Single => false,
    };
    if !wants {
        return Ok(ctrl);
    }
    #[cfg(feature = "nccl")]
    {
        let timeout = std::time::Duration::from_secs(dist.collective_timeout_s.max(1));
        match nccl::agree(ctrl.as_ref())? {
            Ok(p) => Ok(Box::new(nccl::NcclWorld::new(ctrl, p.devices, timeout)?)),
            Err(why) if dist.backend == Backend::Auto => {
                if ctrl.rank() == 0 {
                    tracing::warn!("gradient all-reduce over MPI: {why}");
                }
                Ok(ctrl)
            }
            Err(why) => Err(Error::Distributed(why)),
        }
    }
    #[cfg(not(feature = "nccl"))]
    {
        if dist.backend == Backend::Nccl {
            return Err(Error::Config(
                "distributed.backend = \"nccl\" needs a chexlab built with the `nccl` feature"
                    .into(),
            ));
        }
        Ok(ctrl)
    }
}

/// True on every rank when `flag` is true on any rank (one all-reduce).
pub fn any(comm: &dyn Communicator, flag: bool) -> Result<bool> {
    let mut v = [f32::from(u8::from(flag))];
    comm.all_reduce_sum_f32(&mut v)?;
    Ok(v[0] > 0.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_ordinals_follow_the_local_rank_or_the_only_gpu() {
        assert_eq!(gpu_ordinal(3, 1).unwrap(), 0);
        assert_eq!(gpu_ordinal(2, 4).unwrap(), 2);
        let err = gpu_ordinal(4, 4).unwrap_err().to_string();
        assert!(err.contains("4 GPUs on this node"), "{err}");
        assert!(gpu_ordinal(0, 0).is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = compute_device(crate::config::ComputeDevice::Cuda, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}
