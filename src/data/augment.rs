//! Training-time augmentation of grey images: a small random rotation and shift (one affine warp, bilinear, edges
//! clamped) and brightness/contrast jitter. Evaluation never augments. Each image's draw comes from a generator
//! seeded by (seed, epoch, batch, rank, position), so a resumed run sees the same augmented images as an
//! uninterrupted one, whatever the loader's timing.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// `[schedule.augment]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Augment training images at all.
    pub enabled: bool,
    /// Largest shift, as a fraction of the image side.
    pub max_shift: f64,
    /// Largest rotation in degrees.
    pub max_rotate_deg: f64,
    /// Largest brightness change, as a fraction of full scale.
    pub brightness: f64,
    /// Largest relative contrast change.
    pub contrast: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            enabled: false,
            max_shift: 0.06,
            max_rotate_deg: 5.0,
            brightness: 0.1,
            contrast: 0.1,
        }
    }
}

/// The generator of one image's augmentation.
pub fn image_rng(
    seed: u64,
    epoch: u64,
    batch: u64,
    rank: u64,
    position: u64,
) -> rand_chacha::ChaCha8Rng {
    let mut h = seed ^ 0xA5A5_0000_0000_A5A5;
    for v in [epoch, batch, rank, position] {
        h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
    rand_chacha::ChaCha8Rng::seed_from_u64(h)
}

/// Augments a `size` × `size` grey image.
pub fn augment(pixels: &[u8], size: usize, cfg: &AugmentConfig, rng: &mut impl Rng) -> Vec<u8> {
    let sym = |rng: &mut dyn rand::RngCore, m: f64| {
        if m > 0.0 {
            rng.random_range(-m..=m)
        } else {
            0.0
        }
    };
    let angle = sym(rng, cfg.max_rotate_deg).to_radians();
    let (dx, dy) = (
        sym(rng, cfg.max_shift) * size as f64,
        sym(rng, cfg.max_shift) * size as f64,
    );
    let brightness = sym(rng, cfg.brightness) * 255.0;
    let contrast = 1.0 + sym(rng, cfg.contrast);
    let mean = pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / pixels.len().max(1) as f64;
    let (sin, cos) = angle.sin_cos();
    let c = (size as f64 - 1.0) / 2.0;
    let max = size as f64 - 1.0;
    let at = |x: usize, y: usize| f64::from(pixels[y * size + x]);
    let mut out = Vec::with_capacity(pixels.len());
    for y in 0..size {
        for x in 0..size {
            // Inverse map: where in the source this output pixel comes from.
            let (u, v) = (x as f64 - c - dx, y as f64 - c - dy);
            let sx = (cos * u + sin * v + c).clamp(0.0, max);
            let sy = (-sin * u + cos * v + c).clamp(0.0, max);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(size - 1), (y0 + 1).min(size - 1));
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
            let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
            let value = top * (1.0 - fy) + bottom * fy;
            out.push(
                ((value - mean) * contrast + mean + brightness)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(size: usize) -> Vec<u8> {
        (0..size * size)
            .map(|i| ((i % size) * 255 / (size - 1)) as u8)
            .collect()
    }

    #[test]
    fn zero_strength_is_the_identity() {
        let none = AugmentConfig {
            enabled: true,
            max_shift: 0.0,
            max_rotate_deg: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        };
        let img = ramp(16);
        assert_eq!(augment(&img, 16, &none, &mut image_rng(1, 2, 3, 4, 5)), img);
    }

    #[test]
    fn a_shift_moves_the_image_and_draws_are_reproducible() {
        let shift = AugmentConfig {
            enabled: true,
            max_shift: 0.25,
            max_rotate_deg: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        };
        let img = ramp(16);
        let a = augment(&img, 16, &shift, &mut image_rng(1, 0, 0, 0, 0));
        let b = augment(&img, 16, &shift, &mut image_rng(1, 0, 0, 0, 0));
        let c = augment(&img, 16, &shift, &mut image_rng(1, 1, 0, 0, 0));
        assert_eq!(
            a, b,
            "same (seed, epoch, batch, rank, position), same image"
        );
        assert_ne!(a, img);
        assert_ne!(a, c, "another epoch, another draw");
        // A horizontal ramp stays a ramp along x: rows are still non-decreasing (up to clamped edges).
        for row in a.chunks(16) {
            assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        }
    }

    #[test]
    fn jitter_stays_in_range_and_keeps_the_size() {
        let strong = AugmentConfig {
            enabled: true,
            max_shift: 0.1,
            max_rotate_deg: 30.0,
            brightness: 0.5,
            contrast: 0.5,
        };
        let img: Vec<u8> = (0..64 * 64).map(|i| (i * 7 % 256) as u8).collect();
        for k in 0..20 {
            assert_eq!(
                augment(&img, 64, &strong, &mut image_rng(9, 0, k, 0, 0)).len(),
                64 * 64
            );
        }
    }
}
