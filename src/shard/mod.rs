//! Parquet shards: the coordinator that writes them ([`writer`]) and the rank-local loader that reads them
//! ([`reader`]). Layout and column types: [`schema`].

pub mod reader;
pub mod schema;
pub mod writer;

pub use reader::{RowRef, Sample, ShardSet};
pub use writer::{INDEX, ShardIndex, ShardSpec, write_shards};
