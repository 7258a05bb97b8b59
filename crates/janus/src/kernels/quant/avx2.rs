//! AVX2 quant kernels (see the parent module for the layout): a 256-bit register holds
//! half a chunk, blocks 0..8 or 8..16. One or two activation rows (decoding) take the
//! quad's 4 weight rows together, so the weights stream in storage order (a row at a time
//! reads every fourth line, which held decoding to a third of the memory's speed); more
//! rows take the weight rows one at a time (16 registers hold no more), the activations
//! coming from L1 for each.

use std::arch::x86_64::*;

use super::{TileArgs, BLOCK, CHUNKS, QUAD};

/// # Safety
/// As [`super::tile`] for Q4, with AVX2 + FMA + F16C present.
pub(super) unsafe fn tile_q4(rows: usize, a: TileArgs) {
    match rows {
        1 => return quad_q4::<1, 2>(a),
        2 => return quad_q4::<2, 2>(a),
        _ => {}
    }
    for r in 0..a.cols {
        match rows {
            1 => kernel_q4::<1>(a, r),
            2 => kernel_q4::<2>(a, r),
            3 => kernel_q4::<3>(a, r),
            _ => kernel_q4::<4>(a, r),
        }
    }
}

/// # Safety
/// As [`super::tile`] for Q8, with AVX2 + FMA + F16C present.
pub(super) unsafe fn tile_q8(rows: usize, a: TileArgs) {
    match rows {
        1 => return quad_q8::<1, 2>(a),
        2 => return quad_q8::<2, 2>(a),
        _ => {}
    }
    for r in 0..a.cols {
        match rows {
            1 => kernel_q8::<1>(a, r),
            2 => kernel_q8::<2>(a, r),
            3 => kernel_q8::<3>(a, r),
            _ => kernel_q8::<4>(a, r),
        }
    }
}

/// The 8 lanes of a float vector, summed.
#[inline(always)]
unsafe fn sum(v: __m256) -> f32 {
    let lanes: [f32; 8] = std::mem::transmute(v);
    lanes.iter().sum()
}

/// Q4 weights (the quad's row `r`) times int8 activations with `VPMADDUBSW` (nibble x
/// int8 pairs stay far inside i16) and `VPMADDWD`: each block's products land in its
/// dword lane.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kernel_q4<const R: usize>(a: TileArgs, r: usize) {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for g in 0..a.groups {
        for half in 0..2 {
            let x = |i: usize, u: usize| {
                let line = a.xq.add((i * a.stride + g) * CHUNKS + u);
                _mm256_load_si256(line.cast::<__m256i>().add(half))
            };
            // From -8 Σ q_x, the dot of the nibbles (q_w + 8) ends at Σ q_w q_x.
            let mut dot: [__m256i; R] = std::array::from_fn(|i| {
                let neg = a.neg.add(i * a.stride + g).cast::<__m256i>();
                _mm256_load_si256(neg.add(half))
            });
            for c in 0..CHUNKS / 2 {
                let line = a.w_line(CHUNKS / 2, g, c, r);
                let v = _mm256_load_si256(line.cast::<__m256i>().add(half));
                let lo = _mm256_and_si256(v, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                for (i, dot) in dot.iter_mut().enumerate() {
                    let lo = _mm256_maddubs_epi16(lo, x(i, c));
                    let hi = _mm256_maddubs_epi16(hi, x(i, c + CHUNKS / 2));
                    let pairs = _mm256_add_epi16(lo, hi);
                    *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(pairs, ones));
                }
            }
            let dw = scales(&a, g, r, half);
            for (i, acc) in acc.iter_mut().enumerate() {
                let dx = a.dx.add(i * a.stride + g).cast::<f32>().add(8 * half);
                let d = _mm256_mul_ps(dw, _mm256_load_ps(dx));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[i]), d, *acc);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        a.store(i, r, sum(*acc));
    }
}

