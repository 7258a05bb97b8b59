//! The small MLPs around the LLM: the two aligners (`mlp_gelu` projectors) and the
//! generation head.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::linear::Linear;

use super::ops::gelu;
use crate::config::{GenHeadConfig, MlpConfig};
use crate::kernels::quant::QuantFormat;

/// `MlpProjector` with `projector_type = "mlp_gelu"`: Linear, then (GELU, Linear) x
/// (depth - 1). Checkpoint keys `layers.0`, `layers.2`, ... (GELUs sit at odd indices).
#[derive(Debug, Clone)]
pub struct MlpProjector {
    layers: Vec<Linear>,
}

impl MlpProjector {
    /// Builds from `<prefix>.layers.{0,2,..}`.
    pub fn new(cfg: &MlpConfig, vb: VarBuilder) -> Result<Self> {
        let mut layers = vec![Linear::load(
            cfg.input_dim,
            cfg.n_embed,
            true,
            vb.pp("layers.0"),
        )?];
        for i in 1..cfg.depth {
            layers.push(Linear::load(
                cfg.n_embed,
                cfg.n_embed,
                true,
                vb.pp(format!("layers.{}", 2 * i)),
            )?);
        }
        Ok(Self { layers })
    }
}

impl Module for MlpProjector {
    /// # Shapes
    /// `(..., input_dim) -> (..., n_embed)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.layers[0].forward(x)?;
        for layer in &self.layers[1..] {
            h = layer.forward(&gelu(&h)?)?;
        }
        Ok(h)
    }
}

/// `vision_head`: output_mlp_projector -> GELU -> vision_head, giving image-code logits.
#[derive(Debug, Clone)]
pub struct GenHead {
    output_mlp_projector: Linear,
    vision_head: Linear,
}

impl GenHead {
    /// Builds from `gen_head.*`.
    pub fn new(cfg: &GenHeadConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            output_mlp_projector: Linear::load(
                cfg.n_embed,
                cfg.image_token_embed,
                true,
                vb.pp("output_mlp_projector"),
            )?,
            vision_head: Linear::load(
                cfg.image_token_embed,
                cfg.image_token_size,
                true,
                vb.pp("vision_head"),
            )?,
        })
    }
}

impl GenHead {
    /// Quantises both projections.
    pub fn quantize(&mut self, format: QuantFormat) -> Result<()> {
        self.output_mlp_projector.quantize(format)?;
        self.vision_head.quantize(format)
    }
}

impl Module for GenHead {
    /// # Shapes
    /// `(..., D) -> (..., image_vocab)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = gelu(&self.output_mlp_projector.forward(x)?)?;
        self.vision_head.forward(&h)
    }
}
