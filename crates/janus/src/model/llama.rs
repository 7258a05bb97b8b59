//! The LLaMA decoder (DeepSeek-LLM) with an explicit, preallocated, batched KV cache.
//!
//! Checkpoint names (original layout): `language_model.model.{embed_tokens, layers.N.*,
//! norm}` and `language_model.lm_head`.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use super::kv_cache::KvCache;
use super::linear::{Adapter, Linear};
use super::ops::rope::{Positions, Rope};
use super::ops::{attention_heads_merged, silu_mul, AttnMask, RmsNorm};
use crate::config::TextConfig;
use crate::kernels::quant::QuantFormat;

fn linear(
    cfg_bias: bool,
    i: usize,
    o: usize,
    vb: VarBuilder,
    quant: Option<QuantFormat>,
) -> Result<Linear> {
    Linear::load(i, o, cfg_bias, vb, quant)
}

/// Projections of the same input (q/k/v, gate/up), kept apart or stacked into one
/// product.
#[derive(Debug, Clone)]
enum Projections {
    /// One product each: candle's paths (training, GPUs, f32) and biased layers.
    Separate(Vec<Linear>),
    /// The weights stacked row-wise into one packed product, split after: one pass over
    /// the input and one parallel loop instead of several (each loop's start wakes the
    /// pool's threads). Every output is computed exactly as it would be alone.
    Stacked { linear: Linear, sizes: Vec<usize> },
}

impl Projections {
    /// Loads `names` (each `in_dim -> outs[i]`), stacked when their weights would be
    /// packed for the CPU kernel and they have no bias; quantised to `quant` if given.
    fn load(
        vb: &VarBuilder,
        names: &[&str],
        in_dim: usize,
        outs: &[usize],
        bias: bool,
        quant: Option<QuantFormat>,
    ) -> Result<Self> {
        if !bias {
            let weights = names
                .iter()
                .zip(outs)
                .map(|(n, &o)| vb.pp(*n).get((o, in_dim), "weight"))
                .collect::<Result<Vec<_>>>()?;
            let adapters = names
                .iter()
                .zip(outs)
                .map(|(n, &o)| Adapter::load(&vb.pp(*n), in_dim, o))
                .collect::<Result<Vec<_>>>()?;
            if weights.iter().all(Linear::packs) && adapters.iter().all(Option::is_none) {
                let stacked = Tensor::cat(&weights, 0)?;
                drop(weights);
                return Ok(Self::Stacked {
                    linear: Linear::new(stacked, None, quant)?,
                    sizes: outs.to_vec(),
                });
            }
            let linears = weights
                .into_iter()
                .zip(adapters)
                .map(|(w, a)| Ok(Linear::new(w, None, quant)?.with_adapter(a)))
                .collect::<Result<_>>()?;
            return Ok(Self::Separate(linears));
        }
        let linears = names
            .iter()
            .zip(outs)
            .map(|(n, &o)| linear(bias, in_dim, o, vb.pp(*n), quant))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::Separate(linears))
    }

    /// Each projection of `x`.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(ls) => ls.iter().map(|l| l.forward(x)).collect(),
            Self::Stacked { linear, sizes } => {
                let y = linear.forward(x)?;
                let mut start = 0;
                sizes
                    .iter()
                    .map(|&n| {
                        start += n;
                        y.narrow(D::Minus1, start - n, n)
                    })
                    .collect()
            }
        }
    }
}

