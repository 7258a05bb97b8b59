//! bf16 matrix products `out = x · wᵀ` with f32 accumulation, the linear layers' kernel.
//!
//! Weights stay in the checkpoint's `(out_features, in_features)` row-major layout, so a
//! weight row and an activation row are both contiguous along K and every output is an
//! inner product. The AVX-512 kernel keeps a 4 x 6 tile of 16-lane accumulators
//! (24 `VDPBF16PS` per 10 loads), reduces the lanes once at the end of K, and walks the
//! weights in blocks that stay in L2 while up to 64 activation rows stream past them.
//! Decoding (1 to 4 rows) is the same loop with one short tile: it reads every weight
//! once, at memory speed.
//!
//! Threads split the output columns (weight rows), so each weight byte is read by one
//! core only.

use half::bf16;
use rayon::prelude::*;

use super::{chunk_len, Isa, SendPtr};

/// Activation rows that share one pass over an L2-resident weight block.
const M_BLOCK: usize = 64;

/// Bytes of weights in one block (a quarter of a typical 1-2 MB per-core L2).
const W_BLOCK_BYTES: usize = 256 << 10;

/// `out[i, j] = Σ_k x[i, k] · w[j, k]` for `x` `(m, k)`, `w` `(n, k)`, `out` `(m, n)`, all
/// row-major; products and sums in f32.
///
/// # Panics
/// If a slice is shorter than its shape says (callers check shapes first).
pub fn matmul_bf16(
    x: &[bf16],
    w: &[bf16],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
    isa: Isa,
) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    let (mr, nr) = tile_shape(isa);
    // Small products are not worth a thread hand-off.
    let parallel = m * n * k >= 1 << 18;
    let chunk = if parallel {
        chunk_len(n, nr, 2 * nr)
    } else {
        n
    };
    // Weight rows per block: a block stays in L2 while M_BLOCK activation rows pass.
    let n_block = (W_BLOCK_BYTES / (2 * k)).max(1).div_ceil(nr) * nr;
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |c: usize| {
        let n0 = c * chunk;
        let n1 = (n0 + chunk).min(n);
        for b0 in (n0..n1).step_by(n_block) {
            let b1 = (b0 + n_block).min(n1);
            for m0 in (0..m).step_by(M_BLOCK) {
                let m1 = (m0 + M_BLOCK).min(m);
                for i in (m0..m1).step_by(mr) {
                    let rows = mr.min(m1 - i);
                    for j in (b0..b1).step_by(nr) {
                        let cols = nr.min(b1 - j);
                        // SAFETY: rows i..i+rows <= m and columns j..j+cols <= n are in
                        // bounds (asserted above); tasks own disjoint columns of `out`.
                        unsafe {
                            tile(
                                isa,
                                rows,
                                cols,
                                x.as_ptr().add(i * k),
                                k,
                                w.as_ptr().add(j * k),
                                k,
                                k,
                                out_ptr.get().add(i * n + j),
                                n,
                            )
                        }
                    }
                }
            }
        }
    };
    let chunks = n.div_ceil(chunk);
    if parallel && chunks > 1 {
        (0..chunks).into_par_iter().for_each(run);
    } else {
        (0..chunks).for_each(run);
    }
}

/// Rows x columns of output one kernel call computes at this level.
fn tile_shape(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512Bf16 => (4, 6),
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => (2, 4),
        Isa::Neon | Isa::NeonDotprod => (2, 4),
        Isa::NeonBf16 => (4, 4),
        Isa::Plain => (1, 1),
    }
}

