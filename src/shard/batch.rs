//! Batches for the classifier: shard rows read, decoded (encoded shards), augmented (training) and stacked into
//! a normalised `[n, channels, size, size]` tensor's values; shared by training, scoring and the loader bench.

use std::path::Path;

use super::{RowRef, Sample, ShardSet};
use crate::error::{Error, Result};
use crate::observations::LabelRow;

/// Pixel normalisation: `(p / 255 − MEAN) / STD` (the grey mean and spread of ImageNet's channel statistics).
pub const PIXEL_MEAN: f32 = 0.449;
/// Pixel normalisation: the spread (see [`PIXEL_MEAN`]).
pub const PIXEL_STD: f32 = 0.226;

/// One batch, decoded and normalised.
pub struct Batch {
    /// Normalised pixels, `[n, channels, size, size]` in row-major order.
    pub x: Vec<f32>,
    /// Images in the batch.
    pub n: usize,
    /// Each image's labels of the source read.
    pub labels: Vec<LabelRow>,
}

/// Where a training batch sits in a run: what its images' augmentation draws are seeded by.
#[derive(Clone, Copy, Debug)]
pub struct BatchPos {
    /// The run's seed.
    pub seed: u64,
    /// The epoch.
    pub epoch: u64,
    /// The batch within the epoch.
    pub batch: usize,
    /// The rank that reads it.
    pub rank: usize,
}

/// The loader's whole job for one batch: reads `rows` (image + `source`'s labels), decodes encoded shards,
/// augments (when `augment` is on; each image drawn from `pos` and its position, in parallel) and stacks them
/// into a normalised `[n, channels, size, size]` batch.
pub fn load_batch(
    shards: &ShardSet,
    rows: &[RowRef],
    source: &str,
    size: usize,
    channels: usize,
    augment: &crate::data::augment::AugmentConfig,
    pos: BatchPos,
) -> Result<Batch> {
    use rayon::prelude::*;
    let mut samples = shards.read_images(rows, source, size as u32)?;
    if augment.enabled {
        samples.par_iter_mut().enumerate().for_each(|(i, smp)| {
            // An image of another size is left for `to_batch` to refuse by name.
            if smp.pixels.len() == size * size {
                let mut rng = crate::data::augment::image_rng(
                    pos.seed,
                    pos.epoch,
                    pos.batch as u64,
                    pos.rank as u64,
                    i as u64,
                );
                smp.pixels = crate::data::augment::augment(&smp.pixels, size, augment, &mut rng);
            }
        });
    }
    to_batch(samples, size as u32, channels, &shards.dir)
}

/// Turns shard samples into a normalised `[n, channels, size, size]` batch (grey pixels repeated over channels).
pub fn to_batch(samples: Vec<Sample>, size: u32, channels: usize, path: &Path) -> Result<Batch> {
    let plane = (size * size) as usize;
    let mut x = Vec::with_capacity(samples.len() * plane * channels);
    let mut labels = Vec::with_capacity(samples.len());
    let n = samples.len();
    for s in samples {
        if s.pixels.len() != plane || s.width as u32 != size || s.height as u32 != size {
            return Err(Error::format(
                path,
                format!(
                    "image {}: {}x{} with {} bytes, but the model is configured for {size}x{size} \
                     (re-shard with image size {size}, or set model.image_size)",
                    s.image_id,
                    s.width,
                    s.height,
                    s.pixels.len()
                ),
            ));
        }
        for _ in 0..channels {
            x.extend(
                s.pixels
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD),
            );
        }
        labels.push(s.labels);
    }
    Ok(Batch { x, n, labels })
}
