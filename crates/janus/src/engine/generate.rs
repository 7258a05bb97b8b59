//! Text-to-image: classifier-free-guided sampling of VQ codes, then VQ decoding.
//!
//! Follows the reference's `generation_inference.py`: 2P rows (a conditional and an
//! unconditional row per image; here all conditional rows come first, as transformers
//! orders them, which does not change results), no attention mask (the unconditional
//! rows' pads are attended), guided logits `u + w * (c - u)`, a draw from
//! `softmax(logits / temperature)`, and the drawn code fed back to both rows through
//! gen_embed -> gen_aligner. The draw is Gumbel-max with noise fixed per image and
//! position ([`super::noise`]) where the reference draws a multinomial: the same
//! distribution, from other random numbers, and what lets speculative decoding
//! ([`super::speculative`]) reproduce plain decoding exactly.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Tensor};

use super::speculative::{
    decode, DecodeStats, ImageSampling, SlotCounts, Speculative, Verifier, Window,
};
use super::understand::Finish;
use super::Timings;
use crate::config::JanusConfig;
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
    /// Seed of the Gumbel noise (and of `sjd`'s tests).
    pub seed: u64,
    /// Codes per forward pass and how drafts are checked (plain decoding by default).
    pub speculative: Speculative,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            parallel: 1,
            cfg_weight: 5.0,
            temperature: 1.0,
            seed: 42,
            speculative: Speculative::default(),
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
        self.speculative.validate()
    }
}

/// Bytes a text-to-image request is expected to need on top of the loaded weights, by part.
///
/// A deliberately simple upper-end estimate, meant to refuse requests that cannot fit (an
/// absurd `parallel`) before any memory is allocated, not to predict the peak exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    /// The preallocated KV cache: 2P rows x layers x (k, v) x kv_heads x head_dim x
    /// (prompt + image tokens) x dtype bytes.
    pub kv_cache: u64,
    /// The prefill's activations (its peak in the LLM) and the per-step f32 code logits.
    pub activations: u64,
    /// Decoding P images at once through the VQ decoder.
    pub vq_decode: u64,
    /// The sum of the parts.
    pub total: u64,
}

/// Live copies of the VQ decoder's widest activation assumed at its peak: a ResnetBlock keeps
/// its input for the residual while GroupNorm, swish and the convolution (with the
/// convolution's contiguous input copy) each make a new tensor of the same size.
const VQ_LIVE_ACTIVATIONS: u128 = 6;

/// Estimates the memory of generating `parallel` images for a prompt of `prompt_len` tokens
/// with weights (and so the KV cache) in `dtype`. See [`MemoryEstimate`] for the parts.
///
/// * KV cache: `2P x layers x 2 x kv_heads x head_dim x (prompt_len + image tokens) x b`;
/// * activations: the prefill holds, per row and prompt token, the residual stream, the
///   normed input, q/k/v and the attention output (`6 D`) and the SwiGLU's gate, up and
///   product (`3 FFN`), plus per head two `prompt_len^2` score/probability matrices, all in
///   `b` bytes; each step adds two f32 code-logit rows and the gen_head hidden per row;
/// * VQ decode: `P x 6 x` the decoder's widest activation (channels x height x width of
///   its largest level; `128 x 384 x 384` for VQ-16) in the VQ's dtype (f32 for bf16, which
///   keeps its VQ model in f32 on CPU).
pub fn estimate_generate_memory(
    cfg: &JanusConfig,
    prompt_len: usize,
    parallel: usize,
    dtype: DType,
) -> MemoryEstimate {
    let t = &cfg.text;
    let b = dtype.size_in_bytes();
    let rows = 2 * parallel as u128;
    let positions = prompt_len as u128 + cfg.gen_image_tokens() as u128;
    // Saturating products: a config or request this large is refused anyway.
    let prod = |xs: &[u128]| xs.iter().fold(1u128, |a, &x| a.saturating_mul(x));
    let n = |x: usize| x as u128;
    let kv_cache = prod(&[
        rows,
        n(t.num_hidden_layers),
        2,
        n(t.num_key_value_heads),
        n(t.head_dim),
        positions,
        n(b),
    ]);
    let per_token = 6 * n(t.hidden_size) + 3 * n(t.intermediate_size);
    let prefill = prod(&[rows, n(prompt_len), per_token, n(b)]).saturating_add(prod(&[
        rows,
        n(t.num_attention_heads),
        n(prompt_len),
        n(prompt_len),
        2,
        n(b),
    ]));
    let step = prod(&[
        rows,
        n(cfg.gen_head.image_token_size) * 4 * 2 + n(cfg.gen_head.image_token_embed) * n(b),
    ]);
    let vq_b = if dtype == DType::BF16 { 4 } else { b };
    let vq_decode = prod(&[
        n(parallel),
        VQ_LIVE_ACTIVATIONS,
        n(vq_decoder_widest(cfg)),
        n(vq_b),
    ]);
    let clamp = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
    let (kv_cache, activations, vq_decode) = (
        clamp(kv_cache),
        clamp(prefill.saturating_add(step)),
        clamp(vq_decode),
    );
    MemoryEstimate {
        kv_cache,
        activations,
        vq_decode,
        total: kv_cache
            .saturating_add(activations)
            .saturating_add(vq_decode),
    }
}

