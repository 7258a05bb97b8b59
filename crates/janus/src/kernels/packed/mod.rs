//! bf16 weights packed for outer-product matrix products, the linear layers' kernel.
//!
//! A weight `(n, k)` is stored as panels of 16 rows; within a panel, for each pair of
//! columns `(2c, 2c+1)`, the 16 rows' pairs sit side by side: 64 bytes, exactly one
//! `VDPBF16PS` operand. The kernel broadcasts one activation pair per row of x and
//! multiplies it into 16 outputs at once, so outputs never need a horizontal sum and the
//! weights stream sequentially, panel by panel. Rows past `n` and the odd column of an odd
//! `k` are zeros.
//!
//! Two ways through it. Few rows (decoding, image steps): tasks over panel ranges, each
//! streaming its panels' weights from memory once, two panels a call.
//! Many rows (prefill, SigLIP, attention, the VQ convolutions): x regrouped so each group
//! of rows' pairs is one contiguous stream ([`Grouped`]), then for each pair of panels
//! every row group runs over the whole of `k`, so the panels stay in L2 and each output
//! tile is written once (its speed: docs/kernels.md). `matmul_taps` is the same kernel
//! reading x in place at several offsets (a direct convolution's taps).
//!
//! AVX2 has no bf16 product: its kernel (`avx2.rs`) takes x widened to f32 once and
//! widens the weight pairs in registers; AVX-512 BF16's (`avx512.rs`) takes both in bf16.
//! Where the CPU also has AMX, [`PackedBf16::matmul_to_bf16_tiles`] (and its f32 twin
//! [`PackedBf16::matmul_to_vec_tiles`]) runs products with many rows on its tiles
//! (`amx.rs`), for callers that need no row-by-row agreement.

use half::bf16;
use rayon::prelude::*;

use super::{chunk_len, Isa, SendPtr};

mod amx;
/// Rows of x laid out once for AMX tile products with several matrices, and where such
/// a product's outputs go.
pub(crate) use amx::{TileInput, TileOut};
mod block;
mod grouped;
use block::{plain_block, Block, XRows};
pub use block::{TapValue, XPtr};
use grouped::widens_x;
pub use grouped::Grouped;
pub(crate) use grouped::{block_rows, regroup};

/// Rows per panel (one 512-bit vector of f32 outputs).
pub const PANEL: usize = 16;
/// Columns of one k block for products with many rows (x tile in L1, panels in L2).
const K_BLOCK: usize = 256;
/// Panels per task at least (so a task's panel slice of a k block stays in L2).
const MIN_PANELS: usize = 4;
/// Rows of x from which the product regroups x ([`regroup`]) in blocks of about
/// [`X_BLOCK_BYTES`] and runs every row group of a block over one pair of panels at a
/// time, over the whole of `k`: the block and the panels' weights stay in L2 while the
/// rows pass, and each output tile is written once (k blocks would read and write the
/// `(m, n)` f32 output once per block; docs/kernels.md).
const BLOCKED_ROWS: usize = 16;
/// Bytes of regrouped x per row block at most: x then streams from L3 while a panel
/// pair's weights stay in L2, and the weights come from memory once per block (blocks
/// that fit L2 were slower: docs/kernels.md).
const X_BLOCK_BYTES: usize = 8 << 20;
/// Bytes of regrouped x made at once (bounds the copy for the VQ decoder's tall im2col
/// products).
const X_SUPER_BYTES: usize = 16 << 20;

/// A `(n, k)` bf16 matrix in panel order.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// Column pairs per row (`k` rounded up to even, halved).
    pairs: usize,
    /// The panels, on whole cache lines (each panel is `pairs` lines).
    data: Vec<Bf16Line>,
}

/// 32 bf16 values on one cache line (64 bytes: one `VDPBF16PS` operand, one AMX tile
/// row). Values stored in lines from a line's start never straddle two lines; a tile
/// read from an allocator's 16-byte-aligned block reads two lines for every row, and ran
/// at half the speed (docs/kernels.md).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Bf16Line([bf16; LINE_VALUES]);

/// Values per [`Bf16Line`].
pub(crate) const LINE_VALUES: usize = 32;

impl Bf16Line {
    pub(crate) const ZERO: Self = Bf16Line([bf16::ZERO; LINE_VALUES]);
}

