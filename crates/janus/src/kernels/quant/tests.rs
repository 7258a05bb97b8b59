use super::*;

/// Deterministic values in about [-1, 1], roughly bell-shaped (a sum of 3 uniforms).
fn values(len: usize, seed: u32) -> Vec<f32> {
    spiky_values(len, seed, 0.0)
}

/// [`values`] with a fraction `spikes` of them 8x larger (the outliers real weights
/// and activations have).
fn spiky_values(len: usize, seed: u32, spikes: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) ^ 0x9E37_79B9;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as f32 / u32::MAX as f32
    };
    (0..len)
        .map(|_| {
            let v = (next() + next() + next() - 1.5) / 1.5;
            if next() < spikes {
                8.0 * v
            } else {
                v
            }
        })
        .collect()
}

const FORMATS: [QuantFormat; 2] = [QuantFormat::Q8, QuantFormat::Q4];

#[test]
fn formats_parse_and_name_themselves() {
    for f in FORMATS {
        assert_eq!(f.name().parse::<QuantFormat>(), Ok(f));
    }
    assert_eq!("Q4".parse::<QuantFormat>(), Ok(QuantFormat::Q4));
    let err = "q5".parse::<QuantFormat>().unwrap_err().to_string();
    assert!(
        err.contains("q5") && err.contains("q8") && err.contains("q4"),
        "{err}"
    );
    assert_eq!(QuantFormat::Q8.bits_per_weight(), 8.3125);
    assert_eq!(QuantFormat::Q4.bits_per_weight(), 4.3125);
}

#[test]
fn sizes_match_bits_per_weight_on_whole_lines() {
    for f in FORMATS {
        let (rows, cols) = (8, 2048);
        let q = QuantMatrix::quantize_f32(&values(rows * cols, 1), rows, cols, f);
        assert_eq!((q.rows(), q.cols(), q.format()), (rows, cols, f));
        let want = (rows * cols) as f64 * f.bits_per_weight() / 8.0;
        assert_eq!(q.size_bytes() as f64, want, "{f:?}");
        // Rows are stored in quads: 5 take the room of 8.
        let q = QuantMatrix::quantize_f32(&values(5 * cols, 1), 5, cols, f);
        assert_eq!(q.size_bytes() as f64, want, "{f:?}");
    }
}

#[test]
fn dequantised_weights_are_within_half_a_step() {
    for f in FORMATS {
        for &(rows, cols) in &[(1, 8), (3, 31), (2, 33), (5, 100), (4, 257), (2, 2048)] {
            let mut w = values(rows * cols, cols as u32);
            // A zero block and a constant one.
            w[..cols.min(BLOCK)].fill(0.0);
            let last = rows * cols - cols.min(BLOCK);
            w[last..].fill(-0.3);
            let q = QuantMatrix::quantize_f32(&w, rows, cols, f);
            let deq = q.dequantize();
            for j in 0..rows {
                for c in 0..cols {
                    let d = q.scale(j, c / BLOCK).abs();
                    let (v, r) = (w[j * cols + c], deq[j * cols + c]);
                    // Q4 clips the largest magnitude's opposite twin, +8 steps, at +7.
                    let clipped = f == QuantFormat::Q4 && (v / -d).abs() > 7.5;
                    let step = if clipped { d } else { d / 2.0 };
                    assert!(
                        (v - r).abs() <= step * (1.0 + 1e-5),
                        "{f:?} {rows}x{cols} at ({j},{c}): {v} -> {r} (scale {d})"
                    );
                }
            }
            // Each scale is as small as its byte allows: a byte one step nearer zero
            // would clip the block's largest magnitude (f32 rounding of the product
            // aside); the group's largest takes the byte 127.
            for j in 0..rows {
                for b in 0..cols.div_ceil(BLOCK) {
                    let top = w[j * cols..][b * BLOCK..((b + 1) * BLOCK).min(cols)]
                        .iter()
                        .fold(0f32, |a, v| a.max(v.abs()));
                    let g = b / GROUP_BLOCKS;
                    let at = (j / QUAD * q.groups + g) * QUAD + j % QUAD;
                    let (byte, shared) =
                        (q.subs[at * GROUP_BLOCKS + b % GROUP_BLOCKS], q.supers[at]);
                    let codes = if f == QuantFormat::Q8 { 127.0 } else { 8.0 };
                    let d = q.scale(j, b).abs();
                    assert!(d * codes >= top * (1.0 - 1e-6), "{f:?} row {j} block {b}");
                    let below = (f32::from(byte).abs() - 1.0) * shared;
                    assert!(top == 0.0 || below * codes < top, "{f:?} row {j} block {b}");
                    let group = (0..GROUP_BLOCKS)
                        .map(|l| q.subs[at * GROUP_BLOCKS + l].unsigned_abs())
                        .max();
                    assert!(
                        group == Some(127) || shared == 0.0,
                        "{f:?} row {j} group {g}"
                    );
                }
            }
        }
    }
}

