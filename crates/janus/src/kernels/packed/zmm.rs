//! What the two AVX-512 register-tile kernels share (`avx512.rs` on bf16 x, `avx512f.rs` on
//! f32 x): a tile of `R` rows by `P` 16-lane panels, started from the output or from zeros,
//! its weights prefetched while they stream, and stored through lane masks (scattered
//! when transposed).

use std::arch::x86_64::*;

use half::bf16;

use super::block::{Block, STREAM_AHEAD};
use super::PANEL;

/// The valid lanes of panel `q` (the last panel may be partial).
#[inline(always)]
fn panel_mask(a: &Block, q: usize) -> __mmask16 {
    let valid = a.cols.saturating_sub(q * PANEL).min(PANEL);
    ((1u32 << valid) - 1) as __mmask16
}

/// The accumulators: the sums already in the output ([`Block::accumulate`]), or zeros.
///
/// # Safety
/// Operands as [`Block`] describes, `R` of its rows; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn start<const R: usize, const P: usize>(a: &Block) -> [[__m512; P]; R] {
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    if a.accumulate {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (q, v) in acc.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(panel_mask(a, q), a.out.add(r * a.ldo + q * PANEL));
            }
        }
    }
    acc
}

/// Where the block streams its weights, prefetches column pair `c +` [`STREAM_AHEAD`] of
/// each of the `P` panels from `w` (a tap's first pair).
#[inline(always)]
pub(super) fn prefetch<const P: usize>(a: &Block, w: *const bf16, c: usize) {
    if a.stream {
        for q in 0..P {
            // Past the panel's end this names the next one (or nothing): a prefetch never
            // faults.
            let ahead = w.wrapping_add(q * a.panel_len + (c + STREAM_AHEAD) * 2 * PANEL);
            // SAFETY: SSE is part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8) };
        }
    }
}

/// Writes the accumulators to the block's output: lane `j` of panel `q` to column
/// `16 q + j` of its row, or transposed to row (channel) `16 q + j`, `ldo` apart.
///
/// # Safety
/// Operands as [`Block`] describes, `R` of its rows; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store<const R: usize, const P: usize>(a: &Block, acc: &[[__m512; P]; R]) {
    if a.transposed {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let index = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(a.ldo as i32));
        for (r, acc) in acc.iter().enumerate() {
            for (q, v) in acc.iter().enumerate() {
                let mask = panel_mask(a, q);
                if mask != 0 {
                    let base = a.out.add(q * PANEL * a.ldo + r);
                    _mm512_mask_i32scatter_ps::<4>(base as *mut _, mask, index, *v);
                }
            }
        }
        return;
    }
    for (r, acc) in acc.iter().enumerate() {
        for (q, v) in acc.iter().enumerate() {
            let mask = panel_mask(a, q);
            if mask != 0 {
                _mm512_mask_storeu_ps(a.out.add(r * a.ldo + q * PANEL), mask, *v);
            }
        }
    }
}
