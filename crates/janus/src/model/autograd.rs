//! Custom autograd ops: the CPU kernels' forward with a backward of their own, where
//! candle's generic chain would keep (or compute) far more than the gradient needs.
//!
//! An op's forward runs on a plain copy of its input (a tensor that tracks nothing), so
//! the same fast paths as inference apply; its backward is written with candle ops.

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

fn f32_values(t: &Tensor) -> Result<Tensor> {
    t.detach().to_dtype(DType::F32)
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
        let norm = super::ops::RmsNorm::from_weight(w, self.eps);
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
        tensor_to_storage(&super::ops::silu_mul(&gate, &up)?)
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

/// Attention of q, k, v `(B, H, T, Dh)` (as many key as query heads) with an additive mask,
/// heads merged in the output `(B, Tq, H·Dh)`. The forward keeps no probabilities; the
/// backward recomputes them from q and k (as flash attention does), in f32:
/// `dV = Pᵀ·dO`, `dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O))`, `dQ = s·dS·K`, `dK = s·dSᵀ·Q`.
pub(crate) struct AttentionOp {
    /// Additive f32 mask broadcastable to `(B, H, Tq, Tk)`.
    pub mask: Option<Tensor>,
    /// The forward on plain tensors.
    pub forward: Forward3,
}

impl candle_core::CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = storage_to_tensor(s1, l1)?;
        let k = storage_to_tensor(s2, l2)?;
        let v = storage_to_tensor(s3, l3)?;
        tensor_to_storage(&(self.forward)(&q, &k, &v)?)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        count(4);
        let (b, h, tq, dh) = q.dims4()?;
        let scale = 1.0 / (dh as f64).sqrt();
        let (qf, kf, vf) = (f32_values(q)?, f32_values(k)?, f32_values(v)?);
        let unmerge = |t: &Tensor| -> Result<Tensor> {
            f32_values(t)?
                .reshape((b, tq, h, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (o, d_o) = (unmerge(res)?, unmerge(grad)?);
        let scores = (qf.matmul(&kf.t()?)? * scale)?;
        let scores = match &self.mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let p = super::ops::softmax_last(&scores)?; // (B, H, Tq, Tk)
        let dv = p.t()?.matmul(&d_o)?;
        let dp = d_o.matmul(&vf.t()?)?;
        let rows = (&d_o * &o)?.sum_keepdim(candle_core::D::Minus1)?;
        let ds = (p * dp.broadcast_sub(&rows)?)?;
        let dq = (ds.matmul(&kf)? * scale)?;
        let dk = (ds.t()?.matmul(&qf)? * scale)?;
        Ok((
            Some(dq.to_dtype(q.dtype())?),
            Some(dk.to_dtype(k.dtype())?),
            Some(dv.to_dtype(v.dtype())?),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use crate::model::ops::{attention, attention_heads_merged, silu_mul, AttnMask, RmsNorm};

    pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n as u64)
            .map(|i| {
                let h = (i ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D))
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .rotate_left(29);
                (h % 20011) as f32 / 10005.5 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// `max|a − b| / max|b|`.
    pub(crate) fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        let (a, b) = (f(a), f(b));
        let d = (&a - &b).unwrap().abs().unwrap().max(0).unwrap();
        let s = b.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        d.to_scalar::<f32>().unwrap() / s.max(1e-30)
    }

    /// Runs `f` over variables made from `inputs` along the fast (op) and the plain (chain)
    /// path, and compares the outputs and every input's gradient of `sum(y · r)`.
    pub(crate) fn check(
        what: &str,
        inputs: &[Tensor],
        dtype: DType,
        fast: impl Fn(&[Tensor]) -> Tensor,
        plain: impl Fn(&[Tensor]) -> Tensor,
    ) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (yf, yp) = (fast(&ts), plain(&ts));
        assert_eq!(yf.dims(), yp.dims(), "{what}");
        let r = rand(yf.dims(), 99).to_dtype(dtype).unwrap();
        let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (grads(&yf), grads(&yp));
        let tol = if dtype == DType::F32 { 2e-5 } else { 2e-2 };
        let e = rel(&yf, &yp);
        assert!(e <= tol, "{what} {dtype:?}: values off by {e:.2e}");
        for (i, t) in ts.iter().enumerate() {
            let (a, b) = (gf.get(t).unwrap(), gp.get(t).unwrap());
            assert_eq!(a.dtype(), dtype, "{what}");
            let e = rel(a, b);
            assert!(
                e <= tol,
                "{what} {dtype:?}: gradient of input {i} off by {e:.2e}"
            );
        }
    }

    #[test]
    fn rms_norm_op_matches_the_chain() {
        for dtype in [DType::F32, DType::BF16] {
            for (shape, d) in [(&[3usize][..], 3usize), (&[2, 5], 7), (&[1, 3], 130)] {
                let mut s = shape.to_vec();
                s.push(d);
                let inputs = [rand(&s, 1), rand(&[d], 2)];
                let norm = |t: &[Tensor]| RmsNorm::from_weight(t[1].clone(), 1e-6);
                check(
                    &format!("rms {s:?}"),
                    &inputs,
                    dtype,
                    |t| candle_core::Module::forward(&norm(t), &t[0]).unwrap(),
                    |t| norm(t).forward_plain(&t[0]).unwrap(),
                );
            }
        }
    }

    #[test]
    fn silu_mul_op_matches_the_chain() {
        for dtype in [DType::F32, DType::BF16] {
            for shape in [&[1usize, 1, 3][..], &[2, 7, 33]] {
                let inputs = [rand(shape, 3).affine(4.0, 0.0).unwrap(), rand(shape, 4)];
                check(
                    &format!("silu {shape:?}"),
                    &inputs,
                    dtype,
                    |t| silu_mul(&t[0], &t[1]).unwrap(),
                    |t| (t[0].silu().unwrap() * &t[1]).unwrap(),
                );
            }
        }
    }

    /// SigLIP's case: no mask, q/k/v strided views of one fused projection.
    #[test]
    fn attention_op_matches_the_chain_on_strided_views_without_mask() {
        let (b, n, h, dh) = (2, 9, 3, 4);
        for dtype in [DType::F32, DType::BF16] {
            let split = |t: &[Tensor]| {
                let qkv = t[0]
                    .reshape((b, n, 3, h, dh))
                    .unwrap()
                    .permute((2, 0, 3, 1, 4))
                    .unwrap();
                (
                    qkv.get(0).unwrap(),
                    qkv.get(1).unwrap(),
                    qkv.get(2).unwrap(),
                )
            };
            check(
                "attention views",
                &[rand(&[b, n, 3 * h * dh], 8)],
                dtype,
                |t| {
                    let (q, k, v) = split(t);
                    attention_heads_merged(&q, &k, &v, AttnMask::None).unwrap()
                },
                |t| {
                    let (q, k, v) = split(t);
                    let y = attention(&q, &k, &v, None).unwrap();
                    y.transpose(1, 2).unwrap().reshape((b, n, h * dh)).unwrap()
                },
            );
        }
    }

    #[test]
    fn attention_op_matches_the_chain() {
        for dtype in [DType::F32, DType::BF16] {
            for (b, h, t, dh) in [
                (1usize, 1usize, 1usize, 4usize),
                (1, 3, 5, 6),
                (2, 2, 17, 8),
            ] {
                let mask: Vec<f32> = (0..t * t)
                    .map(|i| {
                        if i % t > i / t {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
                let shape = [b, h, t, dh];
                let inputs = [rand(&shape, 5), rand(&shape, 6), rand(&shape, 7)];
                let causal = AttnMask::Causal {
                    offset: 0,
                    tensor: (t > 1).then_some(&mask),
                };
                check(
                    &format!("attention {shape:?}"),
                    &inputs,
                    dtype,
                    |x| attention_heads_merged(&x[0], &x[1], &x[2], causal).unwrap(),
                    |x| {
                        let m = (t > 1).then_some(&mask);
                        attention(&x[0], &x[1], &x[2], m)
                            .unwrap()
                            .transpose(1, 2)
                            .unwrap()
                            .reshape((b, t, h * dh))
                            .unwrap()
                    },
                );
            }
        }
    }
}
