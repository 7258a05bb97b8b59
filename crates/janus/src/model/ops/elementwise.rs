//! Element-wise ops: softmax, GELU, residual add, SwiGLU (with its own backward).

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, D};

use super::bridge::{
    count, elementwise_bf16, f32_values, run_bf16_kernel, storage_to_tensor, tensor_to_storage,
    to_f32_internal, tracked_cpu_pair,
};

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

/// Exact (erf) GELU, as `torch.nn.GELU()` / ACT2FN["gelu"]; the vectorised kernel for bf16
/// CPU tensors without gradient (candle's evaluates erf one element at a time).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let fused = run_bf16_kernel(&[x], x.elem_count(), x.dims(), |s, out| {
        crate::kernels::fused::gelu_erf_bf16(s[0], out, crate::kernels::isa())
    })?;
    match fused {
        Some(y) => Ok(y),
        None => x.gelu_erf(),
    }
}

/// `a + b` (same shapes), as candle adds them; one parallel vectorised pass for bf16 CPU
/// tensors without gradient (candle's bf16 add runs on one thread). The residual adds.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match elementwise_bf16(a, b, crate::kernels::fused::add_bf16)? {
        Some(y) => Ok(y),
        None => a + b,
    }
}

/// `silu(gate) * up` (SwiGLU); one vectorised pass for bf16 CPU tensors without gradient.
///
/// # Shapes
/// gate and up `(..., F)` -> `(..., F)`
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if let Some(y) = elementwise_bf16(gate, up, crate::kernels::fused::silu_mul_bf16)? {
        return Ok(y);
    }
    if tracked_cpu_pair(gate, up) && gate.dims() == up.dims() {
        let op = SiluMulOp;
        return gate.contiguous()?.apply_op2(&up.contiguous()?, op);
    }
    gate.silu()? * up
}

/// `silu(gate)·up` (SwiGLU): forward by the fused kernel or candle on plain tensors,
/// backward in f32 from the inputs alone.
pub(crate) struct SiluMulOp;

impl candle_core::CustomOp2 for SiluMulOp {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gate = storage_to_tensor(s1, l1)?;
        let up = storage_to_tensor(s2, l2)?;
        tensor_to_storage(&silu_mul(&gate, &up)?)
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        count(2);
        let (x, u, g) = (f32_values(gate)?, f32_values(up)?, f32_values(grad)?);
        let s = candle_nn::ops::sigmoid(&x)?;
        let silu = (&x * &s)?;
        let d_up = (&g * &silu)?;
        // d silu / dx = s·(1 + x·(1 − s))
        let dsilu = (&s * ((&x * (1.0 - &s)?)? + 1.0)?)?;
        let d_gate = ((g * u)? * dsilu)?;
        Ok((
            Some(d_gate.to_dtype(gate.dtype())?),
            Some(d_up.to_dtype(up.dtype())?),
        ))
    }
}