#[derive(Debug, Clone)]
struct SelfAttention {
    /// q, k, v.
    qkv: Projections,
    o_proj: Linear,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(cfg: &TextConfig, vb: VarBuilder, quant: Option<QuantFormat>) -> Result<Self> {
        let (d, h, kv, dh) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let b = cfg.attention_bias;
        let names = ["q_proj", "k_proj", "v_proj"];
        Ok(Self {
            qkv: Projections::load(&vb, &names, d, &[h * dh, kv * dh, kv * dh], b, quant)?,
            o_proj: linear(b, h * dh, d, vb.pp("o_proj"), quant)?,
            n_heads: h,
            n_kv: kv,
            head_dim: dh,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        pos: &Positions,
        mask: AttnMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let [q, k, v]: [Tensor; 3] = self
            .qkv
            .forward(x)?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("q/k/v projections".into()))?;
        // (B, T, H*Dh) -> (B, H, T, Dh)
        let q = rope.apply_bthd(&q.reshape((b, t, self.n_heads, self.head_dim))?, pos)?;
        let k = rope.apply_bthd(&k.reshape((b, t, self.n_kv, self.head_dim))?, pos)?;
        let v = v
            .reshape((b, t, self.n_kv, self.head_dim))?
            .transpose(1, 2)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v.contiguous()?),
        };
        let y = attention_heads_merged(&q, &k, &v, mask)?; // (B, T, H*Dh)
        debug_assert_eq!(y.dims(), [b, t, self.n_heads * self.head_dim]);
        self.o_proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    /// gate, up.
    gate_up: Projections,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &TextConfig, vb: VarBuilder, quant: Option<QuantFormat>) -> Result<Self> {
        let (d, f, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_up: Projections::load(&vb, &["gate_proj", "up_proj"], d, &[f, f], b, quant)?,
            down_proj: linear(b, f, d, vb.pp("down_proj"), quant)?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gu = self.gate_up.forward(x)?;
        let h = silu_mul(&gu[0], &gu[1])?;
        self.down_proj.forward(&h)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: SelfAttention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder, quant: Option<QuantFormat>) -> Result<Self> {
        Ok(Self {
            self_attn: SelfAttention::new(cfg, vb.pp("self_attn"), quant)?,
            mlp: Mlp::new(cfg, vb.pp("mlp"), quant)?,
            input_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
        })
    }
}

/// Positions (batch rows times tokens) up to which a forward keeps the thread pool
/// spinning ([`crate::kernels::on_pool_spinning`]).
const SPINNING_ROWS: usize = 16;

/// The decoder: token embeddings, layers, final RMSNorm and the LM head.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    cfg: TextConfig,
}

