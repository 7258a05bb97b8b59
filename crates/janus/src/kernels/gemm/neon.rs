//! aarch64 bodies of the bf16 row tiles (see the parent module). NEON widens bf16 to f32
//! in registers (a shift: bf16 is the top half of an f32) and accumulates with f32 FMAs,
//! two accumulators per output (the low and high four of each eight values) so that a
//! decoding row keeps eight independent FMA chains; the BF16 level takes `BFDOT` (two bf16
//! products per f32 lane, eight a register) on the raw pairs instead.

use std::arch::aarch64::*;
use std::arch::asm;

use half::bf16;

/// # Safety
/// As [`super::tile`], with `rows <= 2`, `cols <= 4` (NEON is part of every aarch64 CPU).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile(
    rows: usize,
    cols: usize,
    x: *const bf16,
    ldx: usize,
    w: *const bf16,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    dispatch_tile!(kernel, rows, cols, (x, ldx, w, ldw, k, out, ldo);
        (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4))
}

/// # Safety
/// As [`super::tile`], with `rows <= 4`, `cols <= 4` and BF16 present.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_bf16(
    rows: usize,
    cols: usize,
    x: *const bf16,
    ldx: usize,
    w: *const bf16,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    dispatch_tile!(kernel_bf16, rows, cols, (x, ldx, w, ldw, k, out, ldo);
        (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4),
        (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4))
}

/// Eight bf16 widened to f32: values 0..4 and 4..8.
#[inline(always)]
unsafe fn widen8(p: *const bf16) -> [float32x4_t; 2] {
    let h = vld1q_u16(p.cast());
    [
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    ]
}

/// `Σ x[i, q] w[j, q]` for the tail `q` in `p..k`, in order.
#[inline(always)]
unsafe fn tail(x: *const bf16, w: *const bf16, p: usize, k: usize) -> f32 {
    (p..k).fold(0.0, |s, q| s + (*x.add(q)).to_f32() * (*w.add(q)).to_f32())
}

#[allow(clippy::needless_range_loop)] // index loops over register tiles read clearest
unsafe fn kernel<const R: usize, const C: usize>(
    x: *const bf16,
    ldx: usize,
    w: *const bf16,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    let zero = vdupq_n_f32(0.0);
    let mut acc = [[[zero; 2]; C]; R];
    let mut p = 0;
    while p + 8 <= k {
        let mut xv = [[zero; 2]; R];
        for (i, v) in xv.iter_mut().enumerate() {
            *v = widen8(x.add(i * ldx + p));
        }
        for j in 0..C {
            let wv = widen8(w.add(j * ldw + p));
            for i in 0..R {
                acc[i][j][0] = vfmaq_f32(acc[i][j][0], xv[i][0], wv[0]);
                acc[i][j][1] = vfmaq_f32(acc[i][j][1], xv[i][1], wv[1]);
            }
        }
        p += 8;
    }
    for i in 0..R {
        for j in 0..C {
            let s = vaddvq_f32(vaddq_f32(acc[i][j][0], acc[i][j][1]));
            *out.add(i * ldo + j) = s + tail(x.add(i * ldx), w.add(j * ldw), p, k);
        }
    }
}

/// `acc + BFDOT(a, b)`: lane `l` gains `a[2l] b[2l] + a[2l + 1] b[2l + 1]` (bf16 pairs).
/// Written as assembly: the intrinsic is not stable in Rust.
#[inline]
#[target_feature(enable = "bf16")]
unsafe fn bfdot(mut acc: float32x4_t, a: uint16x8_t, b: uint16x8_t) -> float32x4_t {
    // SAFETY: a register-only instruction of the BF16 extension, which the caller has.
    unsafe {
        asm!(
            "bfdot {acc:v}.4s, {a:v}.8h, {b:v}.8h",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

#[target_feature(enable = "bf16")]
#[allow(clippy::needless_range_loop)] // index loops over register tiles read clearest
unsafe fn kernel_bf16<const R: usize, const C: usize>(
    x: *const bf16,
    ldx: usize,
    w: *const bf16,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[vdupq_n_f32(0.0); C]; R];
    let mut p = 0;
    while p + 8 <= k {
        let mut xv = [vdupq_n_u16(0); R];
        for (i, v) in xv.iter_mut().enumerate() {
            *v = vld1q_u16(x.add(i * ldx + p).cast());
        }
        for j in 0..C {
            let wv = vld1q_u16(w.add(j * ldw + p).cast());
            for i in 0..R {
                acc[i][j] = bfdot(acc[i][j], xv[i], wv);
            }
        }
        p += 8;
    }
    for i in 0..R {
        for j in 0..C {
            let s = vaddvq_f32(acc[i][j]);
            *out.add(i * ldo + j) = s + tail(x.add(i * ldx), w.add(j * ldw), p, k);
        }
    }
}
