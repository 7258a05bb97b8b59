//! Scaled dot-product attention on bf16 tensors with f32 scores, read straight from
//! strided views (the LLM's preallocated KV cache, SigLIP's q/k/v), written in the
//! `(B, T, H, Dh)` order the output projection wants.
//!
//! Per (batch row, head, block of queries): `S = Q·Kᵀ` with the bf16 matmul tiles (only
//! the keys a causal block can see), scale, mask, a softmax whose `exp` is vectorised, then
//! `O = P·V` accumulating f32 rows four queries at a time. Grouped-query heads share
//! their key/value head. From 16 queries on (prefill, SigLIP) both products go through
//! the packed bf16 kernel instead, with the probabilities rounded to bf16 for `P·V` as
//! PyTorch's CPU flash attention does.

use half::bf16;
use rayon::prelude::*;

use super::gemm::matmul_bf16_serial;
use super::math::exp_in_place;
use super::packed::PackedBf16;
use super::Isa;
use super::SendPtr;

/// A `(B, H, T, Dh)` bf16 tensor as strides into a slice (`Dh` contiguous).
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The storage.
    pub data: &'a [bf16],
    /// Element offset of (0, 0, 0, 0).
    pub offset: usize,
    /// Strides of B, H and T in elements.
    pub strides: [usize; 3],
}

impl View<'_> {
    fn row(&self, b: usize, h: usize, t: usize) -> usize {
        self.offset + b * self.strides[0] + h * self.strides[1] + t * self.strides[2]
    }
}

/// Which keys each query sees.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    /// Every key.
    None,
    /// Query `i` sees keys `0..=offset + i` (new tokens after `offset` cached ones).
    Causal {
        /// Cached positions before the first query.
        offset: usize,
    },
    /// An additive f32 mask, query `i` of row `b` at `data[b * batch_stride + i * tk..]`
    /// (`batch_stride` 0 shares one mask across rows).
    Additive {
        /// Mask values (0 or -inf, or any finite bias).
        data: &'a [f32],
        /// Elements between batch rows.
        batch_stride: usize,
    },
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Batch rows.
    pub b: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (divides `h`).
    pub h_kv: usize,
    /// Queries per row.
    pub tq: usize,
    /// Keys per row.
    pub tk: usize,
    /// Head width.
    pub dh: usize,
}

/// Queries handled by one task (bounds the score buffer to `Q_BLOCK x tk` f32).
const Q_BLOCK: usize = 64;
/// Queries from which a head's keys and values are packed for the blocked product
/// (prefill, SigLIP) instead of the row tiles (decoding, a few new tokens).
const PACKED_QUERIES: usize = 16;

/// `out[b, i, h, :] = softmax(scale · q[b,h,i]·k[b,h',:]ᵀ + mask) · v[b,h',:]` with
/// `h' = h / (h / h_kv)`; `out` is `(B, Tq, H, Dh)` row-major.
///
/// # Panics
/// If `h_kv` does not divide `h` or a view or `out` is too short (callers check shapes).
#[allow(clippy::too_many_arguments)]
pub fn attention_bf16(
    q: View,
    k: View,
    v: View,
    d: Dims,
    mask: Mask,
    scale: f32,
    out: &mut [bf16],
    isa: Isa,
) {
    assert!(d.h_kv > 0 && d.h.is_multiple_of(d.h_kv));
    assert!(out.len() >= d.b * d.tq * d.h * d.dh);
    if d.b == 0 || d.tq == 0 || d.h == 0 {
        return;
    }
    if d.tq >= PACKED_QUERIES && isa != Isa::Avx2 {
        return attention_packed(q, k, v, d, mask, scale, out, isa);
    }
    let rep = d.h / d.h_kv;
    let q_blocks = d.tq.div_ceil(Q_BLOCK);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let (bh, qb) = (t / q_blocks, t % q_blocks);
        let (b, h) = (bh / d.h, bh % d.h);
        let i0 = qb * Q_BLOCK;
        let i1 = (i0 + Q_BLOCK).min(d.tq);
        let rows = i1 - i0;
        // Keys this block can see at all.
        let keys = match mask {
            Mask::Causal { offset } => (offset + i1).min(d.tk),
            _ => d.tk,
        };
        let mut scores = vec![0f32; rows * keys.max(1)];
        if keys > 0 {
            let (qs, ks) = (q.row(b, h, i0), k.row(b, h / rep, 0));
            matmul_bf16_serial(
                &q.data[qs..],
                q.strides[2],
                &k.data[ks..],
                k.strides[2],
                rows,
                keys,
                d.dh,
                &mut scores,
                keys,
                isa,
            );
        }
        for r in 0..rows {
            let row = &mut scores[r * keys..(r + 1) * keys];
            let visible = softmax_row(row, b, i0 + r, d.tk, mask, scale, isa);
            row[visible..].fill(0.0);
        }
        let mut acc = vec![0f32; rows * d.dh];
        let vs = v.row(b, h / rep, 0);
        weighted_sum(
            &scores,
            rows,
            keys,
            &v.data[vs..],
            v.strides[2],
            d.dh,
            &mut acc,
            isa,
        );
        for r in 0..rows {
            let o = ((b * d.tq + i0 + r) * d.h + h) * d.dh;
            for (c, a) in acc[r * d.dh..(r + 1) * d.dh].iter().enumerate() {
                // SAFETY: each task writes its own (b, i, h) rows, inside `out` (asserted).
                unsafe { *out_ptr.get().add(o + c) = bf16::from_f32(*a) };
            }
        }
    };
    let tasks = d.b * d.h * q_blocks;
    if d.tq * d.tk * d.dh * tasks >= 1 << 16 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// [`attention_bf16`] for many queries: per (row, head), the head's keys and transposed
