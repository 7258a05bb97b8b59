//! Helpers the library's unit tests share: deterministic inputs and error measures.

use candle_core::{DType, Device, Tensor};

/// A CPU f32 tensor of `shape` with values spread over `[-scale, scale)`, a pure function
/// of `seed` and the position (no generator state, so any test can reproduce it).
pub(crate) fn hashed(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h = (i ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
            ((h % 20011) as f32 / 10005.5 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// [`hashed`] rounded to bf16.
pub(crate) fn hashed_bf16(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    hashed(shape, seed, scale).to_dtype(DType::BF16).unwrap()
}

/// `max|a − b| / max|b|` over all elements, in f32.
pub(crate) fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let (a, b) = (f(a), f(b));
    let d = (&a - &b).unwrap().abs().unwrap().max(0).unwrap();
    let s = b.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    d.to_scalar::<f32>().unwrap() / s.max(1e-30)
}
