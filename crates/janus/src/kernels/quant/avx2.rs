//! AVX2 quant kernels (see the parent module for the layout): a 256-bit register holds
//! half a chunk, blocks 0..8 or 8..16. One or two activation rows (decoding) take the
//! quad's 4 weight rows together, so the weights stream in storage order (a row at a time
//! reads every fourth line, which held decoding to a third of the memory's speed); so do
//! 3-4 rows of a streaming product (a block of speculative drafts), one half line at a
//! time; prefill tiles take the weight rows one at a time (16 registers hold no more),
//! the activations coming from L1 for each. Every kernel adds a row's terms in the same
//! order, so a row gets the same bits from each.
//!
//! With AVX-VNNI (`V`, the `AvxVnni` level) the integer dots take `VPDPBUSD` and
//! `VPDPWSSD` where AVX2 multiplies into words or dwords and adds: the same exact sums in
//! the same lanes, so the same results.

use std::arch::asm;
use std::arch::x86_64::*;

use super::{TileArgs, BLOCK, CHUNKS, QUAD, STREAM_GROUPS_AHEAD};

/// # Safety
/// As [`super::tile`] for Q4, with AVX2 + FMA + F16C present, and AVX-VNNI if `V`.
pub(super) unsafe fn tile_q4<const V: bool>(rows: usize, a: TileArgs) {
    match rows {
        1 => quad_q4::<1, 2, V>(a),
        2 => quad_q4::<2, 2, V>(a),
        3 if a.streams => quad_q4::<3, 1, V>(a),
        3 => (0..a.cols).for_each(|r| kernel_q4::<3, V>(a, r)),
        _ if a.streams => quad_q4::<4, 1, V>(a),
        _ => (0..a.cols).for_each(|r| kernel_q4::<4, V>(a, r)),
    }
}

/// # Safety
/// As [`super::tile`] for Q8, with AVX2 + FMA + F16C present, and AVX-VNNI if `V`.
pub(super) unsafe fn tile_q8<const V: bool>(rows: usize, a: TileArgs) {
    match rows {
        1 => quad_q8::<1, 2, V>(a),
        2 => quad_q8::<2, 2, V>(a),
        3 if a.streams => quad_q8::<3, 1, V>(a),
        3 => (0..a.cols).for_each(|r| kernel_q8::<3, V>(a, r)),
        _ if a.streams => quad_q8::<4, 1, V>(a),
        _ => (0..a.cols).for_each(|r| kernel_q8::<4, V>(a, r)),
    }
}

/// `dot` plus one Q4 half line's products: the low and high nibbles (`lo`, `hi`) with
/// their int8 activations. AVX2: pairs summed in i16 (`VPMADDUBSW`; nibble x int8 pairs
/// stay far inside it), then into each block's dword lane (`VPMADDWD` by ones); with
/// AVX-VNNI (`V`) four at a time straight into the lane (`VPDPBUSD`).
#[inline(always)]
unsafe fn q4_dot<const V: bool>(
    dot: __m256i,
    lo: __m256i,
    hi: __m256i,
    x_lo: __m256i,
    x_hi: __m256i,
    ones: __m256i,
) -> __m256i {
    if V {
        return dpbusd2(dot, [lo, x_lo], [hi, x_hi]);
    }
    let pairs = _mm256_add_epi16(
        _mm256_maddubs_epi16(lo, x_lo),
        _mm256_maddubs_epi16(hi, x_hi),
    );
    _mm256_add_epi32(dot, _mm256_madd_epi16(pairs, ones))
}

/// `dot` plus one Q8 half line's products: its even and odd weights (as 256 q in i16
/// lanes) with their 12-bit activations (`VPMADDWD` and adds; with AVX-VNNI, `VPDPWSSD`).
#[inline(always)]
unsafe fn q8_dot<const V: bool>(
    dot: __m256i,
    even: __m256i,
    odd: __m256i,
    xe: __m256i,
    xo: __m256i,
) -> __m256i {
    if V {
        return dpwssd2(dot, [even, xe], [odd, xo]);
    }
    let (even, odd) = (_mm256_madd_epi16(even, xe), _mm256_madd_epi16(odd, xo));
    _mm256_add_epi32(dot, _mm256_add_epi32(even, odd))
}

