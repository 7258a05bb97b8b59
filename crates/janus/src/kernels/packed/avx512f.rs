//! The AVX-512 F register-tile kernel of the packed product, for CPUs with AVX-512 but no
//! bf16 product (the `avx512-vnni` level: Cascade Lake, Ice Lake): the AVX2 kernel's
//! scheme on 16 lanes. x comes widened to f32; each 64-byte column pair of a panel is one
//! register, its lower values shifted up by 16 and its upper ones with the low halves
//! cleared (both exact f32), each multiplied with its activation broadcast. Every lane
//! takes the AVX2 kernel's FMAs in the same order, so the same bits.

use std::arch::x86_64::*;

use super::block::{Block, XPtr};
use super::{zmm, PANEL};

/// Rows of x per call at most: 16 accumulators (two panels) leave room for the weights
/// and their widened halves. 12 rows spilled (prefill 13.7 s against 7.0 at 8 rows; 10
/// measured as 8, 6 about 4 % slower).
pub(super) const ROWS: usize = 8;

/// # Safety
/// `rows <= ROWS`, `np` in 1..=2, x in f32, operands as [`Block`] describes; AVX-512 F
/// present.
pub(super) unsafe fn block(rows: usize, np: usize, a: &Block) {
    macro_rules! go {
        ($($r:literal),*) => {
            match (rows, np) {
                $(($r, 1) => kernel::<$r, 1>(a), ($r, 2) => kernel::<$r, 2>(a),)*
                _ => unreachable!("no {rows}x{np} block"),
            }
        };
    }
    go!(1, 2, 3, 4, 5, 6, 7, 8)
}

#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const P: usize>(a: &Block) {
    let XPtr::F32(x) = a.x.ptr else {
        unreachable!("the AVX-512 F kernel takes f32 x")
    };
    let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let mut acc = zmm::start::<R, P>(a);
    for (t, &off) in a.taps.iter().enumerate() {
        let (w, x) = (a.w.add(t * a.pairs * 2 * PANEL), x.add(off));
        for c in 0..a.pairs {
            zmm::prefetch::<P>(a, w, c);
            let wv: [__m512i; P] = std::array::from_fn(|q| {
                _mm512_loadu_si512(w.add(q * a.panel_len + c * 2 * PANEL) as *const _)
            });
            let xp = x.add(c * a.x.pair_stride);
            // The lower values of the pairs, then the upper ones (the AVX2 kernel's order).
            let lo = wv.map(|v| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)));
            for r in 0..R {
                let xv = _mm512_set1_ps(*xp.add(r * a.x.row_stride));
                for q in 0..P {
                    acc[r][q] = _mm512_fmadd_ps(xv, lo[q], acc[r][q]);
                }
            }
            let hi = wv.map(|v| _mm512_castsi512_ps(_mm512_and_si512(v, upper)));
            for r in 0..R {
                let xv = _mm512_set1_ps(*xp.add(r * a.x.row_stride + 1));
                for q in 0..P {
                    acc[r][q] = _mm512_fmadd_ps(xv, hi[q], acc[r][q]);
                }
            }
        }
    }
    zmm::store(a, &acc);
}
