//! The run directory's layout: every stage's outputs under one root, named in one place.
//!
//! ```text
//! RUN_DIR/config.resolved.toml   the config every stage ran with
//!         stages/<stage>.json    a stage's input hash, once it completed
//!         labels/<source>.csv    labeler outputs; labels/metrics.json their agreement with the truth
//!         labelers/<name>/       trained BERT labelers
//!         teacher/               VisualCheXbert's teacher classifier: a run directory of its own
//!         shards/                Parquet shards and index.json
//!         train/<run>/           checkpoints, best.ckpt, metrics.csv/jsonl, summary.json
//!         eval/<run>/            predictions_<split>.csv, scores_<split>.json
//! ```
//!
//! A `<run>` is one trained classifier ([`ReplicateId::dir_name`]): `<source>` for a source's first replicate (a
//! study of one replicate per source has exactly the directories it always had), `<source>.r<k>` for replicate k.
//!
//! ```text
//!         results.json           every number of the report
//!         report.md, report.html, plots/
//!         .lock                  held by the job writing the run (see RunDir::lock)
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One classifier of a study: a label source and its replicate, 1-based (replicates differ in their training seed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicateId {
    /// The label source.
    pub source: String,
    /// The replicate, from 1.
    pub replicate: u32,
}

impl ReplicateId {
    /// Replicate `replicate` of `source`.
    pub fn new(source: impl Into<String>, replicate: u32) -> Self {
        ReplicateId {
            source: source.into(),
            replicate,
        }
    }

    /// Its directory under `train/` and `eval/`: the source's name for replicate 1, `<source>.r<k>` for replicate k.
    /// Source names are `[a-z0-9_]+`, so no source's name is another's replicate.
    pub fn dir_name(&self) -> String {
        if self.replicate <= 1 {
            self.source.clone()
        } else {
            format!("{}.r{}", self.source, self.replicate)
        }
    }
}

/// Serde default of a replicate number or count: 1 (what a field absent from the JSON of a single run means).
pub(crate) fn first_replicate() -> u32 {
    1
}

/// Serde `skip_serializing_if` of a replicate number or count: a single run's JSON leaves it out.
pub(crate) fn is_first_replicate(k: &u32) -> bool {
    *k == 1
}

impl std::fmt::Display for ReplicateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (replicate {})", self.source, self.replicate)
    }
}

/// A run directory (see the module documentation for its layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// The run directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir(root.into())
    }

    /// Its root.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `config.resolved.toml`.
    pub fn resolved_config(&self) -> PathBuf {
        self.0.join("config.resolved.toml")
    }

    /// `stages/`, the stages' completion markers.
    pub fn stages(&self) -> PathBuf {
        self.0.join("stages")
    }

    /// `labels/`.
    pub fn labels(&self) -> PathBuf {
        self.0.join("labels")
    }

    /// `labels/<source>.csv`: a labeler source's labels.
    pub fn labels_of(&self, source: &str) -> PathBuf {
        self.labels().join(format!("{source}.csv"))
    }

    /// `labels/metrics.json`: the labelers' agreement with the dataset's truth.
    pub fn label_metrics(&self) -> PathBuf {
        self.labels().join("metrics.json")
    }

    /// `labelers/`.
    pub fn labelers(&self) -> PathBuf {
        self.0.join("labelers")
    }

    /// `labelers/<name>/`: a trained BERT labeler.
    pub fn labeler(&self, name: &str) -> PathBuf {
        self.labelers().join(name)
    }

    /// `teacher/`: the run that trains VisualCheXbert's teacher classifier.
    pub fn teacher(&self) -> RunDir {
        RunDir(self.0.join("teacher"))
    }

    /// `shards/`.
    pub fn shards(&self) -> PathBuf {
        self.0.join("shards")
    }

    /// `train/`.
    pub fn train_root(&self) -> PathBuf {
        self.0.join("train")
    }

    /// `train/<run>/`: one classifier's checkpoints and logs (`run` is a source's name, or a
    /// [`ReplicateId::dir_name`]).
    pub fn train(&self, run: &str) -> PathBuf {
        self.train_root().join(run)
    }

    /// `eval/`.
    pub fn eval_root(&self) -> PathBuf {
        self.0.join("eval")
    }

    /// `eval/<run>/`: one classifier's predictions and scores (`run` as for [`RunDir::train`]).
    pub fn eval(&self, run: &str) -> PathBuf {
        self.eval_root().join(run)
    }

    /// `results.json`.
    pub fn results(&self) -> PathBuf {
        self.0.join("results.json")
    }

    /// `report.md`.
    pub fn report_md(&self) -> PathBuf {
        self.0.join("report.md")
    }

    /// `report.html`.
    pub fn report_html(&self) -> PathBuf {
        self.0.join("report.html")
    }

    /// `plots/`.
    pub fn plots(&self) -> PathBuf {
        self.0.join("plots")
    }
}

