//! The attention kernel's x86 inner loops: bf16 widening, softmax rows and weighted
//! sums for AVX2 and AVX-512.

use std::arch::x86_64::*;

use half::bf16;

/// Sixteen bf16 widened to f32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen16(p: *const bf16) -> (__m256, __m256) {
    let h = _mm256_loadu_si256(p as *const __m256i);
    let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(h));
    let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1));
    (
        _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16)),
        _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16)),
    )
}

/// `acc = p · v` (`dh % 32 == 0`), up to 2 query rows and 128 columns per pass: every
/// key's values are read once per pass as bf16 pairs, whose two halves (shifted up,
/// or masked to the high half) are the even and the odd columns in f32. Each output
/// is the same chain of FMAs over the keys as in [`weighted_sum_avx2`], so the two
/// levels give the same bits.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weighted_sum_avx512(
    p: &[f32],
    rows: usize,
    keys: usize,
    v: &[bf16],
    ldv: usize,
    dh: usize,
    acc: &mut [f32],
) {
    let mut r0 = 0;
    while r0 < rows {
        let nr = (rows - r0).min(2);
        let mut c = 0;
        while c < dh {
            let blocks = ((dh - c) / 32).min(4);
            let pass = match (nr, blocks) {
                (1, 1) => pass::<1, 1>,
                (1, 2) => pass::<1, 2>,
                (1, 3) => pass::<1, 3>,
                (1, _) => pass::<1, 4>,
                (_, 1) => pass::<2, 1>,
                (_, 2) => pass::<2, 2>,
                (_, 3) => pass::<2, 3>,
                _ => pass::<2, 4>,
            };
            pass(p, r0, keys, v, ldv, c, dh, acc);
            c += 32 * blocks;
        }
        r0 += nr;
    }
}

/// Query rows `r0..r0 + R`, columns `c..c + 32 C` of [`weighted_sum_avx512`].
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pass<const R: usize, const C: usize>(
    p: &[f32],
    r0: usize,
    keys: usize,
    v: &[bf16],
    ldv: usize,
    c: usize,
    dh: usize,
    acc: &mut [f32],
) {
    let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    // [even columns, odd columns] of each 32-column block.
    let mut a = [[[_mm512_setzero_ps(); 2]; C]; R];
    for j in 0..keys {
        let row = v.as_ptr().add(j * ldv + c);
        let vv: [[__m512; 2]; C] = std::array::from_fn(|b| {
            let pairs = _mm512_loadu_si512(row.add(32 * b).cast());
            [
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(pairs)),
                _mm512_castsi512_ps(_mm512_and_si512(pairs, high)),
            ]
        });
        for (r, ar) in a.iter_mut().enumerate() {
            let pj = _mm512_set1_ps(*p.get_unchecked((r0 + r) * keys + j));
            for (ab, vb) in ar.iter_mut().zip(&vv) {
                ab[0] = _mm512_fmadd_ps(pj, vb[0], ab[0]);
                ab[1] = _mm512_fmadd_ps(pj, vb[1], ab[1]);
            }
        }
    }
    // Even and odd columns back in order.
    let lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    let hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    for (r, ar) in a.iter().enumerate() {
        for (b, ab) in ar.iter().enumerate() {
            let o = acc.as_mut_ptr().add((r0 + r) * dh + c + 32 * b);
            _mm512_storeu_ps(o, _mm512_permutex2var_ps(ab[0], lo, ab[1]));
            _mm512_storeu_ps(o.add(16), _mm512_permutex2var_ps(ab[0], hi, ab[1]));
        }
    }
}

/// `acc = p · v` four query rows at a time, 16 columns per pass (`dh % 16 == 0`).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn weighted_sum_avx2(
    p: &[f32],
    rows: usize,
    keys: usize,
    v: &[bf16],
    ldv: usize,
    dh: usize,
    acc: &mut [f32],
) {
    const R: usize = 4;
    for r0 in (0..rows).step_by(R) {
        let nr = R.min(rows - r0);
        for c in (0..dh).step_by(16) {
            let mut a = [[_mm256_setzero_ps(); 2]; R];
            for j in 0..keys {
                let (v0, v1) = widen16(v.as_ptr().add(j * ldv + c));
                for (r, ar) in a.iter_mut().enumerate().take(nr) {
                    let pj = _mm256_set1_ps(*p.get_unchecked((r0 + r) * keys + j));
                    ar[0] = _mm256_fmadd_ps(pj, v0, ar[0]);
                    ar[1] = _mm256_fmadd_ps(pj, v1, ar[1]);
                }
            }
            for (r, ar) in a.iter().enumerate().take(nr) {
                let o = acc.as_mut_ptr().add((r0 + r) * dh + c);
                _mm256_storeu_ps(o, ar[0]);
                _mm256_storeu_ps(o.add(8), ar[1]);
            }
        }
    }
}