impl Llama {
    /// Builds the decoder from `language_model.*`.
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        Self::load(cfg, vb, None)
    }

    /// [`Self::new`] with every projection of the layers and the LM head quantised to
    /// `quant` as it loads (the embeddings and norms stay as loaded). CPU only.
    pub fn load(cfg: &TextConfig, vb: VarBuilder, quant: Option<QuantFormat>) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, m.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, m.pp("layers").pp(i), quant))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None, quant)?
        } else {
            let vb = vb.pp("lm_head");
            Linear::load(cfg.hidden_size, cfg.vocab_size, false, vb, quant)?
        };
        Ok(Self {
            rope: Rope::new(
                cfg.head_dim,
                cfg.max_position_embeddings,
                cfg.rope_theta,
                vb.device(),
            )?,
            embed_tokens,
            layers,
            norm,
            lm_head,
            cfg: cfg.clone(),
        })
    }

    /// The configuration this decoder was built with.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Token embeddings.
    ///
    /// # Shapes
    /// `(B, T)` u32 ids -> `(B, T, D)`
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    /// Runs the decoder over input embeddings and returns the final-normed hidden states.
    ///
    /// With a cache, the new positions start at `cache.len()` and are appended to it;
    /// without one, positions start at 0 and nothing is kept (the training path).
    /// All rows share positions; there is no padding mask (pads are attended, as in the
    /// reference's unconditional CFG rows).
    ///
    /// # Shapes
    /// `(B, T, D) -> (B, T, D)`
    pub fn forward_embeds(&self, x: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.forward_embeds_padded(x, cache, &[])
    }

    /// [`Self::forward_embeds`] for a batch whose rows are left-padded to a common length
    /// (rows of different prompts batched together): row `b`'s first `left_pad[b]`
    /// positions are padding that no real token attends to, and its RoPE positions count
    /// from its first real token, so each row computes what it would alone. An empty
    /// `left_pad` (or all zeros) means no padding.
    ///
    /// # Shapes
    /// `(B, T, D) -> (B, T, D)`
    pub fn forward_embeds_padded(
        &self,
        x: &Tensor,
        mut cache: Option<&mut KvCache>,
        left_pad: &[usize],
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let padded = left_pad.iter().any(|&p| p > 0);
        if padded && left_pad.len() != b {
            candle_core::bail!("{} padding lengths for {b} rows", left_pad.len());
        }
        let offset = cache.as_ref().map_or(0, |c| c.len());
        if offset + t > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence of {} positions exceeds max_position_embeddings {}",
                offset + t,
                self.cfg.max_position_embeddings
            );
        }
        if let Some(c) = cache.as_ref() {
            if c.batch() != b || offset + t > c.max_len() {
                candle_core::bail!(
                    "KV cache holds {} rows x {} positions; got {} rows reaching position {}",
                    c.batch(),
                    c.max_len(),
                    b,
                    offset + t
                );
            }
        }
        let (pos, mask) = if padded {
            padded_positions_and_mask(left_pad, t, offset, x.device())?
        } else {
            (
                Positions::Shared(offset),
                causal_mask(t, offset, x.device())?,
            )
        };
        let mask = match (padded, mask.as_ref()) {
            (true, Some(m)) => AttnMask::Additive(m),
            (_, tensor) => AttnMask::Causal { offset, tensor },
        };
        // On one of rayon's workers: the products' parallel loops then start from a pool
        // thread, and the caller sleeps once per forward rather than once per product
        // (the wake-ups cost ~18% of a 4-bit image step on two cores).
        let mut h = x.clone();
        // Passes after cached positions (decoding, blocks of drafts) give each row the bits
        // it gets alone, which exact speculative decoding relies on; so does a pass whose
        // caller asks for it (its thread's setting, carried onto the pool).
        let invariant = offset > 0 || crate::kernels::row_invariance();
        let mut layers = |h: Tensor| -> Result<Tensor> {
            crate::kernels::with_row_invariance(invariant, || {
                let mut h = h;
                for (i, layer) in self.layers.iter().enumerate() {
                    let residual = h.clone();
                    let y = layer.input_layernorm.forward(&h)?;
                    let y = layer.self_attn.forward(
                        &y,
                        &self.rope,
                        &pos,
                        mask,
                        cache.as_deref_mut().map(|c| (c, i)),
                    )?;
                    h = super::ops::add(&residual, &y)?;
                    let residual = h.clone();
                    let y = layer
                        .mlp
                        .forward(&layer.post_attention_layernorm.forward(&h)?)?;
                    h = super::ops::add(&residual, &y)?;
                }
                Ok(h)
            })
        };
        // A few rows (decoding, image steps) keep the pool spinning between the layers'
        // many short loops; longer inputs sleep between them as usual.
        h = if b * t <= SPINNING_ROWS {
            crate::kernels::on_pool_spinning(move || layers(h))?
        } else {
            crate::kernels::on_pool(move || layers(h))?
        };
        if let Some(c) = cache {
            c.advance(t);
        }
        self.norm.forward(&h)
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Decoder layer `i` alone over a whole sequence from position 0 (causal, no cache):
    /// training's unit of recomputation (activation checkpointing). Running every layer in
    /// turn, then [`Self::final_norm`], computes what [`Self::forward_embeds`] does.
    ///
    /// # Shapes
    /// `(B, T, D) -> (B, T, D)`
    pub fn layer_forward(&self, i: usize, h: &Tensor) -> Result<Tensor> {
        let layer = self
            .layers
            .get(i)
            .ok_or_else(|| candle_core::Error::Msg(format!("no decoder layer {i}")))?;
        let t = h.dim(1)?;
        if t > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence of {t} positions exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            );
        }
        let mask = causal_mask(t, 0, h.device())?;
        let mask = AttnMask::Causal {
            offset: 0,
            tensor: mask.as_ref(),
        };
        let y = layer.input_layernorm.forward(h)?;
        let y = layer
            .self_attn
            .forward(&y, &self.rope, &Positions::Shared(0), mask, None)?;
        let h = super::ops::add(h, &y)?;
        let y = layer
            .mlp
            .forward(&layer.post_attention_layernorm.forward(&h)?)?;
        super::ops::add(&h, &y)
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, h: &Tensor) -> Result<Tensor> {
        self.norm.forward(h)
    }

    /// Text logits from final-normed hidden states.
    ///
    /// # Shapes
    /// `(B, T, D) -> (B, T, V)`
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }
}

