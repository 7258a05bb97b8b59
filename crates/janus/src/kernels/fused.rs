//! Fused small ops of the decode step, each replacing a chain of candle ops (and their
//! allocations) with one pass. They round exactly where the candle chains round, so the
//! results are identical, not merely close.

use half::bf16;
use rayon::prelude::*;

use super::{narrow, vectorized_fn, widen, Isa};

/// LLaMA's RMSNorm over rows of `d`: `round(round(x · rsqrt(mean(x²) + eps)) · w)`, the
/// two bf16 roundings of `(x / sqrt(var + eps)).to(bf16) * weight`.
pub fn rms_norm_bf16(x: &[bf16], w: &[bf16], d: usize, eps: f32, out: &mut [bf16], isa: Isa) {
    assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len() && w.len() == d);
    let row = |(xr, or): (&[bf16], &mut [bf16])| rms_norm_row(isa, xr, w, eps, or);
    if x.len() >= 1 << 16 {
        x.par_chunks(d).zip(out.par_chunks_mut(d)).for_each(row);
    } else {
        x.chunks(d).zip(out.chunks_mut(d)).for_each(row);
    }
}

vectorized_fn! {
    fn rms_norm_row(isa: Isa, x: &[bf16], w: &[bf16], eps: f32, out: &mut [bf16]) {
        // In order, as the reference's f32 sum (so this loop stays scalar).
        let ss: f32 = x.iter().map(|&v| widen(v) * widen(v)).sum();
        let denom = (ss / x.len() as f32 + eps).sqrt();
        for ((o, &v), &wv) in out.iter_mut().zip(x).zip(w) {
            *o = narrow(widen(narrow(widen(v) / denom)) * widen(wv));
        }
    }
}

/// LayerNorm over rows of `d`: `round(round(round(x̂) · w) + b)` with `x̂ = (x - mean) /
/// sqrt(var + eps)` in f32, the three bf16 roundings of the candle chain it replaces.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_bf16(
    x: &[bf16],
    w: &[bf16],
    b: &[bf16],
    d: usize,
    eps: f32,
    out: &mut [bf16],
    isa: Isa,
) {
    assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len());
    assert!(w.len() == d && b.len() == d);
    let row = |(xr, or): (&[bf16], &mut [bf16])| layer_norm_row(isa, xr, w, b, eps, or);
    if x.len() >= 1 << 16 {
        x.par_chunks(d).zip(out.par_chunks_mut(d)).for_each(row);
    } else {
        x.chunks(d).zip(out.chunks_mut(d)).for_each(row);
    }
}

vectorized_fn! {
    fn layer_norm_row(isa: Isa, x: &[bf16], w: &[bf16], b: &[bf16], eps: f32, out: &mut [bf16]) {
        let d = x.len() as f32;
        let mean = x.iter().map(|&v| widen(v)).sum::<f32>() / d;
        let var = x.iter().map(|&v| (widen(v) - mean).powi(2)).sum::<f32>() / d;
        let denom = (var + eps).sqrt();
        for (((o, &v), &wv), &bv) in out.iter_mut().zip(x).zip(w).zip(b) {
            let n = narrow((widen(v) - mean) / denom);
            let m = narrow(widen(n) * widen(wv));
            *o = narrow(widen(m) + widen(bv));
        }
    }
}

