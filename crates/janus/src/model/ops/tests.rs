use candle_core::{DType, Module, Tensor};

use super::*;

fn rand_bf16(n: usize, seed: u64, scale: f32) -> Tensor {
    crate::testing::hashed_bf16(&[n], seed, scale)
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
