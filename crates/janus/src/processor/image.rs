//! Image loading and the understanding preprocessor (`VLMImageProcessor` in
//! `janus/models/image_processing_vlm.py`), reproduced to the byte.
//!
//! Steps, as the reference: convert to RGB as PIL's `.convert("RGB")` does; resize so the
//! long side is `image_size` with Pillow BICUBIC (antialiased, reimplemented in `resample.rs`);
//! paste centred on a square canvas of `int(mean * 255)`; scale by `rescale_factor`;
//! normalise with mean/std; channel-first `f32`.

use std::io::Cursor;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::processor::jpeg;
use crate::processor::resample::resize_bicubic;

/// The image formats [`load_image`] decodes.
const SUPPORTED_FORMATS: &str = "PNG, JPEG, WebP, GIF, BMP";

/// Preprocessing parameters, as in the checkpoint's `preprocessor_config.json`.
///
/// Missing fields take the published Janus values. Both layouts parse: the original
/// (`image_size`) and the transformers one (`size: {height, width}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawImageProcessorConfig")]
pub struct ImageProcessorConfig {
    /// Side of the square model input (384).
    pub image_size: u32,
    /// Smallest side after resizing, before padding (14).
    pub min_size: u32,
    /// Per-channel mean subtracted after rescaling (0.5); also sets the padding colour.
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation divided by after subtracting the mean (0.5).
    pub image_std: [f64; 3],
    /// Factor from `u8` to `[0, 1]` (1/255).
    pub rescale_factor: f64,
    /// Whether to apply mean/std normalisation (true).
    pub do_normalize: bool,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        Self {
            image_size: 384,
            min_size: 14,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
        }
    }
}

/// The on-disk form: every field optional, `size` as the transformers layout writes it.
#[derive(Deserialize)]
struct RawImageProcessorConfig {
    image_size: Option<u32>,
    size: Option<RawSize>,
    min_size: Option<u32>,
    image_mean: Option<[f64; 3]>,
    image_std: Option<[f64; 3]>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
}

#[derive(Deserialize)]
struct RawSize {
    height: u32,
}

impl From<RawImageProcessorConfig> for ImageProcessorConfig {
    fn from(raw: RawImageProcessorConfig) -> Self {
        let d = Self::default();
        Self {
            image_size: raw
                .image_size
                .or(raw.size.map(|s| s.height))
                .unwrap_or(d.image_size),
            min_size: raw.min_size.unwrap_or(d.min_size),
            image_mean: raw.image_mean.unwrap_or(d.image_mean),
            image_std: raw.image_std.unwrap_or(d.image_std),
            rescale_factor: raw.rescale_factor.unwrap_or(d.rescale_factor),
            do_normalize: raw.do_normalize.unwrap_or(d.do_normalize),
        }
    }
}

impl ImageProcessorConfig {
    /// Name of the config file in a model directory.
    pub const FILE_NAME: &'static str = "preprocessor_config.json";

