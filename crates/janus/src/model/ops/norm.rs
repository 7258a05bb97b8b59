//! LayerNorm and RMSNorm: statistics in f32 whatever the dtype, the fused kernels for
//! bf16 inference, RMSNorm's own backward for training.

use candle_core::{CpuStorage, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;

use crate::kernels::fused::{layer_norm_bf16, rms_norm_bf16};

use super::bridge::{
    count, f32_values, kernel_inputs, run_bf16_kernel, storage_to_tensor, tensor_to_storage,
    to_f32_internal, tracked_cpu_pair,
};

/// LayerNorm with affine weight and bias over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) eps: f64,
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
        match self.forward_fused(x)? {
            Some(y) => Ok(y),
            None => self.forward_plain(x),
        }
    }
}

impl LayerNorm {
    /// The fused kernel for bf16 CPU tensors without gradient (same roundings).
    fn forward_fused(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let (w, b) = (&self.weight, &self.bias);
        if !kernel_inputs(&[x, w, b]) {
            return Ok(None);
        }
        let d = w.elem_count();
        if x.dim(D::Minus1)? != d || b.elem_count() != d {
            candle_core::bail!("LayerNorm of width {d} over shape {:?}", x.dims());
        }
        let eps = self.eps as f32;
        run_bf16_kernel(&[x, w, b], x.elem_count(), x.dims(), |s, out| {
            layer_norm_bf16(s[0], s[1], s[2], d, eps, out, crate::kernels::isa())
        })
    }

    /// The differentiable chain of candle ops.
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
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

impl RmsNorm {
    /// The fused kernel for bf16 CPU tensors without gradient (same roundings).
    fn forward_fused(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let w = &self.weight;
        if !kernel_inputs(&[x, w]) {
            return Ok(None);
        }
        let d = w.elem_count();
        if x.dim(D::Minus1)? != d {
            candle_core::bail!("RMSNorm of width {d} over shape {:?}", x.dims());
        }
        let eps = self.eps as f32;
        run_bf16_kernel(&[x, w], x.elem_count(), x.dims(), |s, out| {
            rms_norm_bf16(s[0], s[1], d, eps, out, crate::kernels::isa())
        })
    }
}

impl Module for RmsNorm {
    /// # Shapes
    /// `(..., C) -> (..., C)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_fused(x)? {
            return Ok(y);
        }
        let w = &self.weight;
        if tracked_cpu_pair(x, w) && x.dim(D::Minus1)? == w.elem_count() {
            let op = RmsNormOp {
                eps: self.eps,
                weight_grad: w.track_op(),
            };
            return x.contiguous()?.apply_op2(&w.contiguous()?, op);
        }
        self.forward_plain(x)
    }
}

impl RmsNorm {
    /// Wraps a weight (tests and callers that build norms by hand).
    pub fn from_weight(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// The differentiable chain of candle ops.
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = to_f32_internal(x)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

/// LLaMA's RMSNorm `y = (x / √(mean(x²) + eps))·w` over the last dimension: forward by
/// [`super::ops::RmsNorm`]'s own paths on plain tensors, backward in f32 (keeps nothing but
/// the inputs, where candle's chain keeps six intermediates).
pub(crate) struct RmsNormOp {
    pub eps: f64,
    /// Whether the weight trains (else its gradient is not computed).
    pub weight_grad: bool,
}

impl candle_core::CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = storage_to_tensor(s1, l1)?;
        let w = storage_to_tensor(s2, l2)?;
        let norm = RmsNorm::from_weight(w, self.eps);
        tensor_to_storage(&candle_core::Module::forward(&norm, &x)?)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        count(1);
        let xf = f32_values(x)?;
        let d = xf.dim(candle_core::D::Minus1)? as f64;
        let r = ((xf.sqr()?.sum_keepdim(candle_core::D::Minus1)? / d)? + self.eps)?
            .sqrt()?
            .recip()?;
        let n = xf.broadcast_mul(&r)?;
        let g = f32_values(grad)?;
        let dw = if self.weight_grad {
            let rows = n.elem_count() / n.dim(candle_core::D::Minus1)?;
            let dw = (&g * &n)?.reshape((rows, d as usize))?.sum(0)?;
            Some(dw.to_dtype(w.dtype())?)
        } else {
            None
        };
        let dn = g.broadcast_mul(&f32_values(w)?)?;
        let mean = ((&dn * &n)?.sum_keepdim(candle_core::D::Minus1)? / d)?;
        let dx = (dn - n.broadcast_mul(&mean)?)?.broadcast_mul(&r)?;
        Ok((Some(dx.to_dtype(x.dtype())?), dw))
    }
}
