//! Evaluation of classifiers against image labels.

pub mod auroc;

pub use auroc::auroc;