/// Q8 weights (the quad's row `r`) times 12-bit activations, as the AVX-512 kernel with
/// `VPMADDWD`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kernel_q8<const R: usize>(a: TileArgs, r: usize) {
    let odd = _mm256_set1_epi16(0xFF00u16 as i16);
    let mut acc = [_mm256_setzero_ps(); R];
    for g in 0..a.groups {
        for half in 0..2 {
            let x = |i: usize, line: usize| {
                let line = a.xq.add((i * a.stride + g) * 2 * CHUNKS + line);
                _mm256_load_si256(line.cast::<__m256i>().add(half))
            };
            let mut dot = [_mm256_setzero_si256(); R];
            for u in 0..CHUNKS {
                let line = a.w_line(CHUNKS, g, u, r);
                let v = _mm256_load_si256(line.cast::<__m256i>().add(half));
                let even = _mm256_slli_epi16::<8>(v);
                let odd = _mm256_and_si256(v, odd);
                for (i, dot) in dot.iter_mut().enumerate() {
                    let even = _mm256_madd_epi16(even, x(i, 2 * u));
                    let odd = _mm256_madd_epi16(odd, x(i, 2 * u + 1));
                    *dot = _mm256_add_epi32(*dot, _mm256_add_epi32(even, odd));
                }
            }
            // The 1/256 undoes the shift (exactly: a power of two).
            let dw = _mm256_mul_ps(scales(&a, g, r, half), _mm256_set1_ps(1.0 / 256.0));
            for (i, acc) in acc.iter_mut().enumerate() {
                let dx = a.dx.add(i * a.stride + g).cast::<f32>().add(8 * half);
                let d = _mm256_mul_ps(dw, _mm256_load_ps(dx));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[i]), d, *acc);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        a.store(i, r, sum(*acc));
    }
}

/// [`kernel_q4`] for the quad's 4 weight rows at once (the padding rows of a last,
/// partial quad are zeros; their results are not stored), both halves of each line in
/// one pass where `H` is 2.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quad_q4<const R: usize, const H: usize>(a: TileArgs) {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); QUAD]; R];
    for g in 0..a.groups {
        prefetch_ahead(&a, g, CHUNKS / 2);
        for pass in 0..2 / H {
            let x = |i: usize, u: usize, h: usize| {
                let line = a.xq.add((i * a.stride + g) * CHUNKS + u);
                _mm256_load_si256(line.cast::<__m256i>().add(pass * H + h))
            };
            let mut dot: [[[__m256i; QUAD]; H]; R] = std::array::from_fn(|i| {
                let neg = a.neg.add(i * a.stride + g).cast::<__m256i>();
                std::array::from_fn(|h| [_mm256_load_si256(neg.add(pass * H + h)); QUAD])
            });
            for c in 0..CHUNKS / 2 {
                for r in 0..QUAD {
                    let line = a.w_line(CHUNKS / 2, g, c, r).cast::<__m256i>();
                    for h in 0..H {
                        let v = _mm256_load_si256(line.add(pass * H + h));
                        let lo = _mm256_and_si256(v, low);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                        for (i, dot) in dot.iter_mut().enumerate() {
                            let pairs = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lo, x(i, c, h)),
                                _mm256_maddubs_epi16(hi, x(i, c + CHUNKS / 2, h)),
                            );
                            dot[h][r] = _mm256_add_epi32(dot[h][r], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
            }
            for h in 0..H {
                add_scaled(&a, g, pass * H + h, 1.0, &dot.map(|d| d[h]), &mut acc);
            }
        }
    }
    store_quad(&a, &acc);
}

/// [`kernel_q8`] for the quad's 4 weight rows at once (as [`quad_q4`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quad_q8<const R: usize, const H: usize>(a: TileArgs) {
    let odd = _mm256_set1_epi16(0xFF00u16 as i16);
    let mut acc = [[_mm256_setzero_ps(); QUAD]; R];
    for g in 0..a.groups {
        prefetch_ahead(&a, g, CHUNKS);
        for pass in 0..2 / H {
            let x = |i: usize, line: usize, h: usize| {
                let line = a.xq.add((i * a.stride + g) * 2 * CHUNKS + line);
                _mm256_load_si256(line.cast::<__m256i>().add(pass * H + h))
            };
            let mut dot = [[[_mm256_setzero_si256(); QUAD]; H]; R];
            for u in 0..CHUNKS {
                for r in 0..QUAD {
                    let line = a.w_line(CHUNKS, g, u, r).cast::<__m256i>();
                    for h in 0..H {
                        let v = _mm256_load_si256(line.add(pass * H + h));
                        let even = _mm256_slli_epi16::<8>(v);
                        let odd = _mm256_and_si256(v, odd);
                        for (i, dot) in dot.iter_mut().enumerate() {
                            let even = _mm256_madd_epi16(even, x(i, 2 * u, h));
                            let odd = _mm256_madd_epi16(odd, x(i, 2 * u + 1, h));
                            dot[h][r] = _mm256_add_epi32(dot[h][r], _mm256_add_epi32(even, odd));
                        }
                    }
                }
            }
            // The 1/256 undoes the shift (exactly: a power of two).
            for h in 0..H {
                add_scaled(
                    &a,
                    g,
                    pass * H + h,
                    1.0 / 256.0,
                    &dot.map(|d| d[h]),
                    &mut acc,
                );
            }
        }
    }
    store_quad(&a, &acc);
}