/// `lines`' values, in order.
pub(crate) fn line_values(lines: &[Bf16Line]) -> &[bf16] {
    // SAFETY: a line is 32 bf16 values with no padding (repr(C), size 64), so the lines
    // are `32 * len` initialised values, aligned for bf16.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * LINE_VALUES) }
}

/// `lines`' values, in order, to write.
pub(crate) fn line_values_mut(lines: &mut [Bf16Line]) -> &mut [bf16] {
    // SAFETY: as in `line_values`, borrowed mutably.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * LINE_VALUES) }
}

impl PackedBf16 {
    /// Packs a row-major `(n, k)` matrix.
    ///
    /// # Panics
    /// If `w` is shorter than `n * k`.
    pub fn pack(w: &[bf16], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k);
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(PANEL);
        // Every value is written once, by the thread that packs its panel (the pages'
        // first touch, so their zeroing by the kernel is spread over the threads too).
        let panel_len = pairs * 2 * PANEL;
        let fill = |at: usize, out: &mut [std::mem::MaybeUninit<bf16>]| {
            let p = at / panel_len;
            // Rows past `n` are empty: zeros, as is the pair of an odd k's last value.
            let rows: [&[bf16]; PANEL] = std::array::from_fn(|r| match p * PANEL + r {
                j if j < n => &w[j * k..(j + 1) * k],
                _ => &[],
            });
            for (c, dst) in out.chunks_exact_mut(2 * PANEL).enumerate() {
                for (d, row) in dst.chunks_exact_mut(2).zip(&rows) {
                    d[0].write(row.get(2 * c).copied().unwrap_or(bf16::ZERO));
                    d[1].write(row.get(2 * c + 1).copied().unwrap_or(bf16::ZERO));
                }
            }
        };
        let fill_lines = |at: usize, out: &mut [std::mem::MaybeUninit<Bf16Line>]| {
            // SAFETY: a line is 32 bf16 values with no padding; these are out's values.
            let values = unsafe {
                std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), out.len() * LINE_VALUES)
            };
            fill(at * LINE_VALUES, values)
        };
        // SAFETY: `fill` writes every value of its chunk, a whole panel (`pairs` lines).
        let data = unsafe { super::huge_filled_with(panels * pairs, fill_lines, pairs) };
        Self { n, k, pairs, data }
    }

    /// Row `j` (`k` values) of the matrix, as f32, into `out`.
    ///
    /// # Panics
    /// If `j >= n` or `out` does not hold `k` values.
    pub fn row_f32(&self, j: usize, out: &mut [f32]) {
        assert!(j < self.n && out.len() == self.k);
        let panel = &self.values()[(j / PANEL) * self.pairs * 2 * PANEL..];
        let r = j % PANEL;
        for (dst, src) in out.chunks_mut(2).zip(panel.chunks_exact(2 * PANEL)) {
            for (d, s) in dst.iter_mut().zip(&src[2 * r..]) {
                *d = s.to_f32();
            }
        }
    }

    /// The row-major `(n, k)` matrix back.
    pub fn unpack(&self) -> Vec<bf16> {
        let mut w = vec![bf16::ZERO; self.n * self.k];
        for (i, row) in w.chunks_exact_mut(self.k.max(1)).enumerate().take(self.n) {
            let panel = &self.values()[(i / PANEL) * self.pairs * 2 * PANEL..];
            for (dst, src) in row.chunks_mut(2).zip(panel.chunks_exact(2 * PANEL)) {
                dst.copy_from_slice(&src[2 * (i % PANEL)..][..dst.len()]);
            }
        }
        w
    }

    /// An all-zero `(n, k)` matrix, for a caller that writes panels itself (see
    /// [`Self::panels_mut`]).
    pub fn zeros(n: usize, k: usize) -> Self {
        let pairs = k.div_ceil(2);
        let data = vec![Bf16Line::ZERO; n.div_ceil(PANEL) * pairs];
        Self { n, k, pairs, data }
    }

    /// The packed values: panel `p`, column pair `c`, row `r` of the panel at
    /// `(p * pairs + c) * 2 * PANEL + 2 * r` (two values), `pairs = k.div_ceil(2)`.
    pub fn panels_mut(&mut self) -> &mut [bf16] {
        line_values_mut(&mut self.data)
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of_val(&self.data[..])
    }

    /// The packed values (see [`Self::panels_mut`]), from a cache line's start.
    fn values(&self) -> &[bf16] {
        line_values(&self.data)
    }

    /// `out[i, j] = Σ_c x[i, c] · W[j, c]` for `x` `(m, k)` row-major, `out` `(m, n)`.
    ///
    /// # Panics
    /// If `x` or `out` is shorter than its shape.
    pub fn matmul(&self, x: &[bf16], m: usize, out: &mut [f32], isa: Isa) {
        assert!(out.len() >= m * self.n);
        // SAFETY: `out` holds the (m, n) output.
        unsafe { self.matmul_raw(x, m, out.as_mut_ptr(), isa) }
    }

    /// [`Self::matmul_to_vec`], on AMX tiles where the CPU has them and `x` has at least 16
    /// rows, outside [`crate::kernels::with_row_invariance`] (the f32 outputs of what
    /// [`Self::matmul_to_bf16_tiles`] gives the linear layers). Tiles round differently
    /// from the other kernels, so a row's outputs then depend on how many rows come with
    /// it: for products nobody compares row by row (the vision encoder's, a prompt's
    /// prefill), not the image steps speculative decoding compares with one-code steps.
    pub fn matmul_to_vec_tiles(&self, x: &[bf16], m: usize, isa: Isa) -> Vec<f32> {
        if m < BLOCKED_ROWS || !Self::tiles_at(isa) || super::row_invariance() {
            return self.matmul_to_vec(x, m, isa);
        }
        assert!(x.len() >= m * self.k);
        // SAFETY: AMX is available, x holds m * k values, and the tile product writes
        // each of the m * n outputs (tested on awkward sizes).
        unsafe { super::filled_by(m * self.n, |out| self.matmul_amx(x, m, out, self.n)) }
    }

    /// [`Self::matmul_to_vec_tiles`] with `bias` added and the outputs rounded to bf16
    /// as the tiles are stored (the bits of [`crate::kernels::fused::round_bf16_bias`] of
    /// the f32 product), or `None` where the tiles do not run (no AMX, under 16 rows,
    /// under [`crate::kernels::with_row_invariance`]).
    ///
    /// # Panics
    /// If `x` is shorter than `m` rows or `bias` does not hold `n` values.
    pub fn matmul_to_bf16_tiles(
        &self,
        x: &[bf16],
        m: usize,
        bias: Option<&[f32]>,
        isa: Isa,
    ) -> Option<Vec<bf16>> {
        if m < BLOCKED_ROWS || !Self::tiles_at(isa) || super::row_invariance() {
            return None;
        }
        assert!(x.len() >= m * self.k);
        // SAFETY: AMX is available at this level, x holds m * k values, and the tile
        // product writes each of the m * n outputs (tested on awkward sizes).
        Some(unsafe {
            super::filled_by(m * self.n, |out| {
                self.matmul_amx_bf16(x, m, bias, isa, out, self.n)
            })
        })
    }

    /// Whether products run on AMX tiles at `isa` on this CPU (see
    /// [`Self::matmul_to_vec_tiles`]).
    pub fn tiles_at(isa: Isa) -> bool {
        isa == Isa::Avx512Bf16 && amx::available()
    }

    /// A serial product on AMX tiles over part of the matrix, for attention:
    /// `out[i * ldo + j] = Σ_c x[i * stride + c] · W[j, c]` for `i < m`, `j < cols` and
    /// `c` below `k_used` rounded up to whole tiles of 32, where x must hold zeros past
    /// `k_used` (a probability row past its visible keys). `tails` is
    /// [`Self::tile_tails`]'s, made once per matrix. Rounds as
    /// [`Self::matmul_to_vec_tiles`] does.
    ///
    /// # Panics
    /// Unless [`Self::tiles_at`] holds for `isa`, or if `cols > n`, `k_used > k`, `ldo <
    /// cols`, or `x` or `out` is too short.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_part_tiles(
        &self,
        x: &[bf16],
        stride: usize,
        m: usize,
        k_used: usize,
        cols: usize,
        tails: &[bf16],
        out: &mut [f32],
        ldo: usize,
        isa: Isa,
    ) {
        assert!(Self::tiles_at(isa) && cols <= self.n && k_used <= self.k && ldo >= cols);
        if m == 0 || cols == 0 {
            return;
        }
        let k_tiles = k_used.div_ceil(amx::K_TILE);
        assert!(x.len() >= (m - 1) * stride + k_tiles * amx::K_TILE);
        assert!(out.len() >= (m - 1) * ldo + cols);
        let full = self.whole_k_tiles();
        assert!(k_tiles <= full || tails.len() >= self.n.div_ceil(PANEL) * amx::K_TILE * PANEL);
        let offsets: Vec<usize> = (0..k_tiles).map(|t| t * amx::K_TILE).collect();
        let a = amx::TileRows {
            base: x.as_ptr(),
            stride,
            offsets: &offsets,
        };
        // SAFETY: tiles are available; every row and tile read lies inside x, every
        // output inside out, and the tail tile comes from `tails` (asserted).
        unsafe { self.matmul_amx_serial(&a, m, cols, tails, out.as_mut_ptr(), ldo) }
    }

    /// The row stride, in values, at which [`Self::matmul_part_tiles`] reads rows of `k`
    /// values fastest: whole tiles, an odd number of them.
    pub fn tile_stride(k: usize) -> usize {
        amx::a_stride(k)
    }

    /// Whether [`Self::matmul_taps_tiles`] runs on AMX tiles for `taps` taps at `isa`: the
    /// CPU has them and each tap's run of columns is whole k tiles (32 values).
    pub fn taps_on_tiles(&self, taps: usize, isa: Isa) -> bool {
        taps > 0
            && self.k.is_multiple_of(taps)
            && (self.k / taps).is_multiple_of(amx::K_TILE)
            && Self::tiles_at(isa)
    }

    /// [`Self::matmul_taps`] of bf16 x on AMX tiles, serially (a convolution runs one
    /// output row per task); rounds as [`Self::matmul_to_vec_tiles`] does.
    ///
    /// # Panics
    /// Unless [`Self::taps_on_tiles`] holds, or if `x` or `out` is shorter than the taps
    /// and rows need.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_taps_tiles(
        &self,
        x: &[bf16],
        row_stride: usize,
        taps: &[usize],
        m: usize,
        out: &mut [f32],
        ldo: usize,
        isa: Isa,
    ) {
        assert!(self.taps_on_tiles(taps.len(), isa));
        let run = self.k / taps.len();
        let last = taps.iter().max().copied().unwrap_or(0) + m.saturating_sub(1) * row_stride;
        assert!(m == 0 || x.len() >= last + run);
        assert!(ldo >= m && (m == 0 || out.len() >= (self.n - 1) * ldo + m));
        // SAFETY: AMX is available and every run the tiles read lies inside x, every
        // output inside out (asserted).
        unsafe { self.matmul_taps_amx(x, row_stride, taps, m, out, ldo) }
    }

    /// [`Self::matmul`] into a new `(m, n)` vector, which is not zeroed first (every
    /// element is written; a prefill's outputs are tens of megabytes).
    pub fn matmul_to_vec(&self, x: &[bf16], m: usize, isa: Isa) -> Vec<f32> {
        // SAFETY: the product writes each of the m * n values (the tests fill outputs
        // with NaN first and check every element).
        unsafe { super::filled_by(m * self.n, |out| self.matmul_raw(x, m, out, isa)) }
    }

    /// [`Self::matmul`] into `m * n` values at `out`, which it writes before it reads
    /// any (partial sums over K blocks are added to what the first block wrote).
    ///
    /// # Safety
    /// `out` is valid for writes of `m * n` f32 values.
    unsafe fn matmul_raw(&self, x: &[bf16], m: usize, out: *mut f32, isa: Isa) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            return std::ptr::write_bytes(out, 0, m * n);
        }
        if m >= BLOCKED_ROWS {
            return self.matmul_blocked(x, m, out, isa);
        }
        // Activations with an even row length, so every column pair is one u32 (or two
        // f32 where the kernel takes them widened).
        let ldx = 2 * self.pairs;
        let (padded, wide);
        let xs = if widens_x(isa) {
            let mut p = vec![0f32; m * ldx];
            for (dst, src) in p.chunks_exact_mut(ldx).zip(x.chunks_exact(k)) {
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, &s)| *d = super::widen(s));
            }
            wide = p;
            XPtr::F32(wide.as_ptr())
        } else if k % 2 == 1 {
            let mut p = vec![bf16::ZERO; m * ldx];
            for (dst, src) in p.chunks_exact_mut(ldx).zip(x.chunks_exact(k)) {
                dst[..k].copy_from_slice(src);
            }
            padded = p;
            XPtr::Bf16(padded.as_ptr())
        } else {
            XPtr::Bf16(x.as_ptr())
        };
        let panels = n.div_ceil(PANEL);
        let parallel = m * n * k >= 1 << 18;
        // Decoding (a row or two) streams the weights: short slices claimed in turn.
        let claimed = parallel && m <= 2;
        let per_task = if claimed {
            super::claim_len(panels, MIN_PANELS)
        } else if parallel {
            chunk_len(panels, 1, MIN_PANELS)
        } else {
            panels
        };
        let tasks = panels.div_ceil(per_task);
        let mr = in_place_rows(isa);
        let out_ptr = SendPtr(out);
        let kb = if m <= 4 { self.pairs } else { K_BLOCK / 2 };
        let task = |t: usize| {
            let p0 = t * per_task;
            let p1 = (p0 + per_task).min(panels);
            for c0 in (0..self.pairs).step_by(kb) {
                let c1 = (c0 + kb).min(self.pairs);
                for i in (0..m).step_by(mr) {
                    let rows = mr.min(m - i);
                    let x = XRows {
                        // SAFETY: row i < m, pair c0 <= pairs of rows of ldx values.
                        ptr: unsafe { xs.add(i * ldx + 2 * c0) },
                        row_stride: ldx,
                        pair_stride: 2,
                    };
                    let mut p = p0;
                    while p < p1 {
                        let np = (p1 - p).min(2);
                        // SAFETY: rows i..i+rows < m, panels p..p+np < panels, pairs
                        // c0..c1 <= pairs; x rows hold 2 * pairs values (padded above);
                        // tasks own disjoint panels, hence disjoint output columns.
                        unsafe {
                            self.block(
                                isa,
                                x,
                                i,
                                rows,
                                p,
                                np,
                                c0,
                                c1,
                                &[0],
                                out_ptr.get(),
                                n,
                                false,
                                true,
                            )
                        };
                        p += np;
                    }
                }
            }
        };
        if tasks > 1 && claimed {
            super::par_claim(tasks, task);
        } else if tasks > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            task(0);
        }
    }

    /// Rows per group of the regrouped layout at `isa`'s level (see [`Grouped`]).
    pub fn group_rows(isa: Isa) -> usize {
        max_rows(isa)
    }

    /// Whether weights are worth packing at `isa`'s level: where it has a packed kernel
    /// (elsewhere the row-major product is as fast).
    pub fn packs_at(isa: Isa) -> bool {
        isa == Isa::Avx512Bf16 || isa.is_avx2()
    }

    /// Whether the kernel at `isa`'s level reads x as f32 (AVX2: widened once, before the
    /// product), so that [`Self::matmul_taps`] is best given f32 values there.
    pub fn takes_f32(isa: Isa) -> bool {
        widens_x(isa)
    }

    /// Room for `m` regrouped rows of x for this matrix (see [`Grouped::put_row`]).
    pub fn grouped(&self, m: usize, isa: Isa) -> Grouped {
        Grouped::new(m, self.k, isa)
    }

    /// [`Self::matmul`] over x already regrouped (rows `0..m` put by [`Grouped::put_row`]),
    /// on the calling thread, at the level `grouped` was made for: for each pair of
    /// panels, every row group over the whole of `k`, so the panels' weights stay in L2
    /// while the rows pass.
    ///
    /// # Panics
    /// If `grouped` or `out` is shorter than its shape.
    pub fn matmul_grouped(&self, grouped: &Grouped, m: usize, out: &mut [f32]) {
        self.matmul_grouped_part(grouped, m, self.n, self.k, out);
    }

    /// [`Self::matmul_grouped`] for output columns `0..cols` only (rounded up to a whole
    /// panel; the rest of each `out` row, `n` apart, is left as it was) and input columns
    /// `0..depth` only (rounded up to even; the rest are taken as zeros).
    ///
    /// # Panics
    /// If `grouped` or `out` is shorter than its shape, `cols > n` or `depth > k`.
    pub fn matmul_grouped_part(
        &self,
        grouped: &Grouped,
        m: usize,
        cols: usize,
        depth: usize,
        out: &mut [f32],
    ) {
        assert!(grouped.pairs() == self.pairs && grouped.capacity() >= m);
        assert!(out.len() >= m * self.n && cols <= self.n && depth <= self.k);
        let panels = 0..cols.div_ceil(PANEL);
        // SAFETY: bounds asserted above; `out` is borrowed mutably for the call.
        unsafe {
            let out = out.as_mut_ptr();
            self.grouped_range(grouped, 0..m, panels, depth.div_ceil(2), out, self.n)
        };
    }

    /// A direct convolution's product on the calling thread, written transposed:
    /// `out[j·ldo + i] = Σ_t W[j, t·c..(t+1)·c] · x[taps[t] + i·row_stride..][..c]` with
    /// `c = k / taps.len()` columns per tap (even), x read in place (no patches): for a
    /// convolution over a channels-last image, one tap per kernel position, `i` the output
    /// pixels of one image row and `j` the output channel (so `out` is channel-major).
    ///
    /// # Panics
    /// If `k` is not `taps.len()` times an even count, `ldo < m`, or `x` or `out` is too
    /// short.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_taps<T: TapValue>(
        &self,
        x: &[T],
        row_stride: usize,
        taps: &[usize],
        m: usize,
        out: &mut [f32],
        ldo: usize,
        isa: Isa,
    ) {
        assert!(!taps.is_empty() && self.k.is_multiple_of(2 * taps.len()));
        let tap_cols = self.k / taps.len();
        let last = taps.iter().max().copied().unwrap_or(0) + m.saturating_sub(1) * row_stride;
        assert!(m == 0 || x.len() >= last + tap_cols);
        assert!(
            ldo >= m && out.len() >= (self.n - 1) * ldo + m && ldo <= i32::MAX as usize / self.n
        );
        // f32 x runs the AVX2 kernel at the AVX-512 level too (see `block`): its rows.
        let mr = match (isa, T::ptr(x)) {
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512Bf16, XPtr::F32(_)) => avx2::ROWS,
            _ => in_place_rows(isa),
        };
        let panels = self.n.div_ceil(PANEL);
        for p in (0..panels).step_by(2) {
            let np = (panels - p).min(2);
            for i in (0..m).step_by(mr) {
                let x = XRows {
                    ptr: T::ptr(&x[i * row_stride..]),
                    row_stride,
                    pair_stride: 2,
                };
                // SAFETY: rows i..i+mr.min(m-i) of every tap lie inside x and out
                // (asserted); the pairs of all taps together are the weights' pairs.
                unsafe {
                    let out = out.as_mut_ptr();
                    let rows = mr.min(m - i);
                    self.block(
                        isa,
                        x,
                        i,
                        rows,
                        p,
                        np,
                        0,
                        tap_cols / 2,
                        taps,
                        out,
                        ldo,
                        true,
                        false,
                    )
                };
            }
        }
    }

    /// Rows `rows` of the regrouped x (starting at a group boundary) times panels `panels`
    /// over column pairs `0..pairs`, written to `out` (row stride `ldo`).
    ///
    /// # Safety
    /// `grouped` holds the rows, `out` the `(rows.end, ldo)` outputs (`n <= ldo`), and no
    /// other thread writes these outputs meanwhile.
    pub(crate) unsafe fn grouped_range(
        &self,
        grouped: &Grouped,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        pairs: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let isa = grouped.isa();
        let mr = max_rows(isa);
        let first = rows.start / mr;
        for p in panels.clone().step_by(2) {
            let np = (panels.end - p).min(2);
            for g in 0..rows.len().div_ceil(mr) {
                let x = XRows {
                    ptr: grouped.group(first + g),
                    row_stride: 2,
                    pair_stride: 2 * mr,
                };
                let i = rows.start + g * mr;
                let count = mr.min(rows.end - i);
                self.block(
                    isa,
                    x,
                    i,
                    count,
                    p,
                    np,
                    0,
                    pairs,
                    &[0],
                    out,
                    ldo,
                    false,
                    false,
                );
            }
        }
    }

    /// The product for many rows: x regrouped in super blocks of about
    /// [`X_SUPER_BYTES`] (in parallel), each worked on by tasks of (row block, panel
    /// range).
    ///
    /// # Safety
    /// As [`Self::matmul_raw`].
    unsafe fn matmul_blocked(&self, x: &[bf16], m: usize, out: *mut f32, isa: Isa) {
        let (n, k) = (self.n, self.k);
        let mr = max_rows(isa);
        let panels = n.div_ceil(PANEL);
        // Sized by bf16 values at every level (f32 ones make blocks of twice the bytes).
        let group_bytes = 4 * mr * self.pairs;
        let block_rows = block_rows(k, isa);
        let super_rows = (X_SUPER_BYTES / (group_bytes * block_rows / mr)).max(1) * block_rows;
        let threads = rayon::current_num_threads();
        let out_ptr = SendPtr(out);
        for s0 in (0..m).step_by(super_rows) {
            let s_rows = super_rows.min(m - s0);
            let grouped = regroup(x, k, s0..s0 + s_rows, isa);
            // Equal row blocks (multiples of mr), so no task gets a small remainder.
            let row_blocks = s_rows.div_ceil(block_rows);
            let block_rows = s_rows.div_ceil(row_blocks).div_ceil(mr) * mr;
            let per_task = if row_blocks >= 4 * threads {
                panels
            } else {
                chunk_len(panels, 2, MIN_PANELS)
            };
            let ranges = panels.div_ceil(per_task);
            (0..row_blocks * ranges).into_par_iter().for_each(|t| {
                let (b, p0) = (t / ranges, (t % ranges) * per_task);
                let r0 = (b * block_rows).min(s_rows);
                let rows = r0..(r0 + block_rows).min(s_rows);
                let panels = p0..(p0 + per_task).min(panels);
                // SAFETY: tasks own disjoint (rows, panels) blocks of this super block's
                // output rows, hence disjoint outputs; `grouped` holds the super block.
                unsafe {
                    let out = out_ptr.get().add(s0 * n);
                    self.grouped_range(&grouped, rows, panels, self.pairs, out, n)
                };
            });
        }
    }

    /// Rows `i..i+rows` of x (at `x`, pair `c0`) times panels `p..p+np` over column pairs
    /// `c0..c1`, added to `out` unless `c0 == 0`; `stream` as [`Block::stream`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        isa: Isa,
        x: XRows,
        i: usize,
        rows: usize,
        p: usize,
        np: usize,
        c0: usize,
        c1: usize,
        taps: &[usize],
        out: *mut f32,
        ldo: usize,
        transposed: bool,
        stream: bool,
    ) {
        let panel_len = self.pairs * 2 * PANEL;
        let w = self.values().as_ptr().add(p * panel_len + c0 * 2 * PANEL);
        let cols = (self.n - p * PANEL).min(np * PANEL);
        let o = if transposed {
            out.add(p * PANEL * ldo + i)
        } else {
            out.add(i * ldo + p * PANEL)
        };
        let args = Block {
            x,
            taps,
            w,
            panel_len,
            pairs: c1 - c0,
            out: o,
            ldo,
            cols,
            accumulate: c0 > 0,
            transposed,
            stream,
        };
        match (isa, x.ptr) {
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512Bf16, XPtr::Bf16(_)) => avx512::block(rows, np, &args),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512Vnni, XPtr::F32(_)) => avx512f::block(rows, np, &args),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Bf16, XPtr::F32(_)) => {
                avx2::block(rows, np, &args)
            }
            _ => plain_block(rows, np, &args),
        }
    }
}

/// Rows of x per kernel call where x is read in place, at any row stride.
fn in_place_rows(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => avx512f::IN_PLACE_ROWS,
        _ => max_rows(isa),
    }
}

/// Rows of x per kernel call at this level (and per group of the regrouped layout).
fn max_rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512Bf16 => 12,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => avx2::ROWS,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => avx512f::ROWS,
        _ => 4,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops over register tiles read clearest
mod avx512;
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // as above
mod avx512f;
#[cfg(target_arch = "x86_64")]
mod zmm;

#[cfg(test)]
mod tests;
