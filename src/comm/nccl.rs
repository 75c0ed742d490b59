//! NCCL for the data plane on GPUs, bootstrapped over the control-plane communicator (MPI).
//!
//! Order on every rank: [`probe`] the CUDA driver and NCCL libraries without touching them (cudarc panics when a
//! library it needs is missing), agree across ranks ([`agree`]: one all-reduce, so either every rank uses
//! NCCL or none does and no rank waits in a collective the others never enter), pick the GPU ([`super::gpu_ordinal`]) and
//! refuse two ranks on one device ([`check_distinct_gpus`]), then rank 0 creates the unique id, the control plane
//! broadcasts it ([`exchange_id`]), and every rank joins the NCCL communicator ([`Nccl::init`]).
//!
//! NCCL has no timeouts of its own: [`Nccl`] waits for each collective with a deadline (`collective_timeout_s`)
//! and, when it passes, aborts the NCCL communicator and fails naming the collective, the training step and the
//! ranks that never arrived (from an arrival board on the control plane, see [`super::watch`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp};

use super::Communicator;
use super::watch::{Ticket, Watch};
use crate::error::{Error, Result};

/// Bytes of an NCCL unique id.
pub const ID_BYTES: usize = 128;

/// What this process can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// `libcuda` (the driver) loads.
    pub cuda: bool,
    /// `libnccl.so` loads.
    pub nccl: bool,
    /// CUDA devices visible (0 without a driver).
    pub devices: usize,
}

impl Probe {
    /// Can this rank run NCCL collectives?
    pub fn usable(&self) -> bool {
        self.cuda && self.nccl && self.devices > 0
    }

    /// Why not, in words a user can act on.
    pub fn why_not(&self) -> Option<String> {
        if !self.cuda {
            Some("no CUDA driver (libcuda.so) could be loaded".into())
        } else if self.devices == 0 {
            Some("the CUDA driver sees no GPU (check CUDA_VISIBLE_DEVICES and --gpus)".into())
        } else if !self.nccl {
            Some(
                "libnccl.so could not be loaded: put its directory on LD_LIBRARY_PATH; where only libnccl.so.2 \
                 exists (e.g. inside PyTorch's nvidia/nccl/lib), a symlink libnccl.so -> libnccl.so.2 fixes it"
                    .into(),
            )
        } else {
            None
        }
    }
}

/// Looks for the CUDA driver and NCCL without calling into them.
pub fn probe() -> Probe {
    // SAFETY: these only try to dlopen the libraries.
    let cuda = unsafe { cudarc::driver::sys::is_culib_present() };
    let nccl = unsafe { cudarc::nccl::sys::is_culib_present() };
    let devices = if cuda {
        CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
    } else {
        0
    };
    Probe {
        cuda,
        nccl,
        devices,
    }
}

/// The ranks (of `comm`) that cannot use NCCL, known to every rank after one all-reduce. Empty: all can.
pub fn ranks_lacking(comm: &dyn Communicator, usable: bool) -> Result<Vec<usize>> {
    let mut flags = vec![0f32; comm.size()];
    flags[comm.rank()] = if usable { 0.0 } else { 1.0 };
    comm.all_reduce_sum_f32(&mut flags)?;
    Ok(flags
        .iter()
        .enumerate()
        .filter(|(_, f)| **f > 0.0)
        .map(|(r, _)| r)
        .collect())
}

/// Refuses two ranks on one GPU: `key` names the device uniquely (host + device UUID); gathered on rank 0, the
/// verdict broadcast so every rank fails together.
pub fn check_distinct_gpus(comm: &dyn Communicator, key: &str) -> Result<()> {
    let all = comm.gather_bytes(key.as_bytes(), 0)?;
    let verdict = all.map(|keys| {
        let mut seen: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        for (r, k) in keys.iter().enumerate() {
            if let Some(first) = seen.insert(k, r) {
                return format!(
                    "ranks {first} and {r} share one GPU ({}): give each rank its own \
                     (--gpus-per-task=1, or as many ranks per node as GPUs)",
                    String::from_utf8_lossy(k)
                );
            }
        }
        String::new()
    });
    let verdict: String = super::broadcast_json(comm, &verdict.unwrap_or_default(), 0)?;
    if verdict.is_empty() {
        Ok(())
    } else {
        Err(Error::distributed(
            Some(comm.rank()),
            "GPU assignment",
            verdict,
        ))
    }
}