/// Prefetches the weight lines of group `g + 2` of the quad (`lpg` lines per row): the
/// hardware prefetchers alone left decoding well below the memory's speed.
#[inline(always)]
unsafe fn prefetch_ahead(a: &TileArgs, g: usize, lpg: usize) {
    // Past the tile's weights this reads the next quad's, or nothing (no fault).
    let ahead = a.wq.wrapping_add((g + 2) * lpg * QUAD).cast::<i8>();
    for l in 0..lpg * QUAD {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l));
    }
}

/// `acc[i][r] += dot[i][r] · d_w · d_x · extra` for half `half` of group `g`.
#[inline(always)]
unsafe fn add_scaled<const R: usize>(
    a: &TileArgs,
    g: usize,
    half: usize,
    extra: f32,
    dot: &[[__m256i; QUAD]; R],
    acc: &mut [[__m256; QUAD]; R],
) {
    for r in 0..QUAD {
        let dw = _mm256_mul_ps(scales(a, g, r, half), _mm256_set1_ps(extra));
        for (i, acc) in acc.iter_mut().enumerate() {
            let dx = a.dx.add(i * a.stride + g).cast::<f32>().add(8 * half);
            let d = _mm256_mul_ps(dw, _mm256_load_ps(dx));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[i][r]), d, acc[r]);
        }
    }
}

/// Stores (or adds) a quad kernel's sums: row `i`, weight row `r` < `cols`.
#[inline(always)]
unsafe fn store_quad<const R: usize>(a: &TileArgs, acc: &[[__m256; QUAD]; R]) {
    for (i, acc) in acc.iter().enumerate() {
        for (r, acc) in acc.iter().enumerate().take(a.cols) {
            a.store(i, r, sum(*acc));
        }
    }
}

/// Half `half` (8 blocks) of the block scales of group `g` of the quad's row `r`, as
/// [`super::block_scale`] computes them.
///
/// # Safety
/// As [`super::TileArgs::w_scales`]; AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales(a: &TileArgs, g: usize, r: usize, half: usize) -> __m256 {
    let (s, d) = a.w_scales(g, r);
    let s = _mm256_cvtepi8_epi32(_mm_loadl_epi64(s.add(8 * half).cast()));
    _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d))
}

/// [`super::quantize_act_block`] with AVX2 (the same values).
///
/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_act_block(x: &[f32], top: f32, q: &mut [i32; BLOCK]) -> f32 {
    let n = x.len().min(BLOCK);
    let mut tail = [0f32; BLOCK];
    let src = if n == BLOCK {
        x.as_ptr()
    } else {
        tail[..n].copy_from_slice(&x[..n]);
        tail.as_ptr()
    };
    let v = [0, 1, 2, 3].map(|g| _mm256_loadu_ps(src.add(8 * g)));
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let m = v.map(|v| _mm256_and_ps(v, magnitude));
    let m = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
    let (d, inv) = super::act_scale(_mm_cvtss_f32(m), top);
    let inv = _mm256_set1_ps(inv);
    for (g, v) in v.into_iter().enumerate() {
        // Rounds to nearest even (MXCSR's default), as `round_even`.
        let qv = _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
        _mm256_storeu_si256(q.as_mut_ptr().add(8 * g).cast(), qv);
    }
    d
}
