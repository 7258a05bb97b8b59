//! The attention kernel at every vector level against its definition.

use super::*;
use crate::kernels::gemm::tests::values;

fn run(d: Dims, mask: Mask, isa: Isa, q: &[bf16], k: &[bf16], v: &[bf16]) -> Vec<f32> {
    // q (B, H, Tq, Dh) contiguous; k/v inside a larger cache (B, Hkv, tk + 3, Dh).
    let cap = d.tk + 3;
    let view = |data, t: usize, h: usize| View {
        data,
        offset: 0,
        strides: [h * t * d.dh, t * d.dh, d.dh],
    };
    let mut out = vec![bf16::ZERO; d.b * d.tq * d.h * d.dh];
    attention_bf16(
        view(q, d.tq, d.h),
        view(k, cap, d.h_kv),
        view(v, cap, d.h_kv),
        d,
        mask,
        1.0 / (d.dh as f32).sqrt(),
        &mut out,
        isa,
    );
    out.iter().map(|x| x.to_f32()).collect()
}

/// Attention in f64 from the definition, output `(B, Tq, H, Dh)`.
fn reference(d: Dims, mask: Mask, q: &[bf16], k: &[bf16], v: &[bf16]) -> Vec<f32> {
    let cap = d.tk + 3;
    let mut out = vec![0f32; d.b * d.tq * d.h * d.dh];
    for b in 0..d.b {
        for h in 0..d.h {
            let hk = h / (d.h / d.h_kv);
            for i in 0..d.tq {
                let qi = &q[((b * d.h + h) * d.tq + i) * d.dh..][..d.dh];
                let mut s: Vec<f64> = (0..d.tk)
                    .map(|j| {
                        let kj = &k[((b * d.h_kv + hk) * cap + j) * d.dh..][..d.dh];
                        let dot: f64 = qi
                            .iter()
                            .zip(kj)
                            .map(|(a, b)| a.to_f64() * b.to_f64())
                            .sum();
                        dot / (d.dh as f64).sqrt()
                    })
                    .collect();
                for (j, sj) in s.iter_mut().enumerate() {
                    match mask {
                        Mask::Causal { offset } if j > offset + i => *sj = f64::NEG_INFINITY,
                        Mask::Additive { data, batch_stride } => {
                            *sj += data[b * batch_stride + i * d.tk + j] as f64
                        }
                        _ => {}
                    }
                }
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..d.dh {
                    let o: f64 = (0..d.tk)
                        .map(|j| e[j] / sum * v[((b * d.h_kv + hk) * cap + j) * d.dh + c].to_f64())
                        .sum();
                    out[((b * d.tq + i) * d.h + h) * d.dh + c] = o as f32;
                }
            }
        }
    }
    out
}

#[test]
fn weighted_sums_give_the_same_bits_at_every_vector_level() {
    // Rows and keys of decoding and a few new tokens; widths of 1 to 5 column blocks;
    // value rows inside a wider cache row.
    for &(rows, keys, dh) in &[
        (1, 1, 32),
        (1, 7, 128),
        (2, 300, 128),
        (3, 33, 160),
        (5, 9, 96),
    ] {
        let ldv = dh + 16;
        let p: Vec<f32> = values(rows * keys, 5 + keys as u32)
            .into_iter()
            .map(|x| x.to_f32().abs() / keys as f32)
            .collect();
        let v = values(keys * ldv, 9);
        let mut want = vec![0f32; rows * dh];
        weighted_sum(&p, rows, keys, &v, ldv, dh, &mut want, Isa::Plain);
        let mut by_level = Vec::new();
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Plain) {
            let mut got = vec![0f32; rows * dh];
            weighted_sum(&p, rows, keys, &v, ldv, dh, &mut got, isa);
            for (o, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{isa:?} {rows}x{keys}x{dh} at {o}: {a} vs {b}"
                );
            }
            by_level.push((isa, got));
        }
        for pair in by_level.windows(2) {
            let ((i0, a), (i1, b)) = (&pair[0], &pair[1]);
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{i0:?} and {i1:?} differ for {rows}x{keys}x{dh}");
        }
    }
}

#[test]
fn every_level_matches_the_definition() {
    let cases = [
        (
            Dims {
                b: 1,
                h: 2,
                h_kv: 2,
                tq: 1,
                tk: 5,
                dh: 16,
            },
            0usize,
        ),
        (
            Dims {
                b: 2,
                h: 4,
                h_kv: 2,
                tq: 7,
                tk: 7,
                dh: 32,
            },
            1,
        ),
        (
            Dims {
                b: 1,
                h: 3,
                h_kv: 3,
                tq: 70,
                tk: 73,
                dh: 8,
            },
            1,
        ),
        (
            Dims {
                b: 2,
                h: 2,
                h_kv: 1,
                tq: 3,
                tk: 11,
                dh: 48,
            },
            2,
        ),
        (
            Dims {
                b: 1,
                h: 1,
                h_kv: 1,
                tq: 66,
                tk: 66,
                dh: 128,
            },
            0,
        ),
        (
            Dims {
                b: 2,
                h: 4,
                h_kv: 2,
                tq: 20,
                tk: 37,
                dh: 24,
            },
            2,
        ),
        (
            Dims {
                b: 1,
                h: 2,
                h_kv: 1,
                tq: 17,
                tk: 17,
                dh: 10,
            },
            1,
        ),
        // Several blocks of queries (a partial last one) at every level's block size.
        (
            Dims {
                b: 1,
                h: 2,
                h_kv: 1,
                tq: 150,
                tk: 150,
                dh: 64,
            },
            1,
        ),
        // Head sizes of whole AMX tiles (where the CPU has them): causal blocks of
        // queries over a partial last tile of keys, and a padding mask.
        (
            Dims {
                b: 1,
                h: 2,
                h_kv: 1,
                tq: 70,
                tk: 70,
                dh: 64,
            },
            1,
        ),
        (
            Dims {
                b: 2,
                h: 2,
                h_kv: 2,
                tq: 45,
                tk: 45,
                dh: 32,
            },
            2,
        ),
    ];
    for (d, kind) in cases {
        let cap = d.tk + 3;
        let q = values(d.b * d.h * d.tq * d.dh, 11);
        let k = values(d.b * d.h_kv * cap * d.dh, 12);
        let v = values(d.b * d.h_kv * cap * d.dh, 13);
        let add: Vec<f32> = (0..d.b * d.tq * d.tk)
            .map(|i| {
                if i % 5 == 1 {
                    f32::NEG_INFINITY
                } else {
                    (i % 3) as f32 * 0.5
                }
            })
            .collect();
        let mask = match kind {
            0 => Mask::None,
            1 => Mask::Causal {
                offset: d.tk - d.tq,
            },
            _ => Mask::Additive {
                data: &add,
                batch_stride: d.tq * d.tk,
            },
        };
        let want = reference(d, mask, &q, &k, &v);
        for isa in Isa::available() {
            let got = run(d, mask, isa, &q, &k, &v);
            // Output is bf16: half an ulp of 2^-8 relative, plus f32 sums; the packed
            // path also rounds the probabilities to bf16 (up to 2^-9 each, as PyTorch).
            let p_bf16 = d.tq >= PACKED_QUERIES && d.tk == d.tq && packs_queries(isa);
            let (rel, abs) = if p_bf16 { (8e-3, 2e-3) } else { (4e-3, 1e-3) };
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= rel * b.abs() + abs,
                    "{isa:?} {d:?} mask {kind} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