/// [`estimate_generate_memory`]'s total, in bytes.
pub fn estimate_generate_bytes(
    cfg: &JanusConfig,
    prompt_len: usize,
    parallel: usize,
    dtype: DType,
) -> u64 {
    estimate_generate_memory(cfg, prompt_len, parallel, dtype).total
}

/// Elements (channels x height x width) of the VQ decoder's largest activation for one
/// image, walking its levels as `Decoder::new` builds them (coarsest first, each upsampled
/// x2 but the last).
fn vq_decoder_widest(cfg: &JanusConfig) -> usize {
    let vq = &cfg.vq;
    let n = vq.ch_mult.len();
    let mut side = cfg.gen_grid;
    let mut block_in = vq.ch * vq.ch_mult.last().copied().unwrap_or(1);
    let mut widest = vq.z_channels.max(block_in) * side * side;
    for l in (0..n).rev() {
        let block_out = vq.ch * vq.ch_mult[l];
        widest = widest.max(block_in.max(block_out) * side * side);
        block_in = block_out;
        if l != 0 {
            side *= 2;
            widest = widest.max(block_in * side * side);
        }
    }
    widest
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
    /// Passes, codes per pass and draft acceptance of the sampling loop.
    pub stats: DecodeStats,
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
    let item = BatchItem {
        cond_ids: cond_ids.to_vec(),
        uncond_ids: uncond_ids.to_vec(),
        params: params.clone(),
    };
    let mut out = generate_codes_batch(model, std::slice::from_ref(&item), |done, total| {
        vec![on_step(done, total).is_continue()]
    })?;
    Ok(out.remove(0))
}

/// One text-to-image request in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// Prompt ending in `<begin_of_image>`.
    pub cond_ids: Vec<u32>,
    /// The same length, text replaced by pad.
    pub uncond_ids: Vec<u32>,
    /// Its own P, cfg weight, temperature and seed.
    pub params: GenerateParams,
}

/// Samples the codes of several requests in one CFG batch (a server batching concurrent
/// requests). Each item gets what [`generate_codes`] gives it alone: prompts of different
/// lengths are left-padded, the padding is masked out and every row keeps its own RoPE
/// positions ([`crate::model::Llama::forward_embeds_padded`]); each item has its own
/// guidance weight, temperature and seeded sampler.
///
/// Rows are laid out item by item: P conditional then P unconditional rows each.
/// `on_step(done, total)` runs after every step and returns, per item, whether to keep
/// going; a cancelled item stops recording codes (finish `Cancelled`), and the loop ends
/// when every item is cancelled.
pub fn generate_codes_batch(
    model: &Janus,
    items: &[BatchItem],
    mut on_step: impl FnMut(usize, usize) -> Vec<bool>,
) -> Result<Vec<GenerateOutput>> {
    generate_codes_batch_with(model, items, |p| on_step(p.done, p.total))
}

