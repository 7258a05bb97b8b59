//! Quantising activations on the fly into the weights' block layout.

use super::*;

/// Activations quantised per block into the weights' group layout: int8 for Q4 (one
/// line per chunk), 12-bit for Q8 (two lines of i16 per chunk: the chunk's even
/// elements, then its odd ones).
pub(super) struct QuantActs {
    /// Lines per group: 8 (int8) or 16 (i16).
    pub(super) lines: usize,
    /// `(m, groups, lines)`: the quants.
    pub(super) q: Vec<Line>,
    /// `(m, groups)`, int8 only: `-8 Σ q` per block, where the dot of the stored Q4
    /// nibbles (`q_w + 8`) starts so that it ends at the dot of the signed ones.
    pub(super) neg: Vec<Lanes<i32>>,
    /// `(m, groups)`: the block scales, `max|x| / 127` (int8) or `max|x| / 2047`.
    pub(super) scale: Vec<Lanes<f32>>,
}

/// The largest 12-bit activation quant: Q8's `256 q_w · q_x` sums (32 per lane and group)
/// stay inside i32 with it.
pub(super) const TOP12: f32 = 2047.0;

impl QuantActs {
    /// Quantises `x` `(m, k)` into `groups` groups per row (zero padded) for weights of
    /// `format`. Every level gives the same values (the scalar code is the reference).
    pub(super) fn new(
        x: &[f32],
        m: usize,
        k: usize,
        groups: usize,
        format: QuantFormat,
        level: Isa,
    ) -> Self {
        let wide = format == QuantFormat::Q8;
        let (lines, top) = if wide {
            (2 * CHUNKS, TOP12)
        } else {
            (CHUNKS, 127.0)
        };
        let mut acts = QuantActs {
            lines,
            q: vec![Line([0; 64]); m * groups * lines],
            neg: vec![Lanes([0; GROUP_BLOCKS]); m * groups],
            scale: vec![Lanes([0.0; GROUP_BLOCKS]); m * groups],
        };
        let rows = acts
            .q
            .chunks_mut(groups * lines)
            .zip(acts.neg.chunks_mut(groups))
            .zip(acts.scale.chunks_mut(groups))
            .zip(x.chunks(k));
        type Row<'a> = (
            ((&'a mut [Line], &'a mut [Lanes<i32>]), &'a mut [Lanes<f32>]),
            &'a [f32],
        );
        let one = |(((q, neg), scale), row): Row| {
            for g in 0..groups {
                #[cfg(target_arch = "x86_64")]
                if matches!(level, Isa::Avx512Bf16 | Isa::Avx512Vnni) {
                    let src = row.get(g * GROUP..((g + 1) * GROUP).min(k)).unwrap_or(&[]);
                    let lines = &mut q[g * lines..(g + 1) * lines];
                    // SAFETY: `level` was checked against the CPU; `lines` holds the
                    // group's lines.
                    unsafe {
                        avx512::quantize_act_group(
                            src,
                            top,
                            wide,
                            lines,
                            &mut neg[g],
                            &mut scale[g],
                        )
                    };
                    continue;
                }
                for l in 0..GROUP_BLOCKS {
                    let c0 = g * GROUP + l * BLOCK;
                    let src = row.get(c0..(c0 + BLOCK).min(k)).unwrap_or(&[]);
                    let mut block = [0i32; BLOCK];
                    // SAFETY: `level` was checked against the CPU.
                    scale[g].0[l] = unsafe {
                        match level {
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx512Bf16 | Isa::Avx512Vnni => {
                                avx512::quantize_act_block(src, top, &mut block)
                            }
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx2 | Isa::AvxVnni => {
                                avx2::quantize_act_block(src, top, &mut block)
                            }
                            #[cfg(target_arch = "aarch64")]
                            Isa::Neon | Isa::NeonDotprod | Isa::NeonBf16 => {
                                neon::quantize_act_block(src, top, &mut block)
                            }
                            _ => quantize_act_block(src, top, &mut block),
                        }
                    };
                    // Values 4u..4u + 4 go to bytes 4l..4l + 4 of chunk u (see
                    // `chunk_pos`); 12-bit ones as words, the even values to the
                    // chunk's even line and the odd ones to its odd line.
                    for (u, v) in block.chunks_exact(4).enumerate() {
                        if wide {
                            for (t, line) in q[(g * CHUNKS + u) * 2..][..2].iter_mut().enumerate() {
                                let pair = [v[t] as i16, v[t + 2] as i16];
                                let bytes = (pair[0] as u16 as u32) | (pair[1] as u16 as u32) << 16;
                                line.0[4 * l..4 * l + 4].copy_from_slice(&bytes.to_le_bytes());
                            }
                        } else {
                            let bytes = v.iter().map(|&q| q as i8 as u8);
                            for (d, b) in
                                q[g * CHUNKS + u].0[4 * l..4 * l + 4].iter_mut().zip(bytes)
                            {
                                *d = b;
                            }
                        }
                    }
                    if !wide {
                        neg[g].0[l] = -8 * block.iter().sum::<i32>();
                    }
                }
            }
        };
        // Prefill-sized inputs quantise on all threads; decode's few rows on this one.
        if m * k >= 1 << 16 {
            rows.par_bridge().for_each(one);
        } else {
            rows.for_each(one);
        }
        acts
    }
}

/// One activation block (`x` at most [`BLOCK`] long) quantised to `-top..=top` in `q`;
/// returns its scale. The reference for the vector versions, which give the same values.
pub(super) fn quantize_act_block(x: &[f32], top: f32, q: &mut [i32; BLOCK]) -> f32 {
    let (d, inv) = act_scale(x.iter().fold(0f32, |a, v| a.max(v.abs())), top);
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_even(v * inv) as i32;
    }
    d
}

/// An activation block's scale `max|x| / top` and the inverse its values are multiplied
/// by; both 0 for a block too small for `top / max` to stay finite (all zero, in practice).
pub(super) fn act_scale(amax: f32, top: f32) -> (f32, f32) {
    if amax >= 1e-30 {
        (amax / top, top / amax)
    } else {
        (0.0, 0.0)
    }
}

/// `v` rounded to nearest, ties to even, for `|v| < 2^22`: adding 1.5 · 2^23 leaves no
/// fraction bits (a vectorisable add instead of a `roundf` call on baseline x86-64), the
/// same rounding as `VCVTPS2DQ` under the default MXCSR.
pub(super) fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}