/// values packed once for [`PackedBf16`]'s blocked product, then per block of queries
/// `S = Q·Kᵀ` (only the key panels a causal block can see), the f32 softmax, and
/// `O = P·V` with `P` rounded to bf16, as PyTorch's CPU flash attention does for bf16.
#[allow(clippy::too_many_arguments)]
fn attention_packed(
    q: View,
    k: View,
    v: View,
    d: Dims,
    mask: Mask,
    scale: f32,
    out: &mut [bf16],
    isa: Isa,
) {
    let rep = d.h / d.h_kv;
    let out_ptr = SendPtr(out.as_mut_ptr());
    let (tk, dh) = (d.tk, d.dh);
    (0..d.b * d.h).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / d.h, bh % d.h);
        let mut keys_rows = vec![bf16::ZERO; tk * dh];
        let mut values_t = vec![bf16::ZERO; dh * tk];
        for j in 0..tk {
            keys_rows[j * dh..][..dh].copy_from_slice(&k.data[k.row(b, h / rep, j)..][..dh]);
            for (c, &x) in v.data[v.row(b, h / rep, j)..][..dh].iter().enumerate() {
                values_t[c * tk + j] = x;
            }
        }
        let kp = PackedBf16::pack(&keys_rows, tk, dh);
        let vp = PackedBf16::pack(&values_t, dh, tk);
        let mut probs = vec![bf16::ZERO; tk];
        // Query blocks of whole row groups.
        let q_block = PackedBf16::group_rows(isa) * Q_BLOCK.div_ceil(PackedBf16::group_rows(isa));
        for i0 in (0..d.tq).step_by(q_block) {
            let rows = q_block.min(d.tq - i0);
            let keys = match mask {
                Mask::Causal { offset } => (offset + i0 + rows).min(tk),
                _ => tk,
            };
            let mut grouped = vec![bf16::ZERO; kp.grouped_len(rows, isa)];
            for r in 0..rows {
                kp.put_row(&q.data[q.row(b, h, i0 + r)..][..dh], r, &mut grouped, isa);
            }
            let mut scores = vec![0f32; rows * tk];
            kp.matmul_grouped_part(&grouped, rows, keys, dh, &mut scores, isa);
            let mut p_grouped = vec![bf16::ZERO; vp.grouped_len(rows, isa)];
            for r in 0..rows {
                let row = &mut scores[r * tk..][..keys];
                let visible = softmax_row(row, b, i0 + r, tk, mask, scale, isa);
                super::fused::round_into(isa, &row[..visible], &mut probs[..visible]);
                probs[visible..].fill(bf16::ZERO);
                vp.put_row(&probs, r, &mut p_grouped, isa);
            }
            let mut acc = vec![0f32; rows * dh];
            vp.matmul_grouped_part(&p_grouped, rows, dh, keys, &mut acc, isa);
            for (r, a) in acc.chunks_exact(dh).enumerate() {
                let o = ((b * d.tq + i0 + r) * d.h + h) * dh;
                // SAFETY: each task writes its own (b, i, h) rows, inside `out` (asserted
                // by the caller).
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(o), dh) };
                super::fused::round_into(isa, a, dst);
            }
        }
    });
}

/// Scales, masks and softmaxes the scores `row` of query `i` of batch row `b` (the first
/// `row.len()` of `tk` keys) over the keys it sees; returns how many that is (the rest of
/// `row` is left as it was).
fn softmax_row(
    row: &mut [f32],
    b: usize,
    i: usize,
    tk: usize,
    mask: Mask,
    scale: f32,
    isa: Isa,
) -> usize {
    let visible = match mask {
        Mask::Causal { offset } => (offset + i + 1).min(row.len()),
        _ => row.len(),
    };
    let m = match mask {
        Mask::Additive { data, batch_stride } => {
            Some(&data[b * batch_stride + i * tk..][..visible])
        }
        _ => None,
    };
    softmax_in_place(isa, &mut row[..visible], scale, m);
    visible
}

