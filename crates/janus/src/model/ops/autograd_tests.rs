use candle_core::{DType, Device, Tensor, Var};

use crate::model::ops::{attention, attention_heads_merged, silu_mul, AttnMask, RmsNorm};

pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
    crate::testing::hashed(shape, seed, 1.0)
}

pub(crate) use crate::testing::max_rel as rel;

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