/// Rotary embedding (rotate-half form) of `x` laid out `(B, T, H, Dh)`, written as
/// `(B, H, T, Dh)`: `round(round(x · cos) + round(rot(x) · sin))` with `cos`/`sin` already
/// rounded to bf16, the roundings of the candle chain. `pos[b * t + i]` is the table row of
/// token `i` of row `b`; `cos`/`sin` are `(positions, Dh)` f32.
#[allow(clippy::too_many_arguments)]
pub fn rope_bf16(
    x: &[bf16],
    b: usize,
    t: usize,
    h: usize,
    dh: usize,
    pos: &[usize],
    cos: &[f32],
    sin: &[f32],
    out: &mut [bf16],
    isa: Isa,
) {
    assert!(dh.is_multiple_of(2) && x.len() == b * t * h * dh && out.len() == x.len());
    assert!(pos.len() == b * t);
    // One (b, h) plane of the output per chunk.
    let plane = |(bh, plane): (usize, &mut [bf16])| {
        let (bi, hi) = (bh / h, bh % h);
        for (i, dst) in plane.chunks_exact_mut(dh).enumerate() {
            let p = pos[bi * t + i];
            let src = &x[((bi * t + i) * h + hi) * dh..][..dh];
            rope_row(isa, src, &cos[p * dh..][..dh], &sin[p * dh..][..dh], dst);
        }
    };
    // A decoding step's few rows take about a microsecond: less than a parallel loop's
    // start.
    if x.len() <= PARALLEL_MIN {
        out.chunks_mut(t * dh).enumerate().for_each(plane);
    } else {
        out.par_chunks_mut(t * dh).enumerate().for_each(plane);
    }
}

vectorized_fn! {
    fn rope_row(isa: Isa, x: &[bf16], cos: &[f32], sin: &[f32], out: &mut [bf16]) {
        let half = x.len() / 2;
        let r = |v: f32| widen(narrow(v));
        // Every slice cut to `half` exactly, so the loop runs without bounds checks and
        // vectorises.
        let (x_lo, x_hi) = (&x[..half], &x[half..2 * half]);
        let (c_lo, c_hi) = (&cos[..half], &cos[half..2 * half]);
        let (s_lo, s_hi) = (&sin[..half], &sin[half..2 * half]);
        let (o_lo, o_hi) = out[..2 * half].split_at_mut(half);
        // First half: x·cos - x[j + half]·sin; second: x·cos + x[j - half]·sin.
        for j in 0..half {
            let (lo, hi) = (widen(x_lo[j]), widen(x_hi[j]));
            o_lo[j] = narrow(r(lo * r(c_lo[j])) + r(-hi * r(s_lo[j])));
            o_hi[j] = narrow(r(hi * r(c_hi[j])) + r(lo * r(s_hi[j])));
        }
    }
}

vectorized_fn! {
    /// `out = round(x)`, f32 to bf16 (nearest even).
    pub fn round_into(isa: Isa, x: &[f32], out: &mut [bf16]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = narrow(v);
        }
    }
}

/// `x` widened to f32, in parallel chunks.
pub fn widened(isa: Isa, x: &[bf16]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    x.par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(|(x, out)| widen_into(isa, x, out));
    out
}

vectorized_fn! {
    fn widen_into(isa: Isa, x: &[bf16], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = widen(v);
        }
    }
}

/// `out = round(a + b)` in bf16 (the sum in f32, as PyTorch's and candle's bf16 add), in
/// parallel chunks.
pub fn add_bf16(a: &[bf16], b: &[bf16], out: &mut [bf16], isa: Isa) {
    assert!(a.len() == b.len() && out.len() == a.len());
    if a.len() <= PARALLEL_MIN {
        return add_chunk(isa, a, b, out);
    }
    a.par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(|((a, b), out)| add_chunk(isa, a, b, out));
}

vectorized_fn! {
    fn add_chunk(isa: Isa, a: &[bf16], b: &[bf16], out: &mut [bf16]) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = narrow(widen(a) + widen(b));
        }
    }
}

/// `out = round(x)`, f32 to bf16 (nearest even), in parallel chunks.
pub fn round_bf16(x: &[f32], out: &mut [bf16], isa: Isa) {
    assert!(out.len() == x.len());
    if x.len() <= PARALLEL_MIN {
        return round_into(isa, x, out);
    }
    x.par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(|(x, out)| round_into(isa, x, out));
}