/// Rank 0 creates an NCCL unique id (needs `libnccl`, not a GPU); the control plane hands it to every rank.
pub fn exchange_id(comm: &dyn Communicator) -> Result<[u8; ID_BYTES]> {
    let mut buf = Vec::new();
    if comm.rank() == 0 {
        let id = Id::new().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
        buf = id.internal().iter().map(|&c| c as u8).collect();
    }
    comm.broadcast_bytes(&mut buf, 0)?;
    buf.try_into().map_err(|b: Vec<u8>| {
        Error::distributed(
            Some(comm.rank()),
            "NCCL id exchange",
            format!(
                "the id from rank 0 has {} bytes, expected {ID_BYTES}",
                b.len()
            ),
        )
    })
}

/// Probes this rank and agrees with the others (one all-reduce): this rank's probe when every rank can use NCCL,
/// else, on every rank, why not.
pub fn agree(ctrl: &dyn Communicator) -> Result<std::result::Result<Probe, String>> {
    let p = probe();
    let lacking = ranks_lacking(ctrl, p.usable())?;
    if lacking.is_empty() {
        return Ok(Ok(p));
    }
    let why = p
        .why_not()
        .unwrap_or_else(|| "see those ranks' logs".into());
    Ok(Err(format!(
        "NCCL is not usable on rank(s) {lacking:?} (rank {}: {why})",
        ctrl.rank()
    )))
}

/// What `chexlab gpu-probe` prints for a rank: the probe, the agreement, and the id exchange when every rank
/// has `libnccl` (the id needs the library, not a GPU, so this part runs on CPU machines too).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProbeReport {
    /// This rank.
    pub rank: usize,
    /// Ranks in the world.
    pub size: usize,
    /// Rank on this node.
    pub local_rank: usize,
    /// What this rank found of CUDA and NCCL.
    pub probe: Probe,
    /// Ranks without a usable NCCL (library, driver or GPU).
    pub ranks_lacking_nccl: Vec<usize>,
    /// The gradient all-reduce the ranks agreed on: `nccl` or `mpi`.
    pub all_reduce: String,
    /// SHA-256 of the NCCL unique id this rank received (equal on every rank), when every rank has libnccl.
    pub id_sha256: Option<String>,
}

/// Runs the bootstrap up to (not including) communicator init and reports it.
pub fn probe_report(comm: &dyn Communicator) -> Result<ProbeReport> {
    use sha2::Digest;
    let probe = probe();
    let lacking = ranks_lacking(comm, probe.usable())?;
    let without_lib = ranks_lacking(comm, probe.nccl)?;
    let id_sha256 = if without_lib.is_empty() {
        let id = exchange_id(comm)?;
        Some(crate::io::hex(&sha2::Sha256::digest(id)))
    } else {
        None
    };
    Ok(ProbeReport {
        rank: comm.rank(),
        size: comm.size(),
        local_rank: comm.local_rank(),
        probe,
        all_reduce: if lacking.is_empty() { "nccl" } else { "mpi" }.into(),
        ranks_lacking_nccl: lacking,
        id_sha256,
    })
}

/// Brings up [`NcclWorld`] over `ctrl` and checks one gradient-sized all-reduce against its known sum.
pub fn check_all_reduce(ctrl: Box<dyn Communicator>) -> Result<serde_json::Value> {
    let p = agree(ctrl.as_ref())?
        .map_err(|why| Error::distributed(Some(ctrl.rank()), "choosing NCCL", why))?;
    let world = NcclWorld::new(ctrl, p.devices, Duration::from_secs(120))?;
    let (rank, size) = (world.rank(), world.size());
    // DenseNet-121's gradient is ~7 M values.
    let n = 7_000_000;
    let mut buf = known_values(n, rank);
    let start = Instant::now();
    world.all_reduce_sum_f32(&mut buf)?;
    let seconds = start.elapsed().as_secs_f64();
    let wrong = wrong_sums(&buf, size);
    if wrong > 0 {
        return Err(Error::distributed(
            None,
            "NCCL all-reduce check",
            format!("all-reduce of {n} values on {size} rank(s): {wrong} wrong"),
        ));
    }
    // The same size in place on a Burn CUDA buffer (the training path), when built with CUDA.
    #[cfg(feature = "cuda")]
    let device_seconds = world.nccl.check_device_all_reduce(n)?;
    #[cfg(not(feature = "cuda"))]
    let device_seconds: Option<f64> = None;
    Ok(serde_json::json!({
        "rank": rank,
        "size": size,
        "all_reduce_values": n,
        "all_reduce_seconds": seconds,
        "device_buffer_all_reduce_seconds": device_seconds,
        "ok": true,
    }))
}

