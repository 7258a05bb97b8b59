//! The products of a LoRA training step at Janus-Pro-1B's shapes, for one 617-position
//! sample: candle's f32 product (forward `x·Wᵀ` and backward `dy·W`) against the
//! quantised kernels' forward, in GFLOP/s (best of 3).
//!
//! `cargo run --release -p janus --example train_products`

use std::time::Instant;

use candle_core::{Device, Tensor};
use janus::kernels::quant::{QuantFormat, QuantMatrix};

fn best(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> candle_core::Result<()> {
    let m = 617;
    let isa = janus::kernels::isa();
    println!("isa {isa:?}, m {m}");
    for (name, n, k) in [
        ("q_proj", 2048, 2048),
        ("up_proj", 5632, 2048),
        ("down_proj", 2048, 5632),
    ] {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 25_000.0 - 0.02)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let wt = Tensor::from_slice(&w, (n, k), &Device::Cpu)?;
        let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu)?;
        let dy: Vec<f32> = (0..m * n)
            .map(|i| ((i * 31) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let dy = Tensor::from_slice(&dy, (m, n), &Device::Cpu)?;
        let flops = 2.0 * (m * n * k) as f64 / 1e9;
        let fwd = best(|| {
            let _ = xt.matmul(&wt.t().unwrap()).unwrap();
        });
        let bwd = best(|| {
            let _ = dy.matmul(&wt).unwrap();
        });
        let mut line = format!(
            "{name:9} candle f32 fwd {:6.1} GFLOP/s bwd {:6.1}",
            flops / fwd,
            flops / bwd
        );
        for f in [QuantFormat::Q8, QuantFormat::Q4] {
            let q = QuantMatrix::quantize_f32(&w, n, k, f);
            let t = best(|| {
                let _ = q.matmul_to_vec(&x, m, isa);
            });
            line += &format!("  {f:?} {:6.1}", flops / t);
        }
        println!("{line}");
    }
    Ok(())
}
