//! aarch64 quant kernels (see the parent module for the layout): a 128-bit register holds
//! a quarter of a line, blocks `4q..4q + 4`, one dword lane each, so a group's float work
//! (convert, scale, add) still comes once per block quad and nothing is shuffled. The
//! quad's weight rows are taken one at a time, the activations coming from L1 for each.
//!
//! NEON has no 4-byte dot product: the products are widened (`SMLAL`) into lanes of
//! adjacent bytes or words and the lanes of a block added pairwise once per group. With
//! the dot-product extension, Q4 takes `SDOT`, which sums a lane's four byte products in
//! place. Q8's 12-bit activations are words, so it stays on `SMLAL` at every level.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{act_scale, TileArgs, BLOCK, CHUNKS};

/// # Safety
/// As [`super::tile`] for Q4 (NEON is part of every aarch64 CPU).
pub(super) unsafe fn tile_q4(rows: usize, a: TileArgs) {
    for r in 0..a.cols {
        match rows {
            1 => kernel_q4::<1>(a, r),
            2 => kernel_q4::<2>(a, r),
            3 => kernel_q4::<3>(a, r),
            _ => kernel_q4::<4>(a, r),
        }
    }
}

/// # Safety
/// As [`super::tile`] for Q4, with the dot-product extension present.
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn tile_q4_dotprod(rows: usize, a: TileArgs) {
    for r in 0..a.cols {
        match rows {
            1 => kernel_q4_dotprod::<1>(a, r),
            2 => kernel_q4_dotprod::<2>(a, r),
            3 => kernel_q4_dotprod::<3>(a, r),
            _ => kernel_q4_dotprod::<4>(a, r),
        }
    }
}

/// # Safety
/// As [`super::tile`] for Q8 (NEON is part of every aarch64 CPU).
pub(super) unsafe fn tile_q8(rows: usize, a: TileArgs) {
    for r in 0..a.cols {
        match rows {
            1 => kernel_q8::<1>(a, r),
            2 => kernel_q8::<2>(a, r),
            3 => kernel_q8::<3>(a, r),
            _ => kernel_q8::<4>(a, r),
        }
    }
}

/// Quarter `q` (16 bytes) of a 64-byte line.
#[inline(always)]
unsafe fn quarter<T>(line: *const T, q: usize) -> *const T {
    line.cast::<u8>().add(16 * q).cast()
}

/// The group's 16 block scales of the quad's row `r`, as [`super::block_scale`]
/// computes them, one register per quarter.
///
/// # Safety
/// As [`super::TileArgs::w_scales`].
#[inline(always)]
unsafe fn scales(a: &TileArgs, g: usize, r: usize) -> [float32x4_t; 4] {
    let (s, d) = a.w_scales(g, r);
    let s = vld1q_s8(s);
    let (lo, hi) = (vmovl_s8(vget_low_s8(s)), vmovl_high_s8(s));
    [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ]
    .map(|s| vmulq_n_f32(vcvtq_f32_s32(s), d))
}

/// The 4 activation block scales of quarter `q` of row `i`'s group `g`.
#[inline(always)]
unsafe fn act_scales(a: &TileArgs, i: usize, g: usize, q: usize) -> float32x4_t {
    vld1q_f32(quarter(a.dx.add(i * a.stride + g), q).cast())
}

/// The quad's row `r` unpacked from quarter `q` of Q4 line `c` of group `g`: the low
/// nibbles (chunk `c`) and the high ones (chunk `c + 4`), each `q_w + 8` in 0..=15.
#[inline(always)]
unsafe fn nibbles(a: &TileArgs, g: usize, c: usize, r: usize, q: usize) -> [int8x16_t; 2] {
    let v = vld1q_u8(quarter(a.w_line(CHUNKS / 2, g, c, r), q).cast());
    [
        vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)),
    ]
}

/// Quarter `q` of row `i`'s int8 activation line `u` of group `g`.
#[inline(always)]
unsafe fn act_bytes(a: &TileArgs, i: usize, g: usize, u: usize, q: usize) -> int8x16_t {
    vld1q_s8(quarter(a.xq.add((i * a.stride + g) * CHUNKS + u), q).cast())
}

/// Quarter `q` of `-8 Σ q_x` for row `i`'s group `g`, where a block's dot of the stored
/// nibbles starts so that it ends at the dot of the signed weights.
#[inline(always)]
unsafe fn neg(a: &TileArgs, i: usize, g: usize, q: usize) -> int32x4_t {
    vld1q_s32(quarter(a.neg.add(i * a.stride + g), q).cast())
}

