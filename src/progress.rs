//! Progress bars for long jobs (shown on stderr, on rank 0 only, and never with `--quiet`).

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns progress bars on or off for the whole process (`--quiet`, non-zero ranks).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// A bar over `len` items labelled `what`; hidden when disabled.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if ENABLED.load(Ordering::Relaxed) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A counter for streams of unknown length; hidden when disabled.
pub fn counter(what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        None,
        if ENABLED.load(Ordering::Relaxed) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} {pos} ({per_sec})").expect("static template"),
    );
    pb.set_message(what.to_string());
    pb
}
