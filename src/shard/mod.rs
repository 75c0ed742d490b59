//! Parquet shards: the coordinator that writes them ([`writer`]) and the rank-local loader that reads them
//! ([`reader`]). Layout and column types: [`schema`].

pub mod batch;
pub mod reader;
pub mod schema;
pub mod writer;

pub use batch::{Batch, BatchPos, PIXEL_MEAN, PIXEL_STD, load_batch, to_batch};
pub use reader::{RowRef, Sample, ShardSet, deal};
pub use schema::{INDEX, ShardEntry, ShardIndex};
pub use writer::{ShardSpec, write_shards};