/// What `rank` contributes to a checked all-reduce of `n` values (small integers: every sum is exact in f32).
fn known_values(n: usize, rank: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 97) as f32 + rank as f32).collect()
}

/// How many of `sums` differ from the sum of [`known_values`] over `size` ranks.
fn wrong_sums(sums: &[f32], size: usize) -> usize {
    let ranks_sum = (size * (size - 1) / 2) as f32;
    sums.iter()
        .enumerate()
        .filter(|(i, v)| **v != (i % 97) as f32 * size as f32 + ranks_sum)
        .count()
}

fn nccl_error(what: &str, e: cudarc::nccl::result::NcclError) -> Error {
    Error::distributed(None, what, format!("{:?}", e.0))
}

fn cuda_error(what: &str, e: cudarc::driver::DriverError) -> Error {
    Error::distributed(None, what, e.to_string())
}

/// An NCCL communicator on this rank's GPU.
pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    watch: Watch,
    /// The CUDA device ordinal this rank's communicator runs on.
    pub ordinal: usize,
}

impl Nccl {
    /// Bootstraps NCCL over `ctrl` on every rank, once the ranks have [`agree`]d (`devices`: this rank's
    /// visible GPUs): GPU choice, distinct GPUs, id exchange, communicator init.
    pub fn init(ctrl: &dyn Communicator, devices: usize, timeout: Duration) -> Result<Nccl> {
        let ordinal = super::gpu_ordinal(ctrl.local_rank(), devices)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_error("CUDA context", e))?;
        let uuid = ctx.uuid().map_err(|e| cuda_error("device UUID", e))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        check_distinct_gpus(
            ctrl,
            &format!("{} GPU {:x?}", host.trim(), uuid.bytes.map(|b| b as u8)),
        )?;
        let id = exchange_id(ctrl)?;
        let stream = ctx.default_stream();
        let comm = Comm::from_rank(
            stream.clone(),
            ctrl.rank(),
            ctrl.size(),
            Id::uninit(id.map(|b| b as core::ffi::c_char)),
        )
        .map_err(|e| nccl_error("ncclCommInitRank", e))?;
        tracing::info!(
            rank = ctrl.rank(),
            ordinal,
            "NCCL communicator of {} ranks ready",
            ctrl.size()
        );
        let watch = Watch::new(ctrl.rank(), ctrl.arrival_board()?);
        watch.set_timeout(timeout);
        Ok(Nccl {
            comm,
            stream,
            watch,
            ordinal,
        })
    }

    /// Sums an fp32 tensor on this rank's GPU over the ranks, in place in its device buffer: no host copy.
    /// Burn's queue is drained first (the buffer must be written before NCCL reads it), NCCL runs on its own
    /// stream, and the wait ends only once the reduction is done, so Burn's later kernels read the sums. Returns
    /// `false`, touching nothing, when the tensor is not one contiguous fp32 CUDA buffer (the caller then goes
    /// through the host).
    #[cfg(feature = "cuda")]
    pub fn all_reduce_sum_device(&self, t: &burn::tensor::Tensor<1>) -> Result<bool> {
        use cubecl_runtime::runtime::Runtime;
        let Ok(prim) = t.clone().try_into_primitive::<burn_cubecl::Cube>() else {
            return Ok(false);
        };
        if prim.dtype != burn::tensor::DType::F32
            || !prim.is_contiguous()
            || !prim.is_contiguous_buffer()
            || !matches!(prim.device, burn_cubecl::CubeDevice::Cuda(_))
        {
            return Ok(false);
        }
        let n = prim.meta.shape().num_elements();
        t.device()
            .sync()
            .map_err(|e| Error::model("waiting for the GPU before NCCL", e))?;
        // Holding the resource keeps the allocation in place (not freed, reused or moved) until it is dropped.
        let res = prim
            .client
            .get_resource::<<cubecl_cuda::CudaRuntime as Runtime>::Server>(prim.handle.clone())
            .map_err(|e| Error::model("device address of the gradient", e))?;
        let mut ticket = self.watch.begin("all-reduce (device buffer)");
        // SAFETY: the address is the start of this tensor's live buffer of `n` f32 values (contiguous, checked
        // above) in the device's primary context, which cudarc's context here shares; the slice is leaked below,
        // so cudarc never frees memory that Burn owns.
        let mut slice = unsafe { self.stream.upgrade_device_ptr::<f32>(res.resource().ptr, n) };
        let launched = self.comm.all_reduce_in_place(&mut slice, &ReduceOp::Sum);
        let _ = slice.leak();
        launched.map_err(|e| nccl_error("ncclAllReduce", e))?;
        self.wait(&mut ticket)?;
        drop(res);
        Ok(true)
    }

    /// Checks [`Nccl::all_reduce_sum_device`] on a Burn tensor of `n` known values on this rank's GPU (every rank
    /// takes part): `Ok(None)` when Burn's buffers cannot be reduced in place (the host path is used), else the
    /// seconds the all-reduce took; wrong sums are an error.
    #[cfg(feature = "cuda")]
    pub fn check_device_all_reduce(&self, n: usize) -> Result<Option<f64>> {
        use burn::tensor::{DType, Device, Tensor, TensorData};
        let (rank, size) = (self.comm.rank(), self.comm.world_size());
        let device = Device::cuda(self.ordinal);
        let t = Tensor::<1>::from_data(
            TensorData::new(known_values(n, rank), [n]),
            (&device, DType::F32),
        );
        let start = Instant::now();
        if !self.all_reduce_sum_device(&t)? {
            return Ok(None);
        }
        let seconds = start.elapsed().as_secs_f64();
        let got: Vec<f32> = t
            .into_data()
            .try_to_vec()
            .map_err(|e| Error::model("reading the checked buffer", e))?;
        let wrong = wrong_sums(&got, size);
        if wrong > 0 {
            return Err(Error::distributed(
                Some(rank),
                "NCCL all-reduce check",
                format!("in place on a Burn CUDA buffer: {wrong} of {n} sums wrong"),
            ));
        }
        Ok(Some(seconds))
    }

    /// Sums a host buffer over the ranks through the GPU (copy in, `ncclSum`, copy out).
    pub fn all_reduce_sum_host(&self, buf: &mut [f32]) -> Result<()> {
        let mut t = self.watch.begin("all-reduce");
        let mut dev = self
            .stream
            .clone_htod(buf)
            .map_err(|e| cuda_error("copy to GPU", e))?;
        self.comm
            .all_reduce_in_place(&mut dev, &ReduceOp::Sum)
            .map_err(|e| nccl_error("ncclAllReduce", e))?;
        self.wait(&mut t)?;
        self.stream
            .memcpy_dtoh(&dev, buf)
            .map_err(|e| cuda_error("copy from GPU", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_error("stream sync", e))
    }

    /// Polls the stream until the collective is done; past the deadline the communicator is aborted.
    fn wait(&self, t: &mut Ticket) -> Result<()> {
        let done = self
            .stream
            .record_event(None)
            .map_err(|e| cuda_error("event", e))?;
        loop {
            match done.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) if !self.watch.expired(t) => {
                    self.watch.waiting(t);
                    std::thread::sleep(Duration::from_micros(200))
                }
                // The caller drops this communicator with the error, and dropping it aborts it
                // (ncclCommAbort), as NCCL prescribes for a hung collective.
                Ok(false) => return Err(self.watch.error(t, "NCCL")),
                Err(e) => return Err(cuda_error(&format!("NCCL collective #{}", t.seq), e)),
            }
        }
    }
}

