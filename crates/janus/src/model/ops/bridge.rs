//! The glue between candle tensors and the CPU kernels that the ops share: the one test
//! for whether the kernels take a set of tensors and the call that runs a bf16 kernel on
//! them ([`run_bf16_kernel`]), a custom op's storage as a tensor and back, the
//! backward-call counters, dtype helpers.

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

/// Whether the CPU kernels take these tensors: all on the CPU, in bf16, none tracking a
/// gradient (the one test every op's kernel path makes).
pub(super) fn kernel_inputs(inputs: &[&Tensor]) -> bool {
    inputs
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::BF16 && !t.track_op())
}

/// Runs a bf16 kernel on `inputs` when [`kernel_inputs`] holds: `kernel(slices, out)`
/// gets each input's contiguous data and writes all `out_len` values of the output,
/// which comes back with `shape`. `None` where the kernels do not apply.
pub(super) fn run_bf16_kernel(
    inputs: &[&Tensor],
    out_len: usize,
    shape: &[usize],
    kernel: impl FnOnce(&[&[bf16]], &mut [bf16]),
) -> Result<Option<Tensor>> {
    if !kernel_inputs(inputs) {
        return Ok(None);
    }
    let contiguous = inputs
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = contiguous.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            return Ok(None);
        };
        let (Some((start, end)), Ok(data)) = (layout.contiguous_offsets(), cpu.as_slice::<bf16>())
        else {
            return Ok(None);
        };
        slices.push(&data[start..end]);
    }
    let mut out = vec![bf16::ZERO; out_len];
    kernel(&slices, &mut out);
    drop(guards);
    Ok(Some(Tensor::from_vec(out, shape, &Device::Cpu)?))
}

/// A same-shape binary bf16 kernel through [`run_bf16_kernel`].
pub(super) fn elementwise_bf16(
    a: &Tensor,
    b: &Tensor,
    kernel: fn(&[bf16], &[bf16], &mut [bf16], crate::kernels::Isa),
) -> Result<Option<Tensor>> {
    if a.dims() != b.dims() {
        return Ok(None);
    }
    run_bf16_kernel(&[a, b], a.elem_count(), a.dims(), |s, out| {
        kernel(s[0], s[1], out, crate::kernels::isa())
    })
}