super::vectorized_fn! {
    /// Softmax of `row` in place (f32), `scale · row + mask` first when given. A row whose
    /// every entry is -inf stays finite: zeros. Sums run in 16 interleaved lanes.
    pub fn softmax_in_place(isa: Isa, row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        row.iter_mut().for_each(|s| *s *= scale);
        if let Some(m) = mask {
            row.iter_mut().zip(m).for_each(|(s, m)| *s += m);
        }
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l = l.max(v);
            }
        }
        let max = chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            return;
        }
        row.iter_mut().for_each(|s| *s -= max);
        exp_in_place(row, isa);
        let mut lanes = [0f32; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v;
            }
        }
        let sum: f32 = lanes.iter().chain(chunks.remainder()).sum();
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|s| *s *= inv);
    }
}

/// `acc (rows, dh) = p (rows, keys) · v` with `v` row `j` at `v[j * ldv..][..dh]`.
#[allow(clippy::too_many_arguments)]
fn weighted_sum(
    p: &[f32],
    rows: usize,
    keys: usize,
    v: &[bf16],
    ldv: usize,
    dh: usize,
    acc: &mut [f32],
    isa: Isa,
) {
    if keys == 0 {
        return;
    }
    assert!(v.len() >= (keys - 1) * ldv + dh);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 if dh.is_multiple_of(32) => {
            // SAFETY: bounds asserted above; the CPU supports AVX-512 F (the level's
            // requirement).
            unsafe { simd::weighted_sum_avx512(p, rows, keys, v, ldv, dh, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 | Isa::Avx2 if dh.is_multiple_of(16) => {
            // SAFETY: bounds asserted above; the CPU supports AVX2 (both levels imply it).
            unsafe { simd::weighted_sum_avx2(p, rows, keys, v, ldv, dh, acc) }
        }
        _ => {
            for r in 0..rows {
                let a = &mut acc[r * dh..(r + 1) * dh];
                for j in 0..keys {
                    let pj = p[r * keys + j];
                    if pj == 0.0 {
                        continue;
                    }
                    let vr = &v[j * ldv..j * ldv + dh];
                    a.iter_mut()
                        .zip(vr)
                        .for_each(|(a, v)| *a += pj * v.to_f32());
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::tests::values;

    fn run(d: Dims, mask: Mask, isa: Isa, q: &[bf16], k: &[bf16], v: &[bf16]) -> Vec<f32> {
        // q (B, H, Tq, Dh) contiguous; k/v inside a larger cache (B, Hkv, tk + 3, Dh).
        let cap = d.tk + 3;
        let view = |data, t: usize, h: usize| View {
            data,
            offset: 0,
            strides: [h * t * d.dh, t * d.dh, d.dh],
        };
        let mut out = vec![bf16::ZERO; d.b * d.tq * d.h * d.dh];
        attention_bf16(
            view(q, d.tq, d.h),
            view(k, cap, d.h_kv),
            view(v, cap, d.h_kv),
            d,
            mask,
            1.0 / (d.dh as f32).sqrt(),
            &mut out,
            isa,
        );
        out.iter().map(|x| x.to_f32()).collect()
    }

    /// Attention in f64 from the definition, output `(B, Tq, H, Dh)`.
    fn reference(d: Dims, mask: Mask, q: &[bf16], k: &[bf16], v: &[bf16]) -> Vec<f32> {
        let cap = d.tk + 3;
        let mut out = vec![0f32; d.b * d.tq * d.h * d.dh];
        for b in 0..d.b {
            for h in 0..d.h {
                let hk = h / (d.h / d.h_kv);
                for i in 0..d.tq {
                    let qi = &q[((b * d.h + h) * d.tq + i) * d.dh..][..d.dh];
                    let mut s: Vec<f64> = (0..d.tk)
                        .map(|j| {
                            let kj = &k[((b * d.h_kv + hk) * cap + j) * d.dh..][..d.dh];
                            let dot: f64 = qi
                                .iter()
                                .zip(kj)
                                .map(|(a, b)| a.to_f64() * b.to_f64())
                                .sum();
                            dot / (d.dh as f64).sqrt()
                        })
                        .collect();
                    for (j, sj) in s.iter_mut().enumerate() {
                        match mask {
                            Mask::Causal { offset } if j > offset + i => *sj = f64::NEG_INFINITY,
                            Mask::Additive { data, batch_stride } => {
                                *sj += data[b * batch_stride + i * d.tk + j] as f64
                            }
                            _ => {}
                        }
                    }
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d.dh {
                        let o: f64 = (0..d.tk)
                            .map(|j| {
                                e[j] / sum * v[((b * d.h_kv + hk) * cap + j) * d.dh + c].to_f64()
                            })
                            .sum();
                        out[((b * d.tq + i) * d.h + h) * d.dh + c] = o as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn weighted_sums_give_the_same_bits_at_every_vector_level() {
        // Rows and keys of decoding and a few new tokens; widths of 1 to 5 column blocks;
        // value rows inside a wider cache row.
        for &(rows, keys, dh) in &[
            (1, 1, 32),
            (1, 7, 128),
            (2, 300, 128),
            (3, 33, 160),
            (5, 9, 96),
        ] {
            let ldv = dh + 16;
            let p: Vec<f32> = values(rows * keys, 5 + keys as u32)
                .into_iter()
                .map(|x| x.to_f32().abs() / keys as f32)
                .collect();
            let v = values(keys * ldv, 9);
            let mut want = vec![0f32; rows * dh];
            weighted_sum(&p, rows, keys, &v, ldv, dh, &mut want, Isa::Plain);
            let mut by_level = Vec::new();
            for isa in Isa::available().into_iter().filter(|&i| i != Isa::Plain) {
                let mut got = vec![0f32; rows * dh];
                weighted_sum(&p, rows, keys, &v, ldv, dh, &mut got, isa);
                for (o, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{isa:?} {rows}x{keys}x{dh} at {o}: {a} vs {b}"
                    );
                }
                by_level.push((isa, got));
            }
            for pair in by_level.windows(2) {
                let ((i0, a), (i1, b)) = (&pair[0], &pair[1]);
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{i0:?} and {i1:?} differ for {rows}x{keys}x{dh}");
            }
        }
    }

    #[test]
    fn every_level_matches_the_definition() {
        let cases = [
            (
                Dims {
                    b: 1,
                    h: 2,
                    h_kv: 2,
                    tq: 1,
                    tk: 5,
                    dh: 16,
                },
                0usize,
            ),
            (
                Dims {
                    b: 2,
                    h: 4,
                    h_kv: 2,
                    tq: 7,
                    tk: 7,
                    dh: 32,
                },
                1,
            ),
            (
                Dims {
                    b: 1,
                    h: 3,
                    h_kv: 3,
                    tq: 70,
                    tk: 73,
                    dh: 8,
                },
                1,
            ),
            (
                Dims {
                    b: 2,
                    h: 2,
                    h_kv: 1,
                    tq: 3,
                    tk: 11,
                    dh: 48,
                },
                2,
            ),
            (
                Dims {
                    b: 1,
                    h: 1,
                    h_kv: 1,
                    tq: 66,
                    tk: 66,
                    dh: 128,
                },
                0,
            ),
            (
                Dims {
                    b: 2,
                    h: 4,
                    h_kv: 2,
                    tq: 20,
                    tk: 37,
                    dh: 24,
                },
                2,
            ),
            (
                Dims {
                    b: 1,
                    h: 2,
                    h_kv: 1,
                    tq: 17,
                    tk: 17,
                    dh: 10,
                },
                1,
            ),
        ];
        for (d, kind) in cases {
            let cap = d.tk + 3;
            let q = values(d.b * d.h * d.tq * d.dh, 11);
            let k = values(d.b * d.h_kv * cap * d.dh, 12);
            let v = values(d.b * d.h_kv * cap * d.dh, 13);
            let add: Vec<f32> = (0..d.b * d.tq * d.tk)
                .map(|i| {
                    if i % 5 == 1 {
                        f32::NEG_INFINITY
                    } else {
                        (i % 3) as f32 * 0.5
                    }
                })
                .collect();
            let mask = match kind {
                0 => Mask::None,
                1 => Mask::Causal {
                    offset: d.tk - d.tq,
                },
                _ => Mask::Additive {
                    data: &add,
                    batch_stride: d.tq * d.tk,
                },
            };
            let want = reference(d, mask, &q, &k, &v);
            for isa in Isa::available() {
                let got = run(d, mask, isa, &q, &k, &v);
                // Output is bf16: half an ulp of 2^-8 relative, plus f32 sums; the packed
                // path also rounds the probabilities to bf16 (up to 2^-9 each, as PyTorch).
                let p_bf16 = d.tq >= PACKED_QUERIES && isa != Isa::Avx2;
                let (rel, abs) = if p_bf16 { (8e-3, 2e-3) } else { (4e-3, 1e-3) };
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= rel * b.abs() + abs,
                        "{isa:?} {d:?} mask {kind} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
