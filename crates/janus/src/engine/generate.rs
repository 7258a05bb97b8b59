//! Text-to-image: classifier-free-guided sampling of VQ codes, then VQ decoding.
//!
//! Follows the reference's `generation_inference.py`: 2P rows (a conditional and an
//! unconditional row per image; here all conditional rows come first, as transformers
//! orders them, which does not change results), no attention mask (the unconditional
//! rows' pads are attended), guided logits `u + w * (c - u)`, a plain multinomial draw
//! from `softmax(logits / temperature)`, and the drawn code fed back to both rows through
//! gen_embed -> gen_aligner.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Tensor};

use super::sampling::{argmax, Sampler, SamplingParams};
use super::understand::Finish;
use super::Timings;
use crate::error::{Error, Result};
use crate::model::{Janus, KvCache};

/// Settings for one text-to-image request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Images to draw for the prompt (P); the batch holds 2P rows.
    pub parallel: usize,
    /// Classifier-free guidance weight w (reference default 5).
    pub cfg_weight: f64,
    /// Softmax temperature (reference default 1); 0 picks the argmax.
    pub temperature: f64,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            parallel: 1,
            cfg_weight: 5.0,
            temperature: 1.0,
            seed: 42,
        }
    }
}

impl GenerateParams {
    /// Rejects values that cannot be generated with.
    pub fn validate(&self) -> Result<()> {
        if self.parallel == 0 {
            return Err(Error::InvalidInput("parallel must be at least 1".into()));
        }
        if !self.cfg_weight.is_finite() || self.cfg_weight < 0.0 {
            return Err(Error::InvalidInput(format!(
                "cfg weight must be a finite number >= 0, got {}",
                self.cfg_weight
            )));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidInput(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// Codes drawn for each image.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOutput {
    /// P lists of `gen_image_tokens` codes, row-major over the code grid.
    pub codes: Vec<Vec<u32>>,
    /// Per image and step, the gap between the two largest guided logits (how close the
    /// choice was; useful to tell a rounding flip at a near-tie from a real divergence).
    pub margins: Vec<Vec<f32>>,
    /// Completed, or cancelled by the callback.
    pub finish: Finish,
    /// Seconds per stage.
    pub timings: Timings,
}

/// Samples the image codes for a prompt given as token rows.
///
/// `cond_ids` is the prompt ending in `<begin_of_image>`; `uncond_ids` the same length
/// with the text replaced by pad. `on_step(done, total)` runs after every step and may
/// cancel.
pub fn generate_codes(
    model: &Janus,
    cond_ids: &[u32],
    uncond_ids: &[u32],
    params: &GenerateParams,
    mut on_step: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<GenerateOutput> {
    params.validate()?;
    let cfg = model.config();
    if cond_ids.len() != uncond_ids.len() || cond_ids.is_empty() {
        return Err(Error::InvalidInput(format!(
            "conditional and unconditional prompts must have the same non-zero length ({} vs {})",
            cond_ids.len(),
            uncond_ids.len()
        )));
    }
    let n_codes = cfg.gen_image_tokens();
    let total = cond_ids.len() + n_codes;
    if total > cfg.text.max_position_embeddings {
        return Err(Error::InvalidInput(format!(
            "the prompt is {} tokens long; with {n_codes} image tokens that exceeds the model's context of {}",
            cond_ids.len(),
            cfg.text.max_position_embeddings
        )));
    }
    let p = params.parallel;
    let device = model.device();
    let mut timings = Timings::default();
    let mut sampler = Sampler::new(SamplingParams {
        temperature: params.temperature,
        seed: params.seed,
        ..Default::default()
    })?;

    let t0 = Instant::now();
    // Rows: P conditional, then P unconditional.  (2P, T)
    let mut rows: Vec<u32> = Vec::with_capacity(2 * p * cond_ids.len());
    for _ in 0..p {
        rows.extend_from_slice(cond_ids);
    }
    for _ in 0..p {
        rows.extend_from_slice(uncond_ids);
    }
    let ids = Tensor::from_vec(rows, (2 * p, cond_ids.len()), device)?;
    let mut cache = KvCache::new(&cfg.text, 2 * p, total, model.dtype(), device)?;
    let embeds = model.llm.embed(&ids)?;
    let mut hidden = model.llm.forward_embeds(&embeds, Some(&mut cache))?;
    timings.push("prefill_s", t0.elapsed().as_secs_f64());

    let t0 = Instant::now();
    let mut codes = vec![Vec::with_capacity(n_codes); p];
    let mut margins = vec![Vec::with_capacity(n_codes); p];
    let mut finish = Finish::Length;
    for step in 0..n_codes {
        let (_, t, _) = hidden.dims3()?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?; // (2P, D)
        let logits = model.gen_head_logits(&last)?; // (2P, K) f32
        let cond = logits.narrow(0, 0, p)?;
        let uncond = logits.narrow(0, p, p)?;
        // u + w * (c - u), in f32 as the reference.
        let guided = (&uncond + ((&cond - &uncond)? * params.cfg_weight)?)?;
        let guided = guided.to_vec2::<f32>()?;
        let mut next = Vec::with_capacity(2 * p);
        for (i, row) in guided.iter().enumerate() {
            let code = if params.temperature == 0.0 {
                argmax(row)
            } else {
                sampler.sample_plain(row, params.temperature)
            };
            codes[i].push(code);
            margins[i].push(top2_margin(row));
            next.push(code);
        }
        if on_step(step + 1, n_codes).is_break() {
            finish = Finish::Cancelled;
            break;
        }
        if step + 1 == n_codes {
            break;
        }
        next.extend_from_within(..);
        let next = Tensor::from_vec(next, (2 * p, 1), device)?;
        let embeds = model.embed_image_codes(&next)?; // (2P, 1, D)
        hidden = model.llm.forward_embeds(&embeds, Some(&mut cache))?;
    }
    timings.push("sample_s", t0.elapsed().as_secs_f64());
    Ok(GenerateOutput {
        codes,
        margins,
        finish,
        timings,
    })
}

fn top2_margin(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in row {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// Decodes code grids to pixels in roughly [-1, 1].
///
/// # Shapes
/// P code lists -> `(P, 3, H, W)` f32
pub fn decode_codes(model: &Janus, codes: &[Vec<u32>]) -> Result<Tensor> {
    let cfg = model.config();
    let g = cfg.gen_grid;
    let n = g * g;
    if let Some(bad) = codes.iter().find(|c| c.len() != n) {
        return Err(Error::InvalidInput(format!(
            "an image needs {n} codes ({g}x{g}), got {}",
            bad.len()
        )));
    }
    let k = cfg.vq.codebook_size as u32;
    if let Some(bad) = codes.iter().flatten().find(|&&c| c >= k) {
        return Err(Error::InvalidInput(format!(
            "code {bad} is outside the codebook of {k} entries"
        )));
    }
    let flat: Vec<u32> = codes.iter().flatten().copied().collect();
    let t = Tensor::from_vec(flat, (codes.len(), n), model.device())?;
    Ok(model.vq.decode_codes(&t, g, g)?.to_dtype(DType::F32)?)
}

/// Pixels in [-1, 1] to 8-bit RGB, exactly as the reference post-processes:
/// `clip((x + 1) / 2 * 255, 0, 255)` then truncation to u8 (not rounding).
///
/// # Shapes
/// `(P, 3, H, W)` -> P images of `H * W * 3` bytes (HWC order)
pub fn to_rgb8(pixels: &Tensor) -> Result<Vec<(u32, u32, Vec<u8>)>> {
    let (p, c, h, w) = pixels.dims4()?;
    if c != 3 {
        return Err(Error::InvalidInput(format!("expected 3 channels, got {c}")));
    }
    let hwc = pixels
        .to_dtype(DType::F32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?;
    let data = hwc.flatten_all()?.to_vec1::<f32>()?;
    let per = h * w * 3;
    Ok((0..p)
        .map(|i| {
            let bytes = data[i * per..(i + 1) * per]
                .iter()
                .map(|&x| ((x + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0) as u8)
                .collect();
            (w as u32, h as u32, bytes)
        })
        .collect())
}
