//! Rotary position embedding's autograd op (the rotation itself lives with the model
//! that owns the tables, [`crate::model::llama`]).

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

use super::bridge::{count, f32_values, storage_to_tensor, tensor_to_storage, Forward1};

/// Rotary embedding of `x` `(B, T, H, Dh)` at positions `0..T` (every row), returned as
/// `(B, H, T, Dh)`: forward by the fused kernel or candle on plain tensors; backward is
/// the rotation by the opposite angle, `dx = g·cos − rotate_half(g·sin)`.
pub(crate) struct RopeOp {
    /// `(T, Dh)` f32 tables of the positions.
    pub cos: Tensor,
    /// `(T, Dh)`.
    pub sin: Tensor,
    /// The forward on a plain tensor `(B, T, H, Dh) -> (B, H, T, Dh)`.
    pub forward: Forward1,
}

impl candle_core::CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_to_tensor(s, l)?;
        tensor_to_storage(&(self.forward)(&x)?)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        count(3);
        let g = f32_values(grad)?; // (B, H, T, Dh)
        let dh = g.dim(candle_core::D::Minus1)?;
        let gs = g.broadcast_mul(&self.sin)?;
        let (a, b) = (
            gs.narrow(candle_core::D::Minus1, 0, dh / 2)?,
            gs.narrow(candle_core::D::Minus1, dh / 2, dh / 2)?,
        );
        let rotated = Tensor::cat(&[&b.neg()?, &a], candle_core::D::Minus1)?;
        let dx = (g.broadcast_mul(&self.cos)? - rotated)?;
        Ok(Some(dx.transpose(1, 2)?.to_dtype(arg.dtype())?))
    }
}
