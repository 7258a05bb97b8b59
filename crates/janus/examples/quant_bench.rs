//! Quantised (q8, q4) against bf16 matrix products at Janus-Pro-1B's shapes, per
//! instruction-set level: milliseconds per call, GB/s of weights read, speed-up over bf16.
//!
//! `cargo run --release -p janus --example quant_bench [-- OPTIONS]` (threads:
//! RAYON_NUM_THREADS). Each time is the best of many short rounds that alternate the
//! three formats, so load from other processes hits them alike; the weights are cycled
//! through 256 MiB of copies so that none comes from the L3 cache. Options:
//! - `rows`: up_proj for 1 to 128 activation rows;
//! - `hot`: small weights that stay in L2, on one thread (the kernels' compute speed);
//! - `plain`: the scalar reference level too;
//! - layer names (`lm_head`) and row counts (`m=2`): only those.

use std::time::Instant;

use half::bf16;
use janus::kernels::gemm::matmul_bf16;
use janus::kernels::packed::PackedBf16;
use janus::kernels::quant::{QuantFormat, QuantMatrix};
use janus::kernels::Isa;

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// Weights in this many bytes (per format) are cycled through, so that no timing runs from
/// the 32 MiB L3 cache: a model's decode streams every layer from memory.
const ROTATE_BYTES: usize = 256 << 20;

/// One shape's bf16 weights and their quantised forms, `copies` of each.
struct Weights {
    n: usize,
    k: usize,
    bf16: Vec<Vec<bf16>>,
    /// The bf16 weights packed, where the level in use packs them (as the model does).
    packed: Vec<PackedBf16>,
    q8: Vec<QuantMatrix>,
    q4: Vec<QuantMatrix>,
}

impl Weights {
    fn new(n: usize, k: usize, rotate: bool) -> Self {
        let w: Vec<bf16> = values(n * k, 1)
            .into_iter()
            .map(|v| bf16::from_f32(v * 0.05))
            .collect();
        let copies = if rotate {
            ROTATE_BYTES.div_ceil(n * k * 2)
        } else {
            1
        };
        let q8 = QuantMatrix::quantize_bf16(&w, n, k, QuantFormat::Q8);
        let q4 = QuantMatrix::quantize_bf16(&w, n, k, QuantFormat::Q4);
        let packed = match PackedBf16::packs_at(janus::kernels::isa()) {
            true => vec![PackedBf16::pack(&w, n, k); copies],
            false => Vec::new(),
        };
        Weights {
            n,
            k,
            packed,
            bf16: vec![w; copies],
            q8: vec![q8; copies],
            q4: vec![q4; copies],
        }
    }
}

