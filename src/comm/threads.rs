//! Ranks as threads of one process, exchanging through shared memory: tests of the data-parallel logic without
//! MPI. Reductions add the ranks' contributions in rank order, so every rank gets bit-identical results.

use std::collections::HashMap;
use std::sync::{Arc, Barrier, Mutex};

use super::{Communicator, Seq};
use crate::error::{Error, Result};

struct Shared {
    size: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
    /// Sub-communicators being formed by `split`, keyed by (split number, color).
    groups: Mutex<HashMap<(u64, usize), Arc<Shared>>>,
}

impl Shared {
    fn new(size: usize) -> Arc<Shared> {
        Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
            groups: Mutex::new(HashMap::new()),
        })
    }
}

/// One rank of an in-process world.
pub struct Threads {
    rank: usize,
    shared: Arc<Shared>,
    seq: Seq,
    splits: std::sync::atomic::AtomicU64,
}

impl Threads {
    /// A world of `size` ranks; hand one to each thread.
    pub fn world(size: usize) -> Vec<Threads> {
        assert!(size > 0);
        let shared = Shared::new(size);
        (0..size)
            .map(|rank| Threads {
                rank,
                shared: shared.clone(),
                seq: Seq::default(),
                splits: Default::default(),
            })
            .collect()
    }

    /// Every rank deposits `data`; returns all deposits in rank order (to every rank).
    fn exchange(&self, data: Vec<u8>) -> Vec<Vec<u8>> {
        self.shared.slots.lock().expect("slots")[self.rank] = data;
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().expect("slots").clone();
        // Nobody may deposit the next collective's data before everyone has read this one's.
        self.shared.barrier.wait();
        all
    }
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

impl Threads {
    /// Runs `f` on `size` in-process ranks, one thread each, and returns their results in rank order.
    pub fn run<T: Send>(size: usize, f: impl Fn(&dyn Communicator) -> T + Sync) -> Vec<T> {
        let world = Threads::world(size);
        std::thread::scope(|s| {
            let handles: Vec<_> = world
                .iter()
                .map(|c| {
                    let f = &f;
                    s.spawn(move || f(c))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank thread panicked"))
                .collect()
        })
    }
}

impl Communicator for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn local_rank(&self) -> usize {
        self.rank
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.seq.next("all_reduce_sum_f32", self.rank);
        let bytes: Vec<u8> = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
        let all = self.exchange(bytes);
        for (r, b) in all.iter().enumerate() {
            if b.len() != buf.len() * 4 {
                return Err(Error::distributed(
                    Some(self.rank),
                    "all-reduce",
                    format!(
                        "rank {r} sent {} values, rank {} {}",
                        b.len() / 4,
                        self.rank,
                        buf.len()
                    ),
                ));
            }
        }
        buf.iter_mut().for_each(|x| *x = 0.0);
        for b in &all {
            for (x, v) in buf.iter_mut().zip(f32s(b)) {
                *x += v;
            }
        }
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        self.seq.next("broadcast_bytes", self.rank);
        let mut all = self.exchange(if self.rank == root {
            buf.clone()
        } else {
            Vec::new()
        });
        *buf = std::mem::take(&mut all[root]);
        Ok(())
    }
    fn gather_bytes(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.seq.next("gather_bytes", self.rank);
        let all = self.exchange(data.to_vec());
        Ok((self.rank == root).then_some(all))
    }
    fn barrier(&self) -> Result<()> {
        self.seq.next("barrier", self.rank);
        self.shared.barrier.wait();
        Ok(())
    }
    fn split(&self, color: usize) -> Result<Box<dyn Communicator>> {
        self.seq.next("split", self.rank);
        let n = self
            .splits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let colors: Vec<usize> = self
            .exchange((color as u64).to_le_bytes().to_vec())
            .iter()
            .map(|b| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize)
            .collect();
        let members: Vec<usize> = (0..colors.len()).filter(|&r| colors[r] == color).collect();
        let shared = self
            .shared
            .groups
            .lock()
            .expect("groups")
            .entry((n, color))
            .or_insert_with(|| Shared::new(members.len()))
            .clone();
        self.shared.barrier.wait();
        Ok(Box::new(Threads {
            rank: members
                .iter()
                .position(|&r| r == self.rank)
                .expect("member"),
            shared,
            seq: Seq::default(),
            splits: Default::default(),
        }))
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectives_agree_across_threads() {
        let results = Threads::run(3, |c| {
            let r = c.rank();
            let mut v = vec![r as f32, 1.0];
            c.all_reduce_sum_f32(&mut v).unwrap();
            let mut b = if r == 1 {
                b"hello".to_vec()
            } else {
                Vec::new()
            };
            c.broadcast_bytes(&mut b, 1).unwrap();
            let g = c.gather_bytes(&[r as u8; 2], 0).unwrap();
            let sub = c.split(r % 2).unwrap();
            let mut w = vec![1.0f32];
            sub.all_reduce_sum_f32(&mut w).unwrap();
            c.barrier().unwrap();
            (v, b, g, sub.rank(), sub.size(), w[0])
        });
        for (r, (v, b, g, sub_rank, sub_size, w)) in results.into_iter().enumerate() {
            assert_eq!(v, vec![3.0, 3.0]);
            assert_eq!(b, b"hello");
            assert_eq!(g.is_some(), r == 0);
            if let Some(g) = g {
                assert_eq!(g, vec![vec![0, 0], vec![1, 1], vec![2, 2]]);
            }
            // Colors: ranks 0 and 2 → 0, rank 1 → 1.
            assert_eq!(
                (sub_rank, sub_size),
                if r == 1 { (0, 1) } else { (r / 2, 2) }
            );
            assert_eq!(w, sub_size as f32);
        }
    }
}
