//! MPI ranks (rsmpi over Open MPI). MPI's default error handler is fatal, so a failed collective or a dead peer
//! ends the job instead of hanging it; `abort` calls `MPI_Abort` on the world. A rank that is alive but never
//! arrives (hung, stopped) is caught by the [`Watch`]: all-reduces, broadcasts and barriers are started
//! non-blocking and waited for with a deadline, and a [`Board`] on a duplicate communicator names the missing
//! ranks.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::ffi;
use mpi::point_to_point::{Message, Source};
use mpi::raw::AsRaw;
use mpi::topology::{Color, Communicator as _, SimpleCommunicator};
use mpi::traits::Root;

use super::Communicator;
use super::watch::{Arrivals, Heard, Ticket, Watch};
use crate::error::{Error, Result};

/// An MPI communicator (the world, or a part of it made by `split`).
pub struct Mpi {
    comm: SimpleCommunicator,
    /// A duplicate of `comm` for the heartbeats of [`Communicator::alone`], so they never match anything else.
    beats: SimpleCommunicator,
    local_rank: usize,
    watch: Watch,
    // Finalises MPI when the last communicator is dropped.
    _universe: Rc<Universe>,
}

/// The arrival board of a communicator (see [`super::watch`]), on a duplicate of it so that its messages never
/// match anything else: every rank but 0 sends rank 0 the number of each collective it enters, rank 0 sends its
/// own to rank 1. The sends are non-blocking; completed ones are reaped at the next arrival.
pub struct Board {
    comm: SimpleCommunicator,
    /// Per rank: the last collective it posted, and when that post was read.
    last: RefCell<Vec<(Option<u64>, Instant)>>,
    pending: RefCell<Vec<(Box<u64>, ffi::MPI_Request)>>,
}

impl Board {
    /// Makes the board of `comm` (collective: duplicates the communicator).
    pub fn new(comm: &SimpleCommunicator) -> Board {
        Board {
            comm: comm.duplicate(),
            last: RefCell::new(vec![(None, Instant::now()); comm.size() as usize]),
            pending: RefCell::new(Vec::new()),
        }
    }

    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    /// Reads every arrival posted to this rank so far.
    fn drain(&self) {
        if self.rank() > 1 {
            return;
        }
        let mut last = self.last.borrow_mut();
        while let Some((msg, status)) = self.comm.any_process().immediate_matched_probe() {
            let (seq, _): (u64, _) = Message::matched_receive(msg);
            let from = status.source_rank() as usize;
            last[from] = (last[from].0.max(Some(seq)), Instant::now());
        }
    }
}

