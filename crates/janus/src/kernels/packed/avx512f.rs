//! The AVX-512 F register-tile kernel of the packed product, for CPUs with AVX-512 but no
//! bf16 product (the `avx512-vnni` level: Cascade Lake, Ice Lake): the AVX2 kernel's
//! scheme on 16 lanes. x comes widened to f32; each 64-byte column pair of a panel is one
//! register, its lower values shifted up by 16 and its upper ones with the low halves
//! cleared (both exact f32), each multiplied with its activation broadcast. Every lane
//! takes the AVX2 kernel's FMAs in the same order, so the same bits.

use std::arch::x86_64::*;

use super::block::{Block, XPtr};
use super::{zmm, PANEL};

/// Rows of x per call from the regrouped layout (2 floats apart), whose broadcasts the
/// kernel takes in asm at fixed offsets (8 rows: 72 % of the FMA peak from L1, 10: 79 %).
pub(super) const ROWS: usize = 10;

/// Rows per call where x is read in place (few rows, convolution taps): at any stride the
/// compiler's schedule spilled accumulators from 12 rows on (prefill 13.7 s against 7.0).
pub(super) const IN_PLACE_ROWS: usize = 8;

/// More than [`IN_PLACE_ROWS`] rows at a stride other than 2 are correct but slow.
///
/// # Safety
/// `rows <= ROWS`, `np` in 1..=2, x in f32, operands as [`Block`] describes; AVX-512 F
/// present.
pub(super) unsafe fn block(rows: usize, np: usize, a: &Block) {
    debug_assert!(rows <= IN_PLACE_ROWS || a.x.row_stride == 2);
    macro_rules! go {
        ($($r:literal),*) => {
            match (rows, np, a.x.row_stride == 2) {
                $(
                    ($r, 1, true) => kernel::<$r, 1, true>(a),
                    ($r, 2, true) => kernel::<$r, 2, true>(a),
                    ($r, 1, false) => kernel::<$r, 1, false>(a),
                    ($r, 2, false) => kernel::<$r, 2, false>(a),
                )*
                _ => unreachable!("no {rows}x{np} block"),
            }
        };
    }
    go!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
}

#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const P: usize, const PAIRED: bool>(a: &Block) {
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
            if PAIRED {
                rows_fma::<R, P, 0>(&mut acc, &lo, xp);
            } else {
                for r in 0..R {
                    let xv = _mm512_set1_ps(*xp.add(r * a.x.row_stride));
                    for q in 0..P {
                        acc[r][q] = _mm512_fmadd_ps(xv, lo[q], acc[r][q]);
                    }
                }
            }
            let hi = wv.map(|v| _mm512_castsi512_ps(_mm512_and_si512(v, upper)));
            if PAIRED {
                rows_fma::<R, P, 4>(&mut acc, &hi, xp);
            } else {
                for r in 0..R {
                    let xv = _mm512_set1_ps(*xp.add(r * a.x.row_stride + 1));
                    for q in 0..P {
                        acc[r][q] = _mm512_fmadd_ps(xv, hi[q], acc[r][q]);
                    }
                }
            }
        }
    }
    zmm::store(a, &acc);
}

/// `acc[r][q] += x[2 r] * w[q]` (`BYTE` 0) or `x[2 r + 1] * w[q]` (`BYTE` 4) for rows 2
/// floats apart, one asm block per row: left to itself the compiler loads every row's
/// broadcast ahead of the products, and at 12 rows the accumulators spilled.
///
/// # Safety
/// `x[2 r]` and `x[2 r + 1]` are readable for every `r < R`; AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn rows_fma<const R: usize, const P: usize, const BYTE: usize>(
    acc: &mut [[__m512; P]; R],
    w: &[__m512; P],
    x: *const f32,
) {
    // The rows and panels the blocks below cover.
    const { assert!(R <= 10 && (P == 1 || P == 2)) };
    macro_rules! rows {
        ($($r:literal),*) => {$(
            if $r < R {
                // `% R`, `% P`: in range for every instance (the branch is dead where not).
                let a = &mut acc[$r % R];
                if P == 2 {
                    std::arch::asm!(
                        "vbroadcastss {b}, dword ptr [{x} + {off}]",
                        "vfmadd231ps {a0}, {b}, {w0}",
                        "vfmadd231ps {a1}, {b}, {w1}",
                        a0 = inout(zmm_reg) a[0],
                        a1 = inout(zmm_reg) a[1 % P],
                        w0 = in(zmm_reg) w[0],
                        w1 = in(zmm_reg) w[1 % P],
                        b = out(zmm_reg) _,
                        x = in(reg) x,
                        off = const $r * 8 + BYTE,
                        options(pure, readonly, nostack, preserves_flags)
                    );
                } else {
                    std::arch::asm!(
                        "vbroadcastss {b}, dword ptr [{x} + {off}]",
                        "vfmadd231ps {a0}, {b}, {w0}",
                        a0 = inout(zmm_reg) a[0],
                        w0 = in(zmm_reg) w[0],
                        b = out(zmm_reg) _,
                        x = in(reg) x,
                        off = const $r * 8 + BYTE,
                        options(pure, readonly, nostack, preserves_flags)
                    );
                }
            }
        )*};
    }
    rows!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
}
