//! Small numerical building blocks shared by the model parts, one file per op: each
//! decides in one place between the CPU kernel (inference on plain CPU tensors), its own
//! autograd op (training: the kernel's forward with a backward written for it) and
//! candle's differentiable ops (other devices and dtypes).
//!
//! candle's fused `layer_norm` / `rms_norm` / `softmax_last_dim` kernels have no backward
//! pass, so the plain paths are written from differentiable primitives. Normalisation
//! statistics are computed in f32 whatever the compute dtype, as PyTorch does for
//! bf16/f16 inputs.

mod attention;
mod bridge;
mod elementwise;
mod norm;
pub(crate) mod rope;

pub use attention::{attention, attention_heads_merged, repeat_kv, AttnMask};
pub use bridge::{backward_calls, BackwardCalls};
pub(crate) use bridge::{
    count, cpu_slice, kernel_inputs, run_bf16_kernel, storage_to_tensor, tensor_to_storage,
};
pub use elementwise::{add, gelu, silu_mul, softmax_last};
pub use norm::{LayerNorm, RmsNorm};

#[cfg(test)]
pub(crate) mod autograd_tests;
#[cfg(test)]
mod tests;
