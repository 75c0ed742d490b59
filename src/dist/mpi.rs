//! MPI ranks (rsmpi over Open MPI). MPI's default error handler is fatal, so a failed collective or a dead peer
//! ends the job instead of hanging it; `abort` calls `MPI_Abort` on the world.

use std::rc::Rc;

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::{Color, Communicator as _, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use super::{Communicator, Seq};
use crate::error::{Error, Result};

/// An MPI communicator (the world, or a part of it made by `split`).
pub struct Mpi {
    comm: SimpleCommunicator,
    local_rank: usize,
    seq: Seq,
    // Finalises MPI when the last communicator is dropped.
    _universe: Rc<Universe>,
}

impl Mpi {
    /// Initialises MPI and returns the world.
    pub fn init() -> Result<Mpi> {
        // Serialized: training calls MPI from its compute-pool thread while the main thread waits.
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| Error::Config("MPI is already initialised in this process".into()))?;
        let comm = universe.world();
        let local_rank = comm.split_shared(comm.rank()).rank() as usize;
        tracing::debug!(
            rank = comm.rank(),
            size = comm.size(),
            local_rank,
            "MPI initialised"
        );
        Ok(Mpi {
            comm,
            local_rank,
            seq: Seq::default(),
            _universe: Rc::new(universe),
        })
    }

    fn root(&self, root: usize) -> Result<mpi::topology::Process<'_>> {
        if root >= self.size() {
            return Err(Error::Config(format!(
                "root rank {root} in a world of {}",
                self.size()
            )));
        }
        Ok(self.comm.process_at_rank(root as i32))
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
        self.seq.next("all_reduce_sum_f32", self.rank());
        // rsmpi has no MPI_IN_PLACE: reduce from a copy.
        let send = buf.to_vec();
        self.comm
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        self.seq.next("broadcast_bytes", self.rank());
        let p = self.root(root)?;
        let mut len = buf.len() as u64;
        p.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        p.broadcast_into(&mut buf[..]);
        Ok(())
    }
    fn gather_bytes(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.seq.next("gather_bytes", self.rank());
        let p = self.root(root)?;
        let len = i32::try_from(data.len())
            .map_err(|_| Error::Config(format!("gather of {} bytes exceeds 2 GiB", data.len())))?;
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
        self.seq.next("barrier", self.rank());
        self.comm.barrier();
        Ok(())
    }
    fn split(&self, color: usize) -> Result<Box<dyn Communicator>> {
        self.seq.next("split", self.rank());
        let comm = self
            .comm
            .split_by_color(Color::with_value(color as i32))
            .ok_or_else(|| Error::Config(format!("MPI split by color {color} failed")))?;
        Ok(Box::new(Mpi {
            comm,
            local_rank: self.local_rank,
            seq: Seq::default(),
            _universe: self._universe.clone(),
        }))
    }
    fn abort(&self, code: i32) -> ! {
        tracing::error!("rank {} aborts the job (exit code {code})", self.rank());
        self.comm.abort(code)
    }
}
