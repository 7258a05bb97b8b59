//! Throughput of the CPU kernels at Janus-Pro-1B's shapes, per instruction-set level.
//!
//! `cargo run --release -p janus --example kernel_bench [NAME-FILTER]` (threads:
//! RAYON_NUM_THREADS). `KB_SHAPES=576x4096x1024;...` replaces the shapes (m x n x k);
//! `KB_GROUPED=MxNxK` times only the packed kernel over x regrouped once, on one thread
//! (small shapes keep everything in L1: the kernel's own FLOP rate). Besides wall time it
//! prints GFLOP per second of the process's CPU time, which other load on the machine
//! disturbs much less (where `perf` has no cycle counter, as in this project's VMs, that is
//! the closest to flops per cycle).

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

/// `MxNxK` as numbers.
fn shape(s: &str) -> (usize, usize, usize) {
    let d: Vec<usize> = s
        .split('x')
        .map(|v| v.parse().expect("a shape is MxNxK"))
        .collect();
    assert!(d.len() == 3, "a shape is MxNxK, not {s}");
    (d[0], d[1], d[2])
}

/// The packed kernel alone: x regrouped once, then the product repeated on this thread.
fn grouped_only(m: usize, n: usize, k: usize) {
    let isa = janus::kernels::isa();
    let x = values(m * k);
    let packed = PackedBf16::pack(&values(n * k), n, k);
    let mut grouped = packed.grouped(m, isa);
    for (r, row) in x.chunks_exact(k).enumerate() {
        grouped.put_row(row, r);
    }
    let mut out = vec![0.0f32; m * n];
    let flop = 2.0 * (m * n * k) as f64;
    let reps = (4e10 / flop).max(1.0) as usize;
    let t = Instant::now();
    for _ in 0..reps {
        packed.matmul_grouped(&grouped, m, &mut out);
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{:>6} grouped {m}x{n}x{k}: {:7.1} GFLOP/s",
        isa.name(),
        flop / s / 1e9
    );
}

fn main() {
    if let Ok(s) = std::env::var("KB_GROUPED") {
        let (m, n, k) = shape(&s);
        return grouped_only(m, n, k);
    }
    let custom: Vec<(String, usize, usize, usize)> = std::env::var("KB_SHAPES")
        .map(|v| {
            v.split(';')
                .map(|s| {
                    let (m, n, k) = shape(s);
                    (s.to_string(), m, n, k)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut shapes = vec![
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
    if !custom.is_empty() {
        shapes = custom
            .iter()
            .map(|(s, m, n, k)| (s.as_str(), *m, *n, *k))
            .collect();
    }
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
