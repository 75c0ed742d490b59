//! Training checkpoints: model (parameters and BatchNorm statistics), optimizer state, loop position and the
//! training configuration, in one file written atomically (temp + fsync + rename) and checked by SHA-256 on load.
//!
//! File layout: the line `CHEXLAB-CHECKPOINT 1`, one line of JSON ([`CheckpointMeta`]), then the model bytes and
//! the optimizer bytes (Burn's burnpack records), whose lengths and digests the JSON gives.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::io::hex;

const MAGIC: &str = "CHEXLAB-CHECKPOINT 1";

/// Where the loop stands and what it has seen; everything a resume needs besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epoch of the next batch.
    pub epoch: u64,
    /// Index of the next batch within that epoch.
    pub batch: u64,
    /// Best validation metric so far and the step it was reached at.
    pub best: Option<(f64, u64)>,
    /// Validations since the best one (early stopping).
    pub since_best: u32,
    /// Hash of the training configuration (see [`TrainSettings`](crate::train::TrainSettings)).
    pub config_hash: String,
    /// The training configuration itself, to name the keys that differ on a refused resume.
    pub config: serde_json::Value,
    /// How the ranks shared the run that wrote it (absent in checkpoints of earlier versions).
    #[serde(default)]
    pub layout: Option<Layout>,
    /// Work done up to this checkpoint, over every process that trained the run.
    #[serde(default)]
    pub totals: Totals,
    /// Length of the model record.
    pub model_len: u64,
    /// Its SHA-256.
    pub model_sha256: String,
    /// Length of the optimizer record.
    pub optim_len: u64,
    /// Its SHA-256.
    pub optim_sha256: String,
}

/// Work done on a run, summed over every process that trained it (the first and each resume), so that a resumed
/// run's summary counts all of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Images seen by all ranks together.
    pub images_seen: u64,
    /// Wall time of the training loops.
    pub seconds: f64,
    /// Time spent in training steps only.
    pub step_seconds: f64,
    /// Time spent in the gradient all-reduce.
    pub allreduce_seconds: f64,
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            images_seen: self.images_seen + o.images_seen,
            seconds: self.seconds + o.seconds,
            step_seconds: self.step_seconds + o.step_seconds,
            allreduce_seconds: self.allreduce_seconds + o.allreduce_seconds,
        }
    }
}

/// How a run's ranks share its batches. The saved batch position, the learning-rate schedule and the number of
/// steps all depend on it, so a resume must find the same layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Ranks that trained.
    pub ranks: u64,
    /// Batch size per rank.
    pub batch_size: u64,
    /// Batches accumulated per optimizer step.
    pub accum: u64,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: u64,
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rank{} × batch {} × accumulation {} ({} steps per epoch, {} in all)",
            self.ranks,
            if self.ranks == 1 { "" } else { "s" },
            self.batch_size,
            self.accum,
            self.steps_per_epoch,
            self.total_steps
        )
    }
}

/// Refuses to resume from the checkpoint at `path`, written with layout `saved`, in a run laid out as `now`.
/// Checkpoints without a layout (earlier versions) are taken as they are.
pub fn check_layout(path: &Path, saved: Option<&Layout>, now: &Layout) -> Result<()> {
    match saved {
        Some(saved) if saved != now => Err(Error::checkpoint(
            path,
            format!(
                "written by a run of {saved}; this run is {now}. Its batch position and schedule do not carry \
                 over: resume with {} rank{} and the same batch settings, or train into a new directory",
                saved.ranks,
                if saved.ranks == 1 { "" } else { "s" },
            ),
        )),
        _ => Ok(()),
    }
}

/// A checkpoint read back: its path, meta, model bytes and optimizer bytes.
pub type Loaded = (PathBuf, CheckpointMeta, Vec<u8>, Vec<u8>);

/// Writes a checkpoint atomically.
pub fn save(path: &Path, mut meta: CheckpointMeta, model: &[u8], optim: &[u8]) -> Result<()> {
    meta.model_len = model.len() as u64;
    meta.model_sha256 = hex(&Sha256::digest(model));
    meta.optim_len = optim.len() as u64;
    meta.optim_sha256 = hex(&Sha256::digest(optim));
    let mut f = AtomicFile::create(path)?;
    let json = serde_json::to_string(&meta).expect("checkpoint meta serialises");
    let io = |e| Error::io(path, e);
    writeln!(f, "{MAGIC}").map_err(io)?;
    writeln!(f, "{json}").map_err(io)?;
    f.write_all(model).map_err(io)?;
    f.write_all(optim).map_err(io)?;
    f.commit()
}

/// Reads and verifies a checkpoint: returns its metadata, model bytes and optimizer bytes.
pub fn load(path: &Path) -> Result<(CheckpointMeta, Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |why: String| Error::checkpoint(path, format!("corrupt: {why}"));
    let mut lines = bytes.splitn(3, |&b| b == b'\n');
    if lines.next() != Some(MAGIC.as_bytes()) {
        return Err(corrupt("not a chexlab checkpoint (bad header)".into()));
    }
    let json = lines
        .next()
        .ok_or_else(|| corrupt("no metadata line".into()))?;
    let meta: CheckpointMeta =
        serde_json::from_slice(json).map_err(|e| corrupt(format!("metadata: {e}")))?;
    let body = lines.next().unwrap_or_default();
    let (ml, ol) = (meta.model_len as usize, meta.optim_len as usize);
    if body.len() != ml + ol {
        return Err(corrupt(format!(
            "{} payload bytes, expected {} (truncated or padded file)",
            body.len(),
            ml + ol
        )));
    }
    let (model, optim) = body.split_at(ml);
    for (what, data, want) in [
        ("model", model, &meta.model_sha256),
        ("optimizer", optim, &meta.optim_sha256),
    ] {
        if &hex(&Sha256::digest(data)) != want {
            return Err(corrupt(format!("{what} state fails its SHA-256 check")));
        }
    }
    Ok((meta.clone(), model.to_vec(), optim.to_vec()))
}

