//! The AVX-512 BF16 register-tile kernel of the packed product.

use std::arch::x86_64::*;

use super::block::{Block, XPtr};
use super::{zmm, PANEL};

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
    let mut acc = zmm::start::<R, P>(a);
    for (t, &off) in a.taps.iter().enumerate() {
        let (w, x) = (a.w.add(t * a.pairs * 2 * PANEL), x.add(off));
        for c in 0..a.pairs {
            zmm::prefetch::<P>(a, w, c);
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
    zmm::store(a, &acc);
}
