//! `results.json`: every number a run's report shows — per-source AUROC tables with intervals, and the paired
//! comparisons between sources — as types shared by the writer ([`super::score`]) and the report.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::compare::{Effect, Paired, f64_or_nan, nan};
use crate::error::{Error, Result};

/// File name of the results under the run directory.
pub const RESULTS: &str = "results.json";

/// Per-image probabilities and per-observation AUROC of one trained classifier on one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitScores {
    /// The label source the classifier was trained on.
    pub source: String,
    /// The label source its AUROC is measured against.
    pub reference: String,
    /// The split scored.
    pub split: String,
    /// Optimizer step of the checkpoint scored (the first replicate's, for a source's mean over replicates).
    pub checkpoint_step: u64,
    /// The replicate scored, from 1 (absent from the JSON for 1).
    #[serde(
        default = "crate::run_dir::first_replicate",
        skip_serializing_if = "crate::run_dir::is_first_replicate"
    )]
    pub replicate: u32,
    /// Replicates averaged: with more than one, every AUROC is the mean over the replicates and its interval the
    /// two-level bootstrap's (absent from the JSON for 1).
    #[serde(
        default = "crate::run_dir::first_replicate",
        skip_serializing_if = "crate::run_dir::is_first_replicate"
    )]
    pub replicates: u32,
    /// Images scored.
    pub images: usize,
    /// Positives per observation in the reference labels.
    pub positives: Vec<(String, usize)>,
    /// AUROC per observation (none when the reference has one class only).
    pub auroc: Vec<(String, Option<f64>)>,
    /// Average precision per observation.
    #[serde(default)]
    pub auprc: Vec<(String, Option<f64>)>,
    /// Stratified bootstrap percentile interval per observation (`evaluation.bootstrap` resamples at
    /// `evaluation.ci`).
    pub auroc_ci: Vec<(String, Option<(f64, f64)>)>,
    /// Mean of the defined AUROCs.
    pub mean_auroc: Option<f64>,
    /// For a mean over replicates: the mean AUROC's bootstrap interval (whole test images and replicate indices
    /// resampled; absent for a single run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_auroc_ci: Option<(f64, f64)>,
}

impl SplitScores {
    /// The AUROC of `observation`, when defined.
    pub fn auroc_of(&self, observation: &str) -> Option<f64> {
        self.auroc
            .iter()
            .find(|(o, _)| o == observation)
            .and_then(|(_, a)| *a)
    }

    /// The interval of `observation`'s AUROC, when defined.
    pub fn ci_of(&self, observation: &str) -> Option<(f64, f64)> {
        self.auroc_ci
            .iter()
            .find(|(o, _)| o == observation)
            .and_then(|(_, c)| *c)
    }
}

/// One observation, two label sources' classifiers, the same test images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// First source.
    pub a: String,
    /// Second source.
    pub b: String,
    /// The observation compared.
    pub observation: String,
    /// Images both scored (with a defined reference label).
    pub images: usize,
    /// AUROC(a) − AUROC(b) with its interval and p-values.
    #[serde(flatten)]
    pub result: Paired,
    /// The bootstrap p-value after Holm's correction over every comparison of the results.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub p_holm: f64,
}

/// Two label sources' overall effect: their AUROC difference averaged over the observations compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairEffect {
    /// First source.
    pub a: String,
    /// Second source.
    pub b: String,
    /// Images both scored.
    pub images: usize,
    /// Mean difference, interval and p-value.
    #[serde(flatten)]
    pub effect: Effect,
    /// The p-value after Holm's correction over every pair of the results.
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub p_holm: f64,
}

/// The whole `results.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The split scored.
    pub split: String,
    /// The label set every source was measured against, when they share one (the configured
    /// `evaluation.reference`, or `truth`); none when each source was measured against its own labels.
    #[serde(default)]
    pub reference: Option<String>,
    /// Bootstrap resamples of the intervals.
    pub bootstrap: u32,
    /// Confidence level of the intervals.
    pub ci: f64,
    /// Scores per source: a single run's, or the mean over the source's replicates.
    pub sources: BTreeMap<String, SplitScores>,
    /// Each replicate's own scores, for the sources with more than one (absent when none has).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replicates: BTreeMap<String, Vec<SplitScores>>,
    /// Paired differences between every two sources, per observation.
    pub comparisons: Vec<Comparison>,
    /// Every two sources' overall effect (mean AUROC difference over the observations).
    #[serde(default)]
    pub effects: Vec<PairEffect>,
    /// AUROC against label quality, when the study has sources corrupted at known rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dose_response: Option<super::dose::DoseResponse>,
}

impl Results {
    /// The reference all of `sources` share, if they share one.
    pub fn shared_reference<'a>(
        sources: impl IntoIterator<Item = &'a SplitScores>,
    ) -> Option<String> {
        let mut refs = sources.into_iter().map(|s| s.reference.as_str());
        let first = refs.next()?;
        refs.all(|r| r == first).then(|| first.to_string())
    }

    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Results> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::json(path, e))
    }

    /// Writes `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(
            path,
            serde_json::to_string_pretty(self)
                .expect("results serialise")
                .as_bytes(),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Scores of one Edema classifier (AUROC 0.75, interval 0.5–0.9), for tests here and in the report.
    pub(crate) fn scores(source: &str, reference: &str) -> SplitScores {
        SplitScores {
            source: source.into(),
            reference: reference.into(),
            split: "test".into(),
            checkpoint_step: 1,
            replicate: 1,
            replicates: 1,
            images: 2,
            positives: vec![],
            auroc: vec![("Edema".into(), Some(0.75))],
            auprc: vec![],
            auroc_ci: vec![("Edema".into(), Some((0.5, 0.9)))],
            mean_auroc: Some(0.75),
            mean_auroc_ci: None,
        }
    }

    #[test]
    fn the_shared_reference_is_named_only_when_every_source_has_it() {
        let (a, b) = (scores("a", "radiologists"), scores("b", "radiologists"));
        assert_eq!(
            Results::shared_reference([&a, &b]).as_deref(),
            Some("radiologists")
        );
        let own = (scores("a", "a"), scores("b", "b"));
        assert_eq!(Results::shared_reference([&own.0, &own.1]), None);
        assert_eq!(a.auroc_of("Edema"), Some(0.75));
        assert_eq!(a.ci_of("Edema"), Some((0.5, 0.9)));
        assert_eq!(a.auroc_of("Cardiomegaly"), None);
    }

    #[test]
    fn results_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = Results {
            split: "test".into(),
            reference: Some("truth".into()),
            bootstrap: 10,
            ci: 0.95,
            sources: [("a".to_string(), scores("a", "truth"))].into(),
            replicates: [("a".to_string(), vec![scores("a", "truth")])].into(),
            comparisons: vec![],
            effects: vec![],
            dose_response: None,
        };
        let path = dir.path().join(RESULTS);
        r.write(&path).unwrap();
        assert_eq!(Results::read(&path).unwrap(), r);
    }
}
