//! Report labelers and their file format.

pub mod format;