/// File name of the checkpoint after `step` optimizer steps.
pub fn step_name(step: u64) -> String {
    format!("step-{step:09}.ckpt")
}

/// Step checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".ckpt")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The newest checkpoint in `dir` that loads and verifies; corrupt ones are reported and skipped.
pub fn latest_valid(dir: &Path) -> Result<Option<Loaded>> {
    let all = list(dir);
    let mut bad = Vec::new();
    for (_, path) in all.iter().rev() {
        match load(path) {
            Ok((meta, m, o)) => return Ok(Some((path.clone(), meta, m, o))),
            Err(e) => {
                tracing::warn!("skipping {e}");
                bad.push(e.to_string());
            }
        }
    }
    if bad.is_empty() {
        return Ok(None);
    }
    // Starting over would overwrite them: the user decides.
    Err(Error::checkpoint(
        dir,
        format!(
            "none of its {} checkpoints can be resumed from ({}); move them away to train from the start",
            bad.len(),
            bad.join("; ")
        ),
    ))
}

/// Deletes all but the newest `keep` step checkpoints.
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = list(dir);
    for (_, path) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Keys whose values differ between two JSON configs (dotted paths), for a refused resume.
pub fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        &p,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            step: 3,
            epoch: 0,
            batch: 3,
            best: None,
            since_best: 0,
            config_hash: "h".into(),
            config: serde_json::json!({"a": 1}),
            layout: Some(layout(1)),
            totals: Totals::default(),
            model_len: 0,
            model_sha256: String::new(),
            optim_len: 0,
            optim_sha256: String::new(),
        }
    }

    fn layout(ranks: u64) -> Layout {
        Layout {
            ranks,
            batch_size: 8,
            accum: 1,
            steps_per_epoch: 38 / ranks,
            total_steps: 60 * (38 / ranks),
        }
    }

    #[test]
    fn a_resume_with_another_layout_is_refused_with_what_changed() {
        let p = Path::new("/run/checkpoints/step-1231.ckpt");
        assert!(check_layout(p, Some(&layout(2)), &layout(2)).is_ok());
        // Checkpoints of earlier versions carry no layout.
        assert!(check_layout(p, None, &layout(2)).is_ok());
        let e = check_layout(p, Some(&layout(1)), &layout(2))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/run/checkpoints/step-1231.ckpt: checkpoint: written by a run of 1 rank × batch 8 × accumulation 1 \
             (38 steps per epoch, 2280 in all); this run is 2 ranks × batch 8 × accumulation 1 (19 steps per \
             epoch, 1140 in all). Its batch position and schedule do not carry over: resume with 1 rank and the \
             same batch settings, or train into a new directory"
        );
        // A checkpoint written before layouts were recorded still loads.
        let mut json = serde_json::to_value(meta()).unwrap();
        json.as_object_mut().unwrap().remove("layout");
        let old: CheckpointMeta = serde_json::from_value(json).unwrap();
        assert_eq!(old.layout, None);
    }

    #[test]
    fn round_trip_and_corruption_detection() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(step_name(3));
        save(&p, meta(), b"model\nbytes", b"optim").unwrap();
        let (m, model, optim) = load(&p).unwrap();
        assert_eq!(
            (m.step, &model[..], &optim[..]),
            (3, &b"model\nbytes"[..], &b"optim"[..])
        );

        // Flip one payload byte: checksum failure naming the part and the file.
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(
            err.contains("optimizer state fails its SHA-256") && err.contains("step-000000003"),
            "{err}"
        );
        // Truncate.
        std::fs::write(&p, &bytes[..n - 3]).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("truncated"));
        // latest_valid skips the corrupt newest one.
        save(&dir.path().join(step_name(1)), meta(), b"m", b"o").unwrap();
        assert_eq!(
            latest_valid(dir.path()).unwrap().unwrap().0,
            dir.path().join(step_name(1))
        );
        // Every checkpoint corrupt: an error naming them, not a fresh start over them.
        std::fs::write(dir.path().join(step_name(1)), b"CHEXLAB-CHECKPOINT 1\n{").unwrap();
        let err = latest_valid(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("none of its 2 checkpoints can be resumed from")
                && err.contains("step-000000001")
                && err.contains("step-000000003"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(latest_valid(empty.path()).unwrap().is_none());
    }

    #[test]
    fn names_differing_keys() {
        let a = serde_json::json!({"opt": {"lr": 1e-3, "eps": 1e-8}, "seed": 1});
        let b = serde_json::json!({"opt": {"lr": 1e-4, "eps": 1e-8}, "seed": 1, "extra": true});
        assert_eq!(differing_keys(&a, &b), vec!["extra", "opt.lr"]);
    }
}