/// Where a batch stands after a step: what [`generate_codes_batch_with`]'s callback sees.
#[derive(Debug)]
pub struct BatchProgress<'a> {
    /// Steps done (codes drawn per image).
    pub done: usize,
    /// Steps in all (codes per image).
    pub total: usize,
    /// Per item and image, the codes drawn so far, row-major over the code grid (a
    /// cancelled item's stop growing). For previews of the partial images.
    pub codes: &'a [Vec<Vec<u32>>],
}

/// [`generate_codes_batch`] with a callback that also sees the codes drawn so far.
pub fn generate_codes_batch_with(
    model: &Janus,
    items: &[BatchItem],
    mut on_step: impl FnMut(&BatchProgress) -> Vec<bool>,
) -> Result<Vec<GenerateOutput>> {
    let cfg = model.config();
    let n_codes = cfg.gen_image_tokens();
    if items.is_empty() {
        return Ok(Vec::new());
    }
    for item in items {
        item.params.validate()?;
        let (c, u) = (&item.cond_ids, &item.uncond_ids);
        if c.len() != u.len() || c.is_empty() {
            return Err(Error::InvalidInput(format!(
                "conditional and unconditional prompts must have the same non-zero length ({} vs {})",
                c.len(),
                u.len()
            )));
        }
        if c.len() + n_codes > cfg.text.max_position_embeddings {
            return Err(Error::InvalidInput(format!(
                "the prompt is {} tokens long; with {n_codes} image tokens that exceeds the model's context of {}",
                c.len(),
                cfg.text.max_position_embeddings
            )));
        }
    }
    let k = cfg.gen_head.image_token_size;
    let mut images = Vec::new();
    for it in items {
        for i in 0..it.params.parallel {
            let p = &it.params;
            images.push(ImageSampling::new(
                p.seed,
                i,
                k,
                p.temperature,
                p.speculative.accept,
            ));
        }
    }
    let window = items
        .iter()
        .map(|it| match it.params.speculative.window {
            Window::Fixed(w) => w,
            Window::Auto => super::window::auto_window(model, 2 * images.len()),
        })
        .max()
        .unwrap_or(1);
    let mut verifier = JanusVerifier::new(model, items)?;
    let t0 = Instant::now();
    let per_item: Vec<usize> = items.iter().map(|it| it.params.parallel).collect();
    let decoded = decode(&mut verifier, images, window, n_codes, |done, codes| {
        let grouped = group(codes, &per_item);
        let keep = on_step(&BatchProgress {
            done,
            total: n_codes,
            codes: &grouped,
        });
        per_item
            .iter()
            .enumerate()
            .flat_map(|(i, &p)| std::iter::repeat_n(keep.get(i).copied().unwrap_or(true), p))
            .collect()
    })?;
    let mut timings = verifier.timings;
    let sample_s = t0.elapsed().as_secs_f64() - timings.get("prefill_s").unwrap_or(0.0);
    timings.push("sample_s", sample_s);
    let codes = group(&decoded.codes, &per_item);
    let margins = group(&decoded.margins, &per_item);
    let slots = group(&decoded.slots, &per_item);
    let outputs: Vec<GenerateOutput> = items
        .iter()
        .zip(codes)
        .zip(margins)
        .zip(slots)
        .map(|(((it, codes), margins), slots)| {
            let done = codes.iter().all(|c| c.len() == n_codes);
            let drawn = codes.iter().map(Vec::len).max().unwrap_or(0);
            let slots = slots.iter().fold(SlotCounts::default(), SlotCounts::add);
            GenerateOutput {
                codes,
                margins,
                finish: if done {
                    Finish::Length
                } else {
                    Finish::Cancelled
                },
                timings: timings.clone(),
                stats: DecodeStats {
                    window,
                    accept: it.params.speculative.accept,
                    passes: decoded.passes,
                    codes: drawn,
                    slot_checked: slots.checked,
                    slot_accepted: slots.accepted,
                    sample_s,
                },
            }
        })
        .collect();
    for o in &outputs {
        super::window::record_acceptance(&o.stats);
    }
    Ok(outputs)
}

