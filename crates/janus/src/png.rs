//! PNG output that records how an image was made.
//!
//! Shared by the CLI (`janus generate`, `janus vq decode`) and the server, so a PNG from
//! either carries the same text chunks and, for the same image and parameters, the same
//! bytes.

use crate::error::{Error, Result};

/// `janus <version>`: the program that wrote a file.
pub fn software() -> String {
    format!("janus {}", env!("CARGO_PKG_VERSION"))
}

/// The parameters of one text-to-image run, recorded in every PNG it writes.
#[derive(Debug, Clone)]
pub struct GenerationMeta<'a> {
    /// The user's prompt.
    pub prompt: &'a str,
    /// Random seed.
    pub seed: u64,
    /// Classifier-free guidance weight.
    pub cfg_weight: f64,
    /// Sampling temperature.
    pub temperature: f64,
    /// Images generated together for the prompt (P).
    pub parallel: usize,
    /// The model (a local path or `owner/name@revision`).
    pub model: &'a str,
    /// Speculative decoding where it changes the image (`sjd`, e.g. `sjd, window 8`);
    /// `None` for plain decoding and `exact`, which draw the same image.
    pub speculative: Option<String>,
}

impl GenerationMeta<'_> {
    /// What [`Self::speculative`] records for these settings (`window`: the one used).
    pub fn speculative_record(accept: crate::engine::Accept, window: &str) -> Option<String> {
        (accept == crate::engine::Accept::Sjd && window != "1")
            .then(|| format!("sjd, window {window}"))
    }
}

impl GenerationMeta<'_> {
    /// PNG text chunks for image `index` of the run: `(keyword, text)`.
    pub fn png_text(&self, index: usize) -> Vec<(String, String)> {
        [
            ("Software", software()),
            ("janus:prompt", self.prompt.to_string()),
            ("janus:seed", self.seed.to_string()),
            ("janus:cfg_weight", self.cfg_weight.to_string()),
            ("janus:temperature", self.temperature.to_string()),
            ("janus:parallel", self.parallel.to_string()),
            ("janus:index", index.to_string()),
            ("janus:model", self.model.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into_iter()
        .chain(
            self.speculative
                .iter()
                .map(|s| ("janus:speculative".to_string(), s.clone())),
        )
        .collect()
    }
}

/// Encodes an 8-bit RGB PNG carrying `text` as text chunks: tEXt for printable ASCII
/// values, iTXt (UTF-8) for anything else (a prompt or a path may be any Unicode). No
/// time stamp is written, so the same image and text give the same bytes.
pub fn encode_png(img: &image::RgbImage, text: &[(String, String)]) -> Result<Vec<u8>> {
    let err = |e: png::EncodingError| Error::Image {
        path: "PNG output".into(),
        msg: format!("cannot encode: {e}"),
    };
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, img.width(), img.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text {
        let plain = v.bytes().all(|b| b == b'\n' || (b' '..=b'~').contains(&b));
        if plain {
            enc.add_text_chunk(k.clone(), v.clone()).map_err(err)?;
        } else {
            enc.add_itxt_chunk(k.clone(), v.clone()).map_err(err)?;
        }
    }
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(img.as_raw()).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_image_and_text_give_same_bytes() {
        let img = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let meta = GenerationMeta {
            prompt: "猫 on a mat",
            seed: 3,
            cfg_weight: 5.0,
            temperature: 1.0,
            parallel: 1,
            model: "m",
            speculative: None,
        };
        let a = encode_png(&img, &meta.png_text(0)).unwrap();
        let b = encode_png(&img, &meta.png_text(0)).unwrap();
        assert_eq!(a, b);
        // Only sjd, which draws another image than plain decoding, is recorded.
        use crate::engine::Accept;
        assert_eq!(GenerationMeta::speculative_record(Accept::Exact, "8"), None);
        assert_eq!(GenerationMeta::speculative_record(Accept::Sjd, "1"), None);
        let sjd = GenerationMeta {
            speculative: GenerationMeta::speculative_record(Accept::Sjd, "8"),
            ..meta.clone()
        };
        let text = sjd.png_text(0);
        assert!(text.contains(&("janus:speculative".to_string(), "sjd, window 8".to_string())));
        assert!(!meta
            .png_text(0)
            .iter()
            .any(|(k, _)| k == "janus:speculative"));
        let back = image::load_from_memory(&a).unwrap().to_rgb8();
        assert_eq!(back, img);
    }
}
