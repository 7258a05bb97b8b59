//! AVX-512 VNNI quant kernels (see the parent module for the layout).

use std::arch::x86_64::*;

use super::{TileArgs, BLOCK, CHUNKS, GROUP_BLOCKS};

/// # Safety
/// As [`super::tile`] for Q4, with AVX-512 F/BW/VNNI present.
pub(super) unsafe fn tile_q4(rows: usize, a: TileArgs) {
    match rows {
        1 => kernel_q4::<1>(a),
        2 => kernel_q4::<2>(a),
        3 => kernel_q4::<3>(a),
        _ => kernel_q4::<4>(a),
    }
}

/// # Safety
/// As [`super::tile`] for Q8, with AVX-512 F/BW/VNNI present.
pub(super) unsafe fn tile_q8(rows: usize, a: TileArgs) {
    match rows {
        1 => kernel_q8::<1>(a),
        2 => kernel_q8::<2>(a),
        3 => kernel_q8::<3>(a),
        _ => kernel_q8::<4>(a),
    }
}

/// Q4 weights times int8 activations: `VPDPBUSD` sums each block's 4 products per chunk
/// into the block's dword lane.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel_q4<const R: usize>(a: TileArgs) {
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for g in 0..a.groups {
        let x = |i: usize, u: usize| {
            _mm512_load_si512(a.xq.add((i * a.stride + g) * CHUNKS + u).cast())
        };
        // From -8 Σ q_x, the dot of the nibbles (q_w + 8) ends at Σ q_w q_x.
        // Two sums per row (low and high nibbles) halve the dependency chains.
        let mut dot: [[__m512i; 2]; R] = std::array::from_fn(|i| {
            let neg = _mm512_load_si512(a.neg.add(i * a.stride + g).cast());
            [neg, _mm512_setzero_si512()]
        });
        for c in 0..CHUNKS / 2 {
            let v = _mm512_load_si512(a.wq.add(g * CHUNKS / 2 + c).cast());
            let lo = _mm512_and_si512(v, low);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
            for (i, dot) in dot.iter_mut().enumerate() {
                dot[0] = _mm512_dpbusd_epi32(dot[0], lo, x(i, c));
                dot[1] = _mm512_dpbusd_epi32(dot[1], hi, x(i, c + CHUNKS / 2));
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(a.ws.add(g * GROUP_BLOCKS).cast()));
        for (i, acc) in acc.iter_mut().enumerate() {
            let dx = _mm512_load_ps(a.dx.add(i * a.stride + g).cast());
            let dot = _mm512_cvtepi32_ps(_mm512_add_epi32(dot[i][0], dot[i][1]));
            *acc = _mm512_fmadd_ps(dot, _mm512_mul_ps(dw, dx), *acc);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        a.store(i, _mm512_reduce_add_ps(*acc));
    }
}

/// Q8 weights times 12-bit activations: a chunk's words shifted up by 8 are 256 times its
/// even weights, masked to the high byte 256 times its odd ones; `VPDPWSSD` with the even
/// and the odd activations then sums each block's products in its dword lane.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel_q8<const R: usize>(a: TileArgs) {
    let odd = _mm512_set1_epi16(0xFF00u16 as i16);
    let mut acc = [_mm512_setzero_ps(); R];
    for g in 0..a.groups {
        let x = |i: usize, line: usize| {
            _mm512_load_si512(a.xq.add((i * a.stride + g) * 2 * CHUNKS + line).cast())
        };
        // Four sums per row (even and odd weights of even and odd lines): the chains of
        // dependent VPDPWSSD, not the loads, bound this loop at one or two rows.
        let mut dot = [[_mm512_setzero_si512(); 4]; R];
        for u in 0..CHUNKS {
            let v = _mm512_load_si512(a.wq.add(g * CHUNKS + u).cast());
            let even = _mm512_slli_epi16::<8>(v);
            let odd = _mm512_and_si512(v, odd);
            let s = 2 * (u % 2);
            for (i, dot) in dot.iter_mut().enumerate() {
                dot[s] = _mm512_dpwssd_epi32(dot[s], even, x(i, 2 * u));
                dot[s + 1] = _mm512_dpwssd_epi32(dot[s + 1], odd, x(i, 2 * u + 1));
            }
        }
        // The 1/256 undoes the shift (exactly: a power of two).
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(a.ws.add(g * GROUP_BLOCKS).cast()));
        let dw = _mm512_mul_ps(dw, _mm512_set1_ps(1.0 / 256.0));
        for (i, acc) in acc.iter_mut().enumerate() {
            let dx = _mm512_load_ps(a.dx.add(i * a.stride + g).cast());
            let sum = _mm512_add_epi32(
                _mm512_add_epi32(dot[i][0], dot[i][1]),
                _mm512_add_epi32(dot[i][2], dot[i][3]),
            );
            let dot = _mm512_cvtepi32_ps(sum);
            *acc = _mm512_fmadd_ps(dot, _mm512_mul_ps(dw, dx), *acc);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        a.store(i, _mm512_reduce_add_ps(*acc));
    }
}

/// [`super::quantize_act_block`] with AVX-512 (the same values).
///
/// # Safety
/// AVX-512 F present.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize_act_block(x: &[f32], top: f32, q: &mut [i32; BLOCK]) -> f32 {
    let n = x.len().min(BLOCK);
    let mask = |from: usize| ((1u32 << n.saturating_sub(from).min(16)) - 1) as __mmask16;
    // Masked-off lanes are not read: the tail needs no copy.
    let v = [0, 16].map(|from| _mm512_maskz_loadu_ps(mask(from), x.as_ptr().wrapping_add(from)));
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    let (d, inv) = super::act_scale(amax, top);
    let inv = _mm512_set1_ps(inv);
    for (h, v) in v.into_iter().enumerate() {
        // Rounds to nearest even (MXCSR's default), as `round_even`.
        let qv = _mm512_cvtps_epi32(_mm512_mul_ps(v, inv));
        _mm512_storeu_si512(q.as_mut_ptr().add(16 * h).cast(), qv);
    }
    d
}
