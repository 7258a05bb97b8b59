//! The network: one LLaMA decoder with two visual paths.
//!
//! ```text
//! understanding: pixels -> SigLIP -> aligner -> image embeddings ─┐
//! text ids -> embed_tokens ──────────────────────────────────────┴─> LLaMA -> lm_head
//! generation:    LLaMA hidden -> gen_head -> code logits; code -> gen_embed -> gen_aligner
//!                codes -> VQ decoder -> pixels
//! ```
//! Modules are built from canonical (original-layout) tensor names; the weights module
//! maps other layouts onto them.

pub mod conv;
mod kv_cache;
pub mod linear;
pub mod llama;
pub mod mlp;
pub mod ops;
pub mod siglip;
pub mod vq;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

pub use kv_cache::KvCache;
pub use llama::Llama;
pub use mlp::{GenHead, MlpProjector};
pub use ops::{backward_calls, BackwardCalls};
pub use siglip::SiglipVit;
pub use vq::VqModel;

use crate::config::JanusConfig;
use crate::kernels::quant::QuantFormat;

/// The whole Janus model.
#[derive(Debug, Clone)]
pub struct Janus {
    /// Understanding encoder.
    pub vision: SiglipVit,
    /// Vision features -> LLM width.
    pub aligner: MlpProjector,
    /// The LLM.
    pub llm: Llama,
    /// Image-code embeddings for generation (its own table, not the VQ codebook).
    pub gen_embed: Embedding,
    /// gen_embed width -> LLM width.
    pub gen_aligner: MlpProjector,
    /// LLM hidden -> image-code logits.
    pub gen_head: GenHead,
    /// The VQ-16 tokenizer.
    pub vq: VqModel,
    cfg: JanusConfig,
}

/// The VQ model's VarBuilder: candle's CPU convolutions have no bf16 kernel, so on a CPU
/// without ours ([`crate::kernels::conv`], AVX2 or better) a bf16 model keeps its (small,
/// ~70M-parameter) VQ model in f32.
fn vq_vb(vb: VarBuilder) -> VarBuilder {
    if vb.dtype() == DType::BF16
        && vb.device().is_cpu()
        && crate::kernels::isa() == crate::kernels::Isa::Plain
    {
        vb.set_dtype(DType::F32)
    } else {
        vb
    }
}

impl Janus {
    /// Builds every part from canonical tensor names.
    pub fn new(cfg: &JanusConfig, vb: VarBuilder) -> Result<Self> {
        Self::load(cfg, vb, None)
    }

    /// [`Self::new`], with what an image or text step streams quantised to `quant`
    /// (weight-only) as it loads: the LLM's projections, its LM head, the generation head
    /// and the generation aligner's 2048 x 2048 layer. SigLIP and its aligner (once per
    /// image), the embeddings and the VQ model stay as loaded. Each quantised weight is
    /// converted from the loaded tensor and that tensor freed at once, so peak memory
    /// stays near the checkpoint's size. CPU only.
    pub fn load(cfg: &JanusConfig, vb: VarBuilder, quant: Option<QuantFormat>) -> Result<Self> {
        let (n, e) = cfg.gen_embed;
        Ok(Self {
            vision: SiglipVit::new(&cfg.vision, vb.pp("vision_model.vision_tower"))?,
            aligner: MlpProjector::new(&cfg.aligner, vb.pp("aligner"))?,
            llm: Llama::load(&cfg.text, vb.pp("language_model"), quant)?,
            gen_embed: candle_nn::embedding(n, e, vb.pp("gen_embed"))?,
            gen_aligner: MlpProjector::load(&cfg.gen_aligner, vb.pp("gen_aligner"), quant)?,
            gen_head: GenHead::load(&cfg.gen_head, vb.pp("gen_head"), quant)?,
            vq: VqModel::new(&cfg.vq, vq_vb(vb.pp("gen_vision_model")))?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &JanusConfig {
        &self.cfg
    }

    /// The dtype the weights (and so the computation) use.
    pub fn dtype(&self) -> DType {
        self.gen_embed.embeddings().dtype()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.gen_embed.embeddings().device()
    }

    /// SigLIP features passed through the aligner.
    ///
    /// # Shapes
    /// `(B, 3, S, S) -> (B, N, D)`
    pub fn encode_images(&self, pixels: &Tensor) -> Result<Tensor> {
        // On a pool thread, as the LLM's forward (see `kernels::on_pool`).
        crate::kernels::on_pool(|| {
            let feats = self.vision.forward(&pixels.to_dtype(self.dtype())?)?;
            self.aligner.forward(&feats)
        })
    }

    /// Text embeddings with image embeddings written over the image-token positions.
    ///
    /// `image_spans` lists, in order, the start of each run of `N` image-token positions;
    /// `image_embeds` holds one `(N, D)` block per span, in the same order.
    ///
    /// # Shapes
    /// ids `(1, T)`, image_embeds `(I, N, D)` -> `(1, T, D)`
    pub fn embed_with_images(
        &self,
        ids: &Tensor,
        image_spans: &[usize],
        image_embeds: Option<&Tensor>,
    ) -> Result<Tensor> {
        let text = self.llm.embed(ids)?; // (1, T, D)
        let Some(images) = image_embeds else {
            if !image_spans.is_empty() {
                candle_core::bail!("{} image spans but no image embeddings", image_spans.len());
            }
            return Ok(text);
        };
        let (count, n, _d) = images.dims3()?;
        let (_, t, _) = text.dims3()?;
        if count != image_spans.len() {
            candle_core::bail!("{} image spans but {count} images", image_spans.len());
        }
        let mut pieces = Vec::with_capacity(2 * count + 1);
        let mut pos = 0;
        for (i, &start) in image_spans.iter().enumerate() {
            if start < pos || start + n > t {
                candle_core::bail!(
                    "image span {i} at {start}..{} does not fit in {t} tokens",
                    start + n
                );
            }
            if start > pos {
                pieces.push(text.narrow(1, pos, start - pos)?);
            }
            pieces.push(images.get(i)?.unsqueeze(0)?.to_dtype(text.dtype())?);
            pos = start + n;
        }
        if pos < t {
            pieces.push(text.narrow(1, pos, t - pos)?);
        }
        Tensor::cat(&pieces, 1)
    }

    /// Image-code logits (f32) from final-normed LLM hidden states.
    ///
    /// # Shapes
    /// `(..., D) -> (..., image_vocab)`
    pub fn gen_head_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        // Row-invariant products: a block of draft positions gets each row's bits alone.
        crate::kernels::with_row_invariance(true, || self.gen_head.forward(hidden))?
            .to_dtype(DType::F32)
    }

    /// Input embeddings for generated image codes: gen_embed then gen_aligner.
    ///
    /// # Shapes
    /// `(B, T)` u32 codes -> `(B, T, D)`
    pub fn embed_image_codes(&self, codes: &Tensor) -> Result<Tensor> {
        let embeds = self.gen_embed.forward(codes)?;
        crate::kernels::with_row_invariance(true, || self.gen_aligner.forward(&embeds))
    }
}
