//! The training forward: a micro-batch of samples of any kinds through the LLM, text
//! targets through `lm_head`, image targets through the generation head, one
//! cross-entropy over all of them (no per-task weights).
//!
//! Inputs enter as the papers describe: text ids through `embed_tokens`, understanding
//! images through SigLIP then the aligner, image codes through `gen_embed` then
//! `gen_aligner`. Rows are right-padded to the longest; with causal attention the padding
//! changes nothing before it and carries no target.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};

use super::data::Kind;
use super::sample::TrainSample;
use crate::error::{Error, Result};
use crate::model::Janus;

/// The summed loss of a micro-batch and its split by kind.
#[derive(Debug)]
pub struct MicroLoss {
    /// Sum of the cross-entropies of every target (a scalar f32 tensor on the graph).
    pub sum: Tensor,
    /// Per kind: (sum of cross-entropies, number of targets).
    pub by_kind: [(f64, usize); 3],
    /// Positions fed (padding excluded).
    pub tokens: usize,
    /// Per kind: targets whose logits' argmax is the target.
    pub correct: [usize; 3],
}

/// Per-row cross-entropy (natural log) of f32 `logits` `(M, V)` against `targets`.
///
/// # Shapes
/// `(M, V)` -> `(M,)`
pub fn cross_entropy_rows(logits: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let m = logits.dim(0)?;
    // The max only shifts for stability; it carries no gradient.
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?; // (M, 1)
    let t = Tensor::from_slice(targets, (m, 1), logits.device())?;
    let picked = shifted.gather(&t, D::Minus1)?; // (M, 1)
    (lse - picked)?.squeeze(D::Minus1)
}

/// Forward of `samples` as one padded batch; the loss sum, per kind.
pub fn micro_batch_loss(model: &Janus, samples: &[&TrainSample]) -> Result<MicroLoss> {
    let (x, tokens) = batch_inputs(model, samples)?;
    let hidden = model.llm.forward_embeds(&x, None)?; // (B, T, D), final-normed
    heads_loss(model, samples, &hidden, tokens)
}

/// Forward and backward of a micro-batch: `on_grads` receives each gradient store of
/// `loss sum × scale` (one, or with `recompute` one per segment, each parameter's
/// gradient in exactly one of them).
///
/// With `recompute` (activation checkpointing) the forward keeps only each decoder
/// layer's input; the backward then runs segment by segment from the heads down: each
/// layer is recomputed from its saved input and differentiated through
/// `sum(layer(h) · g)`, where `g` is the gradient reaching its output. Peak memory holds
/// one layer's activations instead of all of them.
pub fn micro_batch_backward(
    model: &Janus,
    samples: &[&TrainSample],
    scale: f64,
    recompute: bool,
    on_grads: &mut dyn FnMut(&GradStore) -> Result<()>,
) -> Result<MicroLoss> {
    let (x, tokens) = batch_inputs(model, samples)?;
    if !recompute {
        let hidden = model.llm.forward_embeds(&x, None)?;
        let ml = heads_loss(model, samples, &hidden, tokens)?;
        on_grads(&(&ml.sum * scale)?.backward()?)?;
        return Ok(ml);
    }
    let llm = &model.llm;
    let mut saved = Vec::with_capacity(llm.num_layers());
    let mut h = x.detach();
    for i in 0..llm.num_layers() {
        let next = llm.layer_forward(i, &h)?.detach();
        saved.push(h);
        h = next;
    }
    let top = Var::from_tensor(&h)?;
    let hidden = llm.final_norm(top.as_tensor())?;
    let ml = heads_loss(model, samples, &hidden, tokens)?;
    let store = (&ml.sum * scale)?.backward()?;
    on_grads(&store)?;
    let mut g = gradient_of(&store, &top)?;
    drop(store);
    for (i, input) in saved.into_iter().enumerate().rev() {
        let input = Var::from_tensor(&input)?;
        let y = llm.layer_forward(i, input.as_tensor())?;
        let store = (y * &g)?.sum_all()?.backward()?;
        on_grads(&store)?;
        g = gradient_of(&store, &input)?;
    }
    if x.track_op() {
        on_grads(&(x * g)?.sum_all()?.backward()?)?;
    }
    Ok(ml)
}

/// The gradient a backward pass gave `v` (zeros where nothing depends on it).
fn gradient_of(store: &GradStore, v: &Var) -> Result<Tensor> {
    Ok(match store.get(v.as_tensor()) {
        Some(g) => g.clone(),
        None => v.as_tensor().zeros_like()?,
    })
}

