//! Small numerical building blocks shared by the model parts.
//!
//! These are written from differentiable primitives on purpose: candle's fused
//! `layer_norm` / `rms_norm` / `softmax_last_dim` kernels have no backward pass, and the
//! same modules will be trained. Normalisation statistics are computed in f32 whatever
//! the compute dtype, as PyTorch does for bf16/f16 inputs.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Upcasts half-precision tensors to f32; leaves f32/f64 alone.
pub(crate) fn to_f32_internal(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

/// Softmax over the last dimension, computed in f32 and cast back (the reference's
/// `softmax(dim=-1, dtype=torch.float32).to(dtype)`).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = to_f32_internal(x)?;
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)?.to_dtype(dtype)
}

/// LayerNorm with affine weight and bias over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of width `size`.
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    /// # Shapes
    /// `(..., C) -> (..., C)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = to_f32_internal(x)?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let xc = xf.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// LLaMA's RMSNorm (no bias; weight applied after casting back, as LlamaRMSNorm does).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Loads `weight` of width `size`.
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    /// # Shapes
    /// `(..., C) -> (..., C)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = to_f32_internal(x)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

/// Exact (erf) GELU, as `torch.nn.GELU()` / ACT2FN["gelu"].
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// Scaled dot-product attention with an optional additive mask.
///
/// # Shapes
/// q `(B, H, Tq, Dh)`, k and v `(B, H, Tk, Dh)`, mask broadcastable to `(B, H, Tq, Tk)`
/// -> `(B, H, Tq, Dh)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let dh = q.dim(D::Minus1)?;
    let scale = 1.0 / (dh as f64).sqrt();
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?; // (B, H, Tq, Tk)
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m.to_dtype(scores.dtype())?)?,
        None => scores,
    };
    let probs = softmax_last(&scores)?;
    probs.matmul(&v.contiguous()?)
}