/// Splits a per-image list into per-item lists of `per_item[i]` images each.
fn group<T: Clone>(all: &[T], per_item: &[usize]) -> Vec<Vec<T>> {
    let mut rest = all;
    per_item
        .iter()
        .map(|&p| {
            let (head, tail) = rest.split_at(p.min(rest.len()));
            rest = tail;
            head.to_vec()
        })
        .collect()
}

/// The LLM under classifier-free guidance as the decoding loop sees it: 2P rows per item
/// (its P conditional then P unconditional rows), left-padded prompts, guided logits.
struct JanusVerifier<'a> {
    model: &'a Janus,
    items: &'a [BatchItem],
    /// Per item, its first row.
    base: Vec<usize>,
    left_pad: Vec<usize>,
    /// The batch's prompt ids, `(R, T)`, until the prefill runs.
    prompt: Option<Tensor>,
    cache: KvCache,
    timings: Timings,
}

impl<'a> JanusVerifier<'a> {
    fn new(model: &'a Janus, items: &'a [BatchItem]) -> Result<Self> {
        let cfg = model.config();
        let t_max = items.iter().map(|it| it.cond_ids.len()).max().unwrap_or(0);
        // Row bases: item k owns rows base[k] .. base[k] + 2P_k.  (R, T_max), left-padded.
        let mut base = Vec::with_capacity(items.len());
        let mut rows: Vec<u32> = Vec::new();
        let mut left_pad = Vec::new();
        for it in items {
            base.push(left_pad.len());
            let pad = t_max - it.cond_ids.len();
            for ids in [&it.cond_ids, &it.uncond_ids] {
                for _ in 0..it.params.parallel {
                    // Any id does for padding (it is masked); the row's first token is in range.
                    rows.extend(std::iter::repeat_n(ids[0], pad));
                    rows.extend_from_slice(ids);
                    left_pad.push(pad);
                }
            }
        }
        let n_rows = left_pad.len();
        let device = model.device();
        let prompt = Tensor::from_vec(rows, (n_rows, t_max), device)?;
        let max_len = t_max + cfg.gen_image_tokens();
        let cache = KvCache::new(&cfg.text, n_rows, max_len, model.dtype(), device)?;
        Ok(Self {
            model,
            items,
            base,
            left_pad,
            prompt: Some(prompt),
            cache,
            timings: Timings::default(),
        })
    }

    /// Per image, the guided logits of every position of `hidden` `(R, L, D)`: u + w (c - u)
    /// in f32, as the reference.
    fn guided(&self, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
        let (r, l, d) = hidden.dims3()?;
        let logits = self.model.gen_head_logits(&hidden.reshape((r * l, d))?)?; // (R·L, K) f32
        let k = logits.dim(1)?;
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let row = |r: usize| &logits[r * l * k..(r + 1) * l * k];
        let mut out = Vec::new();
        for (it, &b) in self.items.iter().zip(&self.base) {
            let (p, w) = (it.params.parallel, it.params.cfg_weight as f32);
            for i in 0..p {
                let (c, u) = (row(b + i), row(b + p + i));
                out.push(c.iter().zip(u).map(|(&c, &u)| u + (c - u) * w).collect());
            }
        }
        Ok(out)
    }
}

