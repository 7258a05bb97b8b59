//! JPEG decoding with libjpeg-turbo's decoder, as Pillow does.
//!
//! Pillow decodes JPEG with libjpeg-turbo (accurate integer IDCT, "fancy" triangle-filter
//! chroma upsampling, its fixed-point YCbCr->RGB tables). The pure-Rust decoder behind the
//! `image` crate (zune-jpeg) uses other IDCT/upsampling/colour arithmetic and lands up to
//! ±4 away per sample on a 4:2:0 photo, which would break byte parity with the reference.
//! mozjpeg's decoder is libjpeg-turbo's, so its output matches Pillow's to the byte.

use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg::{ColorSpace, Decompress};

/// Decodes a JPEG to grey or RGB as `PIL.Image.open(...)` would (before `.convert`).
///
/// Returns `Ok(None)` for colour spaces Pillow opens as CMYK (CMYK, YCCK), which the caller
/// leaves to the `image` crate. Errors carry libjpeg's message.
pub(crate) fn decode(bytes: &[u8]) -> Result<Option<DynamicImage>, String> {
    // libjpeg reports fatal errors through mozjpeg's error manager, which unwinds (without
    // running the panic hook); catch it here and turn it into a message.
    let caught = std::panic::catch_unwind(|| decode_inner(bytes));
    match caught {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg failed".to_string())),
    }
}

fn decode_inner(bytes: &[u8]) -> std::io::Result<Option<DynamicImage>> {
    let dec = Decompress::new_mem(bytes)?;
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "image size overflows");
    match dec.color_space() {
        ColorSpace::JCS_GRAYSCALE => {
            let mut started = dec.grayscale()?;
            let (w, h) = (started.width(), started.height());
            let pixels: Vec<u8> = started.read_scanlines()?;
            started.finish()?;
            let img = GrayImage::from_raw(dim(w)?, dim(h)?, pixels).ok_or_else(invalid)?;
            Ok(Some(DynamicImage::ImageLuma8(img)))
        }
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => {
            let mut started = dec.rgb()?;
            let (w, h) = (started.width(), started.height());
            let pixels: Vec<u8> = started.read_scanlines()?;
            started.finish()?;
            let img = RgbImage::from_raw(dim(w)?, dim(h)?, pixels).ok_or_else(invalid)?;
            Ok(Some(DynamicImage::ImageRgb8(img)))
        }
        _ => Ok(None),
    }
}

fn dim(v: usize) -> std::io::Result<u32> {
    u32::try_from(v).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("dimension {v} too large"),
        )
    })
}
