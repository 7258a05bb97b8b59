//! The attention kernel's aarch64 inner loop: the weighted sum of value rows with NEON.

use std::arch::aarch64::*;

use half::bf16;

/// `acc = p · v` four query rows at a time, 16 columns per pass (`dh % 16 == 0`): each
/// output is the chain of FMAs over the keys that the x86 levels make, so all vector
/// levels give the same bits.
///
/// # Safety
/// `v` holds `keys` rows at stride `ldv` of at least `dh` values, `p` `rows` rows of
/// `keys` and `acc` `rows` rows of `dh` (NEON is part of every aarch64 CPU).
pub(super) unsafe fn weighted_sum(
    p: &[f32],
    rows: usize,
    keys: usize,
    v: &[bf16],
    ldv: usize,
    dh: usize,
    acc: &mut [f32],
) {
    const R: usize = 4;
    let zero = vdupq_n_f32(0.0);
    for r0 in (0..rows).step_by(R) {
        let nr = R.min(rows - r0);
        for c in (0..dh).step_by(16) {
            let mut a = [[zero; 4]; R];
            for j in 0..keys {
                let row = v.as_ptr().add(j * ldv + c).cast::<u16>();
                let (h0, h1) = (vld1q_u16(row), vld1q_u16(row.add(8)));
                // bf16 widened to f32: the top half of each lane.
                let vv = [
                    vshll_n_u16::<16>(vget_low_u16(h0)),
                    vshll_high_n_u16::<16>(h0),
                    vshll_n_u16::<16>(vget_low_u16(h1)),
                    vshll_high_n_u16::<16>(h1),
                ]
                .map(|v| vreinterpretq_f32_u32(v));
                for (r, ar) in a.iter_mut().enumerate().take(nr) {
                    let pj = vdupq_n_f32(*p.get_unchecked((r0 + r) * keys + j));
                    for (ab, &vb) in ar.iter_mut().zip(&vv) {
                        *ab = vfmaq_f32(*ab, pj, vb);
                    }
                }
            }
            for (r, ar) in a.iter().enumerate().take(nr) {
                let o = acc.as_mut_ptr().add((r0 + r) * dh + c);
                for (b, &ab) in ar.iter().enumerate() {
                    vst1q_f32(o.add(4 * b), ab);
                }
            }
        }
    }
}
