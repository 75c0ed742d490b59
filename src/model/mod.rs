//! Image classifiers: DenseNet and torchvision weight import.

pub mod densenet;
pub mod import;

pub use densenet::{DenseNet, DenseNetConfig};
