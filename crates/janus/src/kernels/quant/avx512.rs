//! AVX-512 VNNI quant kernels (see the parent module for the layout).

use std::arch::asm;
use std::arch::x86_64::*;

use super::{avx512_prefetches, TileArgs, BLOCK, CHUNKS, QUAD, STREAM_GROUPS_AHEAD};
use half::bf16;

/// # Safety
/// As [`super::tile`] for Q4, with AVX-512 F/BW/VNNI present.
pub(super) unsafe fn tile_q4(rows: usize, a: TileArgs) {
    match rows {
        1 => kernel::<false, 1>(a),
        2 => kernel::<false, 2>(a),
        3 => kernel::<false, 3>(a),
        _ => kernel::<false, 4>(a),
    }
}

/// # Safety
/// As [`super::tile`] for Q8, with AVX-512 F/BW/VNNI present.
pub(super) unsafe fn tile_q8(rows: usize, a: TileArgs) {
    match rows {
        1 => kernel::<true, 1>(a),
        2 => kernel::<true, 2>(a),
        3 => kernel::<true, 3>(a),
        _ => kernel::<true, 4>(a),
    }
}

/// `acc + ` the lane-wise sums of word products of `a` and `b` (`VPDPWSSD`), written out
/// because LLVM splits the intrinsic into `VPMADDWD` + `VPADDD` for generic x86-64.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    asm!(
        "vpdpwssd {acc}, {a}, {b}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// One weight quad times `R` activation rows, both formats (`Q8` or Q4).
