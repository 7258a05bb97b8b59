//! Quantising weights: per-block ideal scales, group-shared scales, rounding.

use super::*;

/// Stores block `l` of group `g` of the quad's row `r`, quants `q`, in its `lines`.
#[inline(always)]
pub(super) fn quantize_row_block(
    lines: &mut [Line],
    lpg: usize,
    g: usize,
    l: usize,
    r: usize,
    q: &[i8; BLOCK],
    format: QuantFormat,
) {
    // Chunk u takes quants 4u..4u + 4, in bytes 4l..4l + 4 of its line.
    for (u, q4) in q.chunks_exact(4).enumerate() {
        let (u0, byte) = chunk_pos(l, 4 * u);
        debug_assert_eq!(u0, u);
        let line = &mut lines[(g * lpg + u % lpg) * QUAD + r].0[byte..byte + 4];
        for (dst, &q) in line.iter_mut().zip(q4) {
            match format {
                QuantFormat::Q8 => *dst = q as u8,
                QuantFormat::Q4 => *dst |= ((q + 8) as u8) << (4 * (u / lpg)),
            }
        }
    }
}

/// A block's ideal scale (`w` at most [`BLOCK`] long): `max|w| / 127` (Q8), or for Q4
/// `-top / 8` with `top` the value of largest magnitude, so that it lands on -8.
#[inline(always)]
pub(super) fn ideal_scale(w: &[f32], format: QuantFormat) -> f32 {
    // The value of largest magnitude, with its sign (the first one on ties; NaNs never):
    // the largest magnitude as integer bits first, a maximum that vectorises.
    let magnitude = |v: f32| match v.to_bits() & 0x7fff_ffff {
        nan if nan > 0x7f80_0000 => 0,
        m => m,
    };
    let most = w.iter().map(|&v| magnitude(v)).max().unwrap_or(0);
    let top = match most {
        0 => 0.0,
        _ => w
            .iter()
            .copied()
            .find(|&v| magnitude(v) == most)
            .unwrap_or(0.0),
    };
    match format {
        QuantFormat::Q8 => top.abs() / 127.0,
        // Q4_0: the largest magnitude lands on -8, the code with no positive twin.
        QuantFormat::Q4 => top / -8.0,
    }
}

/// A group's shared scale `D` and scale bytes `s` for its blocks' ideal scales: `D` is
/// the largest magnitude over 127 and each `s` is `ideal / D` rounded away from zero, so
/// `|D s|` is at or just above the ideal (a block then never needs a quant beyond its
/// range but for f32 rounding, which its clamp absorbs). A group whose `D` is zero or
/// subnormal (weights below 1e-36) gets zeros.
#[inline(always)]
pub(super) fn group_scales(ideal: &[f32; GROUP_BLOCKS]) -> (f32, [i8; GROUP_BLOCKS]) {
    let most = ideal.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = most / 127.0;
    if !d.is_normal() {
        return (0.0, [0; GROUP_BLOCKS]);
    }
    let s = ideal.map(|e| {
        let s = e / d;
        let s = if s >= 0.0 { s.ceil() } else { s.floor() };
        s.clamp(-127.0, 127.0) as i8
    });
    (d, s)
}

/// The scale of a block with scale byte `s` in a group with shared scale `d`: one f32
/// product, the same in every kernel.
#[inline(always)]
pub(super) fn block_scale(s: i8, d: f32) -> f32 {
    f32::from(s) * d
}

/// One block's quants at scale `d` (`w` at most [`BLOCK`] long; the rest is zero
/// padding): `w / d` rounded to nearest and clamped to the format's range, so
/// `|w - d q| <= |d| / 2` where `|d|` is at least the block's ideal scale, except Q4's +8
/// clipped to +7 (`<= |d|`).
#[inline(always)]
pub(super) fn quantize_block(w: &[f32], d: f32, format: QuantFormat) -> [i8; BLOCK] {
    let mut q = [0i8; BLOCK];
    let (lo, hi) = match format {
        QuantFormat::Q8 => (-127.0, 127.0),
        QuantFormat::Q4 => (-8.0, 7.0),
    };
    if d != 0.0 {
        for (q, &v) in q.iter_mut().zip(w) {
            *q = (v / d).round().clamp(lo, hi) as i8;
        }
    }
    q
}
