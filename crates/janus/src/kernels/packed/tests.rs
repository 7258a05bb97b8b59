//! Packing round trips, and every kernel level against the plain product.

use super::*;
use crate::kernels::gemm::{matmul_bf16, tests::values};

#[test]
fn pack_unpack_round_trips() {
    for &(n, k) in &[(1, 1), (5, 3), (16, 8), (17, 33), (40, 2)] {
        let w = values(n * k, 9);
        let p = PackedBf16::pack(&w, n, k);
        assert_eq!(p.unpack(), w, "{n}x{k}");
        for j in 0..n {
            let mut row = vec![f32::NAN; k];
            p.row_f32(j, &mut row);
            let want: Vec<f32> = w[j * k..][..k].iter().map(|v| v.to_f32()).collect();
            assert_eq!(row, want, "{n}x{k} row {j}");
        }
    }
}

#[test]
fn every_level_matches_the_plain_product() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 17, 33),
        (2, 40, 64),
        (3, 31, 7),
        (8, 16, 258),
        (9, 50, 513),
        (67, 70, 300),
        (16, 33, 5),
        (29, 16, 1),
        // Decoding products large enough to split into claimed slices.
        (1, 700, 390),
        (2, 1000, 150),
        // Nothing to sum: zeros, whatever the output held.
        (3, 5, 0),
        (20, 5, 0),
    ] {
        let x = values(m * k, 21);
        let w = values(n * k, 22);
        let mut want = vec![0.0; m * n];
        matmul_bf16(&x, &w, m, n, k, &mut want, Isa::Plain);
        let packed = PackedBf16::pack(&w, n, k);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * n];
            packed.matmul(&x, m, &mut got, isa);
            assert_eq!(packed.matmul_to_vec(&x, m, isa), got, "{isa:?} {m}x{n}x{k}");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * k as f32 + 1e-5,
                    "{isa:?} {m}x{n}x{k} at {i}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn grouped_rows_match_the_plain_product_at_every_level() {
    // Partial groups, an odd k, output and input columns cut short.
    for &(m, n, k, cols, depth) in &[
        (13, 40, 37, 40, 37usize),
        (7, 50, 64, 20, 33),
        (1, 16, 2, 16, 2),
    ] {
        let x = values(m * k, 31);
        let w = values(n * k, 32);
        let packed = PackedBf16::pack(&w, n, k);
        // Inputs past `depth` count as zeros.
        let cut: Vec<bf16> = x
            .chunks_exact(k)
            .flat_map(|r| {
                (0..k).map(move |c| {
                    if c < depth.div_ceil(2) * 2 {
                        r[c]
                    } else {
                        bf16::ZERO
                    }
                })
            })
            .collect();
        let mut want = vec![0.0; m * n];
        matmul_bf16(&cut, &w, m, n, k, &mut want, Isa::Plain);
        for isa in Isa::available() {
            let mut grouped = packed.grouped(m, isa);
            for (i, row) in x.chunks_exact(k).enumerate() {
                grouped.put_row(row, i);
            }
            let mut got = vec![f32::NAN; m * n];
            packed.matmul_grouped_part(&grouped, m, cols, depth, &mut got);
            let written = cols.div_ceil(PANEL) * PANEL;
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                if i % n >= written {
                    assert!(a.is_nan(), "{isa:?} wrote column {} past {cols}", i % n);
                } else {
                    assert!(
                        (a - b).abs() <= 1e-5 * k as f32,
                        "{isa:?} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn taps_read_bf16_and_f32_inputs_alike() {
    // Three taps over rows of 10 values, 2 apart: out[j, i] = Σ_t W[j, t] · x[taps[t] + 2i..].
    let (m, n, tap_cols, taps) = (11, 21, 4, [0usize, 3 * 2, 7 * 2]);
    let row_stride = 2;
    let x = values(taps[2] + (m - 1) * row_stride + tap_cols, 41);
    let w = values(n * taps.len() * tap_cols, 42);
    let packed = PackedBf16::pack(&w, n, taps.len() * tap_cols);
    let mut want = vec![0f32; n * m];
    for j in 0..n {
        for i in 0..m {
            want[j * m + i] = (0..taps.len())
                .flat_map(|t| (0..tap_cols).map(move |c| (t, c)))
                .map(|(t, c)| {
                    let wv = w[j * taps.len() * tap_cols + t * tap_cols + c].to_f32();
                    wv * x[taps[t] + i * row_stride + c].to_f32()
                })
                .sum();
        }
    }
    let wide: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    for isa in Isa::available() {
        let mut got = vec![f32::NAN; n * m];
        packed.matmul_taps(&x, row_stride, &taps, m, &mut got, m, isa);
        let mut got_wide = vec![f32::NAN; n * m];
        packed.matmul_taps(&wide, row_stride, &taps, m, &mut got_wide, m, isa);
        for (i, ((a, b), c)) in got.iter().zip(&got_wide).zip(&want).enumerate() {
            assert!(
                (a - c).abs() <= 1e-5 && (b - c).abs() <= 1e-5,
                "{isa:?} at {i}: {a} {b} vs {c}"
            );
        }
    }
}

/// The AVX-512 F kernel (`avx512-vnni`) takes the AVX2 kernel's FMAs lane by lane: the
/// same bits for decoding and many rows, split K, partial panels and convolution taps
/// (their transposed outputs).
#[test]
fn avx512f_kernel_gives_the_avx2_bits() {
    if !Isa::Avx512Vnni.supported() {
        eprintln!("skipped: this CPU has no AVX-512 VNNI");
        return;
    }
    let (wide, narrow) = (Isa::Avx512Vnni, Isa::Avx2);
    for &(m, n, k) in &[
        (1, 17, 33),
        (2, 1000, 150),
        (7, 40, 64),
        (13, 50, 513),
        (19, 33, 96),
        (67, 70, 3000),
    ] {
        let (x, w) = (values(m * k, 23), values(n * k, 24));
        let packed = PackedBf16::pack(&w, n, k);
        let want = packed.matmul_to_vec(&x, m, narrow);
        assert_eq!(packed.matmul_to_vec(&x, m, wide), want, "{m}x{n}x{k}");
    }
    // Rows 2 floats apart take the kernel's fixed-offset broadcasts, others the general.
    for stride in [2, 3] {
        let (m, n, taps) = (11, 21, [0usize, 6, 14]);
        let x: Vec<f32> = values(taps[2] + stride * (m - 1) + 4, 43)
            .iter()
            .map(|v| v.to_f32())
            .collect();
        let packed = PackedBf16::pack(&values(n * taps.len() * 4, 44), n, taps.len() * 4);
        let [mut a, mut b] = [vec![f32::NAN; n * m], vec![f32::NAN; n * m]];
        packed.matmul_taps(&x, stride, &taps, m, &mut a, m, narrow);
        packed.matmul_taps(&x, stride, &taps, m, &mut b, m, wide);
        assert_eq!(a, b, "row stride {stride}");
    }
}

/// Each row's outputs are the same bits whatever rows come with it, at every level: one
/// row alone, a few (split K), many (regrouped blocks). Speculative decoding checks drafts
/// against rows computed in blocks and relies on this.
#[test]
fn every_row_gets_its_bits_alone_at_every_level() {
    for &(n, k) in &[(48, 384), (33, 1030), (16, 64), (130, 258)] {
        let x = values(40 * k, 31);
        let w = values(n * k, 32);
        let packed = PackedBf16::pack(&w, n, k);
        for isa in Isa::available() {
            let alone: Vec<f32> = (0..40)
                .flat_map(|i| packed.matmul_to_vec(&x[i * k..(i + 1) * k], 1, isa))
                .collect();
            for m in [2, 3, 5, 6, 7, 12, 15, 16, 17, 40] {
                let got = packed.matmul_to_vec(&x[..m * k], m, isa);
                let differ = got
                    .iter()
                    .zip(&alone)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differ, 0, "{isa:?} {m} rows of {n}x{k}");
            }
        }
    }
}

/// The AMX tile product (prefill, SigLIP) against the plain product: rows that fill no
/// tile, one, two (a whole task), and partial second tiles; k in place (multiples of 32)
/// and padded; odd panel counts; rows in several L2 groups; through `matmul_to_vec_tiles`
/// too, and rounded to bf16 with a bias by `matmul_to_bf16_tiles` (the bits the separate
/// rounding gives). Each row's outputs are the same bits whatever rows come with it.
/// Skipped, saying so, where the CPU has no AMX.
#[test]
fn amx_tiles_match_the_plain_product() {
    if !amx::available() {
        eprintln!("SKIPPED amx_tiles_match_the_plain_product: no AMX here (or JANUS_AMX=0)");
        return;
    }
    for &(m, n, k) in &[
        (16, 16, 32),
        (17, 33, 70),
        (5, 7, 3),
        (40, 50, 1030),
        (33, 16, 64),
        (32, 48, 96),
        (31, 17, 64),
        (70, 80, 320),
        (65, 5, 33),
        (330, 40, 2048),
    ] {
        let x = values(m * k, 1);
        let w = values(n * k, 2);
        let mut want = vec![0.0; m * n];
        matmul_bf16(&x, &w, m, n, k, &mut want, Isa::Plain);
        let p = PackedBf16::pack(&w, n, k);
        let mut got = vec![f32::NAN; m * n];
        // SAFETY: AMX is available; x holds m * k values, got m * n.
        unsafe { p.matmul_amx(&x, m, got.as_mut_ptr(), n) };
        let dispatched = p.matmul_to_vec_tiles(&x, m, Isa::Avx512Bf16);
        for (i, ((g, d), w)) in got.iter().zip(&dispatched).zip(&want).enumerate() {
            let tol = 1e-3 * (1.0 + w.abs());
            assert!(
                (g - w).abs() <= tol && (d - w).abs() <= tol,
                "({m}, {n}, {k}) at {i}: {g} / {d} vs {w}"
            );
        }
        let bias = values(n, 3).iter().map(|b| b.to_f32()).collect::<Vec<_>>();
        for bias in [None, Some(&bias[..])] {
            let mut want = vec![bf16::ZERO; m * n];
            crate::kernels::fused::round_bf16_bias(&dispatched, bias, &mut want, Isa::Avx512Bf16);
            let got = p.matmul_to_bf16_tiles(&x, m, bias, Isa::Avx512Bf16);
            match m >= 16 {
                true => assert_eq!(got, Some(want), "({m}, {n}, {k}) bias {}", bias.is_some()),
                false => assert_eq!(got, None, "({m}, {n}, {k})"),
            }
            let invariant = crate::kernels::with_row_invariance(true, || {
                p.matmul_to_bf16_tiles(&x, m, bias, Isa::Avx512Bf16)
            });
            assert_eq!(invariant, None, "({m}, {n}, {k})");
            let invariant = crate::kernels::with_row_invariance(true, || {
                p.matmul_to_vec_tiles(&x, m, Isa::Avx512Bf16)
            });
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let plain = p.matmul_to_vec(&x, m, Isa::Avx512Bf16);
            assert_eq!(bits(&invariant), bits(&plain), "({m}, {n}, {k})");
        }
        // The last row alone gives its bits in the full product.
        let mut last = vec![f32::NAN; n];
        // SAFETY: as above, one row.
        unsafe { p.matmul_amx(&x[(m - 1) * k..], 1, last.as_mut_ptr(), n) };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&last), bits(&got[(m - 1) * n..]), "({m}, {n}, {k})");
    }
}