/// [`round_bf16`] of `x + bias` with `bias` added to every row (`x` rows of
/// `bias.len()`): `round(x + b)`, the f32 sum a separate bias add gives, in one parallel
/// pass. Without a bias, [`round_bf16`].
pub fn round_bf16_bias(x: &[f32], bias: Option<&[f32]>, out: &mut [bf16], isa: Isa) {
    let Some(b) = bias.filter(|b| !b.is_empty()) else {
        return round_bf16(x, out, isa);
    };
    let n = b.len();
    assert!(out.len() == x.len() && n > 0 && x.len().is_multiple_of(n));
    // Whole rows per task, about CHUNK values or more.
    let rows = CHUNK.div_ceil(n);
    let task = |(x, out): (&[f32], &mut [bf16])| {
        for (x, out) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            round_bias_into(isa, x, b, out);
        }
    };
    if x.len() <= PARALLEL_MIN {
        task((x, out));
    } else {
        x.par_chunks(rows * n)
            .zip(out.par_chunks_mut(rows * n))
            .for_each(task);
    }
}

vectorized_fn! {
    /// `out = round(x + b)`, f32 to bf16 (nearest even), one row.
    pub(crate) fn round_bias_into(isa: Isa, x: &[f32], b: &[f32], out: &mut [bf16]) {
        for ((o, &v), &b) in out.iter_mut().zip(x).zip(b) {
            *o = narrow(v + b);
        }
    }
}

/// Elements below which the elementwise maps run on the calling thread (a decoding
/// step's rows: handing them to the pool costs more than the work).
const PARALLEL_MIN: usize = 1 << 14;

/// Elements per vectorised chunk of the activation functions.
const CHUNK: usize = 512;

/// Numerical Recipes' `erfcc` Chebyshev coefficients.
const ERFC_POLY: [f32; 10] = [
    -1.265_512_2,
    1.000_023_7,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_204,
    1.488_515_9,
    -0.822_152_2,
    0.170_872_77,
];

/// `out = round(round(silu(g)) · u)`: SwiGLU's `silu(gate) * up` in bf16, with the
/// exponential vectorised.
pub fn silu_mul_bf16(g: &[bf16], u: &[bf16], out: &mut [bf16], isa: Isa) {
    assert!(g.len() == u.len() && out.len() == g.len());
    let it = g
        .par_chunks(CHUNK)
        .zip(u.par_chunks(CHUNK))
        .zip(out.par_chunks_mut(CHUNK));
    it.for_each(|((g, u), out)| silu_mul_chunk(isa, g, u, out));
}

vectorized_fn! {
    fn silu_mul_chunk(isa: Isa, g: &[bf16], u: &[bf16], out: &mut [bf16]) {
        let mut e = [0f32; CHUNK];
        let e = &mut e[..g.len()];
        for (e, &g) in e.iter_mut().zip(g) {
            *e = -widen(g);
        }
        super::math::exp_in_place(e, isa);
        for ((o, (&g, &u)), &e) in out.iter_mut().zip(g.iter().zip(u)).zip(e.iter()) {
            *o = narrow(widen(narrow(widen(g) / (1.0 + e))) * widen(u));
        }
    }
}

/// Exact (erf) GELU in bf16: `round(0.5 x (1 + erf(x/√2)))` with erf from the Chebyshev
/// fit of Numerical Recipes' `erfcc` (relative error < 1.2e-7) and a vectorised
/// exponential.
pub fn gelu_erf_bf16(x: &[bf16], out: &mut [bf16], isa: Isa) {
    assert!(out.len() == x.len());
    x.par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(|(x, out)| gelu_erf_chunk(isa, x, out));
}

