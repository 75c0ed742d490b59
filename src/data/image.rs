//! Image decoding for shards and scoring: PNG, JPEG or headerless 8-bit pixels to grey `size`×`size` pixels.

use std::path::Path;

use crate::error::{Error, Result};

/// Decodes one image to `size`×`size` grayscale pixels (`.raw` files are headerless 8-bit pixels of `dims`).
pub fn decode_resize(
    path: &Path,
    bytes: &[u8],
    dims: Option<(u32, u32)>,
    size: u32,
) -> Result<Vec<u8>> {
    decode_resize_as(
        path,
        bytes,
        path.extension().is_some_and(|e| e == "raw"),
        dims,
        size,
    )
}

/// [`decode_resize`] with the raw-pixels case chosen by the caller (shards keep no file extension).
pub fn decode_resize_as(
    path: &Path,
    bytes: &[u8],
    raw: bool,
    dims: Option<(u32, u32)>,
    size: u32,
) -> Result<Vec<u8>> {
    let img = if raw {
        let (w, h) = dims
            .ok_or_else(|| Error::format(path, "raw image without Rows/Columns in the metadata"))?;
        if bytes.len() as u64 != w as u64 * h as u64 {
            return Err(Error::format(
                path,
                format!("raw image has {} bytes, expected {w}x{h}", bytes.len()),
            ));
        }
        image::GrayImage::from_raw(w, h, bytes.to_vec()).expect("length checked")
    } else {
        image::load_from_memory(bytes)
            .map_err(|e| Error::image(path, e))?
            .to_luma8()
    };
    if img.width() == size && img.height() == size {
        return Ok(img.into_raw());
    }
    Ok(image::imageops::resize(&img, size, size, image::imageops::FilterType::Triangle).into_raw())
}