/// The micro-batch's input embeddings `(B, T, D)`, right-padded, and the positions fed.
fn batch_inputs(model: &Janus, samples: &[&TrainSample]) -> Result<(Tensor, usize)> {
    if samples.is_empty() {
        return Err(Error::InvalidInput("empty micro-batch".into()));
    }
    let dev = model.device().clone();
    let dtype = model.dtype();
    let d = model.config().text.hidden_size;

    // Every understanding image of the micro-batch through SigLIP at once.
    let pixels: Vec<&Vec<f32>> = samples.iter().flat_map(|s| s.pixels.iter()).collect();
    let images = if pixels.is_empty() {
        None
    } else {
        let side = model.config().vision.image_size;
        let flat: Vec<f32> = pixels.iter().flat_map(|p| p.iter().copied()).collect();
        let px = Tensor::from_vec(flat, (pixels.len(), 3, side, side), &dev)?;
        Some(model.encode_images(&px)?) // (I, N, D)
    };

    let mut rows = Vec::with_capacity(samples.len());
    let mut image_index = 0;
    for s in samples {
        let ids = Tensor::new(s.input_ids.as_slice(), &dev)?.unsqueeze(0)?; // (1, T)
        let row = match s.kind {
            Kind::Understanding => {
                let n = s.image_spans.len();
                let imgs = match (&images, n) {
                    (_, 0) => None,
                    (Some(all), n) => Some(all.narrow(0, image_index, n)?),
                    (None, _) => unreachable!("images were encoded above"),
                };
                image_index += n;
                model.embed_with_images(&ids, &s.image_spans, imgs.as_ref())?
            }
            Kind::Text => model.llm.embed(&ids)?,
            Kind::T2i => {
                let text = model.llm.embed(&ids)?;
                let inputs = &s.codes[..s.codes.len().saturating_sub(1)];
                if inputs.is_empty() {
                    text
                } else {
                    let codes = Tensor::new(inputs, &dev)?.unsqueeze(0)?;
                    let img = model.embed_image_codes(&codes)?.to_dtype(text.dtype())?;
                    Tensor::cat(&[&text, &img], 1)?
                }
            }
        };
        rows.push(row); // (1, T_r, D)
    }
    let t_max = rows
        .iter()
        .map(|r| r.dim(1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let tokens = t_max.iter().sum();
    let t = t_max.iter().copied().max().unwrap_or(0);
    let rows = rows
        .into_iter()
        .map(|r| pad_right(r, t, d, dtype, &dev))
        .collect::<Result<Vec<_>>>()?;
    Ok((Tensor::cat(&rows, 0)?, tokens))
}

/// Cross-entropy of every target of `samples` from the final-normed `hidden` `(B, T, D)`.
fn heads_loss(
    model: &Janus,
    samples: &[&TrainSample],
    hidden: &Tensor,
    tokens: usize,
) -> Result<MicroLoss> {
    let (b, t, d) = hidden.dims3()?;
    let dev = hidden.device().clone();
    let flat = hidden.reshape((b * t, d))?;

    let mut by_kind = [(0f64, 0usize); 3];
    let mut correct = [0usize; 3];
    let mut total: Option<Tensor> = None;
    for head in [Head::Text, Head::Image] {
        let mut idx = Vec::new();
        let mut targets = Vec::new();
        let mut kinds = Vec::new();
        for (r, s) in samples.iter().enumerate() {
            let list = match head {
                Head::Text => &s.text_targets,
                Head::Image => &s.image_targets,
            };
            for &(pos, id) in list {
                idx.push((r * t + pos) as u32);
                targets.push(id);
                kinds.push(s.kind);
            }
        }
        if idx.is_empty() {
            continue;
        }
        let n = idx.len();
        let h = flat.index_select(&Tensor::from_vec(idx, n, &dev)?, 0)?; // (M, D)
        let logits = match head {
            Head::Text => model.llm.lm_head(&h)?.to_dtype(DType::F32)?,
            Head::Image => model.gen_head_logits(&h)?,
        };
        let ce = cross_entropy_rows(&logits, &targets)?; // (M,)
        let best = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        for ((kind, b), t) in kinds.iter().zip(best).zip(&targets) {
            correct[kind.index()] += usize::from(b == *t);
        }
        for (kind, v) in kinds.iter().zip(ce.to_vec1::<f32>()?) {
            by_kind[kind.index()].0 += f64::from(v);
            by_kind[kind.index()].1 += 1;
        }
        let s = ce.sum_all()?;
        total = Some(match total {
            Some(t) => (t + s)?,
            None => s,
        });
    }
    let sum = match total {
        Some(s) => s,
        None => {
            return Err(Error::InvalidInput(
                "micro-batch has no supervised token".into(),
            ))
        }
    };
    Ok(MicroLoss {
        sum,
        by_kind,
        tokens,
        correct,
    })
}

#[derive(Clone, Copy)]
enum Head {
    Text,
    Image,
}

/// `(1, T_r, D)` -> `(1, t, D)` with zeros after (never attended by real positions).
fn pad_right(row: Tensor, t: usize, d: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let tr = row.dim(1)?;
    if tr == t {
        return Ok(row);
    }
    let pad = Tensor::zeros((1, t - tr, d), dtype, dev)?;
    Ok(Tensor::cat(&[&row.to_dtype(dtype)?, &pad], 1)?)
}
