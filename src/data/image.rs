//! Image decoding for shards and scoring: PNG, JPEG or headerless 8-bit pixels to grey `size`×`size` pixels.

use std::path::Path;

use crate::error::{Error, Result};

/// Decodes one image to `size`×`size` grayscale pixels (`.raw` files are headerless 8-bit pixels of `dims`);
/// an image wider or taller than `max_side` is refused before its pixels are allocated.
pub fn decode_resize(
    path: &Path,
    bytes: &[u8],
    dims: Option<(u32, u32)>,
    size: u32,
    max_side: u32,
) -> Result<Vec<u8>> {
    let raw = path.extension().is_some_and(|e| e == "raw");
    decode_resize_as(path, bytes, raw, dims, size, max_side)
}

/// [`decode_resize`] with the raw-pixels case chosen by the caller (shards keep no file extension).
pub fn decode_resize_as(
    path: &Path,
    bytes: &[u8],
    raw: bool,
    dims: Option<(u32, u32)>,
    size: u32,
    max_side: u32,
) -> Result<Vec<u8>> {
    let img = decode(path, bytes, raw, dims, max_side)?;
    if img.width() == size && img.height() == size {
        return Ok(img.into_raw());
    }
    Ok(image::imageops::resize(&img, size, size, image::imageops::FilterType::Triangle).into_raw())
}

/// Decodes one image whole (so that a truncated or corrupt one is found) and returns its width and height.
pub fn decode_dimensions(
    path: &Path,
    bytes: &[u8],
    dims: Option<(u32, u32)>,
    max_side: u32,
) -> Result<(u32, u32)> {
    let raw = path.extension().is_some_and(|e| e == "raw");
    decode(path, bytes, raw, dims, max_side).map(|img| img.dimensions())
}

fn decode(
    path: &Path,
    bytes: &[u8],
    raw: bool,
    dims: Option<(u32, u32)>,
    max_side: u32,
) -> Result<image::GrayImage> {
    let too_large = |w: u32, h: u32| {
        Error::format(
            path,
            format!(
                "image is {w}x{h}, larger than the {max_side} px allowed (shard.max_image_side)"
            ),
        )
    };
    if raw {
        let (w, h) = dims
            .ok_or_else(|| Error::format(path, "raw image without Rows/Columns in the metadata"))?;
        if w.max(h) > max_side {
            return Err(too_large(w, h));
        }
        if bytes.len() as u64 != w as u64 * h as u64 {
            return Err(Error::format(
                path,
                format!("raw image has {} bytes, expected {w}x{h}", bytes.len()),
            ));
        }
        return Ok(image::GrayImage::from_raw(w, h, bytes.to_vec()).expect("length checked"));
    }
    let open = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))
    };
    let mut reader = open()?;
    if reader.format().is_none() {
        return Err(Error::format(
            path,
            format!(
                "not a PNG or JPEG image ({} bytes{})",
                bytes.len(),
                if bytes.is_empty() { ": empty" } else { "" }
            ),
        ));
    }
    let (w, h) = open()?
        .into_dimensions()
        .map_err(|e| Error::image(path, e))?;
    if w.max(h) > max_side {
        return Err(too_large(w, h));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    reader.limits(limits);
    Ok(reader
        .decode()
        .map_err(|e| Error::image(path, e))?
        .to_luma8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::GrayImage::new(w, h)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn empty_truncated_and_oversized_images_are_named() {
        let p = Path::new("img.png");
        let err = decode_dimensions(p, b"", None, 8192)
            .unwrap_err()
            .to_string();
        assert!(err.contains("img.png") && err.contains("empty"), "{err}");
        let good = png(40, 30);
        assert_eq!(decode_dimensions(p, &good, None, 8192).unwrap(), (40, 30));
        let err = decode_dimensions(p, &good[..good.len() / 2], None, 8192)
            .unwrap_err()
            .to_string();
        assert!(err.contains("img.png"), "{err}");
        // A header claiming 100000 x 100000: the width and height fields of IHDR, CRC left as it is.
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let err = decode_dimensions(p, &huge, None, 8192)
            .unwrap_err()
            .to_string();
        assert!(err.contains("img.png"), "{err}");
        let err = decode_dimensions(p, &good, None, 32)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("40x30") && err.contains("max_image_side"),
            "{err}"
        );
        let raw = Path::new("x.raw");
        let err = decode_dimensions(raw, &[0; 12], Some((4, 4)), 8192)
            .unwrap_err()
            .to_string();
        assert!(err.contains("12 bytes, expected 4x4"), "{err}");
    }
}