/// `out[i, j] = Σ_k x[i, k] · w[j, k]` on the calling thread, for rows at any stride:
/// `x` row `i` at `x[i * ldx..][..k]`, `w` row `j` at `w[j * ldw..][..k]`, output row `i`
/// at `out[i * ldo..][..n]` (the attention kernel's Q·Kᵀ on cache slices).
///
/// # Panics
/// If a slice is too short for its rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_serial(
    x: &[bf16],
    ldx: usize,
    w: &[bf16],
    ldw: usize,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
    ldo: usize,
    isa: Isa,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldx >= k && ldw >= k && ldo >= n);
    assert!(x.len() >= (m - 1) * ldx + k && w.len() >= (n - 1) * ldw + k);
    assert!(out.len() >= (m - 1) * ldo + n);
    let (mr, nr) = tile_shape(isa);
    for i in (0..m).step_by(mr) {
        let rows = mr.min(m - i);
        for j in (0..n).step_by(nr) {
            let cols = nr.min(n - j);
            // SAFETY: bounds asserted above.
            unsafe {
                tile(
                    isa,
                    rows,
                    cols,
                    x.as_ptr().add(i * ldx),
                    ldx,
                    w.as_ptr().add(j * ldw),
                    ldw,
                    k,
                    out.as_mut_ptr().add(i * ldo + j),
                    ldo,
                )
            }
        }
    }
}

/// One `rows x cols` output tile (at most [`tile_shape`]).
///
/// # Safety
/// `x` points at `rows` rows of `k` (stride `ldx`), `w` at `cols` rows of `k` (stride
/// `ldw`), `out` at `rows` rows of stride `ldo` with `cols` writable elements each; the
/// CPU supports `isa`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    rows: usize,
    cols: usize,
    x: *const bf16,
    ldx: usize,
    w: *const bf16,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => avx512::tile(rows, cols, x, ldx, w, ldw, k, out, ldo),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => {
            avx2::tile(rows, cols, x, ldx, w, ldw, k, out, ldo)
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod => neon::tile(rows, cols, x, ldx, w, ldw, k, out, ldo),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonBf16 => neon::tile_bf16(rows, cols, x, ldx, w, ldw, k, out, ldo),
        _ => plain_tile(rows, cols, x, ldx, w, ldw, k, out, ldo),
    }
}

/// The reference: one f32 sum per output, in K order.
#[allow(clippy::too_many_arguments)]
unsafe fn plain_tile(
    rows: usize,
    cols: usize,
    x: *const bf16,
    ldx: usize,
    w: *const bf16,
    ldw: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    for i in 0..rows {
        let xr = std::slice::from_raw_parts(x.add(i * ldx), k);
        for j in 0..cols {
            let wr = std::slice::from_raw_parts(w.add(j * ldw), k);
            *out.add(i * ldo + j) = dot_plain(xr, wr);
        }
    }
}

/// `Σ a[i] · b[i]` in f32, in order.
pub(crate) fn dot_plain(a: &[bf16], b: &[bf16]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a.to_f32() * b.to_f32()).sum()
}

/// Expands a `match` over the runtime tile shape into calls of the const-generic kernel.
macro_rules! dispatch_tile {
    ($kernel:ident, $rows:expr, $cols:expr, $args:tt; $(($r:literal, $c:literal)),*) => {
        match ($rows, $cols) {
            $(($r, $c) => $kernel::<$r, $c> $args,)*
            (r, c) => unreachable!("no {r}x{c} tile"),
        }
    };
}

#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops over register tiles read clearest
mod avx512 {
    use std::arch::x86_64::*;

    use half::bf16;

