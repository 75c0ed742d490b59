//! Progress for long jobs, on stderr, on rank 0 only, and never with `--quiet`: a bar on a terminal; elsewhere (a
//! Slurm `.out` file, a pipe) one plain line every [`set_line_interval`] seconds — the bar's text as it stands then —
//! so that a batch log shows where a job is without a redrawn line per item.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

static ENABLED: AtomicBool = AtomicBool::new(true);
/// Seconds between plain lines; 0 until a program asks for them (library users and tests get none).
static LINE_EVERY_S: AtomicU64 = AtomicU64::new(0);

/// Turns progress on or off for the whole process (`--quiet`, non-zero ranks).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Writes progress as a plain line this often when stderr is not a terminal (`--progress-every`; at least 1 s).
/// Without this call, such progress is not shown.
pub fn set_line_interval(seconds: u64) {
    LINE_EVERY_S.store(seconds.max(1), Ordering::Relaxed);
}

/// A "terminal" that writes a bar's current line to stderr at most once per interval: the first draw, then one
/// every interval, and the last state when the bar goes away.
#[derive(Debug)]
struct PlainLines {
    every: Duration,
    /// When a line was last written, and the latest line not written.
    state: Mutex<(Option<Instant>, Option<String>)>,
}

impl PlainLines {
    fn new(every: Duration) -> Self {
        PlainLines {
            every,
            state: Mutex::new((None, None)),
        }
    }
}

impl Drop for PlainLines {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(line) = state.1.take() {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.is_some_and(|t| t.elapsed() < self.every) {
            state.1 = Some(s.to_string());
            return Ok(());
        }
        *state = (Some(Instant::now()), None);
        writeln!(std::io::stderr().lock(), "{s}")
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a new bar draws: stderr's terminal, plain lines, or nowhere.
fn target() -> ProgressDrawTarget {
    if !ENABLED.load(Ordering::Relaxed) {
        ProgressDrawTarget::hidden()
    } else if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else if LINE_EVERY_S.load(Ordering::Relaxed) == 0 {
        ProgressDrawTarget::hidden()
    } else {
        // Not rate-limited by indicatif: every state reaches the lines, which keep the last for the end.
        ProgressDrawTarget::term_like(Box::new(PlainLines::new(Duration::from_secs(
            LINE_EVERY_S.load(Ordering::Relaxed),
        ))))
    }
}

/// A bar over `len` items labelled `what` (see the module doc for where it shows).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), target());
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A counter for streams of unknown length (shown as [`bar`]s are).
pub fn counter(what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, target());
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} {pos} ({per_sec})").expect("static template"),
    );
    pb.set_message(what.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_hold_back_lines_within_the_interval_and_keep_the_last() {
        let t = PlainLines::new(Duration::from_secs(3600));
        t.write_line("first").unwrap();
        for i in 0..5 {
            t.write_line(&format!("step {i}")).unwrap();
        }
        let state = t.state.lock().unwrap();
        assert!(state.0.is_some());
        assert_eq!(state.1.as_deref(), Some("step 4"));
    }
}
