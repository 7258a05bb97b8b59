//! Rotary position embedding (rotate_half form): the cos/sin tables, the rotation by the
//! fused kernel, by its own autograd op when training, or by candle's ops.

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor, D};

use super::bridge::{count, cpu_slice, f32_values, kernel_inputs, run_bf16_kernel};
use super::bridge::{storage_to_tensor, tensor_to_storage, Forward1};
use crate::kernels::fused::rope_bf16;
use crate::kernels::isa;

/// Rotary-embedding tables (cos, sin) for every position up to `max_len`, kept in f32.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    cos: Tensor, // (max_len, Dh)
    sin: Tensor, // (max_len, Dh)
}

impl Rope {
    /// Tables for heads of width `dh` at positions `0..max_len`, base `theta`.
    pub(crate) fn new(dh: usize, max_len: usize, theta: f64, device: &Device) -> Result<Self> {
        // inv_freq stays f32 whatever the weights' dtype (see janus-reference.md §8).
        let inv_freq: Vec<f32> = (0..dh)
            .step_by(2)
            .map(|i| 1.0 / (theta as f32).powf(i as f32 / dh as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, dh / 2), device)?;
        let pos = Tensor::arange(0u32, max_len as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_len, 1))?;
        let freqs = pos.broadcast_mul(&inv_freq)?; // (max_len, Dh/2)
        let emb = Tensor::cat(&[&freqs, &freqs], D::Minus1)?; // (max_len, Dh)
        Ok(Self {
            cos: emb.cos()?,
            sin: emb.sin()?,
        })
    }

    /// Rotates `x` given as `(B, T, H, Dh)` and returns it as `(B, H, T, Dh)`: the fused
    /// kernel for bf16 CPU tensors without gradient, [`Self::apply`] otherwise.
    pub(crate) fn apply_bthd(&self, x: &Tensor, pos: &Positions) -> Result<Tensor> {
        let float = matches!(x.dtype(), DType::F32 | DType::BF16);
        if let (true, true, true, Positions::Shared(offset)) =
            (x.track_op(), x.device().is_cpu(), float, pos)
        {
            // Training: one autograd op with its own backward (see RopeOp).
            let t = x.dim(1)?;
            let (rope, pos) = (self.clone(), pos.clone());
            let op = RopeOp {
                cos: self.cos.narrow(0, *offset, t)?,
                sin: self.sin.narrow(0, *offset, t)?,
                forward: Box::new(move |x| rope.apply_bthd(x, &pos)),
            };
            return x.contiguous()?.apply_op1(op);
        }
        if kernel_inputs(&[x]) {
            let (b, t, h, dh) = x.dims4()?;
            let rows: Vec<usize> = match pos {
                Positions::Shared(offset) => (0..b).flat_map(|_| *offset..*offset + t).collect(),
                Positions::PerRow(ids) => ids
                    .flatten_all()?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|p| p as usize)
                    .collect(),
            };
            if rows.iter().any(|&p| p >= self.cos.dim(0).unwrap_or(0)) {
                candle_core::bail!("RoPE position beyond the table");
            }
            let tables = (cpu_slice::<f32>(&self.cos), cpu_slice::<f32>(&self.sin));
            if let (Some(cos), Some(sin)) = tables {
                let y = run_bf16_kernel(&[x], b * t * h * dh, &[b, h, t, dh], |s, out| {
                    rope_bf16(s[0], b, t, h, dh, &rows, &cos, &sin, out, isa())
                })?;
                if let Some(y) = y {
                    return Ok(y);
                }
            }
        }
        self.apply(&x.transpose(1, 2)?.contiguous()?, pos)
    }

    /// Rotates `x` `(B, H, T, Dh)` (rotate_half form) at the given positions.
    fn apply(&self, x: &Tensor, pos: &Positions) -> Result<Tensor> {
        let (b, _h, t, dh) = x.dims4()?;
        let dtype = x.dtype();
        let (cos, sin) = match pos {
            Positions::Shared(offset) => (
                self.cos.narrow(0, *offset, t)?,
                self.sin.narrow(0, *offset, t)?,
            ),
            Positions::PerRow(ids) => {
                // (B*T,) positions -> (B, 1, T, Dh) tables
                let flat = ids.flatten_all()?;
                (
                    self.cos.index_select(&flat, 0)?.reshape((b, 1, t, dh))?,
                    self.sin.index_select(&flat, 0)?.reshape((b, 1, t, dh))?,
                )
            }
        };
        let (cos, sin) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        let x1 = x.narrow(D::Minus1, 0, dh / 2)?;
        let x2 = x.narrow(D::Minus1, dh / 2, dh / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }
}

/// RoPE positions of the new tokens.
#[derive(Debug, Clone)]
pub(crate) enum Positions {
    /// Every row at `offset..offset+T`.
    Shared(usize),
    /// Per row, `(B, T)` u32 positions (left-padded batches).
    PerRow(Tensor),
}

/// Rotary embedding of `x` `(B, T, H, Dh)` at positions `0..T` (every row), returned as
/// `(B, H, T, Dh)`: forward by the fused kernel or candle on plain tensors; backward is
/// the rotation by the opposite angle, `dx = g·cos − rotate_half(g·sin)`.
struct RopeOp {
    /// `(T, Dh)` f32 tables of the positions.
    cos: Tensor,
    /// `(T, Dh)`.
    sin: Tensor,
    /// The forward on a plain tensor `(B, T, H, Dh) -> (B, H, T, Dh)`.
    forward: Forward1,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_rope_equals_the_candle_chain_bit_for_bit() {
        // The last shape is large enough for the parallel loop.
        for (dh, heads) in [(2, 3), (6, 3), (34, 3), (128, 32)] {
            let rope = Rope::new(dh, 64, 10000.0, &Device::Cpu).unwrap();
            let x = crate::testing::hashed_bf16(&[2, 5, heads, dh], dh as u64, 2.0); // (B, T, H, Dh)
            let ids = Tensor::from_vec(
                vec![0u32, 0, 1, 2, 3, 7, 8, 9, 10, 11],
                (2, 5),
                &Device::Cpu,
            )
            .unwrap();
            for pos in [Positions::Shared(9), Positions::PerRow(ids)] {
                let fused = rope.apply_bthd(&x, &pos).unwrap();
                let plain = rope
                    .apply(&x.transpose(1, 2).unwrap().contiguous().unwrap(), &pos)
                    .unwrap();
                assert_eq!(fused.dims(), plain.dims());
                let (a, b) = (
                    fused
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<half::bf16>()
                        .unwrap(),
                    plain
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<half::bf16>()
                        .unwrap(),
                );
                assert_eq!(a, b, "dh {dh}, {pos:?}");
            }
        }
    }

    #[test]
    fn rope_op_matches_the_chain_in_values_and_gradients() {
        use crate::model::ops::autograd_tests::{check, rand};
        for dtype in [DType::F32, DType::BF16] {
            for (dh, heads, t, offset) in [(2, 1, 1, 0), (6, 3, 5, 0), (34, 2, 9, 7)] {
                let rope = Rope::new(dh, 64, 10000.0, &Device::Cpu).unwrap();
                let pos = Positions::Shared(offset);
                check(
                    &format!("rope dh {dh} t {t} offset {offset}"),
                    &[rand(&[2, t, heads, dh], dh as u64)],
                    dtype,
                    |x| rope.apply_bthd(&x[0], &pos).unwrap(),
                    |x| {
                        let x = x[0].transpose(1, 2).unwrap().contiguous().unwrap();
                        rope.apply(&x, &pos).unwrap()
                    },
                );
            }
        }
    }
}