    /// Parses a `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Reads `dir/preprocessor_config.json` when present, else the defaults.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(Self::FILE_NAME);
        if path.exists() {
            Self::from_file(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Padding colour: `int(mean * 255)` per channel, as `VLMImageProcessor.__init__`.
    pub fn background_color(&self) -> [u8; 3] {
        self.image_mean.map(|m| (m * 255.0).clamp(0.0, 255.0) as u8)
    }

    /// The model input for `img`: `[3, image_size, image_size]` channel-first, row-major.
    pub fn preprocess(&self, img: &DynamicImage) -> Result<Vec<f32>> {
        if self.image_size < self.min_size || self.image_size == 0 {
            return Err(Error::InvalidInput(format!(
                "image_size {} must be at least min_size {} and positive",
                self.image_size, self.min_size
            )));
        }
        let rgb = to_rgb8_like_pil(img);
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            return Err(Error::InvalidInput(format!("image has size {w}x{h}")));
        }
        // VLMImageProcessor.resize: `max(int(side / long * image_size), min_size)`, computed
        // in f64 and truncated like Python's int().
        let long = f64::from(w.max(h));
        let target = |side: u32| {
            ((f64::from(side) / long * f64::from(self.image_size)) as u32).max(self.min_size)
        };
        let (new_w, new_h) = (target(w), target(h));
        let resized = resize_rgb(&rgb, new_w, new_h);

        // expand2square: paste at ((side - w) // 2, (side - h) // 2) on a `side`-square
        // canvas, `side` being the resized long side, which is always image_size.
        let side = new_w.max(new_h) as usize;
        let (new_w, new_h) = (new_w as usize, new_h as usize);
        let (off_x, off_y) = ((side - new_w) / 2, (side - new_h) / 2);
        let background = self.background_color();
        let lut = self.value_table();

        let plane = side * side;
        let mut out = vec![0f32; 3 * plane];
        for c in 0..3 {
            let bg = lut[c][usize::from(background[c])];
            let out_plane = &mut out[c * plane..][..plane];
            for (y, out_row) in out_plane.chunks_exact_mut(side).enumerate() {
                let inside_y = y >= off_y && y < off_y + new_h;
                for (x, v) in out_row.iter_mut().enumerate() {
                    *v = if inside_y && x >= off_x && x < off_x + new_w {
                        let byte = resized[((y - off_y) * new_w + (x - off_x)) * 3 + c];
                        lut[c][usize::from(byte)]
                    } else {
                        bg
                    };
                }
            }
        }
        Ok(out)
    }

    /// The training input for a text-to-image sample: the shorter side resized to `size`
    /// (Pillow-exact bicubic; the longer to `int(size * long / short)`, as torchvision's
    /// `Resize(size)`), then a centre crop to `size` x `size` at torchvision's
    /// `CenterCrop` offsets (`round((side - size) / 2)`, halves to even), normalised with
    /// this config's mean and std. `[3, size, size]` channel-first.
    pub fn preprocess_generation(&self, img: &DynamicImage, size: u32) -> Result<Vec<f32>> {
        let rgb = to_rgb8_like_pil(img);
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 || size == 0 {
            return Err(Error::InvalidInput(format!(
                "image has size {w}x{h}; cannot crop it to {size}x{size}"
            )));
        }
        let (short, long) = (w.min(h), w.max(h));
        let new_long = ((f64::from(size) * f64::from(long) / f64::from(short)) as u32).max(size);
        let (new_w, new_h) = if w <= h {
            (size, new_long)
        } else {
            (new_long, size)
        };
        let resized = resize_rgb(&rgb, new_w, new_h);
        let offset = |side: u32| ((f64::from(side - size)) / 2.0).round_ties_even() as usize;
        let (off_x, off_y) = (offset(new_w), offset(new_h));
        let (side, new_w) = (size as usize, new_w as usize);
        let lut = self.value_table();
        let plane = side * side;
        let mut out = vec![0f32; 3 * plane];
        for c in 0..3 {
            for y in 0..side {
                for x in 0..side {
                    let byte = resized[((y + off_y) * new_w + (x + off_x)) * 3 + c];
                    out[c * plane + y * side + x] = lut[c][usize::from(byte)];
                }
            }
        }
        Ok(out)
    }

    /// [`Self::preprocess`] as a `[3, image_size, image_size]` tensor on `device`.
    pub fn preprocess_tensor(&self, img: &DynamicImage, device: &Device) -> Result<Tensor> {
        let pixels = self.preprocess(img)?;
        to_tensor(&pixels, self.image_size as usize, device)
    }

    /// Per channel, the normalised value of each byte. Matches the reference's arithmetic:
    /// transformers' `rescale` multiplies in f64 and casts to f32, `normalize` subtracts
    /// and divides in f32.
    fn value_table(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            let mean = self.image_mean[c] as f32;
            let std = self.image_std[c] as f32;
            for (byte, v) in table.iter_mut().enumerate() {
                let scaled = (byte as f64 * self.rescale_factor) as f32;
                *v = if self.do_normalize {
                    (scaled - mean) / std
                } else {
                    scaled
                };
            }
        }
        lut
    }
}

/// [`ImageProcessorConfig::preprocess`] with the default parameters and `image_size`.
pub fn preprocess(img: &DynamicImage, image_size: u32) -> Result<Vec<f32>> {
    ImageProcessorConfig {
        image_size,
        ..Default::default()
    }
    .preprocess(img)
}

/// Wraps preprocessed pixels in a `[3, image_size, image_size]` tensor on `device`.
pub fn to_tensor(pixels: &[f32], image_size: usize, device: &Device) -> Result<Tensor> {
    let expected = 3 * image_size * image_size;
    if pixels.len() != expected {
        return Err(Error::InvalidInput(format!(
            "pixel buffer has {} values, expected {expected} for [3, {image_size}, {image_size}]",
            pixels.len()
        )));
    }
    Ok(Tensor::from_slice(
        pixels,
        (3, image_size, image_size),
        device,
    )?)
}

/// Loads and decodes an image file (PNG, JPEG, WebP, GIF, BMP; the format is sniffed
/// from the content). A missing, unreadable or undecodable file is [`Error::Image`].
///
/// Like `PIL.Image.open`, EXIF orientation is not applied, and for an animated GIF the
/// first frame is used.
pub fn load_image(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::Image {
        path: name.clone(),
        msg: match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            _ => format!("cannot read file: {e}"),
        },
    })?;
    load_image_from_memory(&bytes, &name)
}

/// Decodes an encoded image held in memory; `name` labels errors.
pub fn load_image_from_memory(bytes: &[u8], name: &str) -> Result<DynamicImage> {
    let err = |msg: String| Error::Image {
        path: name.to_string(),
        msg,
    };
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(err(format!(
            "unrecognised image format (supported: {SUPPORTED_FORMATS})"
        )));
    };
    if format == ImageFormat::Jpeg {
        if let Some(img) = jpeg::decode(bytes).map_err(|e| err(format!("cannot decode: {e}")))? {
            return Ok(img);
        }
    }
    reader
        .decode()
        .map_err(|e| err(format!("cannot decode: {e}")))
}

