//! Evaluation of classifiers against image labels: exact AUROC, stratified bootstrap intervals and paired
//! comparisons (bootstrap and DeLong) between label sources on the same images.

pub mod auroc;
pub mod bootstrap;
pub mod compare;
pub mod plots;
pub mod report;

pub use auroc::{auprc, auroc};