impl Verifier for JanusVerifier<'_> {
    fn codebook(&self) -> usize {
        self.model.config().gen_head.image_token_size
    }

    fn start(&mut self) -> Result<Vec<Vec<f32>>> {
        let t0 = Instant::now();
        let Some(ids) = self.prompt.take() else {
            return Err(Error::InvalidInput("the prompt ran already".into()));
        };
        let embeds = self.model.llm.embed(&ids)?;
        // Row-invariant products: a prompt gives the bits it gives alone when the server
        // batches it with others (AMX tiles would depend on the batch's row count).
        let hidden = crate::kernels::with_row_invariance(true, || {
            self.model
                .llm
                .forward_embeds_padded(&embeds, Some(&mut self.cache), &self.left_pad)
        })?;
        let t = hidden.dim(1)?;
        let out = self.guided(&hidden.narrow(1, t - 1, 1)?)?;
        self.timings.push("prefill_s", t0.elapsed().as_secs_f64());
        Ok(out)
    }

    fn pass(&mut self, keep: usize, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let prompt = self.cache.max_len() - self.model.config().gen_image_tokens();
        self.cache.truncate(prompt + keep)?;
        let l = inputs.first().map_or(0, Vec::len);
        let n_rows = self.left_pad.len();
        // The drawn codes feed both the conditional and the unconditional row.
        let mut ids = vec![0u32; n_rows * l];
        let mut image = 0;
        for (it, &b) in self.items.iter().zip(&self.base) {
            let p = it.params.parallel;
            for i in 0..p {
                for row in [b + i, b + p + i] {
                    ids[row * l..(row + 1) * l].copy_from_slice(&inputs[image]);
                }
                image += 1;
            }
        }
        let ids = Tensor::from_vec(ids, (n_rows, l), self.model.device())?;
        let embeds = self.model.embed_image_codes(&ids)?; // (R, L, D)
        let hidden =
            self.model
                .llm
                .forward_embeds_padded(&embeds, Some(&mut self.cache), &self.left_pad)?;
        self.guided(&hidden)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(rel: &str) -> JanusConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        JanusConfig::from_file(&path).unwrap()
    }

    #[test]
    fn memory_estimate_matches_a_hand_count() {
        // tiny-pro: D 64, FFN 128, 2 layers, 4 heads (4 kv, head_dim 16), 128 codes with a
        // 64-wide gen_head, VQ ch 32 x [1, 1, 1, 1, 1] on a 24x24 grid (576 codes).
        let cfg = config("../../fixtures/models/tiny-pro/config.json");
        let (prompt, p) = (20, 3);
        let est = estimate_generate_memory(&cfg, prompt, p, DType::F32);
        // 6 rows x 2 layers x (k, v) x 4 kv heads x 16 x (20 + 576) positions x 4 bytes.
        assert_eq!(est.kv_cache, 6 * 2 * 2 * 4 * 16 * 596 * 4);
        // Prefill: 6 rows x 20 tokens x (6 x 64 + 3 x 128) x 4, plus 6 x 4 heads x 20^2 x 2 x 4;
        // each step: 6 rows x (128 logits x 4 bytes x 2 + 64 x 4).
        let prefill = 6 * 20 * (6 * 64 + 3 * 128) * 4 + 6 * 4 * 20 * 20 * 2 * 4;
        assert_eq!(est.activations, prefill + 6 * (128 * 4 * 2 + 64 * 4));
        // Widest decoder activation: 32 channels at 384x384, 6 live copies, f32, 3 images.
        assert_eq!(est.vq_decode, 3 * 6 * 32 * 384 * 384 * 4);
        assert_eq!(est.total, est.kv_cache + est.activations + est.vq_decode);
        assert_eq!(
            estimate_generate_bytes(&cfg, prompt, p, DType::F32),
            343_853_568
        );
        // bf16 halves the LLM parts; the VQ stays f32 (CPU keeps it in f32).
        let half = estimate_generate_memory(&cfg, prompt, p, DType::BF16);
        assert_eq!(half.kv_cache * 2, est.kv_cache);
        assert_eq!(half.vq_decode, est.vq_decode);
    }

    #[test]
    fn memory_estimate_for_janus_pro_7b() {
        let cfg = config("tests/data/configs/janus-pro-7b.original.json");
        // VQ-16's widest decoder activation: 128 channels at 384x384.
        assert_eq!(vq_decoder_widest(&cfg), 128 * 384 * 384);
        let est = estimate_generate_memory(&cfg, 30, 16, DType::BF16);
        // 32 rows x 30 layers x 2 x 32 heads x 128 x 606 positions x 2 bytes = 8.9 GiB.
        assert_eq!(est.kv_cache, 32 * 30 * 2 * 32 * 128 * 606 * 2);
        assert!(est.total > 10 << 30 && est.total < 20 << 30, "{est:?}");
        // Absurd requests saturate instead of overflowing.
        let huge = estimate_generate_memory(&cfg, 1 << 20, usize::MAX / 2, DType::F32);
        assert_eq!(huge.total, u64::MAX);
    }
}