///
/// Each weight line unpacks into two operands, each multiplied with its own activation
/// line into the block's dword lane:
/// - Q8 (12-bit activations, `VPDPWSSD`): a chunk's words shifted up by 8 are 256 times
///   its even weights, masked to the high byte 256 times its odd ones, against the even
///   and the odd activation lines; the 1/256 is folded into the scale (exactly: a power
///   of two).
/// - Q4 (int8 activations, `VPDPBUSD`): the low nibbles are chunk `s`, the high ones
///   chunk `s + 4`; the sums start at `-8 Σ q_x`, so the dot of the stored `q_w + 8`
///   ends at `Σ q_w q_x`.
///
/// Every activation load serves the quad's 4 weight rows. With a single activation row
/// the two operands sum into separate registers (8 chains of dependent products, not 4).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel<const Q8: bool, const R: usize>(a: TileArgs) {
    let lines = if Q8 { CHUNKS } else { CHUNKS / 2 };
    let unscale = _mm512_set1_ps(if Q8 { 1.0 / 256.0 } else { 1.0 });
    let (high, low) = (_mm512_set1_epi16(0xFF00u16 as i16), _mm512_set1_epi8(0x0F));
    let unpack = |v: __m512i| -> [__m512i; 2] {
        if Q8 {
            [_mm512_slli_epi16::<8>(v), _mm512_and_si512(v, high)]
        } else {
            [
                _mm512_and_si512(v, low),
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), low),
            ]
        }
    };
    let split = usize::from(R == 1);
    let prefetch = a.streams && avx512_prefetches();
    let mut acc = [[_mm512_setzero_ps(); R]; QUAD];
    for g in 0..a.groups {
        let mut dot = [[[_mm512_setzero_si512(); 2]; R]; QUAD];
        if !Q8 {
            for i in 0..R {
                let neg = _mm512_load_si512(a.neg.add(i * a.stride + g).cast());
                for dot in dot.iter_mut() {
                    dot[i][0] = neg;
                }
            }
        }
        for s in 0..lines {
            if prefetch {
                // A line at a time into L2: a group's lines in one burst, or into L1,
                // held the loads up (docs/kernels.md).
                for r in 0..QUAD {
                    let ahead = a.w_line_ahead(lines, g + STREAM_GROUPS_AHEAD, s, r);
                    _mm_prefetch::<_MM_HINT_T1>(ahead.cast());
                }
            }
            let w: [[__m512i; 2]; QUAD] =
                std::array::from_fn(|r| unpack(_mm512_load_si512(a.w_line(lines, g, s, r).cast())));
            // The activation lines that pair with this weight line's two operands.
            let pair = if Q8 {
                [2 * s, 2 * s + 1]
            } else {
                [s, s + lines]
            };
            for i in 0..R {
                let row = a.xq.add((i * a.stride + g) * 2 * lines);
                let x = pair.map(|l| _mm512_load_si512(row.add(l).cast()));
                for (dot, w) in dot.iter_mut().zip(&w) {
                    for h in 0..2 {
                        let d = &mut dot[i][h * split];
                        *d = if Q8 {
                            dpwssd(*d, w[h], x[h])
                        } else {
                            _mm512_dpbusd_epi32(*d, w[h], x[h])
                        };
                    }
                }
            }
        }
        let dx: [__m512; R] =
            std::array::from_fn(|i| _mm512_load_ps(a.dx.add(i * a.stride + g).cast()));
        for r in 0..QUAD {
            // `block_scale`: the bytes times the shared scale, one product each.
            let (s, d) = a.w_scales(g, r);
            let s = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(s.cast())));
            let dw = _mm512_mul_ps(_mm512_mul_ps(s, _mm512_set1_ps(d)), unscale);
            for i in 0..R {
                let sum = _mm512_add_epi32(dot[r][i][0], dot[r][i][1]);
                let sum = _mm512_cvtepi32_ps(sum);
                acc[r][i] = _mm512_fmadd_ps(sum, _mm512_mul_ps(dw, dx[i]), acc[r][i]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(a.cols) {
        for (i, acc) in acc.iter().enumerate() {
            a.store(i, r, _mm512_reduce_add_ps(*acc));
        }
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

/// [`super::QuantActs::new`]'s work for one group of an activation row, all 16 blocks at
/// once (the same values as the per-block code): `x` the group's values (at most 512; past
/// its end, zeros), quantised per block to `-top..=top` into `lines` (8 int8 lines, or
/// with `wide` 16 lines of 12-bit words), the blocks' scales into `scale` and, int8 only,
/// `-8 Σ q` per block into `neg`. The blocks' largest magnitudes and sums come from one
/// 16 x 16 transpose each instead of 16 horizontal reductions, and the quants reach their
/// chunks through a third: block `l`'s quants, narrowed, become register `l`, whose dword
/// `u` belongs in lane `l` of line `u`.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `lines` holds 8 lines (16 with `wide`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn quantize_act_group(
    x: &[f32],
    top: f32,
    wide: bool,
    lines: &mut [super::Line],
    neg: &mut super::Lanes<i32>,
    scale: &mut super::Lanes<f32>,
) {
    use super::{GROUP, GROUP_BLOCKS};
    let n = x.len().min(GROUP);
    assert!(lines.len() >= if wide { 2 * CHUNKS } else { CHUNKS });
    let mask = |from: usize| ((1u32 << n.saturating_sub(from).min(16)) - 1) as __mmask16;
    // Block l is v[2l], v[2l + 1]; masked-off lanes are not read.
    let v: [__m512; 2 * GROUP_BLOCKS] = std::array::from_fn(|i| {
        _mm512_maskz_loadu_ps(mask(16 * i), x.as_ptr().wrapping_add(16 * i))
    });
    let mut t: [__m512i; GROUP_BLOCKS] = std::array::from_fn(|l| {
        let m = _mm512_max_ps(_mm512_abs_ps(v[2 * l]), _mm512_abs_ps(v[2 * l + 1]));
        _mm512_castps_si512(m)
    });
    transpose16(&mut t);
    let amax = t.iter().fold(_mm512_setzero_ps(), |a, &r| {
        _mm512_max_ps(a, _mm512_castsi512_ps(r))
    });
    // As `act_scale`, lane by lane (IEEE division: the same quotients).
    let ok = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(amax, _mm512_set1_ps(1e-30));
    let topv = _mm512_set1_ps(top);
    _mm512_store_ps(scale.0.as_mut_ptr(), _mm512_maskz_div_ps(ok, amax, topv));
    let mut inv = [0f32; GROUP_BLOCKS];
    _mm512_storeu_ps(inv.as_mut_ptr(), _mm512_maskz_div_ps(ok, topv, amax));
    // 12-bit words of a block in the order of their lines: dword 2u holds values 4u and
    // 4u + 2 (chunk u's even line), dword 2u + 1 values 4u + 1 and 4u + 3 (its odd line).
    let order = _mm512_set_epi16(
        31, 29, 30, 28, 27, 25, 26, 24, 23, 21, 22, 20, 19, 17, 18, 16, 15, 13, 14, 12, 11, 9, 10,
        8, 7, 5, 6, 4, 3, 1, 2, 0,
    );
    for (l, t) in t.iter_mut().enumerate() {
        let s = _mm512_set1_ps(inv[l]);
        // Rounds to nearest even (MXCSR's default), as `round_even`.
        let q = [0, 1].map(|h| _mm512_cvtps_epi32(_mm512_mul_ps(v[2 * l + h], s)));
        *t = if wide {
            let lo = _mm512_castsi256_si512(_mm512_cvtepi32_epi16(q[0]));
            let w = _mm512_inserti64x4::<1>(lo, _mm512_cvtepi32_epi16(q[1]));
            _mm512_permutexvar_epi16(order, w)
        } else {
            let lo = _mm256_castsi128_si256(_mm512_cvtepi32_epi8(q[0]));
            _mm512_castsi256_si512(_mm256_inserti128_si256::<1>(lo, _mm512_cvtepi32_epi8(q[1])))
        };
    }
    transpose16(&mut t);
    if wide {
        for (line, t) in lines.iter_mut().zip(&t) {
            _mm512_store_si512(line.0.as_mut_ptr().cast(), *t);
        }
    } else {
        // Each lane's sum of its 4 signed bytes per line: the block's Σ q.
        let (ones, mut sum) = (_mm512_set1_epi8(1), _mm512_setzero_si512());
        for (line, t) in lines.iter_mut().zip(&t[..CHUNKS]) {
            _mm512_store_si512(line.0.as_mut_ptr().cast(), *t);
            sum = _mm512_dpbusd_epi32(sum, ones, *t);
        }
        let neg8 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<3>(sum));
        _mm512_store_si512(neg.0.as_mut_ptr().cast(), neg8);
    }
}

/// [`super::dequantize_panels`] (Q8 and Q4, the same bits): per group and line, 16 rows of 32
/// column pairs each are dequantised in registers (`VCVTNEPS2BF16`, nearest even like
/// `narrow`; the products `q d` are never subnormal or NaN) and transposed, so each
/// destination line (one pair, 16 rows) is one 64-byte store.
///
/// # Safety
/// AVX-512 F/BW/BF16 present; `rows` rows from `j0` (a multiple of 4) exist in `w`, at most
/// 32 of them; `data` holds `rows.div_ceil(16)` panels of `pairs = w.cols.div_ceil(2)`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn dequantize(
    w: &super::QuantMatrix,
    j0: usize,
    rows: usize,
    data: *mut bf16,
    pairs: usize,
) {
    use super::{GROUP, GROUP_BLOCKS, PANEL};
    // Lane i of quarter h takes block 4h + i / 4's scale.
    let base = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let index: [__m512i; 4] =
        std::array::from_fn(|h| _mm512_add_epi32(base, _mm512_set1_epi32(4 * h as i32)));
    let lpg = w.format.lines_per_group();
    for g in 0..w.groups {
        let valid = pairs.saturating_sub(g * GROUP / 2).min(GROUP / 2);
        for r0 in (0..rows).step_by(PANEL) {
            let nr = PANEL.min(rows - r0);
            let panel = data.add(r0 / PANEL * pairs * 2 * PANEL + g * GROUP / 2 * 2 * PANEL);
            let mut scales = [[_mm512_setzero_ps(); 4]; PANEL];
            for (r, s) in scales.iter_mut().enumerate().take(nr) {
                let j = j0 + r0 + r;
                let at = (j / QUAD * w.groups + g) * QUAD + j % QUAD;
                let b = _mm_loadu_si128(w.subs.as_ptr().add(at * GROUP_BLOCKS).cast());
                let b = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
                let d = _mm512_mul_ps(b, _mm512_set1_ps(w.supers[at]));
                *s = index.map(|i| _mm512_permutexvar_ps(i, d));
            }
            for u in 0..CHUNKS {
                let shift = _mm_cvtsi32_si128(4 * (u / lpg) as i32);
                // Row r's pairs 0..16 (blocks 0..8) and 16..32 (blocks 8..16) of this line.
                let mut halves = [[_mm512_setzero_si512(); PANEL]; 2];
                for r in 0..nr {
                    let j = j0 + r0 + r;
                    let line = w
                        .quants
                        .as_ptr()
                        .add(((j / QUAD * w.groups + g) * lpg + u % lpg) * QUAD + j % QUAD);
                    let bf: [__m256i; 4] = std::array::from_fn(|h| {
                        let bytes = _mm_loadu_si128(line.cast::<u8>().add(16 * h).cast());
                        let q = match w.format {
                            super::QuantFormat::Q8 => _mm512_cvtepi8_epi32(bytes),
                            // Chunk u in the low nibbles of line u, chunk u + 4 in the high.
                            super::QuantFormat::Q4 => {
                                let b = _mm512_srl_epi32(_mm512_cvtepu8_epi32(bytes), shift);
                                let nibble = _mm512_and_si512(b, _mm512_set1_epi32(0x0F));
                                _mm512_sub_epi32(nibble, _mm512_set1_epi32(8))
                            }
                        };
                        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(q), scales[r][h]);
                        std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v))
                    });
                    for (k, half) in halves.iter_mut().enumerate() {
                        let lo = _mm512_castsi256_si512(bf[2 * k]);
                        half[r] = _mm512_inserti64x4::<1>(lo, bf[2 * k + 1]);
                    }
                }
                for (k, half) in halves.iter_mut().enumerate() {
                    transpose16(half);
                    // half[i] is pair e2 = 16k + i of the 16 rows: block e2 / 2, column
                    // pair 2u + e2 % 2 of it.
                    for (i, v) in half.iter().enumerate() {
                        let e2 = 16 * k + i;
                        let c = e2 / 2 * BLOCK / 2 + 2 * u + e2 % 2;
                        if c < valid {
                            _mm512_storeu_si512(panel.add(c * 2 * PANEL).cast(), *v);
                        }
                    }
                }
            }
        }
    }
}