impl AsRef<Path> for RunDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// A job's hold on its run directory ([`RunDir::lock`]), released when dropped or when the process ends, however
/// it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: Option<std::fs::File>,
}

/// Who holds a lock: host, process, Slurm job and step where there is one, and since when.
fn holder() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let mut s = format!("host {host}, pid {}", std::process::id());
    if let Some(job) = env("SLURM_JOB_ID") {
        s.push_str(&format!(", Slurm job {job}"));
        if let Some(step) = env("SLURM_STEP_ID") {
            s.push_str(&format!(" step {step}"));
        }
    }
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{s}, since unix time {since}")
}

impl RunDir {
    /// `.lock`: names the job that writes the run.
    pub fn lock_file(&self) -> PathBuf {
        self.0.join(".lock")
    }

    /// Takes the run directory for this process, or refuses, naming the job that holds it: two jobs on one run
    /// (a double submission, a step left over from before a requeue) would overwrite each other's files. The
    /// hold is an advisory `flock` on `.lock`, which the kernel (or the network file system's lock manager)
    /// releases when the process ends, even when it is killed: a dead job's lock is taken over with no stale
    /// state to clear. On a file system without locks, the run goes on unguarded, with a warning.
    pub fn lock(&self) -> Result<RunLock> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(&self.0).map_err(|e| Error::io(&self.0, e))?;
        let path = self.lock_file();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                return Err(Error::Input(format!(
                    "{}: the run is in use by another job ({}); wait for it to end or cancel it, or give this \
                     one another run_dir",
                    self.0.display(),
                    if held.trim().is_empty() {
                        "it has not said who it is yet"
                    } else {
                        held.trim()
                    }
                )));
            }
            tracing::warn!(
                "{}: cannot lock ({e}); nothing stops a second job from writing into this run",
                path.display()
            );
            return Ok(RunLock { _file: None });
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        file.rewind().map_err(|e| Error::io(&path, e))?;
        file.write_all(holder().as_bytes())
            .map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { _file: Some(file) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_named_in_one_place() {
        let r = RunDir::new("/r");
        assert_eq!(r.train("chexpert"), Path::new("/r/train/chexpert"));
        assert_eq!(r.eval("truth"), Path::new("/r/eval/truth"));
        assert_eq!(r.labels_of("rules"), Path::new("/r/labels/rules.csv"));
        assert_eq!(r.label_metrics(), Path::new("/r/labels/metrics.json"));
        assert_eq!(r.teacher().shards(), Path::new("/r/teacher/shards"));
        assert_eq!(r.resolved_config(), Path::new("/r/config.resolved.toml"));
    }

    #[test]
    fn a_second_hold_is_refused_naming_the_first_and_a_released_one_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let first = run.lock().unwrap();
        // flock holds per open file: a second open, as another job's, is refused.
        let err = run.lock().unwrap_err().to_string();
        assert!(
            err.contains("in use by another job")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = run.lock().unwrap();
        drop(again);
    }
}
