//! The vectorised `exp` on aarch64: the algorithm and constants of the x86 bodies
//! (`exp_avx2`), so every vector level on either architecture gives the same bits (the
//! committed values in the parent's tests hold both to it).

use std::arch::aarch64::*;

use super::{C, HIGH, LN2_HI, LN2_LO, LOG2E, LOW};

/// `x = exp(x)` elementwise, four at a time; the tail through the same polynomial (not
/// libm), so a value does not depend on its position.
pub(super) fn exp(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        // SAFETY: `c` holds 4 values.
        unsafe { vst1q_f32(c.as_mut_ptr(), exp4(vld1q_f32(c.as_ptr()))) };
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut tail = [0f32; 4];
        tail[..rest.len()].copy_from_slice(rest);
        // SAFETY: `tail` holds 4 values.
        unsafe { vst1q_f32(tail.as_mut_ptr(), exp4(vld1q_f32(tail.as_ptr()))) };
        rest.copy_from_slice(&tail[..rest.len()]);
    }
}

#[inline(always)]
fn exp4(x: float32x4_t) -> float32x4_t {
    // SAFETY: register-only NEON operations (NEON is part of every aarch64 CPU).
    unsafe {
        let under = vcltq_f32(x, vdupq_n_f32(LOW));
        // The number-preferring min and max, so a NaN clamps to LOW as `_mm256_max_ps`
        // (which returns its second operand) makes it.
        let x = vminnmq_f32(vmaxnmq_f32(x, vdupq_n_f32(LOW)), vdupq_n_f32(HIGH));
        let n = vrndnq_f32(vmulq_n_f32(x, LOG2E));
        let r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
        let r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
        let mut p = vdupq_n_f32(C[6]);
        for &c in C[..6].iter().rev() {
            p = vfmaq_f32(vdupq_n_f32(c), p, r);
        }
        // p · 2^n as p · 2^(n/2) · 2^(n - n/2): both factors are normal for every n the
        // clamps allow, the first product is exact, so the one rounding is the one a
        // single scaling would make (see `exp_avx2`).
        let n = vcvtnq_s32_f32(n);
        let n1 = vshrq_n_s32::<1>(n);
        let pow2 =
            |k: int32x4_t| vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(k, vdupq_n_s32(127))));
        let y = vmulq_f32(vmulq_f32(p, pow2(n1)), pow2(vsubq_s32(n, n1)));
        vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), under))
    }
}
