//! Throughput of the CPU kernels at Janus-Pro-1B's shapes, per instruction-set level.
//!
//! `cargo run --release -p janus --example kernel_bench [NAME-FILTER]` (threads:
//! RAYON_NUM_THREADS). Besides wall time it prints GFLOP per second of the process's CPU
//! time, which other load on the machine disturbs much less (where `perf` has no cycle
//! counter, as in this project's VMs, that is the closest to flops per cycle).

use std::time::Instant;

use half::bf16;
use janus::kernels::{gemm::matmul_bf16, packed::PackedBf16, Isa};

fn values(len: usize) -> Vec<bf16> {
    (0..len)
        .map(|i| bf16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0))
        .collect()
}

/// Seconds of CPU time this process has used, over all its threads.
fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() {
    let shapes = [
        ("decode up_proj", 1, 5632, 2048),
        ("cfg step up_proj", 2, 5632, 2048),
        ("decode down_proj", 1, 2048, 5632),
        ("lm_head", 1, 102400, 2048),
        ("prefill up_proj", 616, 5632, 2048),
        ("prefill gate_up", 616, 11264, 2048),
        ("prefill o_proj", 616, 2048, 2048),
        ("prefill down_proj", 616, 2048, 5632),
        ("siglip fc1", 576, 4096, 1024),
        ("siglip fc2", 576, 1024, 4096),
    ];
    let filter = std::env::args().nth(1).unwrap_or_default();
    // The best level only, unless JANUS_BENCH_ALL is set (the plain level is slow).
    let levels = match std::env::var_os("JANUS_BENCH_ALL") {
        Some(_) => Isa::available(),
        None => vec![janus::kernels::isa()],
    };
    for isa in levels.into_iter().rev() {
        for &(name, m, n, k) in shapes.iter().filter(|s| s.0.contains(&filter)) {
            let x = values(m * k);
            let w = values(n * k);
            let mut out = vec![0.0f32; m * n];
            let packed = PackedBf16::pack(&w, n, k);
            let reps = (2e10 / (2.0 * (m * n * k) as f64)).clamp(2.0, 200.0) as usize;
            let tiles = PackedBf16::tiles_at(isa);
            let layouts = ["rows", "packed", "tiles"];
            for layout in layouts.into_iter().filter(|l| tiles || *l != "tiles") {
                let mut run = || match layout {
                    "rows" => matmul_bf16(&x, &w, m, n, k, &mut out, isa),
                    "tiles" => out = packed.matmul_to_vec_tiles(&x, m, isa),
                    _ => packed.matmul(&x, m, &mut out, isa),
                };
                run();
                let (t, cpu) = (Instant::now(), cpu_seconds());
                for _ in 0..reps {
                    run();
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                let cpu = (cpu_seconds() - cpu) / reps as f64;
                let flop = 2.0 * (m * n * k) as f64;
                println!(
                    "{:>6} {layout:<6} {name:<18} {m}x{n}x{k}: {:8.3} ms {:7.1} GFLOP/s {:6.1} GB/s weights {:7.1} GFLOP/cpu-s",
                    isa.name(),
                    s * 1e3,
                    flop / s / 1e9,
                    (n * k * 2) as f64 / s / 1e9,
                    flop / cpu / 1e9
                );
            }
        }
    }
}
