//! Fused small ops of the decode step, each replacing a chain of candle ops (and their
//! allocations) with one pass. They round exactly where the candle chains round, so the
//! results are identical, not merely close.

use half::bf16;
use rayon::prelude::*;

/// LLaMA's RMSNorm over rows of `d`: `round(round(x · rsqrt(mean(x²) + eps)) · w)`, the
/// two bf16 roundings of `(x / sqrt(var + eps)).to(bf16) * weight`.
pub fn rms_norm_bf16(x: &[bf16], w: &[bf16], d: usize, eps: f32, out: &mut [bf16]) {
    assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len() && w.len() == d);
    let row = |(xr, or): (&[bf16], &mut [bf16])| {
        let ss: f32 = xr.iter().map(|v| v.to_f32() * v.to_f32()).sum();
        let denom = (ss / d as f32 + eps).sqrt();
        for ((o, v), wv) in or.iter_mut().zip(xr).zip(w) {
            let n = bf16::from_f32(v.to_f32() / denom);
            *o = bf16::from_f32(n.to_f32() * wv.to_f32());
        }
    };
    if x.len() >= 1 << 16 {
        x.par_chunks(d).zip(out.par_chunks_mut(d)).for_each(row);
    } else {
        x.chunks(d).zip(out.chunks_mut(d)).for_each(row);
    }
}

/// LayerNorm over rows of `d`: `round(round(round(x̂) · w) + b)` with `x̂ = (x - mean) /
/// sqrt(var + eps)` in f32, the three bf16 roundings of the candle chain it replaces.
pub fn layer_norm_bf16(x: &[bf16], w: &[bf16], b: &[bf16], d: usize, eps: f32, out: &mut [bf16]) {
    assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len());
    assert!(w.len() == d && b.len() == d);
    let row = |(xr, or): (&[bf16], &mut [bf16])| {
        let mean = xr.iter().map(|v| v.to_f32()).sum::<f32>() / d as f32;
        let var = xr.iter().map(|v| (v.to_f32() - mean).powi(2)).sum::<f32>() / d as f32;
        let denom = (var + eps).sqrt();
        for (((o, v), wv), bv) in or.iter_mut().zip(xr).zip(w).zip(b) {
            let n = bf16::from_f32((v.to_f32() - mean) / denom);
            let m = bf16::from_f32(n.to_f32() * wv.to_f32());
            *o = bf16::from_f32(m.to_f32() + bv.to_f32());
        }
    };
    if x.len() >= 1 << 16 {
        x.par_chunks(d).zip(out.par_chunks_mut(d)).for_each(row);
    } else {
        x.chunks(d).zip(out.chunks_mut(d)).for_each(row);
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
) {
    assert!(dh.is_multiple_of(2) && x.len() == b * t * h * dh && out.len() == x.len());
    assert!(pos.len() == b * t);
    let half = dh / 2;
    let r = |v: f32| bf16::from_f32(v).to_f32();
    // One (b, h) plane of the output per chunk.
    out.par_chunks_mut(t * dh)
        .enumerate()
        .for_each(|(bh, plane)| {
            let (bi, hi) = (bh / h, bh % h);
            for i in 0..t {
                let p = pos[bi * t + i];
                let (c, s) = (&cos[p * dh..][..dh], &sin[p * dh..][..dh]);
                let src = &x[((bi * t + i) * h + hi) * dh..][..dh];
                let dst = &mut plane[i * dh..][..dh];
                for j in 0..dh {
                    let rot = if j < half {
                        -src[j + half].to_f32()
                    } else {
                        src[j - half].to_f32()
                    };
                    let a = r(src[j].to_f32() * r(c[j]));
                    let bb = r(rot * r(s[j]));
                    dst[j] = bf16::from_f32(a + bb);
                }
            }
        });
}

/// Elements per vectorised chunk of the activation functions.
const CHUNK: usize = 512;