    /// # Safety
    /// As [`super::tile`], with `rows <= 4`, `cols <= 6` and AVX-512 BF16 present.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        rows: usize,
        cols: usize,
        x: *const bf16,
        ldx: usize,
        w: *const bf16,
        ldw: usize,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        dispatch_tile!(kernel, rows, cols, (x, ldx, w, ldw, k, out, ldo);
            (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6),
            (2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (2, 6),
            (3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (3, 6),
            (4, 1), (4, 2), (4, 3), (4, 4), (4, 5), (4, 6))
    }

    #[inline(always)]
    unsafe fn load(p: *const bf16) -> __m512bh {
        std::mem::transmute(_mm512_loadu_si512(p as *const _))
    }

    #[inline(always)]
    unsafe fn load_masked(p: *const bf16, mask: __mmask32) -> __m512bh {
        std::mem::transmute(_mm512_maskz_loadu_epi16(mask, p as *const i16))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn kernel<const R: usize, const C: usize>(
        x: *const bf16,
        ldx: usize,
        w: *const bf16,
        ldw: usize,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut p = 0;
        while p + 32 <= k {
            let mut xv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); R];
            for (i, v) in xv.iter_mut().enumerate() {
                *v = load(x.add(i * ldx + p));
            }
            for j in 0..C {
                let wv = load(w.add(j * ldw + p));
                for i in 0..R {
                    acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv[i], wv);
                }
            }
            p += 32;
        }
        if p < k {
            let mask: __mmask32 = (1u32 << (k - p)) - 1;
            let mut xv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); R];
            for (i, v) in xv.iter_mut().enumerate() {
                *v = load_masked(x.add(i * ldx + p), mask);
            }
            for j in 0..C {
                let wv = load_masked(w.add(j * ldw + p), mask);
                for i in 0..R {
                    acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv[i], wv);
                }
            }
        }
        for i in 0..R {
            for j in 0..C {
                *out.add(i * ldo + j) = _mm512_reduce_add_ps(acc[i][j]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops over register tiles read clearest
mod avx2 {
    use std::arch::x86_64::*;

    use half::bf16;

    /// # Safety
    /// As [`super::tile`], with `rows <= 2`, `cols <= 4` and AVX2 + FMA present.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        rows: usize,
        cols: usize,
        x: *const bf16,
        ldx: usize,
        w: *const bf16,
        ldw: usize,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        dispatch_tile!(kernel, rows, cols, (x, ldx, w, ldw, k, out, ldo);
            (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4))
    }

    /// Eight bf16 widened to f32 (bf16 is the top half of an f32).
    #[inline(always)]
    pub(crate) unsafe fn widen8(p: *const bf16) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }

    #[inline(always)]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const R: usize, const C: usize>(
        x: *const bf16,
        ldx: usize,
        w: *const bf16,
        ldw: usize,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut p = 0;
        while p + 8 <= k {
            let mut xv = [_mm256_setzero_ps(); R];
            for (i, v) in xv.iter_mut().enumerate() {
                *v = widen8(x.add(i * ldx + p));
            }
            for j in 0..C {
                let wv = widen8(w.add(j * ldw + p));
                for i in 0..R {
                    acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
                }
            }
            p += 8;
        }
        for i in 0..R {
            for j in 0..C {
                let mut s = hsum(acc[i][j]);
                for q in p..k {
                    s += (*x.add(i * ldx + q)).to_f32() * (*w.add(j * ldw + q)).to_f32();
                }
                *out.add(i * ldo + j) = s;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic bf16 values in about [-1, 1] with many distinct mantissas.
    pub(crate) fn values(len: usize, seed: u32) -> Vec<bf16> {
        (0..len)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(13);
                bf16::from_f32((h % 20011) as f32 / 10005.0 - 1.0)
            })
            .collect()
    }

    #[test]
    fn every_level_agrees_with_plain_on_awkward_sizes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 33),
            (2, 13, 31),
            (3, 5, 64),
            (4, 6, 95),
            (5, 11, 100),
            (7, 25, 257),
            (67, 19, 130),
            (9, 300, 517),
        ] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let mut want = vec![0.0; m * n];
            matmul_bf16(&x, &w, m, n, k, &mut want, Isa::Plain);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; m * n];
                matmul_bf16(&x, &w, m, n, k, &mut got, isa);
                for i in 0..m {
                    for j in 0..n {
                        let bound: f32 = (0..k)
                            .map(|q| (x[i * k + q].to_f32() * w[j * k + q].to_f32()).abs())
                            .sum();
                        let (a, b) = (got[i * n + j], want[i * n + j]);
                        assert!(
                            (a - b).abs() <= 1e-5 * bound + 1e-6,
                            "{isa:?} m={m} n={n} k={k} at ({i},{j}): {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn large_products_split_across_threads_agree() {
        let (m, n, k) = (70, 301, 129);
        let x = values(m * k, 3);
        let w = values(n * k, 4);
        let mut want = vec![0.0; m * n];
        matmul_bf16(&x, &w, m, n, k, &mut want, Isa::Plain);
        let mut got = vec![0.0; m * n];
        matmul_bf16(&x, &w, m, n, k, &mut got, super::super::isa());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-3, "{a} vs {b}");
        }
    }
}