vectorized_fn! {
    fn gelu_erf_chunk(isa: Isa, x: &[bf16], out: &mut [bf16]) {
        let mut e = [0f32; CHUNK];
        let e = &mut e[..x.len()];
        // erfc(z) = t · exp(-z² + poly(t)), t = 1 / (1 + z/2), z = |x| / sqrt(2)
        for (e, &x) in e.iter_mut().zip(x) {
            let z = (widen(x) * std::f32::consts::FRAC_1_SQRT_2).abs();
            let t = 1.0 / (1.0 + 0.5 * z);
            let mut p = ERFC_POLY[9];
            for &c in ERFC_POLY[..9].iter().rev() {
                p = p * t + c;
            }
            *e = -z * z + p;
        }
        super::math::exp_in_place(e, isa);
        for ((o, &x), &e) in out.iter_mut().zip(x).zip(e.iter()) {
            let x = widen(x);
            let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
            let erf_abs = 1.0 - e / (1.0 + 0.5 * z);
            let erf = if x < 0.0 { -erf_abs } else { erf_abs };
            // PyTorch's form and f32 roundings, `0.5 x (1 + erf(x/√2))`, so the far
            // negative tail flushes to zero exactly where the reference's does.
            *o = narrow(0.5 * x * (1.0 + erf));
        }
    }
}

/// GroupNorm (then SiLU when `silu`) of `x` `(B, C, HW)`: statistics per (row, group) and
/// the affine map in f32, rounded to bf16 once, as PyTorch's bf16 `group_norm` does; the
/// SiLU is PyTorch's separate bf16 op (f32 inside, rounded once).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bf16(
    x: &[bf16],
    c: usize,
    hw: usize,
    groups: usize,
    w: &[bf16],
    b: &[bf16],
    eps: f32,
    silu: bool,
    out: &mut [bf16],
    isa: Isa,
) {
    assert!(groups > 0 && c.is_multiple_of(groups) && w.len() == c && b.len() == c);
    assert!(out.len() == x.len() && x.len().is_multiple_of(c * hw.max(1)));
    let per = (c / groups) * hw;
    if per == 0 {
        return;
    }
    x.par_chunks(per)
        .zip(out.par_chunks_mut(per))
        .enumerate()
        .for_each(|(i, (xg, og))| {
            let g = i % groups;
            let (mean, var) = group_stats(isa, xg);
            let inv = 1.0 / (var as f32 + eps).sqrt();
            for (k, (xc, oc)) in xg.chunks(hw).zip(og.chunks_mut(hw)).enumerate() {
                let ch = g * (c / groups) + k;
                let scale = widen(w[ch]) * inv;
                let shift = widen(b[ch]) - mean as f32 * scale;
                affine_silu(isa, xc, scale, shift, silu, oc);
            }
        });
}

/// Mean and (biased) variance of `x` in f64, summed in 8 interleaved lanes.
fn group_stats(isa: Isa, x: &[bf16]) -> (f64, f64) {
    let mut sums = [0f64; 2];
    group_sums(isa, x, None, &mut sums[0]);
    let mean = sums[0] / x.len() as f64;
    group_sums(isa, x, Some(mean), &mut sums[1]);
    (mean, sums[1] / x.len() as f64)
}

vectorized_fn! {
    /// `Σ x` (`center` None) or `Σ (x - center)²` into `out`.
    fn group_sums(isa: Isa, x: &[bf16], center: Option<f64>, out: &mut f64) {
        let mut lanes = [0f64; 8];
        let mut chunks = x.chunks_exact(8);
        let term = |v: bf16| match center {
            None => widen(v) as f64,
            Some(c) => (widen(v) as f64 - c) * (widen(v) as f64 - c),
        };
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += term(v);
            }
        }
        *out = lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&v| term(v)).sum::<f64>();
    }
}

