//! Small numerical building blocks shared by the model parts.
//!
//! These are written from differentiable primitives on purpose: candle's fused
//! `layer_norm` / `rms_norm` / `softmax_last_dim` kernels have no backward pass, and the
//! same modules will be trained. Normalisation statistics are computed in f32 whatever
//! the compute dtype, as PyTorch does for bf16/f16 inputs.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// Upcasts half-precision tensors to f32; leaves f32/f64 alone.
pub(crate) fn to_f32_internal(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32),
        _ => Ok(x.clone()),
    }
}

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

/// LayerNorm with affine weight and bias over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
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
        use crate::kernels::{fused::layer_norm_bf16, with_cpu_slice};
        use half::bf16;
        let (w, b) = (&self.weight, &self.bias);
        let all = [x, w, b];
        if all
            .iter()
            .any(|t| !t.device().is_cpu() || t.dtype() != DType::BF16 || t.track_op())
        {
            return Ok(None);
        }
        let d = w.elem_count();
        if x.dim(D::Minus1)? != d || b.elem_count() != d {
            candle_core::bail!("LayerNorm of width {d} over shape {:?}", x.dims());
        }
        let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
        let mut out = vec![bf16::ZERO; x.elem_count()];
        let done = with_cpu_slice::<bf16, _>(&x, |xs| {
            with_cpu_slice::<bf16, _>(&w, |ws| {
                with_cpu_slice::<bf16, _>(&b, |bs| {
                    layer_norm_bf16(
                        xs,
                        ws,
                        bs,
                        d,
                        self.eps as f32,
                        &mut out,
                        crate::kernels::isa(),
                    )
                })
            })
        })
        .flatten()
        .flatten();
        match done {
            Some(()) => Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?)),
            None => Ok(None),
        }
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
        use crate::kernels::{fused::rms_norm_bf16, with_cpu_slice};
        use half::bf16;
        let w = &self.weight;
        if !x.device().is_cpu()
            || x.dtype() != DType::BF16
            || w.dtype() != DType::BF16
            || x.track_op()
            || w.track_op()
        {
            return Ok(None);
        }
        let d = w.elem_count();
        if x.dim(D::Minus1)? != d {
            candle_core::bail!("RMSNorm of width {d} over shape {:?}", x.dims());
        }
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let mut out = vec![bf16::ZERO; x.elem_count()];
        let done = with_cpu_slice::<bf16, _>(&x, |xs| {
            with_cpu_slice::<bf16, _>(&w, |ws| {
                rms_norm_bf16(xs, ws, d, self.eps as f32, &mut out, crate::kernels::isa())
            })
        })
        .flatten();
        match done {
            Some(()) => Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?)),
            None => Ok(None),
        }
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
            let op = super::autograd::RmsNormOp {
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

/// Exact (erf) GELU, as `torch.nn.GELU()` / ACT2FN["gelu"]; the vectorised kernel for bf16
/// CPU tensors without gradient (candle's evaluates erf one element at a time).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    use crate::kernels::{fused::gelu_erf_bf16, isa, with_cpu_slice};
    if x.device().is_cpu() && x.dtype() == DType::BF16 && !x.track_op() {
        let x = x.contiguous()?;
        let mut out = vec![half::bf16::ZERO; x.elem_count()];
        if with_cpu_slice::<half::bf16, _>(&x, |xs| gelu_erf_bf16(xs, &mut out, isa())).is_some() {
            return Tensor::from_vec(out, x.dims(), x.device());
        }
    }
    x.gelu_erf()
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
        let op = super::autograd::SiluMulOp;
        return gate.contiguous()?.apply_op2(&up.contiguous()?, op);
    }
    gate.silu()? * up
}

/// Two CPU tensors of one dtype (f32 or bf16), at least one tracking a gradient: what the
/// ops of [`super::autograd`] differentiate.
fn tracked_cpu_pair(a: &Tensor, b: &Tensor) -> bool {
    a.device().is_cpu()
        && matches!(a.dtype(), DType::F32 | DType::BF16)
        && a.dtype() == b.dtype()
        && (a.track_op() || b.track_op())
}