/// Transposes a 16 x 16 matrix of dwords (row `i` in `m[i]`) in place.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(m: &mut [__m512i; 16]) {
    // Pairs of rows interleaved, then pairs of pairs: lane (128 bits) L of t2[4i + k] holds
    // rows 4i..4i + 4 of column 4L + k.
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(m[2 * i], m[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(m[2 * i], m[2 * i + 1]);
    }
    let mut t2 = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        t2[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        t2[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        t2[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        t2[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // Then the lanes: column 4L + k gathers lane L of t2[k], t2[4 + k], t2[8 + k],
    // t2[12 + k].
    for k in 0..4 {
        let p = _mm512_shuffle_i32x4::<0x88>(t2[k], t2[4 + k]);
        let q = _mm512_shuffle_i32x4::<0xDD>(t2[k], t2[4 + k]);
        let p2 = _mm512_shuffle_i32x4::<0x88>(t2[8 + k], t2[12 + k]);
        let q2 = _mm512_shuffle_i32x4::<0xDD>(t2[8 + k], t2[12 + k]);
        m[k] = _mm512_shuffle_i32x4::<0x88>(p, p2);
        m[4 + k] = _mm512_shuffle_i32x4::<0x88>(q, q2);
        m[8 + k] = _mm512_shuffle_i32x4::<0xDD>(p, p2);
        m[12 + k] = _mm512_shuffle_i32x4::<0xDD>(q, q2);
    }
}
