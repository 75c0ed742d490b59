//! Deadlines for collectives, and the names of the ranks that did not arrive. Neither MPI nor NCCL gives up on a
//! collective that one rank never joins (a hung file system, a stopped process, a deadlocked loader): the job would
//! wait until its wall time runs out. Every watched collective gets a number — the same on every rank, since ranks
//! call collectives in the same order — and before entering it a rank posts the number to an arrival board: rank 0
//! hears every rank, rank 1 hears rank 0. While it waits, a rank posts the number again every second. A rank whose
//! wait passes `distributed.collective_timeout_s` fails with an error naming the collective, the training step and
//! the ranks holding it up — those whose last post is an earlier collective, and those that arrived but went silent
//! (stopped or stuck inside it); the caller then aborts the job. Rank 1 waits 2 s longer and the other ranks 5 s longer than rank 0, so that the rank that knows
//! the most reports first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Where ranks post the collectives they enter.
pub trait Arrivals {
    /// Posts that this rank is in collective `seq` (on entering it, and every [`BEAT`] while it waits).
    fn arrive(&self, seq: u64);
    /// What this rank heard from each rank it hears from, or `None` when it hears from no one (ranks other than 0
    /// and 1).
    fn heard(&self) -> Option<Vec<Heard>>;
    /// Reads the posts that have arrived (called while waiting, so that silences are measured from when a post
    /// was sent, not from when it happened to be read).
    fn poll(&self) {}
}

/// What the board heard from one rank.
#[derive(Clone, Debug, PartialEq)]
pub struct Heard {
    /// The rank heard from.
    pub rank: usize,
    /// The last collective it posted (`None`: nothing yet).
    pub last: Option<u64>,
    /// Time since its last post.
    pub silent: Duration,
}

/// How often a waiting rank posts again.
pub const BEAT: Duration = Duration::from_secs(1);

/// A rank that arrived and has not posted for this long (2.5 beats) is taken to be stopped or stuck.
const SILENT: Duration = Duration::from_millis(2500);

/// One watched collective in progress.
#[derive(Debug)]
pub struct Ticket {
    /// The collective's number in this communicator.
    pub seq: u64,
    op: &'static str,
    start: Instant,
    beat: Instant,
}

/// Numbers, times and explains the collectives of one communicator.
pub struct Watch {
    rank: usize,
    timeout_s: AtomicU64,
    step: AtomicU64,
    seq: AtomicU64,
    board: Option<Box<dyn Arrivals>>,
}

const NO_STEP: u64 = u64::MAX;

impl Watch {
    /// A watch for `rank` with the default `distributed.collective_timeout_s`; `board` is where arrivals are
    /// posted.
    pub fn new(rank: usize, board: Option<Box<dyn Arrivals>>) -> Watch {
        Watch {
            rank,
            timeout_s: AtomicU64::new(
                super::DistributedConfig::default()
                    .collective_timeout_s
                    .max(1),
            ),
            step: AtomicU64::new(NO_STEP),
            seq: AtomicU64::new(0),
            board,
        }
    }

    /// Sets the deadline of every later collective.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_s
            .store(timeout.as_secs().max(1), Ordering::Relaxed);
    }

    /// Records the training step later collectives belong to (for messages).
    pub fn set_step(&self, step: u64) {
        self.step.store(step, Ordering::Relaxed);
    }

    /// Numbers a collective and posts this rank's arrival.
    pub fn begin(&self, op: &'static str) -> Ticket {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(seq, op, rank = self.rank, "collective");
        if let Some(b) = &self.board {
            b.arrive(seq);
        }
        let now = Instant::now();
        Ticket {
            seq,
            op,
            start: now,
            beat: now,
        }
    }

    /// Called while waiting for `t`: posts again every [`BEAT`], so the board can tell a waiting rank from a
    /// stopped one.
    pub fn waiting(&self, t: &mut Ticket) {
        let Some(b) = &self.board else { return };
        if t.beat.elapsed() >= BEAT {
            t.beat = Instant::now();
            b.arrive(t.seq);
        } else {
            b.poll();
        }
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s.load(Ordering::Relaxed))
    }

    /// How long this rank waits: the timeout on rank 0, 2 s more on rank 1, 5 s more elsewhere.
    pub fn limit(&self) -> Duration {
        self.timeout()
            + Duration::from_secs(match self.rank {
                0 => 0,
                1 => 2,
                _ => 5,
            })
    }

    /// Whether `t` has waited past this rank's limit.
    pub fn expired(&self, t: &Ticket) -> bool {
        t.start.elapsed() >= self.limit()
    }

    /// The error for a collective that passed its deadline, with what the board knows.
    pub fn error(&self, t: &Ticket, backend: &str) -> Error {
        let step = self.step.load(Ordering::Relaxed);
        Error::distributed(
            None,
            "collective deadline",
            describe(
                &format!("{backend} {} #{}", t.op, t.seq),
                (step != NO_STEP).then_some(step),
                t.seq,
                self.limit(),
                self.rank,
                self.board.as_ref().and_then(|b| b.heard()),
            ),
        )
    }
}