/// The world of a GPU run: gradient all-reduces over NCCL, everything else (broadcasts, gathers, barriers,
/// splits, abort) over the control-plane communicator.
pub struct NcclWorld {
    ctrl: Box<dyn Communicator>,
    nccl: Nccl,
    /// GPUs this rank sees (sub-communicators pick theirs from it).
    devices: usize,
}

impl NcclWorld {
    /// Bootstraps NCCL over `ctrl` once the ranks have [`agree`]d (see [`Nccl::init`]).
    pub fn new(
        ctrl: Box<dyn Communicator>,
        devices: usize,
        timeout: Duration,
    ) -> Result<NcclWorld> {
        let nccl = Nccl::init(ctrl.as_ref(), devices, timeout)?;
        // Gradients are reduced in place in Burn's device buffers; a wrong sum there would corrupt training
        // silently, so the path is checked on known values first.
        #[cfg(feature = "cuda")]
        match nccl.check_device_all_reduce(4096)? {
            Some(_) => tracing::info!(
                rank = ctrl.rank(),
                "NCCL reduces gradients in place on the GPU"
            ),
            None => tracing::warn!(
                rank = ctrl.rank(),
                "Burn's CUDA buffers cannot be reduced in place; gradients go through host memory"
            ),
        }
        Ok(NcclWorld {
            ctrl,
            nccl,
            devices,
        })
    }
}