impl Arrivals for Board {
    fn arrive(&self, seq: u64) {
        let (rank, size) = (self.rank(), self.comm.size());
        if size < 2 {
            return;
        }
        self.drain();
        self.last.borrow_mut()[rank] = (Some(seq), Instant::now());
        let mut pending = self.pending.borrow_mut();
        pending.retain_mut(|(_, req)| {
            let mut done = 0;
            // SAFETY: `req` is an active request from MPI_Isend below, owned by this board.
            unsafe { ffi::MPI_Test(req, &mut done, ffi::RSMPI_STATUS_IGNORE) };
            done == 0
        });
        let value = Box::new(seq);
        let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: the boxed value outlives the send: it stays in `pending` until MPI_Test says it completed (or the
        // board is leaked when the job aborts).
        unsafe {
            ffi::MPI_Isend(
                (&*value as *const u64).cast(),
                1,
                ffi::RSMPI_UINT64_T,
                if rank == 0 { 1 } else { 0 },
                0,
                self.comm.as_raw(),
                &mut req,
            );
        }
        pending.push((value, req));
    }

    fn poll(&self) {
        self.drain();
    }

    fn heard(&self) -> Option<Vec<Heard>> {
        self.drain();
        let last = self.last.borrow();
        let heard = |rank: usize| Heard {
            rank,
            last: last[rank].0,
            silent: last[rank].1.elapsed(),
        };
        match self.rank() {
            0 => Some((0..last.len()).map(heard).collect()),
            1 => Some(vec![heard(0)]),
            _ => None,
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // Sends still in flight are completed before their buffers go (their receiver drains at its next
        // arrival or never, so cancel rather than wait).
        for (_, req) in self.pending.get_mut().iter_mut() {
            // SAFETY: active requests owned by this board.
            unsafe {
                ffi::MPI_Cancel(req);
                ffi::MPI_Wait(req, ffi::RSMPI_STATUS_IGNORE);
            }
        }
    }
}

impl Mpi {
    /// Initialises MPI and returns the world.
    pub fn init() -> Result<Mpi> {
        // Serialized: training calls MPI from its compute-pool thread while the main thread waits.
        let (universe, _) =
            mpi::initialize_with_threading(mpi::Threading::Serialized).ok_or_else(|| {
                Error::distributed(
                    None,
                    "MPI init",
                    "MPI is already initialised in this process",
                )
            })?;
        let comm = universe.world();
        let local_rank = comm.split_shared(comm.rank()).rank() as usize;
        tracing::debug!(
            rank = comm.rank(),
            size = comm.size(),
            local_rank,
            "MPI initialised"
        );
        Ok(Mpi::wrap(comm, local_rank, Rc::new(universe)))
    }

    fn wrap(comm: SimpleCommunicator, local_rank: usize, universe: Rc<Universe>) -> Mpi {
        let board = Board::new(&comm);
        Mpi {
            watch: Watch::new(comm.rank() as usize, Some(Box::new(board))),
            beats: comm.duplicate(),
            comm,
            local_rank,
            _universe: universe,
        }
    }

    /// Waits for a non-blocking operation until it completes or the watch's deadline passes. Spins on `MPI_Test`
    /// (which also drives the operation, as a blocking call would) for the first second, then polls every 200 µs.
    fn wait(&self, t: &mut Ticket, req: &mut ffi::MPI_Request) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut done = 0;
            // SAFETY: `req` is an active request started by the caller on buffers it keeps alive.
            unsafe { ffi::MPI_Test(req, &mut done, ffi::RSMPI_STATUS_IGNORE) };
            if done != 0 {
                return Ok(());
            }
            if self.watch.expired(t) {
                return Err(self.watch.error(t, "MPI"));
            }
            self.watch.waiting(t);
            if start.elapsed() < Duration::from_secs(1) {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn broadcast_part(&self, t: &mut Ticket, ptr: *mut u8, len: usize, root: usize) -> Result<()> {
        let count = i32::try_from(len).map_err(|_| {
            Error::distributed(
                Some(self.rank()),
                "broadcast",
                format!("{len} bytes exceed 2 GiB"),
            )
        })?;
        let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: `ptr` points to `len` bytes the caller keeps alive until `wait` returns.
        unsafe {
            ffi::MPI_Ibcast(
                ptr.cast(),
                count,
                ffi::RSMPI_UINT8_T,
                root as i32,
                self.comm.as_raw(),
                &mut req,
            );
        }
        self.wait(t, &mut req)
    }

    fn root(&self, root: usize) -> Result<mpi::topology::Process<'_>> {
        if root >= self.size() {
            return Err(Error::distributed(
                Some(self.rank()),
                "choosing a root",
                format!("root rank {root} in a world of {}", self.size()),
            ));
        }
        Ok(self.comm.process_at_rank(root as i32))
    }
}

/// Tags of the messages a root working alone sends: a heartbeat, and the end of its work.
const TAG_BEAT: i32 = 1;
const TAG_DONE: i32 = 2;
/// The one byte every heartbeat carries (a static, so the non-blocking sends never outlive their buffer).
static BEAT_BYTE: u8 = 0;

/// An MPI handle moved to the heartbeat thread. MPI is initialised `MPI_THREAD_SERIALIZED`: while the heartbeat
/// thread sends, the thread that started it runs work that makes no MPI call ([`Communicator::alone`]'s contract).
#[derive(Clone, Copy)]
struct Handle<T>(T);
// SAFETY: MPI handles are plain values; the serialisation of the calls that use them is argued above.
unsafe impl<T> Send for Handle<T> {}

/// Starts a one-byte non-blocking send of `tag` to `to`.
fn send_byte(comm: ffi::MPI_Comm, to: i32, tag: i32) -> Handle<ffi::MPI_Request> {
    let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
    // SAFETY: the buffer is a static byte.
    unsafe {
        ffi::MPI_Isend(
            (&BEAT_BYTE as *const u8).cast(),
            1,
            ffi::RSMPI_UINT8_T,
            to,
            tag,
            comm,
            &mut req,
        );
    }
    Handle(req)
}

/// Drops the sends that have completed.
fn reap(pending: &mut Vec<Handle<ffi::MPI_Request>>) {
    pending.retain_mut(|req| {
        let mut done = 0;
        // SAFETY: active requests from `send_byte`.
        unsafe { ffi::MPI_Test(&mut req.0, &mut done, ffi::RSMPI_STATUS_IGNORE) };
        done == 0
    });
}

impl Mpi {
    /// The root's side of [`Communicator::alone`]: `work` runs while a thread sends every other rank a heartbeat
    /// every [`BEAT`](super::watch::BEAT); then every rank gets the end message.
    fn work_alone(&self, root: usize, work: &mut dyn FnMut()) -> Result<()> {
        let comm = Handle(self.beats.as_raw());
        let others: Vec<i32> = (0..self.size() as i32)
            .filter(|&r| r != root as i32)
            .collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (stop_ref, others_ref) = (&stop, &others);
        let mut pending = std::thread::scope(|s| {
            let beat = s.spawn(move || {
                // The whole handle (closures capture fields apart, and the raw handle alone is not `Send`).
                let (comm, stop, others) = (comm, stop_ref, others_ref);
                let mut pending = Vec::new();
                let mut last: Option<Instant> = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if last.is_none_or(|t| t.elapsed() >= super::watch::BEAT) {
                        reap(&mut pending);
                        pending.extend(others.iter().map(|&r| send_byte(comm.0, r, TAG_BEAT)));
                        last = Some(Instant::now());
                    }
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                Handle(pending)
            });
            work();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            beat.thread().unpark();
            beat.join().expect("heartbeat thread")
        })
        .0;
        pending.extend(others.iter().map(|&r| send_byte(comm.0, r, TAG_DONE)));
        let start = Instant::now();
        loop {
            reap(&mut pending);
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= self.watch.limit() {
                return Err(Error::distributed(
                    Some(self.rank()),
                    "ending work alone",
                    format!(
                        "{} ranks did not take the end message within {} s",
                        pending.len(),
                        self.watch.limit().as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A waiting rank's side of [`Communicator::alone`]: reads the root's heartbeats until its end message, and
    /// fails when the root has been silent for this rank's collective deadline.
    fn wait_alone(&self, root: usize, what: &str) -> Result<()> {
        let start = Instant::now();
        let mut heard = start;
        let mut beats = 0u64;
        let from = self.beats.process_at_rank(root as i32);
        loop {
            while let Some((msg, status)) = from.immediate_matched_probe() {
                let (_, _): (u8, _) = Message::matched_receive(msg);
                if status.tag() == TAG_DONE {
                    return Ok(());
                }
                heard = Instant::now();
                beats += 1;
            }
            if heard.elapsed() >= self.watch.limit() {
                return Err(Error::distributed(
                    Some(self.rank()),
                    format!("waiting for rank {root}"),
                    format!(
                        "rank {root} has been silent for {} s while it worked alone on {what} (after {beats} \
                         heartbeat{} in {} s) — it hung or stopped (look at its log)",
                        heard.elapsed().as_secs(),
                        if beats == 1 { "" } else { "s" },
                        (heard - start).as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }
    fn size(&self) -> usize {
        self.comm.size() as usize
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let count = i32::try_from(buf.len()).map_err(|_| {
            Error::distributed(
                Some(self.rank()),
                "all-reduce",
                format!("{} values exceed an MPI count", buf.len()),
            )
        })?;
        let mut t = self.watch.begin("all-reduce");
        // rsmpi has no MPI_IN_PLACE: reduce from a copy.
        let send = buf.to_vec();
        let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: both buffers hold `count` floats and outlive the request (the copy is leaked on a timeout, when
        // the request is still active and the job is about to abort).
        unsafe {
            ffi::MPI_Iallreduce(
                send.as_ptr().cast(),
                buf.as_mut_ptr().cast(),
                count,
                ffi::RSMPI_FLOAT,
                ffi::RSMPI_SUM,
                self.comm.as_raw(),
                &mut req,
            );
        }
        let r = self.wait(&mut t, &mut req);
        if r.is_err() {
            std::mem::forget(send);
        }
        r
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        self.root(root)?;
        let mut t = self.watch.begin("broadcast");
        let mut len = buf.len() as u64;
        self.broadcast_part(&mut t, (&mut len as *mut u64).cast(), 8, root)?;
        buf.resize(len as usize, 0);
        self.broadcast_part(&mut t, buf.as_mut_ptr(), buf.len(), root)
    }
    fn gather_bytes(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.watch.begin("gather");
        let p = self.root(root)?;
        let len = i32::try_from(data.len()).map_err(|_| {
            Error::distributed(
                Some(self.rank()),
                "gather",
                format!("{} bytes exceed 2 GiB", data.len()),
            )
        })?;
        if self.rank() != root {
            p.gather_into(&len);
            p.gather_varcount_into(data);
            return Ok(None);
        }
        let mut lens = vec![0i32; self.size()];
        p.gather_into_root(&len, &mut lens[..]);
        let displs: Vec<i32> = lens
            .iter()
            .scan(0i32, |acc, &l| {
                let d = *acc;
                *acc += l;
                Some(d)
            })
            .collect();
        let total: usize = lens.iter().map(|&l| l as usize).sum();
        let mut out = vec![0u8; total];
        {
            let mut part = PartitionMut::new(&mut out[..], &lens[..], &displs[..]);
            p.gather_varcount_into_root(data, &mut part);
        }
        Ok(Some(
            displs
                .iter()
                .zip(&lens)
                .map(|(&d, &l)| out[d as usize..(d + l) as usize].to_vec())
                .collect(),
        ))
    }
    fn barrier(&self) -> Result<()> {
        let mut t = self.watch.begin("barrier");
        let mut req = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: a barrier has no buffers.
        unsafe { ffi::MPI_Ibarrier(self.comm.as_raw(), &mut req) };
        self.wait(&mut t, &mut req)
    }
    fn split(&self, color: usize) -> Result<Box<dyn Communicator>> {
        self.watch.begin("split");
        let comm = self
            .comm
            .split_by_color(Color::with_value(color as i32))
            .ok_or_else(|| {
                Error::distributed(
                    Some(self.rank()),
                    "split",
                    format!("MPI split by color {color} failed"),
                )
            })?;
        let sub = Mpi::wrap(comm, self.local_rank, self._universe.clone());
        sub.watch.set_timeout(self.watch.timeout());
        Ok(Box::new(sub))
    }
    fn set_collective_timeout(&self, timeout: Duration) {
        self.watch.set_timeout(timeout);
    }
    fn set_step(&self, step: u64) {
        self.watch.set_step(step);
    }
    fn alone(&self, root: usize, what: &str, work: &mut dyn FnMut()) -> Result<()> {
        self.root(root)?;
        if self.size() == 1 {
            work();
            Ok(())
        } else if self.rank() == root {
            self.work_alone(root, work)
        } else {
            self.wait_alone(root, what)
        }
    }
    fn arrival_board(&self) -> Result<Option<Box<dyn Arrivals>>> {
        Ok(Some(Box::new(Board::new(&self.comm))))
    }
    fn abort(&self, code: i32) -> ! {
        tracing::error!("rank {} aborts the job (exit code {code})", self.rank());
        self.comm.abort(code)
    }
}
