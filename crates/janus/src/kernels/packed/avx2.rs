//! The AVX2 + FMA register-tile kernel of the packed product.
//!
//! AVX2 has no bf16 product, so x comes widened to f32 (once, before the product) and
//! each 64-byte column pair of a panel (16 rows' pairs) is widened in registers: a pair's
//! lower value is its u32 shifted up by 16, its upper value the u32 with the low half
//! cleared, both exact f32. One panel's 16 outputs are two 8-lane accumulators per row;
//! six rows make 24 FMAs per pair against 4 widening operations.

use std::arch::x86_64::*;

use half::bf16;

use super::block::{Block, XPtr, STREAM_AHEAD};
use super::PANEL;

/// Rows of x per call at most: 12 accumulators, two widened weight vectors and one
/// broadcast activation fill 15 of the 16 registers.
pub(super) const ROWS: usize = 6;

/// # Safety
/// `rows <= ROWS`, `np` in 1..=2, x in f32, operands as [`Block`] describes; AVX2 and FMA
/// present.
pub(super) unsafe fn block(rows: usize, np: usize, a: &Block) {
    let XPtr::F32(x) = a.x.ptr else {
        unreachable!("the AVX2 kernel takes f32 x")
    };
    for q in 0..np {
        let cols = a.cols.saturating_sub(q * PANEL).min(PANEL);
        if cols == 0 {
            break;
        }
        let w = a.w.add(q * a.panel_len);
        let out = if a.transposed {
            a.out.add(q * PANEL * a.ldo)
        } else {
            a.out.add(q * PANEL)
        };
        match rows {
            1 => kernel::<1>(a, x, w, out, cols),
            2 => kernel::<2>(a, x, w, out, cols),
            3 => kernel::<3>(a, x, w, out, cols),
            4 => kernel::<4>(a, x, w, out, cols),
            5 => kernel::<5>(a, x, w, out, cols),
            6 => kernel::<6>(a, x, w, out, cols),
            _ => unreachable!("no {rows}-row block"),
        }
    }
}

/// `p`, hidden from the optimiser (no instruction), so loads through it are not merged
/// with earlier loads of the same address.
#[inline(always)]
// The template neither reads nor writes memory: the pointer only passes through.
#[allow(clippy::pointers_in_nomem_asm_block)]
fn opaque<T>(mut p: *const T) -> *const T {
    // SAFETY: an empty template; the register keeps its value.
    unsafe { std::arch::asm!("/* {0} */", inout(reg) p, options(nomem, nostack, preserves_flags)) };
    p
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // index loops over register tiles read clearest
unsafe fn kernel<const R: usize>(
    a: &Block,
    x: *const f32,
    w: *const bf16,
    out: *mut f32,
    cols: usize,
) {
    let upper = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if a.accumulate {
        for (r, acc) in acc.iter_mut().enumerate() {
            let mut v = [0f32; PANEL];
            let o = out.add(r * a.ldo);
            v[..cols.min(PANEL)].copy_from_slice(std::slice::from_raw_parts(o, cols.min(PANEL)));
            *acc = [
                _mm256_loadu_ps(v.as_ptr()),
                _mm256_loadu_ps(v.as_ptr().add(8)),
            ];
        }
    }
    for (t, &off) in a.taps.iter().enumerate() {
        let (w, x) = (w.add(t * a.pairs * 2 * PANEL), x.add(off));
        for c in 0..a.pairs {
            let wp = w.add(c * 2 * PANEL) as *const __m256i;
            if a.stream {
                // A prefetch never faults, even past the panel's end.
                let ahead = w.wrapping_add((c + STREAM_AHEAD) * 2 * PANEL);
                _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            }
            let xp = x.add(c * a.x.pair_stride);
            // The lower values of the pairs, then the upper ones; the second pass loads
            // the weights again (from L1) so that no raw copy holds a register (an
            // opaque pointer keeps the compiler from reusing the first loads, which
            // spilled accumulators: two thirds of the speed).
            let lo = [
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256(wp), 16)),
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256(wp.add(1)), 16)),
            ];
            for r in 0..R {
                let xv = _mm256_broadcast_ss(&*xp.add(r * a.x.row_stride));
                acc[r][0] = _mm256_fmadd_ps(xv, lo[0], acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(xv, lo[1], acc[r][1]);
            }
            let wp = opaque(wp);
            let hi = [
                _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(wp), upper)),
                _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(wp.add(1)), upper)),
            ];
            for r in 0..R {
                let xv = _mm256_broadcast_ss(&*xp.add(r * a.x.row_stride + 1));
                acc[r][0] = _mm256_fmadd_ps(xv, hi[0], acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(xv, hi[1], acc[r][1]);
            }
        }
    }
    for r in 0..R {
        if a.transposed || cols < PANEL {
            let mut v = [0f32; PANEL];
            _mm256_storeu_ps(v.as_mut_ptr(), acc[r][0]);
            _mm256_storeu_ps(v.as_mut_ptr().add(8), acc[r][1]);
            for (j, v) in v.iter().enumerate().take(cols) {
                // Transposed: lane j goes to output row (channel) j, `ldo` apart.
                let o = if a.transposed {
                    out.add(j * a.ldo + r)
                } else {
                    out.add(r * a.ldo + j)
                };
                *o = *v;
            }
            continue;
        }
        for (h, s) in acc[r].iter().enumerate() {
            _mm256_storeu_ps(out.add(r * a.ldo + 8 * h), *s);
        }
    }
}
