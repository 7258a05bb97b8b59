//! Scaled dot-product attention on bf16 tensors with f32 scores, read straight from
//! strided views (the LLM's preallocated KV cache, SigLIP's q/k/v), written in the
//! `(B, T, H, Dh)` order the output projection wants.
//!
//! Per (batch row, head, block of queries): `S = Q·Kᵀ` with the bf16 matmul tiles (only
//! the keys a causal block can see), scale, mask, a softmax whose `exp` is vectorised, then
//! `O = P·V` accumulating f32 rows four queries at a time. Grouped-query heads share
//! their key/value head. From 16 queries on (prefill, SigLIP) both products go through
//! the packed bf16 kernel instead, with the probabilities rounded to bf16 for `P·V` as
//! PyTorch's CPU flash attention does; on AMX tiles where the CPU has them, outside
//! [`super::with_row_invariance`].

use half::bf16;
use rayon::prelude::*;

use super::gemm::matmul_bf16_serial;
use super::math::exp_in_place;
use super::packed::{line_values, line_values_mut, Bf16Line, PackedBf16, LINE_VALUES};
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

/// Whether [`PACKED_QUERIES`] or more queries take the packed kernel at this level: not
/// on NEON, where it has no vector body, nor at plain AVX2, where Zen 3's measurements
/// disagreed (docs/kernels.md); at `avx-vnni` and `avx512-vnni` (Intel CPUs) SigLIP
/// measured 3-5 % faster with it, and prefill 3 % at `avx512-vnni`.
fn packs_queries(isa: Isa) -> bool {
    !matches!(
        isa,
        Isa::Avx2 | Isa::Neon | Isa::NeonDotprod | Isa::NeonBf16
    )
}

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
    // Queries after cached keys (decoding, a block of drafts) take the row tiles, which
    // give each query the bits it gets alone.
    if d.tq >= PACKED_QUERIES && d.tk == d.tq && packs_queries(isa) {
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
    // AMX tiles where rows need not get their one-row bits (read on this thread: the
    // tasks run on others).
    let tiles = PackedBf16::tiles_at(isa) && !super::row_invariance() && dh % 32 == 0;
    if tiles {
        return attention_tiles(q, k, v, d, mask, scale, out, isa);
    }
    (0..d.b * d.h).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / d.h, bh % d.h);
        let (kp, vp) = packed_head(k, v, b, h / rep, tk, dh);
        let mut probs = vec![bf16::ZERO; tk];
        // Query blocks of whole row groups.
        let q_block = PackedBf16::group_rows(isa) * Q_BLOCK.div_ceil(PackedBf16::group_rows(isa));
        for i0 in (0..d.tq).step_by(q_block) {
            let rows = q_block.min(d.tq - i0);
            let keys = match mask {
                Mask::Causal { offset } => (offset + i0 + rows).min(tk),
                _ => tk,
            };
            let mut grouped = kp.grouped(rows, isa);
            for r in 0..rows {
                grouped.put_row(&q.data[q.row(b, h, i0 + r)..][..dh], r);
            }
            let mut scores = vec![0f32; rows * tk];
            kp.matmul_grouped_part(&grouped, rows, keys, dh, &mut scores);
            let mut p_grouped = vp.grouped(rows, isa);
            for r in 0..rows {
                let row = &mut scores[r * tk..][..keys];
                let visible = softmax_row(row, b, i0 + r, tk, mask, scale, isa);
                super::fused::round_into(isa, &row[..visible], &mut probs[..visible]);
                probs[visible..].fill(bf16::ZERO);
                p_grouped.put_row(&probs, r);
            }
            let mut acc = vec![0f32; rows * dh];
            vp.matmul_grouped_part(&p_grouped, rows, dh, keys, &mut acc);
            // SAFETY: each task writes its own (b, i, h) rows, inside `out` (asserted by
            // the caller).
            unsafe { store_heads(&acc, out_ptr, d, b, i0, h, isa) };
        }
    });
}

