//! The AVX-512 BF16 register-tile kernel of the packed product.

use std::arch::x86_64::*;

use super::block::{Block, XPtr, STREAM_AHEAD};
use super::PANEL;

/// # Safety
/// `rows <= 12`, `np` in 1..=2, operands as [`Block`] describes; AVX-512 BF16 present.
pub(super) unsafe fn block(rows: usize, np: usize, a: &Block) {
    macro_rules! go {
        ($($r:literal),*) => {
            match (rows, np) {
                $(($r, 1) => kernel::<$r, 1>(a), ($r, 2) => kernel::<$r, 2>(a),)*
                _ => unreachable!("no {rows}x{np} block"),
            }
        };
    }
    go!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn kernel<const R: usize, const P: usize>(a: &Block) {
    let XPtr::Bf16(x) = a.x.ptr else {
        unreachable!("the bf16 kernel takes bf16 x")
    };
    // The valid lanes of panel q (the last panel may be partial).
    let panel_mask = |q: usize| -> __mmask16 {
        let valid = a.cols.saturating_sub(q * PANEL).min(PANEL);
        ((1u32 << valid) - 1) as __mmask16
    };
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    if a.accumulate {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (q, v) in acc.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(panel_mask(q), a.out.add(r * a.ldo + q * PANEL));
            }
        }
    }
    for (t, &off) in a.taps.iter().enumerate() {
        let (w, x) = (a.w.add(t * a.pairs * 2 * PANEL), x.add(off));
        for c in 0..a.pairs {
            if a.stream {
                for q in 0..P {
                    // Past the panel's end this names the next one (or nothing): a
                    // prefetch never faults.
                    let ahead = w.wrapping_add(q * a.panel_len + (c + STREAM_AHEAD) * 2 * PANEL);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                }
            }
            let mut wv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); P];
            for (q, v) in wv.iter_mut().enumerate() {
                *v = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    w.add(q * a.panel_len + c * 2 * PANEL) as *const _,
                ));
            }
            for r in 0..R {
                let xp = x.add(r * a.x.row_stride + c * a.x.pair_stride);
                let pair = (xp as *const i32).read_unaligned();
                let xv: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for q in 0..P {
                    acc[r][q] = _mm512_dpbf16_ps(acc[r][q], xv, wv[q]);
                }
            }
        }
    }
    if a.transposed {
        // Lane j of a panel goes to output row (channel) j, `ldo` apart.
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let index = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(a.ldo as i32));
        for r in 0..R {
            for q in 0..P {
                let mask = panel_mask(q);
                if mask != 0 {
                    let base = a.out.add(q * PANEL * a.ldo + r);
                    _mm512_mask_i32scatter_ps::<4>(base as *mut _, mask, index, acc[r][q]);
                }
            }
        }
        return;
    }
    for r in 0..R {
        for q in 0..P {
            let mask = panel_mask(q);
            if mask == 0 {
                continue;
            }
            let o = a.out.add(r * a.ldo + q * PANEL);
            _mm512_mask_storeu_ps(o, mask, acc[r][q]);
        }
    }
}
