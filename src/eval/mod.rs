//! Evaluation of classifiers against image labels: scoring a split with trained classifiers ([`score`]), exact
//! AUROC, stratified bootstrap intervals and paired comparisons (bootstrap and DeLong) between label sources on the
//! same images, the typed `results.json` ([`results`]), and the report with its plots.

pub(crate) mod auroc;
pub mod bootstrap;
pub mod compare;
pub mod dose;
pub mod external;
pub mod plots;
pub mod report;
pub mod results;
pub mod score;

use serde::{Deserialize, Serialize};

pub use auroc::{auprc, auroc};

/// Evaluation section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationConfig {
    /// Bootstrap resamples for confidence intervals.
    pub bootstrap: u32,
    /// Confidence level.
    pub ci: f64,
    /// Label source that validation and test AUROC are measured against (default: `truth` when the shards hold
    /// it, else each classifier's own source).
    pub reference: Option<String>,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            bootstrap: 1000,
            ci: 0.95,
            reference: None,
        }
    }
}