/// [`attention_packed`] on AMX tiles: the queries and the probabilities of a block of
/// queries copied to rows of whole tiles (padded with zeros), an odd number of tiles
/// apart ([`PackedBf16::tile_stride`]).
#[allow(clippy::too_many_arguments)]
fn attention_tiles(
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
    // Rows of queries and of probabilities at the tiles' best stride.
    let (qsp, tkp) = (PackedBf16::tile_stride(dh), PackedBf16::tile_stride(tk));
    (0..d.b * d.h).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / d.h, bh % d.h);
        let (kp, vp) = packed_head(k, v, b, h / rep, tk, dh);
        let tails = vp.tile_tails();
        let tails = line_values(&tails);
        let mut scores = vec![0f32; Q_BLOCK * tk];
        // Tile rows from cache lines' starts (rows across two lines read both).
        let mut probs = vec![Bf16Line::ZERO; Q_BLOCK * tkp / LINE_VALUES];
        let probs = line_values_mut(&mut probs);
        let mut acc = vec![0f32; Q_BLOCK * dh];
        let mut queries = vec![Bf16Line::ZERO; Q_BLOCK * qsp / LINE_VALUES];
        let queries = line_values_mut(&mut queries);
        for i0 in (0..d.tq).step_by(Q_BLOCK) {
            let rows = Q_BLOCK.min(d.tq - i0);
            let keys = match mask {
                Mask::Causal { offset } => (offset + i0 + rows).min(tk),
                _ => tk,
            };
            for (r, dst) in queries.chunks_exact_mut(qsp).take(rows).enumerate() {
                dst[..dh].copy_from_slice(&q.data[q.row(b, h, i0 + r)..][..dh]);
            }
            kp.matmul_part_tiles(queries, qsp, rows, dh, keys, &[], &mut scores, tk, isa);
            for r in 0..rows {
                let row = &mut scores[r * tk..][..keys];
                let visible = softmax_row(row, b, i0 + r, tk, mask, scale, isa);
                let p = &mut probs[r * tkp..][..tkp];
                super::fused::round_into(isa, &row[..visible], &mut p[..visible]);
                p[visible..].fill(bf16::ZERO);
            }
            vp.matmul_part_tiles(probs, tkp, rows, keys, dh, tails, &mut acc, dh, isa);
            // SAFETY: each task writes its own (b, i, h) rows, inside `out` (asserted by
            // the caller).
            unsafe { store_heads(&acc[..rows * dh], out_ptr, d, b, i0, h, isa) };
        }
    });
}

/// Key/value head `hk` of batch row `b`, packed for the blocked product: the keys as
/// `(tk, dh)` rows, the values transposed to `(dh, tk)`.
fn packed_head(
    k: View,
    v: View,
    b: usize,
    hk: usize,
    tk: usize,
    dh: usize,
) -> (PackedBf16, PackedBf16) {
    let mut keys_rows = vec![bf16::ZERO; tk * dh];
    let mut values_t = vec![bf16::ZERO; dh * tk];
    for j in 0..tk {
        keys_rows[j * dh..][..dh].copy_from_slice(&k.data[k.row(b, hk, j)..][..dh]);
        for (c, &x) in v.data[v.row(b, hk, j)..][..dh].iter().enumerate() {
            values_t[c * tk + j] = x;
        }
    }
    (
        PackedBf16::pack(&keys_rows, tk, dh),
        PackedBf16::pack(&values_t, dh, tk),
    )
}

/// Rounds the f32 outputs `acc` (rows of `dh`) of queries `i0..` of head `h`, batch row
/// `b`, into their places in the `(B, Tq, H, Dh)` output.
///
/// # Safety
/// `out` holds the whole output, and no other thread writes these rows.
unsafe fn store_heads(
    acc: &[f32],
    out: SendPtr<bf16>,
    d: Dims,
    b: usize,
    i0: usize,
    h: usize,
    isa: Isa,
) {
    for (r, a) in acc.chunks_exact(d.dh).enumerate() {
        let o = ((b * d.tq + i0 + r) * d.h + h) * d.dh;
        let dst = std::slice::from_raw_parts_mut(out.get().add(o), d.dh);
        super::fused::round_into(isa, a, dst);
    }
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
    let (visible, m) = match mask {
        Mask::Causal { offset } => ((offset + i + 1).min(row.len()), None),
        Mask::Additive { data, batch_stride } => {
            let m = &data[b * batch_stride + i * tk..][..row.len()];
            // Trailing masked keys add nothing; leaving them out keeps the sums (and so
            // the bits) of a query the same however many keys follow it.
            let visible = m
                .iter()
                .rposition(|&x| x != f32::NEG_INFINITY)
                .map_or(0, |j| j + 1);
            (visible, Some(&m[..visible]))
        }
        Mask::None => (row.len(), None),
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
        Isa::Avx512Bf16 | Isa::Avx512Vnni if dh.is_multiple_of(32) => {
            // SAFETY: bounds asserted above; the CPU supports AVX-512 F (both levels'
            // requirement).
            unsafe { simd::weighted_sum_avx512(p, rows, keys, v, ldv, dh, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 | Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni if dh.is_multiple_of(16) => {
            // SAFETY: bounds asserted above; the CPU supports AVX2 (both levels imply it).
            unsafe { simd::weighted_sum_avx2(p, rows, keys, v, ldv, dh, acc) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod | Isa::NeonBf16 if dh.is_multiple_of(16) => {
            // SAFETY: bounds asserted above; NEON is part of every aarch64 CPU.
            unsafe { neon::weighted_sum(p, rows, keys, v, ldv, dh, acc) }
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
mod simd;

#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(test)]
mod tests;