impl Communicator for NcclWorld {
    fn rank(&self) -> usize {
        self.ctrl.rank()
    }
    fn size(&self) -> usize {
        self.ctrl.size()
    }
    fn local_rank(&self) -> usize {
        self.ctrl.local_rank()
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.nccl.all_reduce_sum_host(buf)
    }
    fn all_reduce_sum_tensor(&self, t: burn::tensor::Tensor<1>) -> Result<burn::tensor::Tensor<1>> {
        #[cfg(feature = "cuda")]
        if self.nccl.all_reduce_sum_device(&t)? {
            return Ok(t);
        }
        super::all_reduce_through_host(self, t)
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        self.ctrl.broadcast_bytes(buf, root)
    }
    fn gather_bytes(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.ctrl.gather_bytes(data, root)
    }
    fn barrier(&self) -> Result<()> {
        self.ctrl.barrier()
    }
    fn split(&self, color: usize) -> Result<Box<dyn Communicator>> {
        let sub = self.ctrl.split(color)?;
        // The ranks agreed when this world was made; a subset needs no second agreement.
        Ok(Box::new(NcclWorld::new(
            sub,
            self.devices,
            self.nccl.watch.timeout(),
        )?))
    }
    fn abort(&self, code: i32) -> ! {
        self.ctrl.abort(code)
    }
    fn set_collective_timeout(&self, timeout: Duration) {
        self.ctrl.set_collective_timeout(timeout);
        self.nccl.watch.set_timeout(timeout);
    }
    fn set_step(&self, step: u64) {
        self.ctrl.set_step(step);
        self.nccl.watch.set_step(step);
    }
    fn arrival_board(&self) -> Result<Option<Box<dyn super::watch::Arrivals>>> {
        self.ctrl.arrival_board()
    }
    fn alone(&self, root: usize, what: &str, work: &mut dyn FnMut()) -> Result<()> {
        self.ctrl.alone(root, what, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::threads::Threads;

    #[test]
    fn ranks_agree_on_who_lacks_nccl() {
        let got = Threads::run(3, |c| ranks_lacking(c, c.rank() != 1).unwrap());
        assert!(got.iter().all(|l| l == &vec![1]), "{got:?}");
        let got = Threads::run(2, |c| ranks_lacking(c, true).unwrap());
        assert!(got.iter().all(|l| l.is_empty()));
    }

    #[test]
    fn ranks_that_cannot_all_use_nccl_agree_on_why_not() {
        // This machine has no GPU driver: no rank can, and every rank says so with the same ranks named.
        if probe().usable() {
            return;
        }
        let got = Threads::run(2, |c| agree(c).unwrap().unwrap_err());
        for why in &got {
            assert!(why.contains("rank(s) [0, 1]"), "{why}");
        }
    }

    #[test]
    fn two_ranks_on_one_gpu_fail_on_every_rank() {
        let got = Threads::run(3, |c| {
            let key = if c.rank() == 2 {
                "n1 GPU a".to_string()
            } else {
                format!("n1 GPU {}", c.rank())
            };
            check_distinct_gpus(c, &key).map_err(|e| e.to_string())
        });
        assert!(got.iter().all(|r| r.is_ok()), "{got:?}");
        let got = Threads::run(3, |c| {
            check_distinct_gpus(c, "n1 GPU a").map_err(|e| e.to_string())
        });
        for r in &got {
            let e = r.as_ref().unwrap_err();
            assert!(e.contains("ranks 0 and 1 share one GPU"), "{e}");
        }
    }

    #[test]
    fn probe_reports_what_is_missing() {
        let p = Probe {
            cuda: true,
            nccl: false,
            devices: 1,
        };
        assert!(!p.usable());
        assert!(p.why_not().unwrap().contains("libnccl.so -> libnccl.so.2"));
        // Without a GPU driver on this machine the probe says so instead of panicking.
        let here = probe();
        if !here.cuda {
            assert_eq!(here.devices, 0);
            assert!(here.why_not().unwrap().contains("libcuda"));
        }
    }
}