/// `out = round(round(silu(g)) · u)`: SwiGLU's `silu(gate) * up` in bf16, with the
/// exponential vectorised.
pub fn silu_mul_bf16(g: &[bf16], u: &[bf16], out: &mut [bf16], isa: super::Isa) {
    assert!(g.len() == u.len() && out.len() == g.len());
    let run = |((gc, uc), oc): ((&[bf16], &[bf16]), &mut [bf16])| {
        let mut e = [0f32; CHUNK];
        let e = &mut e[..gc.len()];
        for (e, g) in e.iter_mut().zip(gc) {
            *e = -g.to_f32();
        }
        super::attention::exp_in_place(e, isa);
        for ((o, (g, u)), e) in oc.iter_mut().zip(gc.iter().zip(uc)).zip(e.iter()) {
            let s = bf16::from_f32(g.to_f32() / (1.0 + e));
            *o = bf16::from_f32(s.to_f32() * u.to_f32());
        }
    };
    let it = g
        .par_chunks(CHUNK)
        .zip(u.par_chunks(CHUNK))
        .zip(out.par_chunks_mut(CHUNK));
    it.for_each(run);
}

/// Exact (erf) GELU in bf16: `round(0.5 x (1 + erf(x/√2)))` with erf from the Chebyshev
/// fit of Numerical Recipes' `erfcc` (relative error < 1.2e-7) and a vectorised
/// exponential.
pub fn gelu_erf_bf16(x: &[bf16], out: &mut [bf16], isa: super::Isa) {
    assert!(out.len() == x.len());
    const C: [f32; 10] = [
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
    let run = |(xc, oc): (&[bf16], &mut [bf16])| {
        let mut e = [0f32; CHUNK];
        let e = &mut e[..xc.len()];
        // erfc(z) = t · exp(-z² + poly(t)), t = 1 / (1 + z/2), z = |x| / sqrt(2)
        for (e, x) in e.iter_mut().zip(xc) {
            let z = (x.to_f32() * std::f32::consts::FRAC_1_SQRT_2).abs();
            let t = 1.0 / (1.0 + 0.5 * z);
            let mut p = C[9];
            for &c in C[..9].iter().rev() {
                p = p * t + c;
            }
            *e = -z * z + p;
        }
        super::attention::exp_in_place(e, isa);
        for ((o, x), e) in oc.iter_mut().zip(xc).zip(e.iter()) {
            let x = x.to_f32();
            let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
            let erf_abs = 1.0 - e / (1.0 + 0.5 * z);
            let erf = if x < 0.0 { -erf_abs } else { erf_abs };
            // PyTorch's form and f32 roundings, `0.5 x (1 + erf(x/√2))`, so the far negative
            // tail flushes to zero exactly where the reference's does.
            *o = bf16::from_f32(0.5 * x * (1.0 + erf));
        }
    };
    x.par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(run);
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
    isa: super::Isa,
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
            let n = per as f64;
            let mean = xg.iter().map(|v| v.to_f32() as f64).sum::<f64>() / n;
            let var = xg
                .iter()
                .map(|v| (v.to_f32() as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let inv = 1.0 / (var as f32 + eps).sqrt();
            let mut e = vec![0f32; if silu { hw } else { 0 }];
            for (k, (xc, oc)) in xg.chunks(hw).zip(og.chunks_mut(hw)).enumerate() {
                let ch = g * (c / groups) + k;
                let scale = w[ch].to_f32() * inv;
                let shift = b[ch].to_f32() - mean as f32 * scale;
                for (o, v) in oc.iter_mut().zip(xc) {
                    *o = bf16::from_f32(v.to_f32() * scale + shift);
                }
                if silu {
                    for (e, o) in e.iter_mut().zip(oc.iter()) {
                        *e = -o.to_f32();
                    }
                    super::attention::exp_in_place(&mut e, isa);
                    for (o, e) in oc.iter_mut().zip(&e) {
                        *o = bf16::from_f32(o.to_f32() / (1.0 + e));
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{gemm::tests::values, Isa};

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