/// RGB bytes as PIL's `.convert("RGB")` gives them (what `load_pil_images` does).
///
/// Alpha is dropped without compositing (RGBA, LA), grey is replicated. 16-bit channels
/// keep their high byte, which is what PIL's PNG decoder does for 16-bit RGB(A) and LA;
/// for 16-bit grey PIL instead clips to 255 (mode `I;16`), a quirk not reproduced here.
/// Pillow-exact bicubic resize of an RGB image to `w` x `h`, as interleaved bytes.
fn resize_rgb(rgb: &RgbImage, w: u32, h: u32) -> Vec<u8> {
    let (src_w, src_h) = rgb.dimensions();
    resize_bicubic(
        rgb.as_raw(),
        src_w as usize,
        src_h as usize,
        3,
        w as usize,
        h as usize,
    )
}

fn to_rgb8_like_pil(img: &DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => {
            // Exact in 16 bits (alpha dropped, grey replicated), then the high byte.
            let rgb16 = img.to_rgb16();
            RgbImage::from_fn(rgb16.width(), rgb16.height(), |x, y| {
                image::Rgb(rgb16.get_pixel(x, y).0.map(|v| (v >> 8) as u8))
            })
        }
        // 8-bit: `image`'s conversion drops alpha and replicates grey, as PIL does.
        other => other.to_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GenericImageView;

    #[test]
    fn config_defaults_and_background() {
        let cfg: ImageProcessorConfig =
            serde_json::from_str(r#"{"image_size": 384, "unknown": 1}"#).unwrap();
        assert_eq!(cfg, ImageProcessorConfig::default());
        assert_eq!(cfg.background_color(), [127, 127, 127]);
        let cfg: ImageProcessorConfig =
            serde_json::from_str(r#"{"size": {"height": 224, "width": 224}}"#).unwrap();
        assert_eq!(cfg.image_size, 224);
    }

    #[test]
    fn wide_image_is_padded_top_and_bottom() {
        // 40x10 white image -> 384x96 resized, pasted at y = (384 - 96) / 2 = 144.
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(40, 10, image::Rgb([255; 3])));
        let out = preprocess(&img, 384).unwrap();
        assert_eq!(out.len(), 3 * 384 * 384);
        let at = |c: usize, y: usize, x: usize| out[c * 384 * 384 + y * 384 + x];
        let bg = (((127.0f64 / 255.0) as f32) - 0.5) / 0.5;
        assert_eq!(at(0, 143, 10), bg);
        assert_eq!(at(1, 144, 10), 1.0);
        assert_eq!(at(2, 239, 383), 1.0);
        assert_eq!(at(2, 240, 383), bg);
    }

    /// Every supported container decodes (formats without a golden: GIF, BMP, grey JPEG).
    #[test]
    fn decodes_each_supported_format() {
        let rgb = RgbImage::from_fn(16, 8, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 32) as u8, 90])
        });
        let grey = DynamicImage::ImageRgb8(rgb.clone()).to_luma8();
        let cases = [
            (
                DynamicImage::ImageRgb8(rgb.clone()),
                image::ImageFormat::Bmp,
            ),
            (
                DynamicImage::ImageRgb8(rgb.clone()).to_rgba8().into(),
                image::ImageFormat::Gif,
            ),
            (DynamicImage::ImageRgb8(rgb), image::ImageFormat::Jpeg),
            (DynamicImage::ImageLuma8(grey), image::ImageFormat::Jpeg),
            (
                DynamicImage::ImageRgba16(image::ImageBuffer::from_pixel(
                    3,
                    2,
                    image::Rgba([0xABCD, 0x1200, 0xFFFF, 0]),
                )),
                image::ImageFormat::Png,
            ),
        ];
        for (img, format) in cases {
            let mut bytes = Vec::new();
            img.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
            let decoded = load_image_from_memory(&bytes, "mem").unwrap();
            assert_eq!(decoded.dimensions(), img.dimensions(), "{format:?}");
            assert_eq!(
                decoded.color().has_color(),
                img.color().has_color(),
                "{format:?}"
            );
            let out = preprocess(&decoded, 32).unwrap();
            assert_eq!(out.len(), 3 * 32 * 32);
        }
        let rgba16 = DynamicImage::ImageRgba16(image::ImageBuffer::from_pixel(
            1,
            1,
            image::Rgba([0xABCD, 0x1200, 0xFFFF, 0]),
        ));
        assert_eq!(
            to_rgb8_like_pil(&rgba16).get_pixel(0, 0).0,
            [0xAB, 0x12, 0xFF]
        );
    }

    #[test]
    fn rgba_drops_alpha() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            3,
            3,
            image::Rgba([200, 100, 0, 0]),
        ));
        let rgb = to_rgb8_like_pil(&img);
        assert_eq!(rgb.get_pixel(1, 1).0, [200, 100, 0]);
    }
}