#[test]
fn empty_shapes_give_zeros_or_nothing() {
    for f in FORMATS {
        let q = QuantMatrix::quantize_f32(&[], 3, 0, f);
        let mut out = vec![f32::NAN; 6];
        q.matmul(&[], 2, &mut out, Isa::Plain);
        assert_eq!(out, [0.0; 6]);
        assert_eq!(q.dequantize(), Vec::<f32>::new());
        // Many rows of nothing (the bf16 entry, which may take the panel path).
        let mut out = vec![f32::NAN; 3 * DEQUANT_ROWS];
        q.matmul_bf16(&[], DEQUANT_ROWS, &mut out, super::super::isa());
        assert!(out.iter().all(|&v| v == 0.0));
        let q = QuantMatrix::quantize_f32(&[], 0, 40, f);
        q.matmul(&[1.0; 40], 1, &mut [], super::super::isa());
        let x = vec![bf16::ONE; 40 * DEQUANT_ROWS];
        q.matmul_bf16(&x, DEQUANT_ROWS, &mut [], super::super::isa());
        assert_eq!(q.size_bytes(), 0);
    }
}

#[test]
fn bf16_f32_and_packed_inputs_quantise_alike() {
    let w: Vec<bf16> = values(7 * 101, 5).into_iter().map(bf16::from_f32).collect();
    let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let packed = super::super::packed::PackedBf16::pack(&w, 7, 101);
    for f in FORMATS {
        let a = QuantMatrix::quantize_bf16(&w, 7, 101, f).dequantize();
        let b = QuantMatrix::quantize_f32(&wf, 7, 101, f).dequantize();
        let c = QuantMatrix::quantize_packed(&packed, f).dequantize();
        assert_eq!(a, b, "{f:?}");
        assert_eq!(a, c, "{f:?}");
    }
}

/// Every level the kernels can run at here.
fn levels() -> Vec<Isa> {
    Isa::available()
}

#[test]
fn activation_blocks_round_to_nearest_even_at_every_level() {
    for top in [127.0, TOP12] {
        // With `top` the block's largest, each value is its own q before rounding.
        let x = [top, 2.5, -3.5, 0.5, -0.5, 1.5, -1.0];
        for level in levels() {
            let mut q = [0i32; BLOCK];
            // SAFETY: `levels` only lists what this CPU runs.
            let d = unsafe {
                match level {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512Bf16 => avx512::quantize_act_block(&x, top, &mut q),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::AvxVnni => avx2::quantize_act_block(&x, top, &mut q),
                    Isa::Avx512Vnni => avx512::quantize_act_block(&x, top, &mut q),
                    #[cfg(target_arch = "aarch64")]
                    Isa::Neon | Isa::NeonDotprod | Isa::NeonBf16 => {
                        neon::quantize_act_block(&x, top, &mut q)
                    }
                    _ => quantize_act_block(&x, top, &mut q),
                }
            };
            assert_eq!(d, 1.0, "{level:?}");
            assert_eq!(q[..8], [top as i32, 2, -4, 0, 0, 2, -1, 0], "{level:?}");
        }
    }
}