/// `acc` plus the dot products of the pairs `p` and `q` by one AVX-VNNI instruction each,
/// written out: the intrinsics need the `avxvnni` target feature, which the kernels cannot
/// enable for their AVX-VNNI instances alone.
macro_rules! vex_dot_pair {
    ($(#[$doc:meta])* $name:ident, $op:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// AVX-VNNI present.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn $name(mut acc: __m256i, p: [__m256i; 2], q: [__m256i; 2]) -> __m256i {
            asm!(
                concat!("{{vex}} ", $op, " {acc}, {a}, {b}"),
                concat!("{{vex}} ", $op, " {acc}, {c}, {d}"),
                acc = inout(ymm_reg) acc,
                a = in(ymm_reg) p[0],
                b = in(ymm_reg) p[1],
                c = in(ymm_reg) q[0],
                d = in(ymm_reg) q[1],
                options(pure, nomem, nostack, preserves_flags),
            );
            acc
        }
    };
}

vex_dot_pair!(
    /// Unsigned bytes by signed bytes, four per dword lane (`VPDPBUSD`).
    dpbusd2,
    "vpdpbusd"
);
vex_dot_pair!(
    /// Signed words, two per dword lane (`VPDPWSSD`).
    dpwssd2,
    "vpdpwssd"
);

/// The 8 lanes of a float vector, summed.
#[inline(always)]
unsafe fn sum(v: __m256) -> f32 {
    let lanes: [f32; 8] = std::mem::transmute(v);
    lanes.iter().sum()
}

/// Q4 weights (the quad's row `r`) times int8 activations ([`q4_dot`]): each block's
/// products land in its dword lane.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kernel_q4<const R: usize, const V: bool>(a: TileArgs, r: usize) {
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
                    *dot = q4_dot::<V>(*dot, lo, hi, x(i, c), x(i, c + CHUNKS / 2), ones);
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