/// A direct convolution's taps on AMX tiles against the plain kernel: runs of 32 and 64
/// values, rows that fill one tile, a whole task and a partial second tile, strides, an
/// odd panel count. Skipped, saying so, where the CPU has no AMX.
#[test]
fn amx_taps_match_the_plain_taps() {
    if !amx::available() {
        eprintln!("SKIPPED amx_taps_match_the_plain_taps: no AMX here (or JANUS_AMX=0)");
        return;
    }
    for &(m, n, run, row_stride) in &[(16, 16, 32, 32), (45, 40, 64, 128), (7, 3, 32, 32)] {
        // Three taps, the way a 3-wide kernel reads one image row: `run` apart.
        let taps = [0, run, 2 * run];
        let x = values(taps[2] + (m - 1) * row_stride + run, 43);
        let w = values(n * taps.len() * run, 44);
        let p = PackedBf16::pack(&w, n, taps.len() * run);
        assert!(p.taps_on_tiles(taps.len(), Isa::Avx512Bf16));
        let mut want = vec![f32::NAN; n * m];
        p.matmul_taps(&x, row_stride, &taps, m, &mut want, m, Isa::Plain);
        // A wider output (ldo > m) whose gaps stay untouched.
        let ldo = m + 3;
        let mut got = vec![f32::NAN; n * ldo];
        p.matmul_taps_tiles(&x, row_stride, &taps, m, &mut got, ldo, Isa::Avx512Bf16);
        for j in 0..n {
            for i in 0..ldo {
                let g = got[j * ldo + i];
                if i >= m {
                    assert!(g.is_nan(), "({m}, {n}, {run}) wrote the gap at {j}, {i}");
                    continue;
                }
                let w = want[j * m + i];
                assert!(
                    (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                    "({m}, {n}, {run}) at {j}, {i}: {g} vs {w}"
                );
            }
        }
    }
    let p = PackedBf16::pack(&values(16 * 3 * 30, 45), 16, 3 * 30);
    assert!(
        !p.taps_on_tiles(3, Isa::Avx512Bf16),
        "runs of 30 straddle k tiles"
    );
    assert!(
        !p.taps_on_tiles(3, Isa::Avx2),
        "no tiles below AVX-512 BF16"
    );
}

/// Packed panels start on a cache line, so no 64-byte weight operand or tile row
/// straddles two (the tile products ran at half speed from an allocator's 16-byte
/// alignment).
#[test]
fn packed_panels_start_on_cache_lines() {
    for (n, k) in [(1, 1), (17, 33), (40, 2048)] {
        let packed = PackedBf16::pack(&values(n * k, 5), n, k);
        let zeros = PackedBf16::zeros(n, k);
        for p in [&packed, &zeros] {
            assert_eq!(p.values().as_ptr() as usize % 64, 0, "({n}, {k})");
            assert_eq!(p.values().len() % LINE_VALUES, 0, "({n}, {k})");
        }
        assert_eq!(packed.unpack(), values(n * k, 5), "({n}, {k})");
    }
}