#[test]
fn activations_quantise_to_the_same_values_at_every_level() {
    for &k in &[8, 31, 33, 100, 257, 2048] {
        let mut x = spiky_values(3 * k, k as u32, 0.02);
        x[k..(k + BLOCK).min(2 * k)].fill(0.0);
        for f in FORMATS {
            let groups = k.div_ceil(GROUP);
            let want = QuantActs::new(&x, 3, k, groups, f, Isa::Plain);
            for level in levels() {
                let got = QuantActs::new(&x, 3, k, groups, f, level);
                for (o, (a, b)) in got.q.iter().zip(&want.q).enumerate() {
                    assert_eq!(a.0, b.0, "{level:?} k={k} {f:?} line {o}");
                }
                for (a, b) in got.neg.iter().zip(&want.neg) {
                    assert_eq!(a.0, b.0, "{level:?} k={k} {f:?}");
                }
                for (a, b) in got.scale.iter().zip(&want.scale) {
                    assert_eq!(a.0, b.0, "{level:?} k={k} {f:?}");
                }
            }
        }
    }
    // Ties: each block's largest value is `top`, so its scale is 1 and every other
    // value, x.5, is its own quant before rounding (to even, at every level).
    let k = 600;
    for f in FORMATS {
        let top = if f == QuantFormat::Q8 { TOP12 } else { 127.0 };
        let x: Vec<f32> = (0..2 * k)
            .map(|i| match i % BLOCK {
                5 => top,
                _ => (i % 9) as f32 - 4.5,
            })
            .collect();
        let groups = k.div_ceil(GROUP);
        let want = QuantActs::new(&x, 2, k, groups, f, Isa::Plain);
        assert!(want
            .scale
            .iter()
            .flat_map(|s| s.0)
            .all(|d| d == 1.0 || d == 0.0));
        for level in levels() {
            let got = QuantActs::new(&x, 2, k, groups, f, level);
            assert!(
                got.q.iter().zip(&want.q).all(|(a, b)| a.0 == b.0),
                "{level:?} {f:?}"
            );
            assert!(got.neg.iter().zip(&want.neg).all(|(a, b)| a.0 == b.0));
        }
    }
}