/// The message for collective `what` (number `seq`) that `rank` waited `waited` for; `heard` is what its board
/// knows.
pub fn describe(
    what: &str,
    step: Option<u64>,
    seq: u64,
    waited: Duration,
    rank: usize,
    heard: Option<Vec<Heard>>,
) -> String {
    let head = format!(
        "{what}{} did not complete within {} s on rank {rank}",
        step.map(|s| format!(" at training step {s}"))
            .unwrap_or_default(),
        waited.as_secs()
    );
    let Some(heard) = heard else {
        return format!("{head}; rank 0 names the ranks that did not arrive");
    };
    let missing: Vec<_> = heard
        .iter()
        .filter(|h| h.last.is_none_or(|l| l < seq) || h.silent >= SILENT)
        .collect();
    if missing.is_empty() {
        return if heard.len() == 1 && heard[0].rank == 0 {
            format!("{head}; rank 0 arrived and names the ranks that did not")
        } else {
            format!(
                "{head}: every rank arrived and is waiting, so the collective itself is stuck (network, or a \
                 GPU fault)"
            )
        };
    }
    const SHOWN: usize = 16;
    let names: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(|h| match h.last {
            Some(l) if l >= seq => format!(
                "rank {} (arrived, then silent for {} s)",
                h.rank,
                h.silent.as_secs()
            ),
            Some(l) => format!("rank {} (last at #{l})", h.rank),
            None => format!("rank {} (never arrived at any)", h.rank),
        })
        .collect();
    let more = if missing.len() > SHOWN {
        format!(" and {} more", missing.len() - SHOWN)
    } else {
        String::new()
    };
    let (subject, verb) = if missing.len() == 1 {
        ("rank", "it")
    } else {
        ("ranks", "they")
    };
    format!(
        "{head}: {} {subject} holding it up: {}{more} — {verb} hung or stopped (look at {} log)",
        missing.len(),
        names.join(", "),
        if missing.len() == 1 {
            "that rank's"
        } else {
            "their"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn h(rank: usize, last: Option<u64>, silent_s: u64) -> Heard {
        Heard {
            rank,
            last,
            silent: Duration::from_secs(silent_s),
        }
    }

    struct Board(Mutex<Vec<Heard>>);
    impl Arrivals for Board {
        fn arrive(&self, seq: u64) {
            self.0.lock().unwrap()[0].last = Some(seq);
        }
        fn heard(&self) -> Option<Vec<Heard>> {
            Some(self.0.lock().unwrap().clone())
        }
    }

    #[test]
    fn the_board_names_the_ranks_holding_a_collective_up() {
        let board = Board(Mutex::new(vec![
            h(0, None, 0),
            h(1, Some(6), 0),
            h(2, Some(7), 1),
            h(3, None, 9),
            h(4, Some(7), 4),
        ]));
        let w = Watch::new(0, Some(Box::new(board)));
        w.set_timeout(Duration::from_secs(3));
        for _ in 0..7 {
            let _ = w.begin("all-reduce");
        }
        w.set_step(41);
        let t = w.begin("all-reduce");
        assert_eq!(t.seq, 7);
        let msg = w.error(&t, "MPI").to_string();
        assert!(
            msg.contains(
                "MPI all-reduce #7 at training step 41 did not complete within 3 s on rank 0"
            ),
            "{msg}"
        );
        assert!(
            msg.contains(
                "3 ranks holding it up: rank 1 (last at #6), rank 3 (never arrived at any), \
                 rank 4 (arrived, then silent for 4 s)"
            ),
            "{msg}"
        );
        assert!(!msg.contains("rank 2 ("), "{msg}");
    }

    #[test]
    fn ranks_without_the_full_board_say_who_knows() {
        let w = Duration::from_secs(5);
        let msg = describe("MPI barrier #2", None, 2, w, 3, None);
        assert!(
            msg.ends_with("rank 0 names the ranks that did not arrive"),
            "{msg}"
        );
        // Rank 1 hears rank 0 only.
        let late = describe("x #4", None, 4, w, 1, Some(vec![h(0, Some(3), 0)]));
        assert!(
            late.contains("1 rank holding it up: rank 0 (last at #3)"),
            "{late}"
        );
        let there = describe("x #4", None, 4, w, 1, Some(vec![h(0, Some(4), 1)]));
        assert!(
            there.ends_with("rank 0 arrived and names the ranks that did not"),
            "{there}"
        );
        let all = describe(
            "x #4",
            None,
            4,
            w,
            0,
            Some(vec![h(0, Some(4), 0), h(1, Some(4), 1)]),
        );
        assert!(all.contains("every rank arrived and is waiting"), "{all}");
    }

    #[test]
    fn long_lists_are_cut() {
        let heard: Vec<_> = (0..40).map(|r| h(r, (r == 0).then_some(9), 0)).collect();
        let msg = describe("x #9", None, 9, Duration::from_secs(1), 0, Some(heard));
        assert!(msg.contains("39 ranks holding it up"), "{msg}");
        assert!(
            msg.contains("rank 16 (never") && !msg.contains("rank 17 ("),
            "{msg}"
        );
        assert!(msg.contains("and 23 more"), "{msg}");
    }

    #[test]
    fn later_ranks_wait_longer() {
        let limits: Vec<_> = (0..3)
            .map(|r| {
                let w = Watch::new(r, None);
                w.set_timeout(Duration::from_secs(10));
                w.limit().as_secs()
            })
            .collect();
        assert_eq!(limits, [10, 12, 15]);
    }
}
