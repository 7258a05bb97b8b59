//! Standard benchmark workloads, timed stage by stage (`janus bench`).
//!
//! The workload is fixed so that its numbers compare with the PyTorch benchmark script,
//! which runs exactly the same inputs:
//!
//! - token ids `id_i = (1000 + 7 i) mod vocab_size`;
//! - `siglip`: one `(1, 3, S, S)` pixel tensor `sin(flat index)` (values in [-1, 1], no
//!   preprocessing) through SigLIP and the understanding aligner;
//! - `prefill`: one LLM forward with a KV cache over the image rows followed by the
//!   embeddings of 40 text ids, then lm_head on the last position;
//! - `decode`: greedy decoding of N tokens after that prefill, one forward per token, no
//!   stop token;
//! - `t2i step`: text-to-image with classifier-free guidance (weight 5, argmax codes) on 2P
//!   rows of a 17-token prompt; the prefill is untimed, each timed step is one 2P-row LLM
//!   forward, gen_head, the CFG combine, argmax and gen_embed + gen_aligner;
//! - `vq decode`: one grid of codes `code_i = 13 i mod codebook_size` to pixels.
//!
//! Before timing, the whole workload runs once with 2 decode tokens and 2 t2i steps.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::engine::sampling::argmax;
use crate::engine::{decode_codes, generate_codes, GenerateParams};
use crate::error::{Error, Result};
use crate::model::{Janus, KvCache};

/// Text ids after the image rows in the prefill.
pub const PREFILL_TEXT_TOKENS: usize = 40;
/// Length of the text-to-image prompt.
pub const T2I_PROMPT_TOKENS: usize = 17;
/// Classifier-free guidance weight of the text-to-image stage.
pub const CFG_WEIGHT: f64 = 5.0;
/// Decode tokens and t2i steps of the untimed warm-up run.
pub const WARMUP_COUNT: usize = 2;

/// How much of each workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchParams {
    /// Tokens decoded after the prefill.
    pub decode_tokens: usize,
    /// Timed text-to-image steps.
    pub t2i_steps: usize,
    /// Images in the text-to-image batch (P; the batch holds 2P rows).
    pub parallel: usize,
}

impl Default for BenchParams {
    fn default() -> Self {
        Self {
            decode_tokens: 32,
            t2i_steps: 32,
            parallel: 1,
        }
    }
}

impl BenchParams {
    /// Rejects counts of zero (checks that need no model).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("decode tokens", self.decode_tokens),
            ("t2i steps", self.t2i_steps),
            ("parallel", self.parallel),
        ] {
            if v == 0 {
                return Err(Error::InvalidInput(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    /// [`Self::validate`], plus the limits the model's configuration sets: the prefill and
    /// decoded tokens must fit the context, and the timed t2i steps (plus the untimed
    /// first one) the image's code grid.
    pub fn validate_for(&self, model: &Janus) -> Result<()> {
        self.validate()?;
        let cfg = model.config();
        let ctx = cfg.text.max_position_embeddings;
        let prefill = prefill_tokens(model);
        if prefill + self.decode_tokens > ctx {
            return Err(Error::InvalidInput(format!(
                "{prefill} prefill tokens + {} decode tokens exceed the model's context of {ctx}",
                self.decode_tokens
            )));
        }
        let codes = cfg.gen_image_tokens();
        if self.t2i_steps >= codes {
            return Err(Error::InvalidInput(format!(
                "t2i steps must be at most {} (an image has {codes} codes and the first step is untimed), got {}",
                codes - 1,
                self.t2i_steps
            )));
        }
        if T2I_PROMPT_TOKENS + codes > ctx {
            return Err(Error::InvalidInput(format!(
                "a {T2I_PROMPT_TOKENS}-token prompt with {codes} image codes exceeds the model's context of {ctx}"
            )));
        }
        Ok(())
    }
}

/// One timed run's results.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// Seconds for SigLIP + aligner on one image.
    pub siglip_s: f64,
    /// Positions in the prefill (image rows + 40).
    pub prefill_tokens: usize,
    /// Seconds for the prefill forward and the last position's lm_head.
    pub prefill_s: f64,
    /// Greedy decode throughput, tokens per second.
    pub decode_tok_s: f64,
    /// Mean seconds per text-to-image step (2P rows).
    pub t2i_step_s: f64,
    /// Seconds to decode one code grid to pixels.
    pub vq_decode_s: f64,
}

/// A stage about to run, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The untimed warm-up pass over the whole workload.
    WarmUp,
    /// SigLIP + aligner.
    Siglip,
    /// Prefill.
    Prefill,
    /// Greedy decoding.
    Decode,
    /// Text-to-image steps.
    T2i,
    /// VQ decoding.
    VqDecode,
}

impl Stage {
    /// A short human name.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::WarmUp => "warm-up",
            Stage::Siglip => "siglip",
            Stage::Prefill => "prefill",
            Stage::Decode => "decode",
            Stage::T2i => "t2i steps",
            Stage::VqDecode => "vq decode",
        }
    }
}

