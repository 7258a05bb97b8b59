//! The glue between candle tensors and the CPU kernels that the ops share: the one test
//! for whether the kernels take a set of tensors and the call that runs a bf16 kernel on
//! them ([`run_bf16_kernel`]), a tensor's elements borrowed as a slice ([`cpu_slice`]), a
//! custom op's storage as a tensor and back, the backward-call counters, dtype helpers.

use std::ops::{Deref, Range};

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType};
use half::bf16;

/// The elements of a contiguous CPU tensor, borrowed while this lives (the tensor's
/// storage stays read-locked).
pub(crate) struct CpuSlice<'a, T> {
    storage: Box<dyn Deref<Target = Storage> + 'a>,
    range: Range<usize>,
    _elem: std::marker::PhantomData<T>,
}

impl<T: WithDType> Deref for CpuSlice<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &**self.storage {
            Storage::Cpu(cpu) => {
                &cpu.as_slice::<T>().expect("dtype checked by cpu_slice")[self.range.clone()]
            }
            _ => unreachable!("device checked by cpu_slice"),
        }
    }
}

/// `t`'s elements when it is a contiguous CPU tensor of element type `T`; `None` for
/// other devices, dtypes and strided views.
pub(crate) fn cpu_slice<T: WithDType>(t: &Tensor) -> Option<CpuSlice<'_, T>> {
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    match &*storage {
        Storage::Cpu(cpu) if cpu.as_slice::<T>().ok()?.len() >= end => {}
        _ => return None,
    }
    Some(CpuSlice {
        storage: Box::new(storage),
        range: start..end,
        _elem: std::marker::PhantomData,
    })
}

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

/// A rank-4 CPU tensor whose last dimension is contiguous (a KV-cache prefix, a permuted
/// projection): all of its storage, where element (0, 0, 0, 0) is, and the strides of the
/// first three dimensions.
pub(crate) struct CpuStrided<'a, T> {
    /// The whole storage.
    pub data: CpuSlice<'a, T>,
    /// Element offset of (0, 0, 0, 0).
    pub offset: usize,
    /// Strides of dimensions 0 to 2, in elements.
    pub strides: [usize; 3],
}

/// [`CpuStrided`] of `t`, `None` for other devices, dtypes, ranks or a strided last
/// dimension.
pub(crate) fn cpu_strided4<T: WithDType>(t: &Tensor) -> Option<CpuStrided<'_, T>> {
    let (storage, layout) = t.storage_and_layout();
    let s = layout.stride();
    if s.len() != 4 || (s[3] != 1 && layout.dims()[3] > 1) {
        return None;
    }
    let (offset, strides) = (layout.start_offset(), [s[0], s[1], s[2]]);
    let len = match &*storage {
        Storage::Cpu(cpu) => cpu.as_slice::<T>().ok()?.len(),
        _ => return None,
    };
    let data = CpuSlice {
        storage: Box::new(storage),
        range: 0..len,
        _elem: std::marker::PhantomData,
    };
    Some(CpuStrided {
        data,
        offset,
        strides,
    })
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
pub(crate) fn kernel_inputs(inputs: &[&Tensor]) -> bool {
    inputs
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::BF16 && !t.track_op())
}

/// Runs a bf16 kernel on `inputs` when [`kernel_inputs`] holds: `kernel(slices, out)`
/// gets each input's contiguous data and writes all `out_len` values of the output,
/// which comes back with `shape`. `None` where the kernels do not apply.
pub(crate) fn run_bf16_kernel(
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
    let Some(views) = contiguous
        .iter()
        .map(cpu_slice::<bf16>)
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let slices: Vec<&[bf16]> = views.iter().map(|v| &**v).collect();
    let mut out = vec![bf16::ZERO; out_len];
    kernel(&slices, &mut out);
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
