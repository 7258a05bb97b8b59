//! Image understanding: images plus a conversation in, text out.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Tensor};

use super::sampling::{Sampler, SamplingParams};
use super::Timings;
use crate::error::{Error, Result};
use crate::model::{Janus, KvCache};

/// A tokenised understanding prompt with its images.
#[derive(Debug, Clone)]
pub struct UnderstandInput {
    /// Prompt ids with every image already expanded to begin + N placeholders + end.
    pub input_ids: Vec<u32>,
    /// Start index of each image's N placeholder positions, in image order.
    pub image_spans: Vec<usize>,
    /// Preprocessed images `(I, 3, S, S)`, one per span; `None` when there are none.
    pub pixel_values: Option<Tensor>,
}

/// Decoding settings for understanding.
#[derive(Debug, Clone)]
pub struct UnderstandParams {
    /// Sampling (temperature 0 = greedy).
    pub sampling: SamplingParams,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Token that ends the answer (not included in the output).
    pub eos_token_id: u32,
}

/// What an understanding run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct UnderstandOutput {
    /// Generated ids, stop token excluded.
    pub token_ids: Vec<u32>,
    /// Why generation ended.
    pub finish: Finish,
    /// Seconds per stage.
    pub timings: Timings,
}

/// Why a generation loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The stop token was produced.
    Eos,
    /// `max_new_tokens` was reached.
    Length,
    /// The callback asked to stop.
    Cancelled,
}

impl Finish {
    /// OpenAI-style name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Finish::Eos => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// Runs prefill and decoding. `on_token` sees every generated id (stop token excluded)
/// as soon as it is chosen and may stop the loop with `ControlFlow::Break`.
pub fn understand(
    model: &Janus,
    input: &UnderstandInput,
    params: &UnderstandParams,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<UnderstandOutput> {
    let cfg = model.config();
    let prompt_len = input.input_ids.len();
    let max_pos = cfg.text.max_position_embeddings;
    if prompt_len == 0 {
        return Err(Error::InvalidInput("the prompt is empty".into()));
    }
    if prompt_len >= max_pos {
        return Err(Error::InvalidInput(format!(
            "the prompt is {prompt_len} tokens long, but the model's context holds {max_pos}"
        )));
    }
    let vocab = cfg.text.vocab_size as u32;
    if let Some(bad) = input.input_ids.iter().find(|&&t| t >= vocab) {
        return Err(Error::InvalidInput(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let device = model.device();
    let mut timings = Timings::default();

    let t0 = Instant::now();
    let image_embeds = match &input.pixel_values {
        Some(px) => Some(model.encode_images(&px.to_device(device)?)?),
        None => None,
    };
    timings.push("vision_s", t0.elapsed().as_secs_f64());

    let t0 = Instant::now();
    let ids = Tensor::new(input.input_ids.as_slice(), device)?.unsqueeze(0)?;
    let embeds = model.embed_with_images(&ids, &input.image_spans, image_embeds.as_ref())?;
    let total = (prompt_len + params.max_new_tokens).min(max_pos);
    let mut cache = KvCache::new(&cfg.text, 1, total, model.dtype(), device)?;
    let hidden = model.llm.forward_embeds(&embeds, Some(&mut cache))?;
    let mut logits = last_logits(model, &hidden)?;
    timings.push("prefill_s", t0.elapsed().as_secs_f64());

    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut finish = Finish::Length;
    let budget = params.max_new_tokens.min(max_pos - prompt_len);
    for step in 0..budget {
        let next = sampler.sample(&logits);
        if next == params.eos_token_id {
            finish = Finish::Eos;
            break;
        }
        out.push(next);
        if on_token(next).is_break() {
            finish = Finish::Cancelled;
            break;
        }
        if step + 1 == budget {
            break;
        }
        let ids = Tensor::new(&[next], device)?.unsqueeze(0)?;
        let embeds = model.llm.embed(&ids)?;
        let hidden = model.llm.forward_embeds(&embeds, Some(&mut cache))?;
        logits = last_logits(model, &hidden)?;
    }
    timings.push("decode_s", t0.elapsed().as_secs_f64());
    Ok(UnderstandOutput {
        token_ids: out,
        finish,
        timings,
    })
}

/// f32 logits of the last position of row 0.
fn last_logits(model: &Janus, hidden: &Tensor) -> Result<Vec<f32>> {
    let (_, t, _) = hidden.dims3()?;
    let last = hidden.narrow(1, t - 1, 1)?;
    let logits = model.llm.lm_head(&last)?;
    Ok(logits
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?)
}
