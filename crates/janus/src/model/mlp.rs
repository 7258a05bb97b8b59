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
        Self::load(cfg, vb, None)
    }

    /// [`Self::new`] with the layers of at least 512 input features quantised to `quant`
    /// as they load (a narrower one, such as the generation aligner's first, 8 -> 2048,
    /// would be padded to 512 columns per row and grow).
    pub fn load(cfg: &MlpConfig, vb: VarBuilder, quant: Option<QuantFormat>) -> Result<Self> {
        let layer = |i: usize, in_dim: usize| {
            let quant = quant.filter(|_| in_dim >= 512);
            let vb = vb.pp(format!("layers.{}", 2 * i));
            Linear::load(in_dim, cfg.n_embed, true, vb, quant)
        };
        let mut layers = vec![layer(0, cfg.input_dim)?];
        for i in 1..cfg.depth {
            layers.push(layer(i, cfg.n_embed)?);
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
        Self::load(cfg, vb, None)
    }

    /// [`Self::new`] with both projections quantised to `quant` as they load.
    pub fn load(cfg: &GenHeadConfig, vb: VarBuilder, quant: Option<QuantFormat>) -> Result<Self> {
        let (d, e, v) = (cfg.n_embed, cfg.image_token_embed, cfg.image_token_size);
        Ok(Self {
            output_mlp_projector: Linear::load(d, e, true, vb.pp("output_mlp_projector"), quant)?,
            vision_head: Linear::load(e, v, true, vb.pp("vision_head"), quant)?,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    #[test]
    fn projectors_quantise_their_wide_layers_only() {
        let (input, embed) = (8, 512);
        let dev = Device::Cpu;
        let rand = |shape: &[usize], seed: u64| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n as u64)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 25_000.0 - 0.02)
                .collect();
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        let tensors = HashMap::from([
            ("layers.0.weight".to_string(), rand(&[embed, input], 1)),
            ("layers.0.bias".to_string(), rand(&[embed], 2)),
            ("layers.2.weight".to_string(), rand(&[embed, embed], 3)),
            ("layers.2.bias".to_string(), rand(&[embed], 4)),
        ]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let cfg = MlpConfig {
            input_dim: input,
            n_embed: embed,
            depth: 2,
        };
        let plain = MlpProjector::new(&cfg, vb.clone()).unwrap();
        let quant = MlpProjector::load(&cfg, vb, Some(QuantFormat::Q8)).unwrap();
        let formats: Vec<_> = quant.layers.iter().map(Linear::quant_format).collect();
        assert_eq!(formats, [None, Some(QuantFormat::Q8)]);
        let x = rand(&[3, input], 5).affine(20.0, 0.0).unwrap();
        let (a, b) = (plain.forward(&x).unwrap(), quant.forward(&x).unwrap());
        let err = (&a - &b).unwrap().sqr().unwrap().mean_all().unwrap();
        let rms = a.sqr().unwrap().mean_all().unwrap();
        let rel = (err.to_scalar::<f32>().unwrap() / rms.to_scalar::<f32>().unwrap()).sqrt();
        assert!(rel > 0.0 && rel < 0.02, "relative error {rel}");
    }
}