/// The benchmark's token ids: `id_i = (1000 + 7 i) mod vocab`, `i = 0..n`.
pub fn token_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((1000 + 7 * i) % vocab) as u32).collect()
}

/// The benchmark's code grid: `code_i = 13 i mod codebook`, `i = 0..n`.
pub fn vq_codes(n: usize, codebook: usize) -> Vec<u32> {
    (0..n).map(|i| ((13 * i) % codebook) as u32).collect()
}

/// The benchmark's image: `sin(i)` over the flat index of a `(1, 3, size, size)` f32 tensor.
pub fn pixels(size: usize, device: &candle_core::Device) -> Result<Tensor> {
    let n = 3 * size * size;
    let data: Vec<f32> = (0..n).map(|i| (i as f64).sin() as f32).collect();
    Ok(Tensor::from_vec(data, (1, 3, size, size), device)?)
}

/// Prefill positions: the image rows one image gives plus the text ids.
pub fn prefill_tokens(model: &Janus) -> usize {
    model.config().vision.num_image_tokens() + PREFILL_TEXT_TOKENS
}

/// Runs the warm-up pass, then the timed workload. `pad_id` fills the unconditional
/// text-to-image rows; `on_stage` is told before each stage starts.
pub fn run(
    model: &Janus,
    pad_id: u32,
    params: &BenchParams,
    mut on_stage: impl FnMut(Stage),
) -> Result<BenchReport> {
    params.validate_for(model)?;
    on_stage(Stage::WarmUp);
    let warm = BenchParams {
        decode_tokens: WARMUP_COUNT,
        t2i_steps: WARMUP_COUNT,
        ..*params
    };
    run_workload(model, pad_id, &warm, |_| {})?;
    run_workload(model, pad_id, params, on_stage)
}

/// One pass over the workload, timed, without warm-up.
pub fn run_workload(
    model: &Janus,
    pad_id: u32,
    params: &BenchParams,
    mut on_stage: impl FnMut(Stage),
) -> Result<BenchReport> {
    params.validate_for(model)?;
    let cfg = model.config();
    let device = model.device();

    on_stage(Stage::Siglip);
    let px = pixels(cfg.vision.image_size, device)?;
    let t0 = Instant::now();
    let image_rows = model.encode_images(&px)?; // (1, N, D)
    crate::device::sync(device)?;
    let siglip_s = t0.elapsed().as_secs_f64();

    // Prefill inputs: image rows then the text ids' embeddings; built untimed, as is the
    // cache (preallocated for prefill + decode).
    on_stage(Stage::Prefill);
    let text = token_ids(PREFILL_TEXT_TOKENS, cfg.text.vocab_size);
    let text = model
        .llm
        .embed(&Tensor::new(text.as_slice(), device)?.unsqueeze(0)?)?; // (1, 40, D)
    let embeds = Tensor::cat(&[&image_rows.to_dtype(text.dtype())?, &text], 1)?; // (1, N + 40, D)
    let prefill_tokens = embeds.dim(1)?;
    let mut cache = KvCache::new(
        &cfg.text,
        1,
        prefill_tokens + params.decode_tokens,
        model.dtype(),
        device,
    )?;
    let t0 = Instant::now();
    let hidden = model.llm.forward_embeds(&embeds, Some(&mut cache))?;
    let mut next = argmax(&last_logits(model, &hidden)?);
    let prefill_s = t0.elapsed().as_secs_f64();

    on_stage(Stage::Decode);
    let t0 = Instant::now();
    for _ in 0..params.decode_tokens {
        let ids = Tensor::new(&[next], device)?.unsqueeze(0)?; // (1, 1)
        let hidden = model
            .llm
            .forward_embeds(&model.llm.embed(&ids)?, Some(&mut cache))?;
        next = argmax(&last_logits(model, &hidden)?);
    }
    let decode_tok_s = params.decode_tokens as f64 / t0.elapsed().as_secs_f64();
    // The text-to-image stage allocates its own cache; this one need not add to the peak.
    drop(cache);

    on_stage(Stage::T2i);
    let t2i_step_s = t2i_steps(model, pad_id, params)? / params.t2i_steps as f64;

    on_stage(Stage::VqDecode);
    let codes = vq_codes(cfg.gen_image_tokens(), cfg.vq.codebook_size);
    let t0 = Instant::now();
    decode_codes(model, &[codes])?;
    crate::device::sync(device)?;
    let vq_decode_s = t0.elapsed().as_secs_f64();

    Ok(BenchReport {
        siglip_s,
        prefill_tokens,
        prefill_s,
        decode_tok_s,
        t2i_step_s,
        vq_decode_s,
    })
}

