//! Evaluation of classifiers against image labels: scoring a split with trained classifiers ([`score`]), exact
//! AUROC, stratified bootstrap intervals and paired comparisons (bootstrap and DeLong) between label sources on the
//! same images, the typed `results.json` ([`results`]), and the report with its plots.

pub mod auroc;
pub mod bootstrap;
pub mod compare;
pub mod plots;
pub mod report;
pub mod results;
pub mod score;

pub use auroc::{auprc, auroc};