#[test]
fn every_level_agrees_with_plain_on_awkward_sizes() {
    let awkward = [1, 7, 13, 300]
        .into_iter()
        .flat_map(|rows| [8, 31, 33, 100, 257, 2048].map(|cols| (rows, cols)));
    // Long rows: decoding two rows one at a time, prefill in K blocks.
    let shapes: Vec<(usize, usize)> = awkward.chain([(13, 5632), (5, 8192)]).collect();
    for (f, &(rows, cols)) in FORMATS
        .iter()
        .flat_map(|f| shapes.iter().map(move |s| (f, s)))
    {
        let w = values(rows * cols, (rows * cols) as u32);
        let q = QuantMatrix::quantize_f32(&w, rows, cols, *f);
        let deq = q.dequantize();
        for m in (1..=5).chain([15, 67]) {
            let x = values(m * cols, m as u32);
            let mut want = vec![0.0; m * rows];
            q.matmul(&x, m, &mut want, Isa::Plain);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; m * rows];
                q.matmul(&x, m, &mut got, isa);
                assert_eq!(q.matmul_to_vec(&x, m, isa), got, "{f:?} {isa:?}");
                for i in 0..m {
                    for j in 0..rows {
                        // Sums in another order: a few f32 roundings of the terms.
                        let bound: f32 = (0..cols)
                            .map(|c| (x[i * cols + c] * deq[j * cols + c]).abs())
                            .sum();
                        let (a, b) = (got[i * rows + j], want[i * rows + j]);
                        assert!(
                            (a - b).abs() <= 2e-6 * bound + 1e-6,
                            "{f:?} {isa:?} m={m} {rows}x{cols} at ({i},{j}): {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}

/// AVX-VNNI's dots are the AVX2 kernels' exact integer sums in the same lanes: every
/// row count (the quad kernels, 1-4 rows, streaming and not; the prefill tiles) gives
/// the AVX2 level's bits.
#[test]
fn avx_vnni_gives_the_avx2_bits() {
    if !Isa::AvxVnni.supported() {
        eprintln!("skipped: this CPU has no AVX-VNNI");
        return;
    }
    for f in FORMATS {
        for (rows, cols) in [(13, 1000), (36, 5632)] {
            let w = values(rows * cols, (rows * cols) as u32);
            let q = QuantMatrix::quantize_f32(&w, rows, cols, f);
            for m in [1, 2, 3, 4, 5, 15, 67] {
                // Outlier channels push blocks' quants to the ends of their ranges.
                let mut x = values(m * cols, 7 * m as u32);
                x.iter_mut().step_by(97).for_each(|v| *v *= 40.0);
                let want = q.matmul_to_vec(&x, m, Isa::Avx2);
                assert_eq!(q.matmul_to_vec(&x, m, Isa::AvxVnni), want, "{f:?} m={m}");
            }
        }
    }
}

/// At the levels whose integer dots outrun the AVX2 bf16 kernel, Q8 prefill stays on the
/// integer path (its bits whatever the row count), not through bf16 panels.
#[test]
fn q8_prefill_takes_the_integer_path_at_the_vnni_levels() {
    let (rows, cols, m) = (40, 700, DEQUANT_ROWS + 3);
    let q = QuantMatrix::quantize_f32(&values(rows * cols, 3), rows, cols, QuantFormat::Q8);
    let x: Vec<bf16> = values(m * cols, 4)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    for isa in [Isa::AvxVnni, Isa::Avx512Vnni] {
        if !isa.supported() {
            eprintln!("{isa:?} skipped: this CPU lacks it");
            continue;
        }
        let integer = q.matmul_to_vec(&x32, m, isa);
        assert_eq!(q.matmul_bf16_to_vec(&x, m, isa), integer, "{isa:?}");
    }
}

/// `RMS(got - want) / RMS(want)`.
fn relative_rms(got: &[f32], want: &[f32]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (err / norm).sqrt()
}

/// `x · wᵀ` for `x` `(m, k)` and `w` `(n, k)`, summed in f64.
fn exact_product(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let dot = |i: usize, j: usize| {
        let (x, w) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
        x.iter()
            .zip(w)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>() as f32
    };
    (0..m * n).map(|o| dot(o / n, o % n)).collect()
}

#[test]
fn products_are_close_to_the_exact_ones() {
    // Relative RMS errors measured (bell-shaped values; with 1% of them 8x larger):
    // Q8 0.48-0.50% (0.79-0.85%), Q4 7.8-8.2% (13.3-14.1%). The activations'
    // quantisation adds under 1% of that: the weights' error is all there is.
    let (n, k) = (256, 2048);
    for (spikes, q8_bound, q4_bound) in [(0.0, 0.006, 0.09), (0.01, 0.01, 0.15)] {
        let w = spiky_values(n * k, 11, spikes);
        for (f, bound) in [(QuantFormat::Q8, q8_bound), (QuantFormat::Q4, q4_bound)] {
            let q = QuantMatrix::quantize_f32(&w, n, k, f);
            let deq = q.dequantize();
            for m in [1, 2, 67] {
                let x = spiky_values(m * k, 12 + m as u32, spikes);
                let exact = exact_product(&x, &w, m, n, k);
                let mut got = vec![0.0; m * n];
                q.matmul(&x, m, &mut got, super::super::isa());
                let err = relative_rms(&got, &exact);
                let weights_only = relative_rms(&exact_product(&x, &deq, m, n, k), &exact);
                assert!(
                    err < bound && err < 1.02 * weights_only,
                    "{f:?} spikes {spikes} m={m}: relative RMS error {err} (bound {bound}; \
                     dequantised weights alone {weights_only})"
                );
            }
        }
    }
}

#[test]
fn dequantised_panels_hold_the_dequantised_weights_in_bf16_at_every_level() {
    // Partial panels and quads, a partial last group, an odd column count.
    let shapes = [(1, 8), (7, 31), (33, 513), (70, 1100), (36, 2048)];
    for (&(rows, cols), format) in shapes
        .iter()
        .flat_map(|s| [QuantFormat::Q8, QuantFormat::Q4].map(|f| (s, f)))
    {
        let w = spiky_values(rows * cols, (rows + cols) as u32, 0.01);
        let q = QuantMatrix::quantize_f32(&w, rows, cols, format);
        let deq = q.dequantize();
        for isa in Isa::available() {
            for j0 in (0..rows).step_by(2 * PANEL) {
                let mut panels = PackedBf16::zeros((2 * PANEL).min(rows - j0), cols);
                // Stale values from a previous use are overwritten.
                panels.panels_mut().fill(bf16::NAN);
                dequantize_panels(isa, &q, j0, &mut panels);
                let mut row = vec![0f32; cols];
                for r in 0..panels.rows() {
                    panels.row_f32(r, &mut row);
                    for (c, &v) in row.iter().enumerate() {
                        let want = super::super::narrow(deq[(j0 + r) * cols + c]).to_f32();
                        assert_eq!(
                            v.to_bits(),
                            want.to_bits(),
                            "{format:?} {isa:?} {rows}x{cols} row {} col {c}: {v} vs {want}",
                            j0 + r
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn q8_products_through_bf16_panels_agree_with_the_integer_ones() {
    // Relative RMS error against the exact product of bell-shaped values with 1% 8x
    // outliers: integer path 0.84%, through bf16 panels 0.86% (the weights' bf16
    // rounding on top of Q8's step; the activations are bf16 to begin with).
    for &(rows, cols, m) in &[(33, 513, 17), (70, 1100, 40), (256, 2048, 67)] {
        let w = spiky_values(rows * cols, 11, 0.01);
        let q = QuantMatrix::quantize_f32(&w, rows, cols, QuantFormat::Q8);
        let x: Vec<bf16> = spiky_values(m * cols, 5, 0.01)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let exact = exact_product(&x32, &w, m, rows, cols);
        let mut int = vec![0.0; m * rows];
        q.matmul(&x32, m, &mut int, Isa::Plain);
        let int_err = relative_rms(&int, &exact);
        let mut want = vec![0.0; m * rows];
        // SAFETY: `want` holds the (m, rows) output.
        unsafe { q.matmul_dequantized(&x, m, want.as_mut_ptr(), Isa::Plain) };
        let err = relative_rms(&want, &exact);
        assert!(err < 1.05 * int_err, "{rows}x{cols}: {err} vs {int_err}");
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * rows];
            // SAFETY: as above.
            unsafe { q.matmul_dequantized(&x, m, got.as_mut_ptr(), isa) };
            assert!(relative_rms(&got, &want) < 1e-6, "{isa:?} {rows}x{cols}");
            // The public entry takes this path (or the integer one) by itself.
            let mut got = vec![f32::NAN; m * rows];
            q.matmul_bf16(&x, m, &mut got, isa);
            assert!(relative_rms(&got, &exact) < 1.05 * int_err, "{isa:?}");
            assert_eq!(q.matmul_bf16_to_vec(&x, m, isa), got, "{isa:?}");
        }
    }
}

/// Q4 through bf16 panels (the route on AMX tiles) computes the product of its
/// dequantised weights, at every level; the public entry takes it where tiles exist.
/// At 16384 columns the tiles dequantise 32 rows per task (a partial last one).
#[test]
fn q4_products_through_bf16_panels_use_the_dequantised_weights() {
    for &(rows, cols, m) in &[
        (33, 513, 17),
        (70, 1100, 64),
        (64, 2048, 67),
        (70, 16384, 64),
    ] {
        let w = spiky_values(rows * cols, 13, 0.01);
        let q = QuantMatrix::quantize_f32(&w, rows, cols, QuantFormat::Q4);
        let x: Vec<bf16> = spiky_values(m * cols, 7, 0.01)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let exact = exact_product(&x32, &q.dequantize(), m, rows, cols);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * rows];
            // SAFETY: `got` holds the (m, rows) output.
            unsafe { q.matmul_dequantized(&x, m, got.as_mut_ptr(), isa) };
            // Only the weights' rounding to bf16 (2^-9 relative) separates them.
            let err = relative_rms(&got, &exact);
            assert!(err < 4e-3, "{isa:?} {rows}x{cols}: {err}");
            let dispatched = q.matmul_bf16_to_vec(&x, m, isa);
            if m >= DEQUANT_ROWS && PackedBf16::tiles_at(isa) {
                assert_eq!(dispatched, got, "{isa:?} {rows}x{cols}");
            } else {
                // The integer kernel: int8 activations on top.
                assert!(relative_rms(&dispatched, &exact) < 2e-2, "{isa:?}");
            }
        }
    }
}

/// On AMX tiles, Q8 and Q4 products rounded to bf16 with a bias as the tiles are stored
/// give the bits of the f32 product's separate rounding (several dequantised chunks at
/// 16384 columns, a partial last one); no such route below [`DEQUANT_ROWS`] rows or under
/// row invariance. Skipped, saying so, where the CPU has no AMX.
#[test]
fn tile_products_round_to_bf16_as_the_separate_pass_does() {
    if !PackedBf16::tiles_at(Isa::Avx512Bf16) {
        eprintln!("SKIPPED tile_products_round_to_bf16_as_the_separate_pass_does: no AMX here");
        return;
    }
    let isa = Isa::Avx512Bf16;
    for f in FORMATS {
        for &(rows, cols, m) in &[(33, 513, 70), (70, 16384, 64)] {
            let q = QuantMatrix::quantize_f32(&spiky_values(rows * cols, 17, 0.01), rows, cols, f);
            let x: Vec<bf16> = spiky_values(m * cols, 19, 0.01)
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            let bias: Vec<f32> = (0..rows).map(|j| j as f32 * 0.01 - 0.2).collect();
            let f32s = q.matmul_bf16_to_vec(&x, m, isa);
            for b in [None, Some(&bias[..])] {
                let mut want = vec![bf16::ZERO; m * rows];
                crate::kernels::fused::round_bf16_bias(&f32s, b, &mut want, isa);
                let got = q.matmul_bf16_to_bf16_tiles(&x, m, b, isa);
                assert_eq!(got, Some(want), "{f:?} {rows}x{cols}, bias {}", b.is_some());
            }
            let few = q.matmul_bf16_to_bf16_tiles(&x, DEQUANT_ROWS - 1, None, isa);
            assert_eq!(few, None, "{f:?}");
            let invariant = crate::kernels::with_row_invariance(true, || {
                q.matmul_bf16_to_bf16_tiles(&x, m, None, isa)
            });
            assert_eq!(invariant, None, "{f:?}");
        }
    }
}

/// Under [`crate::kernels::with_row_invariance`], each row's outputs are the same bits
/// whatever rows come with it (Q8 stays off its bf16-panel route), at every level.
#[test]
fn rows_get_their_bits_alone_under_row_invariance() {
    // Short rows, and rows long enough for K blocks.
    for (rows, cols) in [(40, 300), (12, 5632)] {
        let w = values(rows * cols, 41);
        let x: Vec<bf16> = values(80 * cols, 42)
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        for f in FORMATS {
            let q = QuantMatrix::quantize_f32(&w, rows, cols, f);
            for isa in levels() {
                crate::kernels::with_row_invariance(true, || {
                    let alone: Vec<f32> = (0..80)
                        .flat_map(|i| q.matmul_bf16_to_vec(&x[i * cols..(i + 1) * cols], 1, isa))
                        .collect();
                    for m in [2, 3, 5, 16, 63, 64, 80] {
                        let got = q.matmul_bf16_to_vec(&x[..m * cols], m, isa);
                        let differ = got
                            .iter()
                            .zip(&alone)
                            .filter(|(a, b)| a.to_bits() != b.to_bits())
                            .count();
                        assert_eq!(differ, 0, "{f:?} {isa:?} {m} rows of {rows}x{cols}");
                    }
                });
            }
        }
    }
}