/// Seconds for `params.t2i_steps` text-to-image steps, run by the engine's own loop
/// ([`generate_codes`], greedy).
///
/// The engine's step `k` computes gen_head, CFG and the code from the hidden state of the
/// previous forward, reports `on_step(k + 1)`, then embeds the code and runs the next
/// forward. Between the reports of step 1 and step `n + 1` there are therefore exactly `n`
/// whole steps (embed, forward, gen_head, CFG, argmax); the prefill and the first code
/// before them stay untimed, and the loop is stopped at step `n + 1`.
fn t2i_steps(model: &Janus, pad_id: u32, params: &BenchParams) -> Result<f64> {
    let cond = token_ids(T2I_PROMPT_TOKENS, model.config().text.vocab_size);
    // As the engine's prompts: everything but the first and the last token padded.
    let mut uncond = cond.clone();
    let last = uncond.len() - 1;
    uncond[1..last].fill(pad_id);
    let gen = GenerateParams {
        parallel: params.parallel,
        cfg_weight: CFG_WEIGHT,
        temperature: 0.0,
        seed: 0,
        speculative: Default::default(),
    };
    let n = params.t2i_steps;
    let mut start = None;
    let mut seconds = None;
    generate_codes(model, &cond, &uncond, &gen, |done, _| {
        if done == 1 {
            start = Some(Instant::now());
        }
        if done == n + 1 {
            seconds = start.map(|s| s.elapsed().as_secs_f64());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    seconds.ok_or_else(|| {
        Error::InvalidInput(format!(
            "the text-to-image loop ended before {n} timed steps"
        ))
    })
}

/// f32 logits of row 0's last position, through lm_head.
fn last_logits(model: &Janus, hidden: &Tensor) -> Result<Vec<f32>> {
    let (_, t, _) = hidden.dims3()?;
    let logits = model.llm.lm_head(&hidden.narrow(1, t - 1, 1)?)?; // (1, 1, V)
    Ok(logits
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?)
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`) in MiB; `None`
/// where that file is not available (not Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_follow_the_formulas() {
        assert_eq!(token_ids(4, 102_400), [1000, 1007, 1014, 1021]);
        // Wraps around a small vocabulary: 1000 mod 640 = 360.
        assert_eq!(token_ids(2, 640), [360, 367]);
        assert_eq!(vq_codes(4, 16_384), [0, 13, 26, 39]);
        assert_eq!(vq_codes(11, 128)[10], 2); // 130 mod 128
        let px = pixels(4, &candle_core::Device::Cpu).unwrap();
        assert_eq!(px.dims(), [1, 3, 4, 4]);
        let v = px.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v[0], 0.0);
        assert!((v[1] - 1f32.sin()).abs() < 1e-7);
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    }

    #[test]
    fn zero_counts_are_refused() {
        assert!(BenchParams::default().validate().is_ok());
        for p in [
            BenchParams {
                decode_tokens: 0,
                ..Default::default()
            },
            BenchParams {
                t2i_steps: 0,
                ..Default::default()
            },
            BenchParams {
                parallel: 0,
                ..Default::default()
            },
        ] {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mb = peak_rss_mb().unwrap();
            assert!(mb.is_finite() && mb > 0.0, "{mb}");
        }
    }
}
