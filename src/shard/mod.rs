//! Parquet shards: the coordinator that writes them ([`writer`]) and the rank-local loader that reads them
//! ([`reader`]). Layout and column types: [`schema`].

pub(crate) mod batch;
pub mod reader;
pub mod schema;
pub mod sums;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use batch::{Batch, BatchPos, PIXEL_MEAN, PIXEL_STD, load_batch, to_batch};
pub use reader::{RowRef, Sample, ShardSet};
pub use schema::{INDEX, ShardEntry, ShardIndex};
pub use writer::{ShardSpec, write_shards};

/// Shard section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardConfig {
    /// Target shard size in MB.
    pub target_mb: f64,
    /// Store pre-resized pixels (true) or the original encoded bytes (false).
    pub pre_resize: bool,
    /// Largest width or height an image may have; every image is decoded when its shard is written and a larger
    /// one is an error naming it (a corrupt header can claim any size).
    pub max_image_side: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            target_mb: 256.0,
            pre_resize: true,
            max_image_side: DEFAULT_MAX_IMAGE_SIDE,
        }
    }
}

/// Default of [`ShardConfig::max_image_side`]: above the largest CheXpert and MIMIC-CXR images (about 4,300 px).
pub const DEFAULT_MAX_IMAGE_SIDE: u32 = 8192;
