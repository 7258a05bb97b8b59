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
