//! The products of a LoRA training step at Janus-Pro-1B's shapes, for one 617-position
//! sample: candle's f32 product (forward `x·Wᵀ` and backward `dy·W`) against the
//! quantised kernels' forward, in GFLOP/s (best of 3), and the CPU's f32 FMA peak on
//! every pool thread for scale.
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
    println!(
        "isa {isa:?}, m {m}, f32 FMA peak {:.1} GFLOP/s on {} threads",
        fma_peak(),
        rayon::current_num_threads()
    );
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

/// f32 FLOP/s of independent AVX2 FMA chains on every rayon thread (0 without AVX2).
fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        use rayon::prelude::*;
        const ITERS: usize = 20_000_000;
        let threads = rayon::current_num_threads();
        let t = Instant::now();
        let sink: f32 = (0..threads)
            .into_par_iter()
            // SAFETY: the features were detected above.
            .map(|_| unsafe { fma_chains(ITERS) })
            .sum();
        std::hint::black_box(sink);
        // 10 chains x 8 lanes x 2 FLOPs per iteration.
        return (threads * ITERS * 160) as f64 / t.elapsed().as_secs_f64() / 1e9;
    }
    0.0
}

/// Ten independent FMA chains (more than latency x ports), so the units never wait.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.001); 10];
    let (b, c) = (_mm256_set1_ps(0.9999), _mm256_set1_ps(1e-5));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    acc.iter().map(|a| _mm256_cvtss_f32(*a)).sum()
}
