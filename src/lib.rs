//! chexlab: how much does the quality of a radiology-report labeler change the chest X-ray classifier trained on
//! its labels? Data readers (CheXpert, MIMIC-CXR-JPG, a synthetic world), report labelers, Parquet sharding,
//! data-parallel DenseNet training over MPI/NCCL, and the evaluation that compares label sources.

pub mod comm;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod inspect;
pub mod io;
pub mod labelers;
pub mod learn;
pub mod model;
pub mod observations;
pub mod pipeline;
pub mod progress;
pub mod run_dir;
pub mod shard;
pub mod train;

pub use error::{Error, Result};
pub use observations::{Label, LabelRow, OBSERVATIONS, Observation};

#[cfg(test)]
mod layering;
