//! Vectorised elementwise math shared by the kernels (softmax, SiLU, GELU, attention).

use super::Isa;

/// `x = exp(x)` elementwise (-inf gives 0, large inputs infinity); the vector levels
/// give the same bits as each other.
pub fn exp_in_place(x: &mut [f32], isa: Isa) {
    match isa {
        // SAFETY: `isa` is only ever a level this CPU has (`Isa::available`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => unsafe { simd::exp_avx512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::exp_avx2(x) },
        _ => x.iter_mut().for_each(|v| *v = v.exp()),
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    // exp(x) = 2^n · e^r with n = round(x / ln 2), |r| <= ln2 / 2; e^r by its degree-6
    // Taylor polynomial (relative error < 4e-8 there, below f32 rounding).
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const C: [f32; 7] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
    ];
    /// Below this, exp underflows to 0 in f32 for our purposes.
    const LOW: f32 = -87.0;
    /// Above this, exp overflows to infinity in f32 (the clamp keeps 2^n in range).
    const HIGH: f32 = 89.0;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_avx512(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            let v = _mm512_loadu_ps(c.as_ptr());
            _mm512_storeu_ps(c.as_mut_ptr(), exp16(v));
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let m: __mmask16 = (1u16 << rest.len()) - 1;
            let v = _mm512_maskz_loadu_ps(m, rest.as_ptr());
            _mm512_mask_storeu_ps(rest.as_mut_ptr(), m, exp16(v));
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(LOW), _CMP_LT_OQ);
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LOW)), _mm512_set1_ps(HIGH));
        let n = _mm512_roundscale_ps(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(C[6]);
        for &c in C[..6].iter().rev() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_maskz_mov_ps(!under, _mm512_scalef_ps(p, n))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_avx2(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = _mm256_loadu_ps(c.as_ptr());
            _mm256_storeu_ps(c.as_mut_ptr(), exp8(v));
        }
        // The tail through the same polynomial (not libm), so every element's value does
        // not depend on its position or on the vector level.
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tail = [0f32; 8];
            tail[..rest.len()].copy_from_slice(rest);
            let v = exp8(_mm256_loadu_ps(tail.as_ptr()));
            _mm256_storeu_ps(tail.as_mut_ptr(), v);
            rest.copy_from_slice(&tail[..rest.len()]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let under = _mm256_cmp_ps(x, _mm256_set1_ps(LOW), _CMP_LT_OQ);
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LOW)), _mm256_set1_ps(HIGH));
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(C[6]);
        for &c in C[..6].iter().rev() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // p · 2^n as p · 2^(n/2) · 2^(n - n/2): both factors have normal exponents for
        // every n the clamps allow (-126..=129), the first product is exact, so the one
        // rounding (to a subnormal, or to infinity past f32::MAX) is the one `scalef`
        // makes at the AVX-512 level.
        let n = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32(n, 1);
        let pow2 = |k: __m256i| {
            _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_add_epi32(k, _mm256_set1_epi32(127)),
                23,
            ))
        };
        let y = _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(_mm256_sub_epi32(n, n1)));
        _mm256_andnot_ps(under, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_whole_f32_range_at_every_level() {
        let xs: Vec<f32> = [
            -1e30, -100.0, -87.5, -86.9, -10.0, -0.3, 0.0, 1e-3, 5.0, 30.0,
        ]
        .into_iter()
        .chain([60.0, 88.3, 88.5, 88.7, 88.8, 100.0, 1e30, f32::NEG_INFINITY])
        .collect();
        // Odd lengths, so the tails of the vector loops are covered too.
        for len in [xs.len(), 5, 3] {
            for isa in Isa::available() {
                let mut got = xs[..len].to_vec();
                exp_in_place(&mut got, isa);
                for (&x, &y) in xs.iter().zip(&got) {
                    let want = (x as f64).exp();
                    let ok = if want > f32::MAX as f64 {
                        y == f32::INFINITY
                    } else if x < -87.0 {
                        y.abs() <= 1.2e-38
                    } else {
                        ((y as f64 - want) / want).abs() < 1e-6
                    };
                    assert!(ok, "{isa:?}: exp({x}) = {y}, want {want}");
                }
            }
        }
    }

    #[test]
    fn vector_exp_matches_std() {
        let mut xs: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.093).collect();
        xs.extend([0.0, -1e-7, -86.9, -87.5, -200.0, f32::NEG_INFINITY]);
        for isa in Isa::available() {
            let mut got = xs.clone();
            exp_in_place(&mut got, isa);
            for (x, g) in xs.iter().zip(&got) {
                let want = x.exp();
                assert!(
                    (g - want).abs() <= 2e-7 * want + 1e-37,
                    "{isa:?}: exp({x}) = {g}, want {want}"
                );
            }
        }
    }
}