/// `kernel(a, b, out)` over two bf16 CPU tensors of the same shape that track no
/// gradient; `None` for any other pair (the caller's candle ops then keep the gradient).
fn elementwise_bf16(
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
    let op = super::autograd::AttentionOp {
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
    use crate::kernels::{isa, with_cpu_view};
    use half::bf16;

    let all = [q, k, v];
    if all
        .iter()
        .any(|t| !t.device().is_cpu() || t.dtype() != DType::BF16 || t.track_op())
    {
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
    let done = with_cpu_view::<bf16, _>(q, |qd, qo, qs| {
        with_cpu_view::<bf16, _>(k, |kd, ko, ks| {
            with_cpu_view::<bf16, _>(v, |vd, vo, vs| {
                let view = |data, offset, strides| View {
                    data,
                    offset,
                    strides,
                };
                let mut run = |m: Mask| {
                    attention_bf16(
                        view(qd, qo, qs),
                        view(kd, ko, ks),
                        view(vd, vo, vs),
                        dims,
                        m,
                        scale,
                        &mut out,
                        isa(),
                    )
                };
                match (&add, mask) {
                    (Some((t, batch_stride)), _) => {
                        crate::kernels::with_cpu_slice::<f32, _>(t, |data| {
                            run(Mask::Additive {
                                data,
                                batch_stride: *batch_stride,
                            })
                        })
                    }
                    (None, AttnMask::Causal { offset, .. }) => {
                        run(Mask::Causal { offset });
                        Some(())
                    }
                    (None, _) => {
                        run(Mask::None);
                        Some(())
                    }
                }
            })
        })
    })
    .flatten()
    .flatten()
    .flatten();
    if done.is_none() {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(out, (b, tq, h * dh), q.device())?))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn rand_bf16(n: usize, seed: u64, scale: f32) -> Tensor {
        let v: Vec<f32> = (0..n as u64)
            .map(|i| {
                let h = (i ^ seed)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .rotate_left(29);
                ((h % 20001) as f32 / 10000.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(v, (n,), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::BF16))
            .unwrap()
    }

    /// Largest difference in units of 2^-8 of the larger magnitude; one bf16 rounding step
    /// is 1 to 2 such units depending on the mantissa.
    fn max_ulps(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        let b = b.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / (x.abs().max(y.abs()) * 2f32.powi(-8)).max(1e-30))
            .fold(0.0, f32::max)
    }

    #[test]
    fn fused_layer_norm_equals_the_candle_chain_bit_for_bit() {
        for d in [1, 7, 64, 129] {
            let norm = LayerNorm {
                weight: rand_bf16(d, 3, 2.0),
                bias: rand_bf16(d, 4, 1.0),
                eps: 1e-6,
            };
            let x = rand_bf16(5 * d, 5, 4.0).reshape((5, d)).unwrap();
            let fused = norm.forward(&x).unwrap().flatten_all().unwrap();
            let plain = norm.forward_plain(&x).unwrap().flatten_all().unwrap();
            assert_eq!(
                fused.to_vec1::<half::bf16>().unwrap(),
                plain.to_vec1::<half::bf16>().unwrap(),
                "width {d}"
            );
        }
    }

    #[test]
    fn residual_add_equals_candle_bit_for_bit_and_keeps_gradients() {
        for n in [1, 7, 513, 40_000] {
            let (a, b) = (rand_bf16(n, 1, 6.0), rand_bf16(n, 2, 0.01));
            let want = (&a + &b).unwrap().to_vec1::<half::bf16>().unwrap();
            assert_eq!(
                add(&a, &b).unwrap().to_vec1::<half::bf16>().unwrap(),
                want,
                "{n}"
            );
        }
        // A tracked input takes candle's op, so the gradient reaches it.
        let v = candle_core::Var::from_tensor(&rand_bf16(3, 3, 1.0)).unwrap();
        let c = rand_bf16(3, 4, 1.0);
        let y = add(v.as_tensor(), &c)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(v.as_tensor()).unwrap();
        assert_eq!(
            g.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            [1.0; 3]
        );
    }

    #[test]
    fn vectorised_gelu_and_swiglu_are_f32_results_rounded_once() {
        for n in [1, 7, 513, 1500] {
            let x = rand_bf16(n, 1, 6.0);
            let u = rand_bf16(n, 2, 3.0);
            let g = gelu(&x).unwrap();
            // The reference rounds once, after computing in f32 (as PyTorch does for bf16).
            let xf = x.to_dtype(DType::F32).unwrap();
            let want = xf.gelu_erf().unwrap().to_dtype(DType::BF16).unwrap();
            let e = max_ulps(&g, &want);
            assert!(e <= 2.0, "gelu n={n}: {e} units");
            let s = silu_mul(&x, &u).unwrap();
            let silu = xf.silu().unwrap().to_dtype(DType::BF16).unwrap();
            let want = (silu * &u).unwrap();
            let e = max_ulps(&s, &want);
            assert!(e <= 2.0, "silu_mul n={n}: {e} units");
        }
    }
}