/// Q4 weights (the quad's row `r`) times int8 activations with widening multiplies: a
/// block's byte products land in 4 adjacent i16 lanes (8 products each per group, at
/// most 8 · 15 · 127 in magnitude: no overflow), added pairwise into its dword at the end
/// of the group.
unsafe fn kernel_q4<const R: usize>(a: TileArgs, r: usize) {
    let mut acc = [vdupq_n_f32(0.0); R];
    for g in 0..a.groups {
        let dw = scales(&a, g, r);
        for (q, &dw) in dw.iter().enumerate() {
            // Blocks 4q, 4q + 1 in `lo`; 4q + 2, 4q + 3 in `hi`.
            let mut lo = [vdupq_n_s16(0); R];
            let mut hi = [vdupq_n_s16(0); R];
            for c in 0..CHUNKS / 2 {
                let w = nibbles(&a, g, c, r, q);
                for i in 0..R {
                    for (h, &w) in w.iter().enumerate() {
                        let x = act_bytes(&a, i, g, c + h * CHUNKS / 2, q);
                        lo[i] = vmlal_s8(lo[i], vget_low_s8(w), vget_low_s8(x));
                        hi[i] = vmlal_high_s8(hi[i], w, x);
                    }
                }
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let sums = vpaddq_s32(vpaddlq_s16(lo[i]), vpaddlq_s16(hi[i]));
                let dot = vaddq_s32(neg(&a, i, g, q), sums);
                let d = vmulq_f32(dw, act_scales(&a, i, g, q));
                *acc = vfmaq_f32(*acc, vcvtq_f32_s32(dot), d);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        a.store(i, r, vaddvq_f32(*acc));
    }
}

/// `acc + SDOT(a, b)`: lane `l` gains the sum of the 4 products of bytes `4l..4l + 4`.
/// Written as assembly: the intrinsic is not stable in Rust.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: a register-only instruction of the dot-product extension, which the caller
    // has.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// [`kernel_q4`] with `SDOT`: the nibbles (0..=15, so valid signed bytes) times the
/// activations, each block's 4 products summed into its dword from `-8 Σ q_x` on.
#[target_feature(enable = "dotprod")]
unsafe fn kernel_q4_dotprod<const R: usize>(a: TileArgs, r: usize) {
    let mut acc = [vdupq_n_f32(0.0); R];
    for g in 0..a.groups {
        let dw = scales(&a, g, r);
        for (q, &dw) in dw.iter().enumerate() {
            let mut dot: [int32x4_t; R] = [vdupq_n_s32(0); R];
            for (i, dot) in dot.iter_mut().enumerate() {
                *dot = neg(&a, i, g, q);
            }
            for c in 0..CHUNKS / 2 {
                let w = nibbles(&a, g, c, r, q);
                for (i, dot) in dot.iter_mut().enumerate() {
                    for (h, &w) in w.iter().enumerate() {
                        *dot = sdot(*dot, w, act_bytes(&a, i, g, c + h * CHUNKS / 2, q));
                    }
                }
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let d = vmulq_f32(dw, act_scales(&a, i, g, q));
                *acc = vfmaq_f32(*acc, vcvtq_f32_s32(dot[i]), d);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        a.store(i, r, vaddvq_f32(*acc));
    }
}

/// Q8 weights (the quad's row `r`) times 12-bit activations: a quarter's words hold the
/// even weights of its 4 blocks in their low bytes and the odd ones in their high bytes,
/// sign-extended by shifts and multiplied (`SMLAL`) with the chunk's even and odd
/// activation words into one i32 lane per word pair; a block's two lanes are added at
/// the end of the group (16 products of at most 127 · 2047 each: no overflow).
unsafe fn kernel_q8<const R: usize>(a: TileArgs, r: usize) {
    let mut acc = [vdupq_n_f32(0.0); R];
    for g in 0..a.groups {
        let dw = scales(&a, g, r);
        for (q, &dw) in dw.iter().enumerate() {
            let x = |i: usize, line: usize| {
                vld1q_s16(quarter(a.xq.add((i * a.stride + g) * 2 * CHUNKS + line), q).cast())
            };
            // Blocks 4q, 4q + 1 in `lo`; 4q + 2, 4q + 3 in `hi`.
            let mut lo = [vdupq_n_s32(0); R];
            let mut hi = [vdupq_n_s32(0); R];
            for u in 0..CHUNKS {
                let v =
                    vreinterpretq_s16_u8(vld1q_u8(quarter(a.w_line(CHUNKS, g, u, r), q).cast()));
                let even = vshrq_n_s16::<8>(vshlq_n_s16::<8>(v));
                let odd = vshrq_n_s16::<8>(v);
                for i in 0..R {
                    let (xe, xo) = (x(i, 2 * u), x(i, 2 * u + 1));
                    lo[i] = vmlal_s16(lo[i], vget_low_s16(even), vget_low_s16(xe));
                    hi[i] = vmlal_high_s16(hi[i], even, xe);
                    lo[i] = vmlal_s16(lo[i], vget_low_s16(odd), vget_low_s16(xo));
                    hi[i] = vmlal_high_s16(hi[i], odd, xo);
                }
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let dot = vpaddq_s32(lo[i], hi[i]);
                let d = vmulq_f32(dw, act_scales(&a, i, g, q));
                *acc = vfmaq_f32(*acc, vcvtq_f32_s32(dot), d);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        a.store(i, r, vaddvq_f32(*acc));
    }
}

/// [`super::quantize_act_block`] with NEON (the same values).
///
/// # Safety
/// NEON present (every aarch64 CPU has it); unsafe as the other levels' versions are.
pub(super) unsafe fn quantize_act_block(x: &[f32], top: f32, q: &mut [i32; BLOCK]) -> f32 {
    let n = x.len().min(BLOCK);
    let mut tail = [0f32; BLOCK];
    let src = if n == BLOCK {
        x.as_ptr()
    } else {
        tail[..n].copy_from_slice(&x[..n]);
        tail.as_ptr()
    };
    let v: [float32x4_t; BLOCK / 4] = std::array::from_fn(|g| vld1q_f32(src.add(4 * g)));
    // The maximum that ignores NaNs, as `f32::max` in the reference.
    let m = v
        .iter()
        .fold(vdupq_n_f32(0.0), |m, &v| vmaxnmq_f32(m, vabsq_f32(v)));
    let (d, inv) = act_scale(vmaxnmvq_f32(m), top);
    for (g, v) in v.into_iter().enumerate() {
        // Rounds to nearest even, as `round_even`.
        vst1q_s32(
            q.as_mut_ptr().add(4 * g),
            vcvtnq_s32_f32(vmulq_n_f32(v, inv)),
        );
    }
    d
}