/// Times calls of several functions (`f(v, call)` runs variant `v`'s `call`-th call):
/// `rounds` rounds of `reps` calls per variant, alternating; the best seconds per call.
fn best_times(variants: usize, mut f: impl FnMut(usize, usize)) -> Vec<f64> {
    let mut calls = vec![0; variants];
    let mut once = |v: usize, reps: usize| {
        let t = Instant::now();
        for _ in 0..reps {
            f(v, calls[v]);
            calls[v] += 1;
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    once(0, 1); // warm up
    let first = once(0, 2);
    // Rounds of about 1 ms: short enough that many run without being preempted.
    let reps = (1e-3 / first).clamp(1.0, 1000.0) as usize;
    let rounds = (1.5 / (first * reps as f64 * variants as f64)).clamp(10.0, 400.0) as usize;
    let mut best = vec![f64::INFINITY; variants];
    for _ in 0..rounds {
        for (v, best) in best.iter_mut().enumerate() {
            *best = best.min(once(v, reps));
        }
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "hot") {
        // On a pool thread the kernels' rayon loops run inline: no hand-off to time.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
        pool.expect("a one-thread pool").install(|| run(&args));
    } else {
        run(&args);
    }
}

fn run(args: &[String]) {
    let has = |name: &str| args.iter().any(|a| a == name);
    let levels: Vec<Isa> = Isa::available()
        .into_iter()
        .rev()
        .filter(|&i| i != Isa::Plain || has("plain"))
        .collect();
    let shapes: Vec<(&str, usize, usize, usize)> = if has("rows") {
        let rows = [1, 2, 3, 4, 8, 16, 24, 32, 48, 64, 128];
        rows.map(|m| ("up_proj", m, 5632, 2048)).to_vec()
    } else if has("hot") {
        let rows = [1, 2, 4, 64];
        let short = rows.map(|m| ("in L2", m, 256, 2048));
        let long = rows.map(|m| ("in L2", m, 96, 5632));
        short.into_iter().chain(long).collect()
    } else {
        let layers = [
            ("up_proj", 5632, 2048),
            ("down_proj", 2048, 5632),
            ("q_proj", 2048, 2048),
            ("gen_head", 16384, 2048),
            ("lm_head", 102400, 2048),
        ];
        let decode = layers
            .iter()
            .flat_map(|&(l, n, k)| [(l, 1, n, k), (l, 2, n, k)]);
        let prefill = layers[..3].iter().map(|&(l, n, k)| (l, 600, n, k));
        let all = !layers.iter().any(|l| has(l.0));
        let rows: Vec<usize> = args
            .iter()
            .filter_map(|a| a.strip_prefix("m=")?.parse().ok())
            .collect();
        decode
            .chain(prefill)
            .filter(|s| (all || has(s.0)) && (rows.is_empty() || rows.contains(&s.1)))
            .collect()
    };
    println!(
        "{:>6} {:<9} {:>14} | {:>14} | {:>22} | {:>22}",
        "level",
        "layer",
        "m x n x k",
        "bf16 ms  GB/s",
        "q8 ms  GB/s  vs bf16",
        "q4 ms  GB/s  vs bf16"
    );
    let mut weights: Option<Weights> = None;
    for &(name, m, n, k) in &shapes {
        if weights.as_ref().is_none_or(|w| (w.n, w.k) != (n, k)) {
            drop(weights.take()); // the previous shape's go first
            weights = Some(Weights::new(n, k, !has("hot")));
        }
        let Some(w) = weights.as_ref() else {
            unreachable!()
        };
        let xb: Vec<bf16> = values(m * k, 2).into_iter().map(bf16::from_f32).collect();
        let mut out = vec![0f32; m * n];
        let copies = w.bf16.len();
        for &isa in &levels {
            let t = best_times(3, |v, call| {
                let c = call % copies;
                match v {
                    // What the model runs: bf16 activations, packed weights where the
                    // level packs them.
                    0 if PackedBf16::packs_at(isa) && !w.packed.is_empty() => {
                        w.packed[c].matmul(&xb, m, &mut out, isa)
                    }
                    0 => matmul_bf16(&xb, &w.bf16[c], m, n, k, &mut out, isa),
                    1 => w.q8[c].matmul_bf16(&xb, m, &mut out, isa),
                    _ => w.q4[c].matmul_bf16(&xb, m, &mut out, isa),
                }
            });
            let gbs = |bytes: usize, t: f64| bytes as f64 / t / 1e9;
            println!(
                "{:>6} {name:<9} {:>14} | {:>6.3} {:>6.1}  | {:>6.3} {:>6.1} {:>6.2}x  | {:>6.3} {:>6.1} {:>6.2}x",
                isa.name(),
                format!("{m}x{n}x{k}"),
                t[0] * 1e3,
                gbs(n * k * 2, t[0]),
                t[1] * 1e3,
                gbs(w.q8[0].size_bytes(), t[1]),
                t[0] / t[1],
                t[2] * 1e3,
                gbs(w.q4[0].size_bytes(), t[2]),
                t[0] / t[2],
            );
        }
    }
}
