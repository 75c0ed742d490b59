//! The run directory's layout: every stage's outputs under one root, named in one place.
//!
//! ```text
//! RUN_DIR/config.resolved.toml   the config every stage ran with
//!         stages/<stage>.json    a stage's input hash, once it completed
//!         labels/<source>.csv    labeler outputs; labels/metrics.json their agreement with the truth
//!         labelers/<name>/       trained BERT labelers
//!         teacher/               VisualCheXbert's teacher classifier: a run directory of its own
//!         shards/                Parquet shards and index.json
//!         train/<source>/        checkpoints, best.ckpt, metrics.csv/jsonl, summary.json
//!         eval/<source>/         predictions_<split>.csv, scores_<split>.json
//!         results.json           every number of the report
//!         report.md, report.html, plots/
//! ```

use std::path::{Path, PathBuf};

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

    /// `train/<source>/`: one classifier's checkpoints and logs.
    pub fn train(&self, source: &str) -> PathBuf {
        self.train_root().join(source)
    }

    /// `eval/`.
    pub fn eval_root(&self) -> PathBuf {
        self.0.join("eval")
    }

    /// `eval/<source>/`: one classifier's predictions and scores.
    pub fn eval(&self, source: &str) -> PathBuf {
        self.eval_root().join(source)
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
}
