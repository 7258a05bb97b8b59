//! The glue between candle tensors and the CPU kernels that the ops share: a custom
//! op's storage as a tensor and back, the backward-call counters, dtype helpers.

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor};
use half::bf16;

/// How many backward passes each op has run in this process: shows that a training step
/// went through these ops (tests, profiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackwardCalls {
    /// Products with a frozen weight.
    pub frozen_linear: usize,
    /// RMSNorm.
    pub rms_norm: usize,
    /// SwiGLU.
    pub silu_mul: usize,
    /// Rotary embeddings.
    pub rope: usize,
    /// Attention.
    pub attention: usize,
}

static CALLS: [std::sync::atomic::AtomicUsize; 5] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 5];

/// Counts one backward pass of op `i` (the field order of [`BackwardCalls`]).
pub(crate) fn count(i: usize) {
    CALLS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The counts so far.
pub fn backward_calls() -> BackwardCalls {
    let c = |i: usize| CALLS[i].load(std::sync::atomic::Ordering::Relaxed);
    BackwardCalls {
        frozen_linear: c(0),
        rms_norm: c(1),
        silu_mul: c(2),
        rope: c(3),
        attention: c(4),
    }
}

/// The CPU storage a custom op receives, as a tensor that tracks nothing (a copy of the
/// contiguous elements).
pub(crate) fn storage_to_tensor(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("custom op input must be contiguous");
    };
    let shape = l.shape().clone();
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], shape, &Device::Cpu),
        CpuStorage::BF16(v) => Tensor::from_slice(&v[start..end], shape, &Device::Cpu),
        _ => candle_core::bail!("custom ops take f32 or bf16 inputs"),
    }
}

/// A tensor's elements as a custom op's output.
pub(crate) fn tensor_to_storage(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    let shape = t.shape().clone();
    let flat = t.flatten_all()?;
    let storage = match t.dtype() {
        DType::F32 => CpuStorage::F32(flat.to_vec1::<f32>()?),
        DType::BF16 => CpuStorage::BF16(flat.to_vec1::<bf16>()?),
        d => candle_core::bail!("custom op output of dtype {d:?}"),
    };
    Ok((storage, shape))
}

/// A forward on plain tensors, as a custom op holds it.
pub(crate) type Forward1 = Box<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;
/// [`Forward1`] of three inputs.
pub(crate) type Forward3 = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

pub(super) fn f32_values(t: &Tensor) -> Result<Tensor> {
    t.detach().to_dtype(DType::F32)
}

/// Upcasts half-precision tensors to f32; leaves f32/f64 alone.
pub(crate) fn to_f32_internal(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

/// Two CPU tensors of one dtype (f32 or bf16), at least one tracking a gradient: what the
/// ops of [`super::autograd`] differentiate.
pub(super) fn tracked_cpu_pair(a: &Tensor, b: &Tensor) -> bool {
    a.device().is_cpu()
        && matches!(a.dtype(), DType::F32 | DType::BF16)
        && a.dtype() == b.dtype()
        && (a.track_op() || b.track_op())
}

/// `kernel(a, b, out)` over two bf16 CPU tensors of the same shape that track no
/// gradient; `None` for any other pair (the caller's candle ops then keep the gradient).
pub(super) fn elementwise_bf16(
    a: &Tensor,
    b: &Tensor,
    kernel: fn(&[half::bf16], &[half::bf16], &mut [half::bf16], crate::kernels::Isa),
) -> Result<Option<Tensor>> {
    use crate::kernels::{isa, with_cpu_slice};
    let fast = [a, b]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::BF16 && !t.track_op());
    if !fast || a.dims() != b.dims() {
        return Ok(None);
    }
    let (x, y) = (a.contiguous()?, b.contiguous()?);
    let mut out = vec![half::bf16::ZERO; x.elem_count()];
    let done = with_cpu_slice::<half::bf16, _>(&x, |xs| {
        with_cpu_slice::<half::bf16, _>(&y, |ys| kernel(xs, ys, &mut out, isa()))
    })
    .flatten();
    match done {
        Some(()) => Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?)),
        None => Ok(None),
    }
}
