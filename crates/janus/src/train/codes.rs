//! VQ codes of text-to-image images, encoded once and cached on disk.
//!
//! The generation encoder never trains, so an image's codes are fixed for a given VQ
//! model: they are computed the first time an image is met (or ahead of time by
//! `janus data encode`) and read back afterwards. Cache entries live in
//! `DIR/vq-<fingerprint>/`, one little-endian u32 file per image, named by a hash of the
//! image's path, size and modification time; the fingerprint hashes the VQ model's
//! codebook and encoder ends, so another model never reads these codes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::config::JanusConfig;
use crate::error::{Error, Result};
use crate::model::Janus;
use crate::processor::{load_image, ImageProcessorConfig};
use crate::weights::{checkpoint_source, TensorStore};

/// FNV-1a, 64 bits: a stable hash for cache names (not for security).
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of the VQ model's codebook, quant_conv and first encoder convolution as stored.
pub fn vq_fingerprint(cfg: &JanusConfig, store: &TensorStore) -> Result<String> {
    let mut h = FNV_START;
    for canonical in [
        "gen_vision_model.quantize.embedding.weight",
        "gen_vision_model.quant_conv.weight",
        "gen_vision_model.encoder.conv_in.weight",
    ] {
        let Some(source) = checkpoint_source(cfg.layout, canonical) else {
            continue;
        };
        for name in source.names() {
            let t = store
                .load(name, &candle_core::Device::Cpu)?
                .to_dtype(DType::F32)?;
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            h = fnv(name.as_bytes(), h);
            for x in v {
                h = fnv(&x.to_le_bytes(), h);
            }
        }
    }
    Ok(format!("{h:016x}"))
}

/// Codes of images, from memory, the disk cache, or the VQ encoder.
pub struct CodeCache {
    dir: Option<PathBuf>,
    memory: HashMap<PathBuf, Vec<u32>>,
    size: u32,
    processor: ImageProcessorConfig,
}

impl CodeCache {
    /// A cache under `dir/vq-<fingerprint>` (memory only when `dir` is `None`), producing
    /// codes for images brought to `size` pixels.
    pub fn new(dir: Option<&Path>, fingerprint: &str, size: usize) -> Result<Self> {
        let dir = match dir {
            Some(d) => {
                let d = d.join(format!("vq-{fingerprint}"));
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                Some(d)
            }
            None => None,
        };
        Ok(Self {
            dir,
            memory: HashMap::new(),
            size: size as u32,
            processor: ImageProcessorConfig::default(),
        })
    }

    /// The cache file for `image`, keyed by its path, size and modification time.
    fn entry(&self, image: &Path) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let meta = std::fs::metadata(image).ok()?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let abs = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
        let mut h = fnv(abs.to_string_lossy().as_bytes(), FNV_START);
        h = fnv(&meta.len().to_le_bytes(), h);
        h = fnv(&mtime.to_le_bytes(), h);
        Some(dir.join(format!("{h:016x}.codes")))
    }

    /// Whether `image`'s codes are already known (memory or disk).
    pub fn contains(&self, image: &Path) -> bool {
        self.memory.contains_key(image) || self.entry(image).is_some_and(|p| p.is_file())
    }

    /// The codes of `image`: cached, or encoded with `model`'s VQ and cached.
    pub fn codes(&mut self, model: &Janus, image: &Path) -> Result<Vec<u32>> {
        if let Some(c) = self.memory.get(image) {
            return Ok(c.clone());
        }
        let want = model.config().gen_image_tokens();
        let entry = self.entry(image);
        if let Some(bytes) = entry.as_ref().and_then(|p| std::fs::read(p).ok()) {
            if bytes.len() == 4 * want {
                let codes: Vec<u32> = bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                self.memory.insert(image.to_path_buf(), codes.clone());
                return Ok(codes);
            }
            tracing::warn!(
                "{}: cached codes have the wrong length; re-encoding",
                image.display()
            );
        }
        let codes = self.encode(model, image)?;
        if let Some(path) = entry {
            let bytes: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
            super::atomic::write_file(&path, &bytes)?;
        }
        self.memory.insert(image.to_path_buf(), codes.clone());
        Ok(codes)
    }

    /// Encodes one image: short side to the generation size, centre crop, VQ encoder.
    fn encode(&self, model: &Janus, image: &Path) -> Result<Vec<u32>> {
        let img = load_image(image)?;
        let px = self.processor.preprocess_generation(&img, self.size)?;
        let s = self.size as usize;
        let x = Tensor::from_vec(px, (1, 3, s, s), model.device())?;
        let codes = model.vq.encode(&x.to_dtype(model.dtype())?)?;
        Ok(codes.flatten_all()?.to_vec1::<u32>()?)
    }
}