/// Q8 weights (the quad's row `r`) times 12-bit activations, as the AVX-512 kernel
/// ([`q8_dot`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kernel_q8<const R: usize, const V: bool>(a: TileArgs, r: usize) {
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
                    *dot = q8_dot::<V>(*dot, even, odd, x(i, 2 * u), x(i, 2 * u + 1));
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
unsafe fn quad_q4<const R: usize, const H: usize, const V: bool>(a: TileArgs) {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); QUAD]; R];
    for g in 0..a.groups {
        if !by_line::<H, V>() {
            prefetch_ahead(&a, g, CHUNKS / 2);
        }
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
                if by_line::<H, V>() {
                    prefetch_line(&a, g, c, CHUNKS / 2);
                }
                for r in 0..QUAD {
                    let line = a.w_line(CHUNKS / 2, g, c, r).cast::<__m256i>();
                    for h in 0..H {
                        let v = _mm256_load_si256(line.add(pass * H + h));
                        let lo = _mm256_and_si256(v, low);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                        for (i, dot) in dot.iter_mut().enumerate() {
                            let (xl, xh) = (x(i, c, h), x(i, c + CHUNKS / 2, h));
                            dot[h][r] = q4_dot::<V>(dot[h][r], lo, hi, xl, xh, ones);
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
unsafe fn quad_q8<const R: usize, const H: usize, const V: bool>(a: TileArgs) {
    let odd = _mm256_set1_epi16(0xFF00u16 as i16);
    let mut acc = [[_mm256_setzero_ps(); QUAD]; R];
    for g in 0..a.groups {
        if !by_line::<H, V>() {
            prefetch_ahead(&a, g, CHUNKS);
        }
        for pass in 0..2 / H {
            let x = |i: usize, line: usize, h: usize| {
                let line = a.xq.add((i * a.stride + g) * 2 * CHUNKS + line);
                _mm256_load_si256(line.cast::<__m256i>().add(pass * H + h))
            };
            let mut dot = [[[_mm256_setzero_si256(); QUAD]; H]; R];
            for u in 0..CHUNKS {
                if by_line::<H, V>() {
                    prefetch_line(&a, g, u, CHUNKS);
                }
                for r in 0..QUAD {
                    let line = a.w_line(CHUNKS, g, u, r).cast::<__m256i>();
                    for h in 0..H {
                        let v = _mm256_load_si256(line.add(pass * H + h));
                        let even = _mm256_slli_epi16::<8>(v);
                        let odd = _mm256_and_si256(v, odd);
                        for (i, dot) in dot.iter_mut().enumerate() {
                            let (xe, xo) = (x(i, 2 * u, h), x(i, 2 * u + 1, h));
                            dot[h][r] = q8_dot::<V>(dot[h][r], even, odd, xe, xo);
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

/// Whether a quad kernel prefetches its weights a line at a time ([`prefetch_line`], the
/// AVX-VNNI instances for one or two rows: Intel cores, where it streamed Q8 at 21-24
/// GB/s against the bursts' 18) rather than a group's lines at once ([`prefetch_ahead`]:
/// Zen 3, where the AVX2 kernels were tuned; and 3-4 rows, which pass over each group
/// twice). docs/kernels.md has the numbers.
#[inline(always)]
const fn by_line<const H: usize, const V: bool>() -> bool {
    V && H == 2
}

/// Prefetches line `s` of the quad's 4 rows in group `g +` [`STREAM_GROUPS_AHEAD`] into
/// L2 (`lpg` lines per row), as the AVX-512 kernel does.
#[inline(always)]
unsafe fn prefetch_line(a: &TileArgs, g: usize, s: usize, lpg: usize) {
    for r in 0..QUAD {
        let ahead = a.w_line_ahead(lpg, g + STREAM_GROUPS_AHEAD, s, r);
        _mm_prefetch::<_MM_HINT_T1>(ahead.cast());
    }
}

/// Prefetches the weight lines of group `g + 2` of the quad (`lpg` lines per row): the
/// hardware prefetchers alone left decoding well below the memory's speed.
#[inline(always)]
unsafe fn prefetch_ahead(a: &TileArgs, g: usize, lpg: usize) {
    // The group's lines lie together, all four rows' side by side.
    let ahead = a.w_line_ahead(lpg, g + 2, 0, 0).cast::<i8>();
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

/// [`super::dequantize_panels`] at AVX2 (the same bits as its plain loops): per group and
/// line, each row's 64 weights scaled, rounded to bf16 and paired; then 8 rows at a time
/// transposed, so that a column pair of 8 rows (32 bytes of a panel) is one store.
///
/// # Safety
/// As [`super::dequantize_panels`] after its checks (`data` holds `rows.div_ceil(16)`
/// panels of `pairs` pairs); AVX2 present.
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)] // quarter q of every row's line
pub(super) unsafe fn dequantize_q8(
    w: &super::QuantMatrix,
    j0: usize,
    rows: usize,
    data: *mut half::bf16,
    pairs: usize,
) {
    use super::{GROUP, GROUP_BLOCKS, PANEL};
    for g in 0..w.groups {
        // Pairs of this group inside the row (the last group's may run past it).
        let valid = pairs.saturating_sub(g * GROUP / 2).min(GROUP / 2);
        for r0 in (0..rows).step_by(8) {
            let nr = 8.min(rows - r0);
            // Scales of blocks 2h and 2h + 1, four lanes each, per row.
            let mut scales = [[_mm256_setzero_ps(); GROUP_BLOCKS / 2]; 8];
            for (r, s) in scales.iter_mut().enumerate().take(nr) {
                let j = j0 + r0 + r;
                let at = (j / QUAD * w.groups + g) * QUAD + j % QUAD;
                let d = w.supers[at];
                for (h, s) in s.iter_mut().enumerate() {
                    let sub = |b: usize| super::block_scale(w.subs[at * GROUP_BLOCKS + b], d);
                    let (a, b) = (_mm_set1_ps(sub(2 * h)), _mm_set1_ps(sub(2 * h + 1)));
                    *s = _mm256_set_m128(b, a);
                }
            }
            let panel = data.add((r0 / PANEL) * pairs * 2 * PANEL + 2 * (r0 % PANEL));
            for u in 0..CHUNKS {
                // quarters[r][q]: row r's pairs 8q..8q + 8 of this line, as u32.
                let mut quarters = [[_mm256_setzero_si256(); 4]; 8];
                for (r, qs) in quarters.iter_mut().enumerate().take(nr) {
                    let j = j0 + r0 + r;
                    let line = w
                        .quants
                        .as_ptr()
                        .add(((j / QUAD * w.groups + g) * CHUNKS + u) * QUAD + j % QUAD)
                        .cast::<u8>();
                    for (q, v) in qs.iter_mut().enumerate() {
                        let bf: [__m256i; 2] = std::array::from_fn(|k| {
                            let h = 2 * q + k;
                            let b = _mm_loadl_epi64(line.add(8 * h).cast());
                            let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
                            round_bf16(_mm256_mul_ps(f, scales[r][h]))
                        });
                        // u16 values in i32 lanes, packed per 128-bit lane: put back in
                        // order, 8 u32 pairs.
                        *v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(
                            bf[0], bf[1],
                        ));
                    }
                }
                for q in 0..4 {
                    let mut t: [__m256i; 8] = std::array::from_fn(|r| quarters[r][q]);
                    transpose8(&mut t);
                    // t[i] is pair e2 = 8q + i of the 8 rows: block e2 / 2, column pair
                    // 2u + e2 % 2 of it.
                    for (i, v) in t.iter().enumerate() {
                        let e2 = 8 * q + i;
                        let c = e2 / 2 * BLOCK / 2 + 2 * u + e2 % 2;
                        if c < valid {
                            let at = panel.add((g * GROUP / 2 + c) * 2 * PANEL);
                            _mm256_storeu_si256(at.cast(), *v);
                        }
                    }
                }
            }
        }
    }
}

/// f32 lanes rounded to bf16 (nearest even, NaNs quieted, as [`crate::kernels::narrow`]),
/// the 16 bits in the low half of each lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round_bf16(v: __m256) -> __m256i {
    let b = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb);
    let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(b, bias));
    let magnitude = _mm256_and_si256(b, _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f80_0000));
    let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(0x40));
    _mm256_blendv_epi8(rounded, quiet, nan)
}

/// Transposes an 8 x 8 matrix of dwords (row `i` in `m[i]`) in place.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(m: &mut [__m256i; 8]) {
    let f = |v: __m256i| _mm256_castsi256_ps(v);
    let i = |v: __m256| _mm256_castps_si256(v);
    // Within 128-bit lanes: 2x2 blocks of dword pairs, then of quads.
    let t: [__m256; 8] = std::array::from_fn(|k| {
        let (a, b) = (f(m[2 * (k / 2)]), f(m[2 * (k / 2) + 1]));
        if k % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // s[4h + c]: column c (and c + 4 in the upper lane) of rows 4h..4h + 4.
    let s: [__m256; 8] = std::array::from_fn(|k| {
        let (h, c) = (k / 4, k % 4);
        let (a, b) = (t[4 * h + c / 2], t[4 * h + c / 2 + 2]);
        if c % 2 == 0 {
            _mm256_shuffle_ps::<0b01_00_01_00>(a, b)
        } else {
            _mm256_shuffle_ps::<0b11_10_11_10>(a, b)
        }
    });
    // Across 128-bit lanes.
    for k in 0..4 {
        m[k] = i(_mm256_permute2f128_ps::<0x20>(s[k], s[k + 4]));
        m[k + 4] = i(_mm256_permute2f128_ps::<0x31>(s[k], s[k + 4]));
    }
}
