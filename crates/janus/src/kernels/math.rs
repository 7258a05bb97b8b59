//! Vectorised elementwise math shared by the kernels (softmax, SiLU, GELU, attention).

use super::Isa;

/// `x = exp(x)` elementwise (-inf gives 0, large inputs infinity); the vector levels
/// give the same bits as each other.
pub fn exp_in_place(x: &mut [f32], isa: Isa) {
    match isa {
        // SAFETY: `isa` is only ever a level this CPU has (`Isa::available`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 | Isa::Avx512Vnni => unsafe { simd::exp_avx512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => unsafe { simd::exp_avx2(x) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod | Isa::NeonBf16 => neon::exp(x),
        _ => x.iter_mut().for_each(|v| *v = v.exp()),
    }
}

// The one set of constants every vector level uses, so all give the same bits.
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

#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{C, HIGH, LN2_HI, LN2_LO, LOG2E, LOW};

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

    /// Inputs for [`vector_levels_give_the_committed_bits`]: chosen edges, then values
    /// spread over the range that does not overflow.
    fn committed_inputs() -> Vec<f32> {
        let mut xs = vec![
            f32::NEG_INFINITY,
            -1e30,
            -100.0,
            -87.3,
            -87.0,
            -86.99,
            -80.5,
            -50.123,
            -10.5,
            -1.0001,
            -std::f32::consts::LN_2,
            -1e-3,
            -1e-7,
            0.0,
            1e-7,
            0.5,
            1.0,
            std::f32::consts::LN_10,
            10.75,
            42.42,
            88.0,
            88.7,
            88.75,
            100.0,
            f32::NAN,
        ];
        let mut s = 0x2545_f491u32;
        for _ in 0..24 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            xs.push((s >> 8) as f32 / (1 << 24) as f32 * 176.0 - 88.0);
        }
        xs
    }

    /// The bits of `exp(committed_inputs())`, as the x86 AVX2 level computes them (a NaN
    /// clamps to -87 there).
    #[rustfmt::skip]
    const COMMITTED: [u32; 49] = [
        0x0000_0000, 0x0000_0000, 0x0000_0000, 0x0000_0000, 0x00b3_3686, 0x00b5_03b5,
        0x0568_d103, 0x1b4e_2f56, 0x37e6_fe13, 0x3ebc_55e0, 0x3f00_0000, 0x3f7f_be7f,
        0x3f7f_fffe, 0x3f80_0000, 0x3f80_0001, 0x3fd3_094c, 0x402d_f854, 0x4120_0000,
        0x4736_2609, 0x5e12_f19f, 0x7ef8_82b7, 0x7f7a_37fc, 0x7f80_0000, 0x7f80_0000,
        0x00b3_3686, 0x6fa3_5d7b, 0x4536_209c, 0x3209_6e95, 0x0000_0000, 0x7856_6d2d,
        0x7e60_0d67, 0x44b4_2992, 0x0923_21aa, 0x4a8e_e4b3, 0x2326_abdd, 0x09d0_b080,
        0x4e30_973a, 0x4676_76d1, 0x4e81_9df0, 0x131a_4263, 0x7303_419b, 0x7666_6d3f,
        0x24fd_554b, 0x0945_49cb, 0x5430_8c74, 0x7d3d_ff63, 0x1e1d_7a43, 0x43df_234a,
        0x3bee_8ff8,
    ];

    /// Every vector level, on either architecture, gives the committed bits (the
    /// algorithm is the same everywhere, so results do not depend on the machine).
    #[test]
    fn vector_levels_give_the_committed_bits() {
        let xs = committed_inputs();
        assert_eq!(xs.len(), COMMITTED.len());
        for isa in Isa::available().into_iter().filter(|&l| l > Isa::Plain) {
            let mut got = xs.clone();
            exp_in_place(&mut got, isa);
            for ((x, y), want) in xs.iter().zip(&got).zip(COMMITTED) {
                assert_eq!(
                    y.to_bits(),
                    want,
                    "{isa:?}: exp({x}) = {y}, want {}",
                    f32::from_bits(want)
                );
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
