//! The SigLIP-L/16 vision transformer used for understanding (timm layout).
//!
//! Checkpoint names (original layout): `vision_model.vision_tower.{patch_embed.proj,
//! pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm}`.
//! `attn_pool.*` exists in the checkpoints but the reference never runs it
//! (`ignore_head=True`), so it is not loaded.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::linear::Linear;

use super::ops::{add, attention_heads_merged, gelu, AttnMask, LayerNorm};
use crate::config::VisionConfig;

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let dh = c / self.num_heads;
        // (B, N, 3C) -> (3, B, H, N, Dh)
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.num_heads, dh))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let y = attention_heads_merged(&q, &k, &v, AttnMask::None)?; // (B, N, C)
        self.proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            norm1: LayerNorm::new(c, eps, vb.pp("norm1"))?,
            attn: Attention {
                qkv: Linear::load(c, 3 * c, true, vb.pp("attn.qkv"), None)?,
                proj: Linear::load(c, c, true, vb.pp("attn.proj"), None)?,
                num_heads: cfg.num_heads,
            },
            norm2: LayerNorm::new(c, eps, vb.pp("norm2"))?,
            fc1: Linear::load(c, cfg.intermediate_size, true, vb.pp("mlp.fc1"), None)?,
            fc2: Linear::load(cfg.intermediate_size, c, true, vb.pp("mlp.fc2"), None)?,
        })
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = add(x, &self.attn.forward(&self.norm1.forward(x)?)?)?;
        let h = gelu(&self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        add(&x, &self.fc2.forward(&h)?)
    }
}

/// SigLIP ViT: patch embedding, learned positions, pre-LN blocks, final LayerNorm.
#[derive(Debug, Clone)]
pub struct SiglipVit {
    /// The stride-`patch` convolution as a Linear over flattened patches (same weights,
    /// `(C, 3*p*p)`): patches do not overlap, so this is the same product, and it runs on
    /// every backend and dtype (candle's CPU convolution has no bf16 kernel).
    patch_embed: Linear,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    cfg: VisionConfig,
}

impl SiglipVit {
    /// Builds the tower from `vision_model.vision_tower.*`.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        let p = cfg.patch_size;
        let pvb = vb.pp("patch_embed.proj");
        let w = pvb.get((c, 3, p, p), "weight")?.reshape((c, 3 * p * p))?;
        let patch_embed = Linear::new(w, Some(pvb.get(c, "bias")?), None)?;
        let pos_embed = vb.get((1, cfg.num_image_tokens(), c), "pos_embed")?;
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed,
            pos_embed,
            blocks,
            norm: LayerNorm::new(c, cfg.layer_norm_eps, vb.pp("norm"))?,
            cfg: cfg.clone(),
        })
    }

    /// Image features after the final norm.
    ///
    /// # Shapes
    /// `(B, 3, S, S) -> (B, N, C)` with N = (S / patch)^2.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, ch, h, w) = pixels.dims4()?;
        let s = self.cfg.image_size;
        if ch != 3 || h != s || w != s {
            candle_core::bail!(
                "vision tower expects (B, 3, {s}, {s}) pixels, got {:?}",
                pixels.dims()
            );
        }
        let (p, g) = (self.cfg.patch_size, self.cfg.grid());
        // (B, 3, g*p, g*p) -> (B, 3, g, p, g, p) -> (B, g, g, 3, p, p) -> (B, N, 3*p*p)
        let patches = pixels
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, 3 * p * p))?;
        let x = self.patch_embed.forward(&patches)?; // (B, N, C)
        let mut x = x.broadcast_add(&self.pos_embed)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.norm.forward(&x)
    }
}