vectorized_fn! {
    fn affine_silu(isa: Isa, x: &[bf16], scale: f32, shift: f32, silu: bool, out: &mut [bf16]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = narrow(widen(v) * scale + shift);
        }
        if silu {
            for chunk in out.chunks_mut(CHUNK) {
                let mut e = [0f32; CHUNK];
                let e = &mut e[..chunk.len()];
                for (e, &o) in e.iter_mut().zip(chunk.iter()) {
                    *e = -widen(o);
                }
                super::math::exp_in_place(e, isa);
                for (o, &e) in chunk.iter_mut().zip(e.iter()) {
                    *o = narrow(widen(*o) / (1.0 + e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{gemm::tests::values, Isa};

    /// Values spread over several binades (plus zeros), so roundings and ties occur.
    fn spread(len: usize, seed: u32) -> Vec<bf16> {
        values(len, seed)
            .iter()
            .enumerate()
            .map(|(i, v)| bf16::from_f32(v.to_f32() * [0.0, 0.01, 1.0, 9.0, 120.0][i % 5]))
            .collect()
    }

    /// The elementwise kernels give the same bits at every level (only the exponential
    /// differs between the plain level and the vector ones, so those ops compare the
    /// vector levels with each other), on awkward lengths.
    #[test]
    fn every_level_gives_the_same_bits() {
        let levels = Isa::available();
        let run_all = |name: &str, f: &dyn Fn(Isa) -> Vec<bf16>, with_exp: bool| {
            let outs: Vec<(Isa, Vec<bf16>)> = levels
                .iter()
                .filter(|&&l| !with_exp || l > Isa::Plain)
                .map(|&l| (l, f(l)))
                .collect();
            for (l, o) in &outs[1..] {
                let same = o
                    .iter()
                    .zip(&outs[0].1)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name}: {l:?} differs from {:?}", outs[0].0);
            }
        };
        for d in [1, 7, 33, 130] {
            let x = spread(3 * d, d as u32);
            let (w, b) = (spread(d, 5), spread(d, 6));
            run_all(
                "rms_norm",
                &|isa| {
                    let mut o = vec![bf16::ZERO; x.len()];
                    rms_norm_bf16(&x, &w, d, 1e-6, &mut o, isa);
                    o
                },
                false,
            );
            run_all(
                "layer_norm",
                &|isa| {
                    let mut o = vec![bf16::ZERO; x.len()];
                    layer_norm_bf16(&x, &w, &b, d, 1e-6, &mut o, isa);
                    o
                },
                false,
            );
        }
        // RoPE: (B, T, H, Dh) = (2, 3, 2, 10) over a table of 5 positions.
        let (bt, t, h, dh) = (2, 3, 2, 10);
        let x = spread(bt * t * h * dh, 9);
        let cos: Vec<f32> = spread(5 * dh, 10).iter().map(|v| v.to_f32()).collect();
        let sin: Vec<f32> = spread(5 * dh, 11).iter().map(|v| v.to_f32()).collect();
        let pos = [0, 1, 4, 2, 3, 0];
        run_all(
            "rope",
            &|isa| {
                let mut o = vec![bf16::ZERO; x.len()];
                rope_bf16(&x, bt, t, h, dh, &pos, &cos, &sin, &mut o, isa);
                o
            },
            false,
        );
        for len in [1, 15, 17, 513, 1100] {
            let (g, u) = (spread(len, 12), spread(len, 13));
            run_all(
                "silu_mul",
                &|isa| {
                    let mut o = vec![bf16::ZERO; len];
                    silu_mul_bf16(&g, &u, &mut o, isa);
                    o
                },
                true,
            );
            run_all(
                "gelu",
                &|isa| {
                    let mut o = vec![bf16::ZERO; len];
                    gelu_erf_bf16(&g, &mut o, isa);
                    o
                },
                true,
            );
        }
        let (c, hw) = (4, 37);
        let x = spread(2 * c * hw, 14);
        for silu in [false, true] {
            run_all(
                "group_norm",
                &|isa| {
                    let mut o = vec![bf16::ZERO; x.len()];
                    group_norm_bf16(&x, c, hw, 2, &w4(), &w4(), 1e-6, silu, &mut o, isa);
                    o
                },
                silu,
            );
        }
    }

    fn w4() -> Vec<bf16> {
        spread(4, 15)
    }

    #[test]
    fn adds_and_roundings_match_half_at_every_level_and_length() {
        // Short (one thread) and long (parallel chunks, a partial last one) lengths.
        for len in [1, 7, 513, PARALLEL_MIN + 1, 3 * CHUNK * 20 + 5] {
            let (a, b) = (spread(len, 3), spread(len, 4));
            let x: Vec<f32> = a
                .iter()
                .zip(&b)
                .map(|(a, b)| a.to_f32() * 1.37 + b.to_f32())
                .collect();
            let sum: Vec<u16> = a.iter().zip(&b).map(|(a, b)| (*a + *b).to_bits()).collect();
            let rounded: Vec<u16> = x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
            for isa in Isa::available() {
                let mut o = vec![bf16::NAN; len];
                add_bf16(&a, &b, &mut o, isa);
                assert!(
                    o.iter().map(|v| v.to_bits()).eq(sum.iter().copied()),
                    "add {isa:?} {len}"
                );
                let mut o = vec![bf16::NAN; len];
                round_bf16(&x, &mut o, isa);
                assert!(
                    o.iter().map(|v| v.to_bits()).eq(rounded.iter().copied()),
                    "round {isa:?} {len}"
                );
            }
        }
    }

    #[test]
    fn bias_roundings_match_a_separate_add_at_every_level() {
        // Rows of odd widths; one thread and parallel row blocks (a partial last one).
        for (rows, n) in [(1, 1), (3, 7), (5, 513), (40, 515), (70, 1000)] {
            let x: Vec<f32> = spread(rows * n, 5)
                .iter()
                .map(|v| v.to_f32() * 3.1)
                .collect();
            let b: Vec<f32> = spread(n, 6).iter().map(|v| v.to_f32() * 0.7).collect();
            let want: Vec<u16> = x
                .chunks(n)
                .flat_map(|row| {
                    row.iter()
                        .zip(&b)
                        .map(|(x, b)| bf16::from_f32(x + b).to_bits())
                })
                .collect();
            for isa in Isa::available() {
                let mut o = vec![bf16::NAN; rows * n];
                round_bf16_bias(&x, Some(&b), &mut o, isa);
                assert!(
                    o.iter().map(|v| v.to_bits()).eq(want.iter().copied()),
                    "{isa:?} {rows}x{n}"
                );
            }
        }
        let mut o = [bf16::NAN; 2];
        round_bf16_bias(&[1.0, 2.0], None, &mut o, Isa::Plain);
        assert_eq!(o, [bf16::ONE, bf16::from_f32(2.0)]);
    }

    #[test]
    fn group_norm_matches_the_definition_within_one_bf16_step() {
        let (b, c, hw, groups) = (2, 8, 13, 4);
        let x: Vec<bf16> = values(b * c * hw, 1)
            .iter()
            .map(|v| bf16::from_f32(v.to_f32() * 3.0 + 0.5))
            .collect();
        let w = values(c, 2);
        let bias = values(c, 3);
        for silu in [false, true] {
            for isa in Isa::available() {
                let mut out = vec![bf16::ZERO; x.len()];
                group_norm_bf16(&x, c, hw, groups, &w, &bias, 1e-6, silu, &mut out, isa);
                let per = c / groups * hw;
                for (i, o) in out.iter().enumerate() {
                    let (row, ch) = (i / (c * hw), (i / hw) % c);
                    let g0 = row * c * hw + (ch / (c / groups)) * per;
                    let grp = &x[g0..g0 + per];
                    let mean = grp.iter().map(|v| v.to_f64()).sum::<f64>() / per as f64;
                    let var =
                        grp.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / per as f64;
                    let mut y = (x[i].to_f64() - mean) / (var + 1e-6).sqrt() * w[ch].to_f64()
                        + bias[ch].to_f64();
                    if silu {
                        y /= 1.0 + (-y).exp();
                    }
                    let tol = y.abs() * 2f64.powi(-7) + 1e-3;
                    assert!(
                        (o.to_f64() - y).abs() <= tol,
                        "{isa:?} silu={silu} at {i}: {} vs {y}",
                        o.to_f32()
                    );
                }
            }
        }
    }
}
