//! Decoding's products as they run in a model: the weights streamed from memory.
//!
//! `cargo run --release -p janus --example stream_bench [MiB]` (threads:
//! RAYON_NUM_THREADS; level: JANUS_KERNELS). `kernel_bench` multiplies one matrix over
//! and over, which a large last-level cache then serves; here each round multiplies 1 to
//! 16 rows (a block of W speculative drafts has 2W) by enough distinct (5632, 2048)
//! matrices to fill MiB (default 1100: more than this project's machines' caches), in
//! bf16, Q8 and Q4, and prints the bytes of weights read per second, to hold against the
//! memory's speed (`janus bench` measures it).

use std::time::Instant;

use half::bf16;
use janus::kernels::packed::PackedBf16;
use janus::kernels::quant::{QuantFormat, QuantMatrix};

/// Times `product` over every matrix for 1 to 16 rows, three rounds.
fn run<M>(name: &str, mats: &[M], bytes: usize, product: impl Fn(&M, usize)) {
    for round in 0..3 {
        let line: Vec<String> = [1, 2, 4, 8, 12, 16]
            .iter()
            .map(|&m| {
                let t = Instant::now();
                mats.iter().for_each(|w| product(w, m));
                let s = t.elapsed().as_secs_f64();
                format!("{m:2}: {:4.1}", bytes as f64 / s / 1e9)
            })
            .collect();
        println!("{name:4} round {round}, GB/s at rows {}", line.join("  "));
    }
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("MiB: a whole number"))
        .unwrap_or(1100);
    let isa = janus::kernels::isa();
    let (n, k) = (5632, 2048);
    let w: Vec<bf16> = (0..n * k)
        .map(|i| bf16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0))
        .collect();
    let x: Vec<bf16> = (0..16 * k)
        .map(|i| bf16::from_f32((i % 17) as f32 / 9.0 - 1.0))
        .collect();
    println!(
        "level {}, {} threads",
        isa.name(),
        rayon::current_num_threads()
    );
    let count = (mib << 20).div_ceil(n * k * 2);
    let packed: Vec<PackedBf16> = (0..count).map(|_| PackedBf16::pack(&w, n, k)).collect();
    let bytes = packed.iter().map(PackedBf16::size_bytes).sum();
    run("bf16", &packed, bytes, |p, m| {
        std::hint::black_box(p.matmul_to_vec(&x[..m * k], m, isa));
    });
    drop(packed);
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let count = (mib << 20).div_ceil(QuantMatrix::quantize_bf16(&w, n, k, format).size_bytes());
        let mats: Vec<QuantMatrix> = (0..count)
            .map(|_| QuantMatrix::quantize_bf16(&w, n, k, format))
            .collect();
        let bytes = mats.iter().map(QuantMatrix::size_bytes).sum();
        run(format.name(), &mats, bytes, |q, m| {
            std::hint::black_box(q.matmul_bf16_to_vec(&x[..m * k], m, isa));
        });
    }
}
