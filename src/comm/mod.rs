//! Communication between ranks: the [`Communicator`] trait and its implementations — one process
//! ([`single::Single`]), ranks as threads of one process for tests ([`threads::Threads`]), and MPI processes
//! ([`mpi::Mpi`], feature `mpi`). Every collective is numbered; the sequence number, operation and rank are logged
//! at debug level so that a hang or a mismatch can be traced to the collective where ranks parted ways.

pub(crate) mod config;
pub(crate) mod device;
pub mod single;
pub mod threads;
pub mod watch;

pub use config::{Backend, ComputeDevice, DistributedConfig, LrScaling, SourceSchedule};
pub use device::{compute_device, gpu_ordinal};

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
    /// Runs `work` on `root` alone while the other ranks wait for it to finish, however long that takes
    /// (labelling or sharding a whole dataset can take hours). Watched communicators make the root post a
    /// heartbeat every [`watch::BEAT`] while it works, and a waiting rank fails only when the root has been silent
    /// for the collective timeout (stopped, hung). `what` names the work in that error. `work` must not
    /// communicate: it runs beside the heartbeat, and the other ranks are not listening.
    fn alone(&self, root: usize, _what: &str, work: &mut dyn FnMut()) -> Result<()> {
        if self.rank() == root {
            work();
        }
        Ok(())
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
        .map_err(|e| Error::model("all-reduce: reading the gradient tensor", e))?;
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
    serde_json::from_slice(&buf).map_err(|e| {
        Error::distributed(
            Some(comm.rank()),
            format!("broadcast from rank {root}"),
            e.to_string(),
        )
    })
}

/// An error as it travels between ranks: its kind and message.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SharedError {
    /// The error's kind where it was raised.
    pub kind: crate::error::ErrorKind,
    /// Its message there.
    pub message: String,
}

impl SharedError {
    /// The travelling form of `e`.
    pub fn of(e: &Error) -> Self {
        SharedError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The error re-raised on another rank, with the kind it had on `rank`.
    pub fn raise(self, rank: usize) -> Error {
        Error::OnRank {
            rank,
            kind: self.kind,
            message: self.message,
        }
    }
}

/// Hands `root`'s outcome to every rank (`outcome` is only read on `root`): a value, or its error — returned as
/// is on `root` and re-raised with its own kind ([`Error::OnRank`]) on the others.
pub fn share_outcome<T: serde::Serialize + serde::de::DeserializeOwned>(
    comm: &dyn Communicator,
    outcome: Result<T>,
    root: usize,
) -> Result<T> {
    if comm.rank() == root {
        let shared = match &outcome {
            Ok(v) => Ok(serde_json::to_value(v).expect("serialisable")),
            Err(e) => Err(SharedError::of(e)),
        };
        // The root gets its own value back; it keeps the outcome with its error's source.
        let _own = broadcast_json(comm, &shared, root)?;
        return outcome;
    }
    // Only the root's value is sent; the others pass a placeholder.
    let shared: std::result::Result<serde_json::Value, SharedError> =
        broadcast_json(comm, &Ok(serde_json::Value::Null), root)?;
    match shared {
        Ok(v) => serde_json::from_value(v).map_err(|e| {
            Error::distributed(
                Some(comm.rank()),
                format!("outcome of rank {root}"),
                e.to_string(),
            )
        }),
        Err(e) => Err(e.raise(root)),
    }
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
pub fn from_config(dist: &DistributedConfig) -> Result<Box<dyn Communicator>> {
    let comm = from_env()?;
    comm.set_collective_timeout(std::time::Duration::from_secs(dist.collective_timeout_s));
    Ok(comm)
}

/// The communicator training uses, after `distributed.backend`: NCCL for the gradient all-reduce (`nccl`, or
/// `auto` on GPUs when every rank can use it — decided together, so no rank diverges), else `ctrl` itself.
pub fn for_training(
    ctrl: Box<dyn Communicator>,
    dist: &DistributedConfig,
) -> Result<Box<dyn Communicator>> {
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
            Err(why) => Err(Error::distributed(Some(ctrl.rank()), "choosing NCCL", why)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_root_failure_reaches_every_rank_with_its_kind() {
        let got = threads::Threads::run(3, |c| {
            let outcome: Result<u32> = if c.rank() == 0 {
                Err(Error::checkpoint("/run/best.ckpt", "corrupt: bad header"))
            } else {
                Ok(0)
            };
            share_outcome(c, outcome, 0)
        });
        // Rank 0 keeps its own error; the others get its kind and message.
        assert!(matches!(got[0], Err(Error::Checkpoint { .. })));
        for r in &got[1..] {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Checkpoint);
            assert_eq!(
                e.to_string(),
                "on rank 0: /run/best.ckpt: checkpoint: corrupt: bad header"
            );
        }
        let ok = threads::Threads::run(2, |c| share_outcome(c, Ok(c.rank() as u32 + 7), 0));
        assert!(ok.iter().all(|r| matches!(r, Ok(7))));
    }
}
