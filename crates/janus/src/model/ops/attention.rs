//! Scaled dot-product attention: candle's ops, the CPU kernel for bf16 inference, and
//! one autograd op (recomputing the probabilities in the backward) for training.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, D};

use super::bridge::{count, cpu_slice, cpu_strided4, f32_values, kernel_inputs, CpuStrided};
use super::bridge::{storage_to_tensor, tensor_to_storage, Forward3};
use super::elementwise::softmax_last;

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

/// Which keys each query attends to, for [`attention_heads_merged`].
#[derive(Debug, Clone, Copy)]
pub enum AttnMask<'a> {
    /// Every key.
    None,
    /// Query `i` sees keys `0..=offset + i`; `tensor` is the same mask as an additive
    /// `(Tq, Tk)` tensor, or `None` when each query sees every key (one new token).
    Causal {
        /// Cached positions before the first query.
        offset: usize,
        /// The additive form, for the plain path.
        tensor: Option<&'a Tensor>,
    },
    /// Additive f32 mask `(Tq, Tk)` or `(B, 1, Tq, Tk)`.
    Additive(&'a Tensor),
}

/// Attention with heads merged in the output: `(B, Tq, H·Dh)`, what an output projection
/// takes. `k`/`v` may have fewer heads than `q` (grouped-query attention) and may be
/// strided views (a KV cache prefix). bf16 CPU tensors that track no gradient run the
/// [`crate::kernels::attention`] kernel; everything else runs [`attention`].
///
/// # Shapes
/// q `(B, H, Tq, Dh)`, k and v `(B, Hkv, Tk, Dh)` -> `(B, Tq, H·Dh)`
pub fn attention_heads_merged(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask,
) -> Result<Tensor> {
    let (b, h, tq, dh) = q.dims4()?;
    if let Some(y) = attention_kernel(q, k, v, mask)? {
        return Ok(y);
    }
    let h_kv = k.dim(1)?;
    let tracked = [q, k, v].iter().any(|t| t.track_op());
    let float = matches!(q.dtype(), DType::F32 | DType::BF16)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype();
    if tracked && float && q.device().is_cpu() && h_kv == h && k.dims() == v.dims() {
        return attention_op(q, k, v, mask);
    }
    let (k, v) = (repeat_kv(k, h / h_kv)?, repeat_kv(v, h / h_kv)?);
    let m = match mask {
        AttnMask::None => None,
        AttnMask::Causal { tensor, .. } => tensor,
        AttnMask::Additive(t) => Some(t),
    };
    attention(q, &k, &v, m)?
        .transpose(1, 2)? // (B, Tq, H, Dh)
        .reshape((b, tq, h * dh))
}

/// [`attention_heads_merged`] as one autograd op ([`super::autograd::AttentionOp`]).
fn attention_op(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask) -> Result<Tensor> {
    /// The mask, owned by the op's forward.
    enum Owned {
        None,
        Causal(usize, Option<Tensor>),
        Additive(Tensor),
    }
    let f32_mask = |t: &Tensor| t.to_dtype(DType::F32);
    let owned = match mask {
        AttnMask::None => Owned::None,
        AttnMask::Causal { offset, tensor } => {
            Owned::Causal(offset, tensor.map(f32_mask).transpose()?)
        }
        AttnMask::Additive(t) => Owned::Additive(f32_mask(t)?),
    };
    let additive = match &owned {
        Owned::None | Owned::Causal(_, None) => None,
        Owned::Causal(_, Some(t)) | Owned::Additive(t) => Some(t.clone()),
    };
    let forward = move |q: &Tensor, k: &Tensor, v: &Tensor| {
        let mask = match &owned {
            Owned::None => AttnMask::None,
            Owned::Causal(offset, t) => AttnMask::Causal {
                offset: *offset,
                tensor: t.as_ref(),
            },
            Owned::Additive(t) => AttnMask::Additive(t),
        };
        attention_heads_merged(q, k, v, mask)
    };
    let op = AttentionOp {
        mask: additive,
        forward: Box::new(forward),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// Repeats key/value heads for grouped-query attention: `(B, Hkv, T, Dh) -> (B, Hkv*n, T, Dh)`.
pub fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, h, n, t, d))?
        .reshape((b, h * n, t, d))
}

/// The kernel path of [`attention_heads_merged`], `None` where it does not apply.
fn attention_kernel(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask) -> Result<Option<Tensor>> {
    use crate::kernels::attention::{attention_bf16, Dims, Mask, View};
    use crate::kernels::isa;
    use half::bf16;

    if !kernel_inputs(&[q, k, v]) {
        return Ok(None);
    }
    let (b, h, tq, dh) = q.dims4()?;
    let (kb, h_kv, tk, kdh) = k.dims4()?;
    if v.dims() != k.dims() || kb != b || kdh != dh || h_kv == 0 || h % h_kv != 0 {
        candle_core::bail!(
            "attention shapes do not fit: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let add = match mask {
        AttnMask::Additive(t) => {
            let t = t.to_dtype(DType::F32)?.contiguous()?;
            let batch_stride = match t.dims() {
                [_, _] => 0,
                [mb, 1, _, _] if *mb == b => tq * tk,
                d => candle_core::bail!("attention mask of shape {d:?} for {b} rows"),
            };
            if t.dims()[t.rank() - 2..] != [tq, tk] {
                candle_core::bail!("attention mask {:?} for {tq} x {tk} scores", t.dims());
            }
            Some((t, batch_stride))
        }
        _ => None,
    };
    let mut out = vec![bf16::ZERO; b * tq * h * dh];
    let dims = Dims {
        b,
        h,
        h_kv,
        tq,
        tk,
        dh,
    };
    let scale = 1.0 / (dh as f32).sqrt();
    let views = (cpu_strided4(q), cpu_strided4(k), cpu_strided4(v));
    let (Some(qv), Some(kv), Some(vv)) = views else {
        return Ok(None);
    };
    let mask_values = match &add {
        Some((t, _)) => match cpu_slice::<f32>(t) {
            Some(values) => Some(values),
            None => return Ok(None),
        },
        None => None,
    };
    let kernel_mask = match (&add, &mask_values, mask) {
        (Some((_, batch_stride)), Some(data), _) => Mask::Additive {
            data,
            batch_stride: *batch_stride,
        },
        (None, _, AttnMask::Causal { offset, .. }) => Mask::Causal { offset },
        _ => Mask::None,
    };
    fn view<'a>(s: &'a CpuStrided<'_, bf16>) -> View<'a> {
        View {
            data: &s.data,
            offset: s.offset,
            strides: s.strides,
        }
    }
    let (qv, kv, vv) = (view(&qv), view(&kv), view(&vv));
    attention_bf16(qv, kv, vv, dims, kernel_mask, scale, &mut out, isa());
    Ok(Some(Tensor::from_vec(out, (b, tq, h * dh), q.device())?))
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
        let p = softmax_last(&scores)?; // (B, H, Tq, Tk)
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