/// Additive causal mask `(T, offset+T)` for a chunk of `t` new positions after `offset`
/// cached ones; `None` when a single position is decoded (it sees everything).
fn causal_mask(t: usize, offset: usize, device: &Device) -> Result<Option<Tensor>> {
    if t <= 1 {
        return Ok(None);
    }
    let total = offset + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(mask, (t, total), device)?))
}

/// Per-row positions `(B, T)` and additive mask `(B, 1, T, offset+T)` for left-padded rows.
///
/// Real tokens see the real tokens before them (causal) and never a pad. A pad position
/// sees only itself, which keeps its (unused) state finite: a query row masked entirely
/// would give NaN, and NaN in the cache poisons every later product with it.
fn padded_positions_and_mask(
    left_pad: &[usize],
    t: usize,
    offset: usize,
    device: &Device,
) -> Result<(Positions, Option<Tensor>)> {
    let total = offset + t;
    let mut pos = Vec::with_capacity(left_pad.len() * t);
    let mut mask = Vec::with_capacity(left_pad.len() * t * total);
    for &pad in left_pad {
        for i in 0..t {
            let q = offset + i;
            pos.push(q.saturating_sub(pad) as u32);
            for j in 0..total {
                let visible = j <= q && (j >= pad || j == q);
                mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
            }
        }
    }
    let b = left_pad.len();
    Ok((
        Positions::PerRow(Tensor::from_vec(pos, (b, t), device)?),
        Some(Tensor::from_vec(mask, (b, 1, t, total), device)?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn rand_bf16(shape: &[usize], seed: u64) -> Tensor {
        crate::testing::hashed_bf16(shape, seed, 2.0)
    }

    /// Stacked projections give each projection's output bit for bit, packed or
    /// quantised, for one row (decoding) and many (the blocked product).
    #[test]
    fn stacked_projections_equal_separate_ones_bit_for_bit() {
        let (d, outs) = (64, [48usize, 16, 16]);
        let ws: Vec<Tensor> = outs
            .iter()
            .enumerate()
            .map(|(i, &o)| rand_bf16(&[o, d], 100 + i as u64))
            .collect();
        let stacked = Tensor::cat(&ws, 0).unwrap();
        for quant in [None, Some(QuantFormat::Q8), Some(QuantFormat::Q4)] {
            if quant.is_none() && !Linear::packs(&stacked) {
                // candle's own product (no AVX-512 BF16) may block by width.
                continue;
            }
            // Quantised as they load, straight from the row-major weights.
            let sep = Projections::Separate(
                ws.iter()
                    .map(|w| Linear::new(w.clone(), None, quant).unwrap())
                    .collect(),
            );
            let st = Projections::Stacked {
                linear: Linear::new(stacked.clone(), None, quant).unwrap(),
                sizes: outs.to_vec(),
            };
            for rows in [1, 2, 37] {
                let x = rand_bf16(&[1, rows, d], 7);
                let (a, b) = (sep.forward(&x).unwrap(), st.forward(&x).unwrap());
                for (a, b) in a.iter().zip(&b) {
                    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                    let (a, b) = (a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
                    assert_eq!(a.len(), b.len());
                    assert!(
                        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{quant:?} rows {rows}"
                    );
                }
            }
        }
    }

    #[test]
    fn fused_rms_norm_equals_the_candle_chain_bit_for_bit() {
        for d in [1, 7, 33, 130] {
            let norm = RmsNorm::from_weight(rand_bf16(&[d], 5), 1e-6);
            let x = rand_bf16(&[2, 3, d], d as u64);
            let fused = norm.forward(&x).unwrap();
            let plain = norm.forward_plain(&x).unwrap();
            let (a, b) = (
                fused
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<half::bf16>()
                    .unwrap(),
                plain
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<half::bf16>()
                    .unwrap(),
            );
            assert_eq!(a, b, "width {d}");
        }
    }
}
