//! Weight-only quantised matrix products `out = x · wᵀ`: 8-bit (Q8) and 4-bit (Q4) weights
//! in blocks of 32 along K with one scale per block (GGML's Q8_0 and Q4_0 arithmetic in a
//! layout of our own). A block's scale is stored as a signed byte `s` times an f32 `D` that
//! the 16 blocks of a group (512 weights of a row) share, `d = D s`, as GGML's k-quants
//! store their sub-block scales: 8 + 10/32 and 4 + 10/32 bits per weight, where one f16
//! scale per block took 8.5 and 4.5 (4% fewer bytes for Q4 to stream). `s` is rounded
//! away from zero, so a block's `|d|` is at most 1/|s| above its own ideal scale: within
//! 0.8% for the blocks whose ideal scale is over half of the group's largest.
//!
//! # Layout
//! A weight row is cut into *groups* of 16 blocks (512 weights; the row is padded with
//! zero weights to whole groups), and a group is stored as 8 *chunks* of 64 bytes: chunk
//! `u` holds weights `4u..4u + 4` of all 16 blocks, block `l` in bytes `4l..4l + 4`.
//! Loaded into a 512-bit register, dword lane `l` then always belongs to block `l`, so the
//! 8 chunks of a group sum into one integer accumulator and the group's 16 scales,
//! converted by one `VCVTPH2PS`, line up with its lanes: the float work (convert, scale,
//! add) comes once per 512 weights, not once per block, and nothing is shuffled. Q8 stores
//! `q` as a signed byte, one chunk per 64-byte line; Q4 stores `q + 8`, chunk `u` in the
//! low nibbles of line `u` and chunk `u + 4` in the high ones (an AND, or a shift and an
//! AND, to unpack).
//!
//! Weight rows are stored in *quads* of 4 (the last one padded with zero rows): for each
//! group, line `s` of the quad's 4 rows lie side by side, so a kernel that takes 4 weight
//! rows against the same activations reads one sequential stream. Lines are 64-byte
//! aligned; the scale bytes have an array of their own, `(quads, groups, 4, 16)` (a quad's
//! group on one line), and the shared scales another, `(quads, groups, 4)`.
//!
//! # Kernels
//! The activations are quantised per block too, on the fly, into the same layout, and
//! each block contributes `d_w d_x Σ q_w q_x` with the inner sum exact in i32:
//! - Q4 takes int8 activations (GGML's q4_0 · q8_0): AVX-512 VNNI `VPDPBUSD` on the
//!   unsigned nibbles, the `+8` removed by starting the accumulator at `-8 Σ q_x`; AVX2
//!   `VPMADDUBSW`. They add under 1% to Q4's error (8.6% instead of 8.5% of the output
//!   RMS, with N(0, 0.02) weights and activations that have outlier channels).
//! - Q8 takes 12-bit activations (in i16) through `VPDPWSSD` (AVX2: `VPMADDWD`): a
//!   chunk's words, masked to their high byte or shifted up by 8, are 256 times its odd
//!   or even weights, each multiplied with the matching activations, all in-lane. Int8
//!   activations would more than double Q8's error on activations with outlier channels
//!   (1.3% instead of 0.54% of the output RMS, same data); 12 bits add nothing
//!   measurable, and keep each lane's 32 sums of `256 q_w · q_x` inside i32.
//!
//! A tile is one quad of weight rows against up to 4 activation rows: each activation
//! load serves 4 weight rows (with one weight row per tile, the activations' L1 and L2
//! traffic, 2 to 4 times the weights', held a two-row Q8 product to half the speed of
//! memory). Decoding (1 or 2 rows) reads each weight once, as one sequential stream per
//! thread; prefill (hundreds of rows) re-reads blocks of 32 weight rows from L2. Threads
//! split the weight quads, as [`super::gemm`] splits rows.
//!
//! Q8 products of bf16 activations with [`DEQUANT_ROWS`] rows or more (prefill) go
//! through bf16 instead where the CPU has `VDPBF16PS` (see [`QuantMatrix::matmul_bf16`]):
//! there the integer product is slower than the bf16 one. Below that row count (and for
//! Q4, f32 activations or other CPUs) every row count takes the integer path, so a row's
//! result does not depend on the batch it came in.

use std::fmt;
use std::str::FromStr;

use half::bf16;
use rayon::prelude::*;

use super::packed::{self, PackedBf16, PANEL};
use super::{chunk_len, vectorized_fn, Isa, SendPtr};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Weights per block (one scale each).
pub const BLOCK: usize = 32;

/// Blocks per group: one per dword lane of a 512-bit register.
const GROUP_BLOCKS: usize = 16;

/// Weights per group.
const GROUP: usize = GROUP_BLOCKS * BLOCK;

/// Weight rows per quad (stored interleaved line by line, multiplied together).
const QUAD: usize = 4;

/// 64-byte chunks per group (4 weights of each block per chunk).
const CHUNKS: usize = BLOCK / 4;

/// Weight-only quantisation formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// 8-bit: `w ≈ d q`, `q` in -127..=127, `d = max|w| / 127` per block (Q8_0).
    Q8,
    /// 4-bit: `w ≈ d q`, `q` in -8..=7, `d = max / -8` for the block's signed value of
    /// largest magnitude, which lands on -8 exactly (Q4_0; the other sign clips at +7).
    /// On N(0, 0.02) weights its RMS error is 8.6% of the weights' (symmetric -7..=7:
    /// 9.7%; Q4_1's min and scale: 7.8%, but 5 bits per weight, so slower to stream).
    Q4,
}

impl QuantFormat {
    /// Short name, as `--quant` takes it.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8 => "q8",
            QuantFormat::Q4 => "q4",
        }
    }

    /// Storage per weight, the block scales included (padding to whole groups aside).
    pub fn bits_per_weight(self) -> f64 {
        let quant = match self {
            QuantFormat::Q8 => 8.0,
            QuantFormat::Q4 => 4.0,
        };
        // A byte per block, 4 bytes per group.
        quant + (8.0 + 32.0 / GROUP_BLOCKS as f64) / BLOCK as f64
    }

    /// 64-byte lines per group.
    fn lines_per_group(self) -> usize {
        match self {
            QuantFormat::Q8 => CHUNKS,
            QuantFormat::Q4 => CHUNKS / 2,
        }
    }
}

/// A quantisation format name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quantisation format {0:?}: expected q8 or q4")]
pub struct ParseQuantFormatError(pub String);

impl FromStr for QuantFormat {
    type Err = ParseQuantFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "q8" => Ok(QuantFormat::Q8),
            "q4" => Ok(QuantFormat::Q4),
            _ => Err(ParseQuantFormatError(s.to_string())),
        }
    }
}

/// 64 bytes on a cache line: one vector load.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// One value per block of a group (or per lane of a register), on a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes<T>([T; GROUP_BLOCKS]);

/// Chunk and byte of a group that hold weight `s` of its block `l` (and the matching
/// int8 activation; a 12-bit one goes to word `byte / 2` of the chunk's even or odd line).
const fn chunk_pos(l: usize, s: usize) -> (usize, usize) {
    (s / 4, 4 * l + s % 4)
}

/// A quantised `(rows, cols)` matrix, row-major like the bf16 weight it came from
/// (`rows` = out_features, `cols` = in_features).
#[derive(Clone)]
pub struct QuantMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    /// Groups per row (`cols` rounded up to 512 weights).
    groups: usize,
    /// `(quads, groups, lines_per_group, 4)`: the stored quants, see the module doc.
    quants: Vec<Line>,
    /// `(quads, groups, 4, 16)`: each block's scale byte `s`, padding blocks and rows 0.
    subs: Vec<i8>,
    /// `(quads, groups, 4)`: each row's group scale `D` (block scales `D s`).
    supers: Vec<f32>,
}

impl fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuantMatrix")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("size_bytes", &self.size_bytes())
            .finish()
    }
}

impl QuantMatrix {
    /// Quantises a row-major bf16 `(rows, cols)` weight.
    ///
    /// # Panics
    /// If `w` is shorter than `rows * cols`.
    pub fn quantize_bf16(w: &[bf16], rows: usize, cols: usize, format: QuantFormat) -> Self {
        assert!(
            w.len() >= rows * cols,
            "{} weights for {rows}x{cols}",
            w.len()
        );
        Self::quantize_rows(rows, cols, format, |j, row| {
            for (d, s) in row.iter_mut().zip(&w[j * cols..(j + 1) * cols]) {
                *d = s.to_f32();
            }
        })
    }

    /// Quantises a packed bf16 weight (no row-major copy of it is made).
    pub fn quantize_packed(w: &PackedBf16, format: QuantFormat) -> Self {
        Self::quantize_rows(w.rows(), w.cols(), format, |j, row| w.row_f32(j, row))
    }

    /// Quantises a row-major f32 `(rows, cols)` weight.
    ///
    /// # Panics
    /// If `w` is shorter than `rows * cols`.
    pub fn quantize_f32(w: &[f32], rows: usize, cols: usize, format: QuantFormat) -> Self {
        assert!(
            w.len() >= rows * cols,
            "{} weights for {rows}x{cols}",
            w.len()
        );
        Self::quantize_rows(rows, cols, format, |j, row| {
            row.copy_from_slice(&w[j * cols..(j + 1) * cols])
        })
    }

    /// Quantises the rows that `row(j, buf)` writes as f32 into `buf` (`cols` long).
    fn quantize_rows(
        rows: usize,
        cols: usize,
        format: QuantFormat,
        row: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Self {
        let (groups, quads) = (cols.div_ceil(GROUP), rows.div_ceil(QUAD));
        let lines = groups * format.lines_per_group() * QUAD;
        let isa = super::isa();
        let mut quants = super::huge_filled(quads * lines, Line([0; 64]));
        let mut subs = vec![0i8; quads * groups * QUAD * GROUP_BLOCKS];
        let mut supers = vec![0f32; quads * groups * QUAD];
        if groups > 0 {
            quants
                .par_chunks_mut(lines)
                .zip(subs.par_chunks_mut(groups * QUAD * GROUP_BLOCKS))
                .zip(supers.par_chunks_mut(groups * QUAD))
                .enumerate()
                .for_each_init(
                    || vec![0f32; cols],
                    |buf, (t, ((q, s), d))| {
                        for r in 0..QUAD {
                            let j = t * QUAD + r;
                            if j < rows {
                                row(j, buf);
                            } else {
                                buf.fill(0.0);
                            }
                            quantize_row(isa, buf, format, r, q, s, d);
                        }
                    },
                );
        }
        QuantMatrix {
            format,
            rows,
            cols,
            groups,
            quants,
            subs,
            supers,
        }
    }

    /// Rows (out_features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (in_features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The quantisation format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Bytes of quants and scales held (padding to whole groups included).
    pub fn size_bytes(&self) -> usize {
        self.quants.len() * std::mem::size_of::<Line>()
            + self.subs.len()
            + self.supers.len() * std::mem::size_of::<f32>()
    }

    /// The signed `q` of row `j`, group `g`, chunk `u`, chunk byte `b`.
    fn quant(&self, j: usize, g: usize, u: usize, b: usize) -> i32 {
        let lpg = self.format.lines_per_group();
        let line = ((j / QUAD * self.groups + g) * lpg + u % lpg) * QUAD + j % QUAD;
        let byte = self.quants[line].0[b];
        match self.format {
            QuantFormat::Q8 => byte as i8 as i32,
            QuantFormat::Q4 => ((byte >> (4 * (u / lpg))) & 0x0F) as i32 - 8,
        }
    }

    /// The scale of row `j`, block `b` (group `b / 16`, block `b % 16` in it).
    fn scale(&self, j: usize, b: usize) -> f32 {
        let (g, l) = (b / GROUP_BLOCKS, b % GROUP_BLOCKS);
        let at = (j / QUAD * self.groups + g) * QUAD + j % QUAD;
        block_scale(self.subs[at * GROUP_BLOCKS + l], self.supers[at])
    }

    /// The `(rows, cols)` f32 weight the quants stand for, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.rows * self.cols];
        for j in 0..self.rows {
            for (c, v) in w[j * self.cols..(j + 1) * self.cols].iter_mut().enumerate() {
                let (g, l, s) = (c / GROUP, c % GROUP / BLOCK, c % BLOCK);
                let (u, b) = chunk_pos(l, s);
                *v = self.quant(j, g, u, b) as f32 * self.scale(j, c / BLOCK);
            }
        }
        w
    }

    /// Panics unless `x` (`x_len` values) and `out` (`out_len`) hold `m` rows.
    fn check_operands(&self, x_len: usize, m: usize, out_len: usize) {
        let (n, k) = (self.rows, self.cols);
        assert!(
            x_len >= m * k && out_len >= m * n,
            "matmul of {n}x{k} weights: {x_len} inputs, {out_len} outputs for {m} rows"
        );
    }

    /// [`Self::matmul`] of bf16 activations. Q8 with many rows ([`DEQUANT_ROWS`] or more:
    /// prefill) at the AVX-512 BF16 level takes the bf16 kernel instead: each task dequantises a
    /// pair of weight panels (32 rows) into bf16 and runs every row over them with
    /// `VDPBF16PS`, so a Q8 prefill runs as fast as a bf16 one (the 12-bit integer
    /// product, `VPDPWSSD`, has the same 32 products per instruction as `VDPBF16PS` and
    /// more work per block: 0.75 times the speed). The weights then carry one more
    /// rounding, `q d` to bf16 (0.2 % of a weight at most, against Q8's own step of
    /// `d / 2`), and the activations stay in bf16 instead of 12 bits per block.
    ///
    /// # Panics
    /// As [`Self::matmul`].
    pub fn matmul_bf16(&self, x: &[bf16], m: usize, out: &mut [f32], isa: Isa) {
        self.check_operands(x.len(), m, out.len());
        // SAFETY: `out` holds the (m, rows) output (checked).
        unsafe { self.matmul_bf16_raw(x, m, out.as_mut_ptr(), isa) }
    }

    /// [`Self::matmul_bf16`] into a new `(m, rows)` vector, not zeroed first.
    pub fn matmul_bf16_to_vec(&self, x: &[bf16], m: usize, isa: Isa) -> Vec<f32> {
        self.check_operands(x.len(), m, m * self.rows);
        // SAFETY: the product writes every one of the m * rows values.
        unsafe { super::filled_by(m * self.rows, |out| self.matmul_bf16_raw(x, m, out, isa)) }
    }

    /// [`Self::matmul_bf16`] into `m * rows` values at `out`, each written before it is
    /// read.
    ///
    /// # Safety
    /// `out` is valid for writes of `m * rows` f32 values; `x` holds `m` rows (checked).
    unsafe fn matmul_bf16_raw(&self, x: &[bf16], m: usize, out: *mut f32, isa: Isa) {
        let many = m >= DEQUANT_ROWS && self.cols > 0;
        if self.format == QuantFormat::Q8 && many && isa == Isa::Avx512Bf16 {
            return self.matmul_dequantized(x, m, out, isa);
        }
        let x32: Vec<f32> = x[..m * self.cols]
            .iter()
            .map(|&v| super::widen(v))
            .collect();
        self.matmul_raw(&x32, m, out, isa)
    }

    /// The product through bf16 panels (see [`Self::matmul_bf16`]), at any level (the
    /// tests run it at every one).
    ///
    /// # Safety
    /// As [`Self::matmul_bf16_raw`].
    unsafe fn matmul_dequantized(&self, x: &[bf16], m: usize, out: *mut f32, isa: Isa) {
        let (n, k) = (self.rows, self.cols);
        if m == 0 || n == 0 {
            return;
        }
        let pair_rows = 2 * PANEL;
        let block_rows = packed::block_rows(k, isa);
        let out_ptr = SendPtr(out);
        for r0 in (0..m).step_by(block_rows) {
            let rows = block_rows.min(m - r0);
            let grouped = packed::regroup(x, k, r0..r0 + rows, isa);
            (0..n.div_ceil(pair_rows)).into_par_iter().for_each_init(
                || None::<PackedBf16>,
                |scratch, p| {
                    let j0 = p * pair_rows;
                    let panels = match scratch {
                        Some(w) if w.rows() == pair_rows.min(n - j0) => w,
                        _ => scratch.insert(PackedBf16::zeros(pair_rows.min(n - j0), k)),
                    };
                    dequantize_panels(isa, self, j0, panels);
                    // SAFETY: output rows r0..r0 + rows < m and columns j0..j0 + 32 (or
                    // fewer) < n lie inside `out`, asserted by the caller; tasks own
                    // disjoint columns; `grouped` holds rows 0..rows of this block.
                    unsafe {
                        let out = out_ptr.get().add(r0 * n + j0);
                        let all = 0..panels.rows().div_ceil(PANEL);
                        panels.grouped_range(&grouped, 0..rows, all, k.div_ceil(2), out, n, isa)
                    }
                },
            );
        }
    }

    /// `out[i, j] = Σ_k x[i, k] · W[j, k]` for `x` `(m, cols)` and `out` `(m, rows)`, both
    /// f32 row-major; the activations are quantised per block on the way (int8 for Q4,
    /// 12-bit for Q8, see the module doc).
    ///
    /// # Shapes
    /// `x`: `(m, cols)`, `out`: `(m, rows)`.
    ///
    /// # Panics
    /// If a slice is shorter than its shape says (callers check shapes first).
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], isa: Isa) {
        self.check_operands(x.len(), m, out.len());
        // SAFETY: `out` holds the (m, rows) output (checked).
        unsafe { self.matmul_raw(x, m, out.as_mut_ptr(), isa) }
    }

    /// [`Self::matmul`] into a new `(m, rows)` vector, not zeroed first.
    pub fn matmul_to_vec(&self, x: &[f32], m: usize, isa: Isa) -> Vec<f32> {
        self.check_operands(x.len(), m, m * self.rows);
        // SAFETY: the product writes every one of the m * rows values.
        unsafe { super::filled_by(m * self.rows, |out| self.matmul_raw(x, m, out, isa)) }
    }

    /// [`Self::matmul`] into `m * rows` values at `out`, each written before it is read
    /// (K blocks after the first add to what it wrote).
    ///
    /// # Safety
    /// `out` is valid for writes of `m * rows` f32 values; `x` holds `m` rows (checked).
    unsafe fn matmul_raw(&self, x: &[f32], m: usize, out: *mut f32, isa: Isa) {
        let (n, k) = (self.rows, self.cols);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            std::ptr::write_bytes(out, 0, m * n);
            return;
        }
        let (groups, level) = (self.groups, Level::of(isa));
        let acts = QuantActs::new(x, m, k, groups, self.format, level);
        let parallel = m * n * k >= 1 << 18;
        let quads = n.div_ceil(QUAD);
        let chunk = if !parallel {
            quads
        } else if m <= 2 {
            // Decoding: short slices of the weight stream, claimed in turn.
            super::claim_len(quads, REUSE_QUADS)
        } else {
            chunk_len(quads, 1, 1)
        };
        let quad_lines = self.format.lines_per_group() * QUAD;
        // A tile's activation rows stay in L1 while the weights pass. Decoding streams
        // the weights from memory, best as one unbroken stream: it takes both rows per
        // tile when they fit, else one row at a time, the second pass re-reading the
        // weights from L2. Prefill takes 4 rows over K blocks that fit (the weights come
        // from L2 anyway), adding up the partial sums.
        let group_bytes = acts.lines * 64 + 2 * std::mem::size_of::<Lanes<f32>>();
        let (tile_rows, kb) = if m <= 2 {
            let rows = if m * groups * group_bytes <= DECODE_ACTS {
                m
            } else {
                1
            };
            (rows, groups)
        } else {
            let most = (PREFILL_ACTS / (TILE_ROWS * group_bytes)).max(1);
            (TILE_ROWS, groups.div_ceil(groups.div_ceil(most)))
        };
        let out_ptr = SendPtr(out);
        let run = |c: usize| {
            let t0 = c * chunk;
            let t1 = (t0 + chunk).min(quads);
            // Each tile of rows after the first re-reads these weight quads from L2.
            for b0 in (t0..t1).step_by(REUSE_QUADS) {
                let b1 = (b0 + REUSE_QUADS).min(t1);
                for g0 in (0..groups).step_by(kb) {
                    for i in (0..m).step_by(tile_rows) {
                        let (xo, rows) = (i * groups + g0, tile_rows.min(m - i));
                        for t in b0..b1 {
                            let tg = t * groups + g0;
                            let args = TileArgs {
                                xq: acts.q[xo * acts.lines..].as_ptr(),
                                neg: acts.neg[xo..].as_ptr(),
                                dx: acts.scale[xo..].as_ptr(),
                                stride: groups,
                                groups: kb.min(groups - g0),
                                wq: self.quants[tg * quad_lines..].as_ptr(),
                                ws: self.subs[tg * QUAD * GROUP_BLOCKS..].as_ptr(),
                                wd: self.supers[tg * QUAD..].as_ptr(),
                                // SAFETY: (i, 4t) is inside the (m, n) output, asserted
                                // above.
                                out: unsafe { out_ptr.get().add(i * n + t * QUAD) },
                                ldo: n,
                                cols: QUAD.min(n - t * QUAD),
                                add: g0 > 0,
                            };
                            // SAFETY: the tile stays inside the operands (rows i..i + rows
                            // < m, quad t of the padded rows, groups g0.. < groups, output
                            // columns 4t..4t + cols < n); tasks own disjoint output
                            // columns; `level` was checked against the CPU.
                            unsafe { tile(level, self.format, rows, args) }
                        }
                    }
                }
            }
        };
        let chunks = quads.div_ceil(chunk);
        if parallel && chunks > 1 && m <= 2 {
            super::par_claim(chunks, run);
        } else if parallel && chunks > 1 {
            (0..chunks).into_par_iter().for_each(run);
        } else {
            (0..chunks).for_each(run);
        }
    }
}

/// Activation rows a tile takes at most, sharing each weight load.
const TILE_ROWS: usize = 4;

/// Weight quads walked together while every group of activation rows passes over them.
const REUSE_QUADS: usize = 8;

/// Bytes of quantised activations a decoding tile keeps in L1 (32 KiB here) next to the
/// weights streaming through. Beyond it (Q8's two 5632-long rows: 25 KiB) the rows go one
/// at a time: with one weight row per tile, both at once ran half as fast; with quads,
/// both at once and one at a time measured the same.
const DECODE_ACTS: usize = 16 << 10;

/// Bytes of quantised activations a prefill tile keeps in L1: longer rows are cut into
/// even K blocks (Q8 with K = 5632 ran 1.4x faster; shorter blocks cost more than they
/// saved).
const PREFILL_ACTS: usize = 32 << 10;

/// Activation rows from which a Q8 product goes through bf16 panels (see
/// [`QuantMatrix::matmul_bf16`]). Measured on up_proj (5632 x 2048, two threads): the
/// integer path is faster up to 32 rows (1.36 against 1.92 ms at 16, 2.40 against 2.84 at
/// 32), even at 48 (3.51, 3.57), and the bf16 panels from 64 on (4.38 against 4.55 ms at
/// 64, 7.80 against 8.74 at 128; a 616-position prefill 4.3 against 5.3 s).
pub const DEQUANT_ROWS: usize = 64;

/// Rows `j0..j0 + dst.rows()` (at most 32) of the Q8 matrix `w` (`j0` at a quad),
/// dequantised into `dst`'s panels: `q d` rounded to bf16 to nearest even, as
/// [`super::narrow`] rounds.
///
/// # Panics
/// If `w` is not Q8 or the rows or shapes do not fit.
fn dequantize_panels(isa: Isa, w: &QuantMatrix, j0: usize, dst: &mut PackedBf16) {
    assert!(w.format == QuantFormat::Q8 && j0.is_multiple_of(QUAD) && j0 + dst.rows() <= w.rows);
    assert!(dst.rows() <= 2 * PANEL && dst.cols() == w.cols);
    let (rows, pairs) = (dst.rows(), w.cols.div_ceil(2));
    let data = dst.panels_mut();
    assert!(data.len() >= rows.div_ceil(PANEL) * pairs * 2 * PANEL);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Bf16 {
        // SAFETY: the level was checked against the CPU; shapes asserted above.
        return unsafe { avx512::dequantize_q8(w, j0, rows, data.as_mut_ptr(), pairs) };
    }
    dequantize_panels_loops(isa, w, j0, rows, data);
}

vectorized_fn! {
    /// [`dequantize_panels`] as plain loops (after its checks).
    fn dequantize_panels_loops(isa: Isa, w: &QuantMatrix, j0: usize, rows: usize, data: &mut [bf16]) {
        let pairs = w.cols.div_ceil(2);
        // Each value pair goes out as one u32 (pairs start at even offsets).
        let base = data.as_mut_ptr();
        // Group by group, line by line, all rows: a line's 32 pairs of all rows land on
        // the same 64 destination lines (one per pair and panel), which stay in L1.
        let mut d = [[0f32; GROUP_BLOCKS]; 2 * PANEL];
        for g in 0..w.groups {
            for (r, dr) in d.iter_mut().enumerate().take(rows) {
                let j = j0 + r;
                let at = (j / QUAD * w.groups + g) * QUAD + j % QUAD;
                for (v, &s) in dr.iter_mut().zip(&w.subs[at * GROUP_BLOCKS..]) {
                    *v = block_scale(s, w.supers[at]);
                }
            }
            // Pairs of this group inside the row (the last group's may run past it).
            let valid = pairs.saturating_sub(g * GROUP / 2).min(GROUP / 2);
            for u in 0..CHUNKS {
                for (r, dr) in d.iter().enumerate().take(rows) {
                    let j = j0 + r;
                    let line = &w.quants[((j / QUAD * w.groups + g) * CHUNKS + u) * QUAD + j % QUAD];
                    let mut v = [0u32; 32];
                    for (e2, p) in v.iter_mut().enumerate() {
                        let scale = dr[e2 / 2];
                        let lo = super::narrow(line.0[2 * e2] as i8 as f32 * scale).to_bits();
                        let hi = super::narrow(line.0[2 * e2 + 1] as i8 as f32 * scale).to_bits();
                        *p = u32::from(lo) | u32::from(hi) << 16;
                    }
                    let panel = r / PANEL * pairs * 2 * PANEL + 2 * (r % PANEL);
                    // Bytes 4l..4l + 4 are weights 4u..4u + 4 of block l: column pairs
                    // 256 g + 16 l + 2u and the next.
                    for (e2, &p) in v.iter().enumerate() {
                        let c = e2 / 2 * BLOCK / 2 + 2 * u + e2 % 2;
                        if c < valid {
                            let c = g * GROUP / 2 + c;
                            // SAFETY: c < pairs and r < rows: inside `data` (asserted);
                            // `panel + 2 PANEL c` is even, so the u32 covers the pair.
                            unsafe {
                                base.add(panel + c * 2 * PANEL).cast::<u32>().write_unaligned(p)
                            };
                        }
                    }
                }
            }
        }
    }
}

vectorized_fn! {
    /// Quantises one row (`w`, `cols` long) into its lines and block scales, as row `r` of
    /// the quad whose lines and scales these are.
    /// (Compiled per vector level: the division and rounding vectorise, the same bits.)
    fn quantize_row(
        isa: Isa,
        w: &[f32],
        format: QuantFormat,
        r: usize,
        lines: &mut [Line],
        subs: &mut [i8],
        supers: &mut [f32],
    ) {
        let lpg = format.lines_per_group();
        let block = |b: usize| w.get(b * BLOCK..((b + 1) * BLOCK).min(w.len())).unwrap_or(&[]);
        for g in 0..supers.len() / QUAD {
            // A plain loop (not `array::from_fn`, which is not inlined) so that this
            // compiles at the body's vector level.
            let mut ideal = [0f32; GROUP_BLOCKS];
            for (l, e) in ideal.iter_mut().enumerate() {
                *e = ideal_scale(block(g * GROUP_BLOCKS + l), format);
            }
            let (d, s) = group_scales(&ideal);
            supers[g * QUAD + r] = d;
            subs[(g * QUAD + r) * GROUP_BLOCKS..][..GROUP_BLOCKS].copy_from_slice(&s);
            for (l, &s) in s.iter().enumerate() {
                let q = quantize_block(block(g * GROUP_BLOCKS + l), block_scale(s, d), format);
                quantize_row_block(lines, lpg, g, l, r, &q, format);
            }
        }
    }
}

/// Stores block `l` of group `g` of the quad's row `r`, quants `q`, in its `lines`.
#[inline(always)]
fn quantize_row_block(
    lines: &mut [Line],
    lpg: usize,
    g: usize,
    l: usize,
    r: usize,
    q: &[i8; BLOCK],
    format: QuantFormat,
) {
    // Chunk u takes quants 4u..4u + 4, in bytes 4l..4l + 4 of its line.
    for (u, q4) in q.chunks_exact(4).enumerate() {
        let (u0, byte) = chunk_pos(l, 4 * u);
        debug_assert_eq!(u0, u);
        let line = &mut lines[(g * lpg + u % lpg) * QUAD + r].0[byte..byte + 4];
        for (dst, &q) in line.iter_mut().zip(q4) {
            match format {
                QuantFormat::Q8 => *dst = q as u8,
                QuantFormat::Q4 => *dst |= ((q + 8) as u8) << (4 * (u / lpg)),
            }
        }
    }
}

/// A block's ideal scale (`w` at most [`BLOCK`] long): `max|w| / 127` (Q8), or for Q4
/// `-top / 8` with `top` the value of largest magnitude, so that it lands on -8.
#[inline(always)]
fn ideal_scale(w: &[f32], format: QuantFormat) -> f32 {
    // The value of largest magnitude, with its sign (the first one on ties; NaNs never):
    // the largest magnitude as integer bits first, a maximum that vectorises.
    let magnitude = |v: f32| match v.to_bits() & 0x7fff_ffff {
        nan if nan > 0x7f80_0000 => 0,
        m => m,
    };
    let most = w.iter().map(|&v| magnitude(v)).max().unwrap_or(0);
    let top = match most {
        0 => 0.0,
        _ => w
            .iter()
            .copied()
            .find(|&v| magnitude(v) == most)
            .unwrap_or(0.0),
    };
    match format {
        QuantFormat::Q8 => top.abs() / 127.0,
        // Q4_0: the largest magnitude lands on -8, the code with no positive twin.
        QuantFormat::Q4 => top / -8.0,
    }
}

/// A group's shared scale `D` and scale bytes `s` for its blocks' ideal scales: `D` is
/// the largest magnitude over 127 and each `s` is `ideal / D` rounded away from zero, so
/// `|D s|` is at or just above the ideal (a block then never needs a quant beyond its
/// range but for f32 rounding, which its clamp absorbs). A group whose `D` is zero or
/// subnormal (weights below 1e-36) gets zeros.
#[inline(always)]
fn group_scales(ideal: &[f32; GROUP_BLOCKS]) -> (f32, [i8; GROUP_BLOCKS]) {
    let most = ideal.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = most / 127.0;
    if !d.is_normal() {
        return (0.0, [0; GROUP_BLOCKS]);
    }
    let s = ideal.map(|e| {
        let s = e / d;
        let s = if s >= 0.0 { s.ceil() } else { s.floor() };
        s.clamp(-127.0, 127.0) as i8
    });
    (d, s)
}

/// The scale of a block with scale byte `s` in a group with shared scale `d`: one f32
/// product, the same in every kernel.
#[inline(always)]
fn block_scale(s: i8, d: f32) -> f32 {
    f32::from(s) * d
}

/// One block's quants at scale `d` (`w` at most [`BLOCK`] long; the rest is zero
/// padding): `w / d` rounded to nearest and clamped to the format's range, so
/// `|w - d q| <= |d| / 2` where `|d|` is at least the block's ideal scale, except Q4's +8
/// clipped to +7 (`<= |d|`).
#[inline(always)]
fn quantize_block(w: &[f32], d: f32, format: QuantFormat) -> [i8; BLOCK] {
    let mut q = [0i8; BLOCK];
    let (lo, hi) = match format {
        QuantFormat::Q8 => (-127.0, 127.0),
        QuantFormat::Q4 => (-8.0, 7.0),
    };
    if d != 0.0 {
        for (q, &v) in q.iter_mut().zip(w) {
            *q = (v / d).round().clamp(lo, hi) as i8;
        }
    }
    q
}

/// Activations quantised per block into the weights' group layout: int8 for Q4 (one
/// line per chunk), 12-bit for Q8 (two lines of i16 per chunk: the chunk's even
/// elements, then its odd ones).
struct QuantActs {
    /// Lines per group: 8 (int8) or 16 (i16).
    lines: usize,
    /// `(m, groups, lines)`: the quants.
    q: Vec<Line>,
    /// `(m, groups)`, int8 only: `-8 Σ q` per block, where the dot of the stored Q4
    /// nibbles (`q_w + 8`) starts so that it ends at the dot of the signed ones.
    neg: Vec<Lanes<i32>>,
    /// `(m, groups)`: the block scales, `max|x| / 127` (int8) or `max|x| / 2047`.
    scale: Vec<Lanes<f32>>,
}

/// The largest 12-bit activation quant: Q8's `256 q_w · q_x` sums (32 per lane and group)
/// stay inside i32 with it.
const TOP12: f32 = 2047.0;

impl QuantActs {
    /// Quantises `x` `(m, k)` into `groups` groups per row (zero padded) for weights of
    /// `format`. Every level gives the same values (the scalar code is the reference).
    fn new(
        x: &[f32],
        m: usize,
        k: usize,
        groups: usize,
        format: QuantFormat,
        level: Level,
    ) -> Self {
        let wide = format == QuantFormat::Q8;
        let (lines, top) = if wide {
            (2 * CHUNKS, TOP12)
        } else {
            (CHUNKS, 127.0)
        };
        let mut acts = QuantActs {
            lines,
            q: vec![Line([0; 64]); m * groups * lines],
            neg: vec![Lanes([0; GROUP_BLOCKS]); m * groups],
            scale: vec![Lanes([0.0; GROUP_BLOCKS]); m * groups],
        };
        let rows = acts
            .q
            .chunks_mut(groups * lines)
            .zip(acts.neg.chunks_mut(groups))
            .zip(acts.scale.chunks_mut(groups))
            .zip(x.chunks(k));
        type Row<'a> = (
            ((&'a mut [Line], &'a mut [Lanes<i32>]), &'a mut [Lanes<f32>]),
            &'a [f32],
        );
        let one = |(((q, neg), scale), row): Row| {
            for g in 0..groups {
                #[cfg(target_arch = "x86_64")]
                if level == Level::Avx512 {
                    let src = row.get(g * GROUP..((g + 1) * GROUP).min(k)).unwrap_or(&[]);
                    let lines = &mut q[g * lines..(g + 1) * lines];
                    // SAFETY: `level` was checked against the CPU; `lines` holds the
                    // group's lines.
                    unsafe {
                        avx512::quantize_act_group(
                            src,
                            top,
                            wide,
                            lines,
                            &mut neg[g],
                            &mut scale[g],
                        )
                    };
                    continue;
                }
                for l in 0..GROUP_BLOCKS {
                    let c0 = g * GROUP + l * BLOCK;
                    let src = row.get(c0..(c0 + BLOCK).min(k)).unwrap_or(&[]);
                    let mut block = [0i32; BLOCK];
                    // SAFETY: `level` was checked against the CPU.
                    scale[g].0[l] = unsafe {
                        match level {
                            #[cfg(target_arch = "x86_64")]
                            Level::Avx512 => avx512::quantize_act_block(src, top, &mut block),
                            #[cfg(target_arch = "x86_64")]
                            Level::Avx2 => avx2::quantize_act_block(src, top, &mut block),
                            _ => quantize_act_block(src, top, &mut block),
                        }
                    };
                    // Values 4u..4u + 4 go to bytes 4l..4l + 4 of chunk u (see
                    // `chunk_pos`); 12-bit ones as words, the even values to the
                    // chunk's even line and the odd ones to its odd line.
                    for (u, v) in block.chunks_exact(4).enumerate() {
                        if wide {
                            for (t, line) in q[(g * CHUNKS + u) * 2..][..2].iter_mut().enumerate() {
                                let pair = [v[t] as i16, v[t + 2] as i16];
                                let bytes = (pair[0] as u16 as u32) | (pair[1] as u16 as u32) << 16;
                                line.0[4 * l..4 * l + 4].copy_from_slice(&bytes.to_le_bytes());
                            }
                        } else {
                            let bytes = v.iter().map(|&q| q as i8 as u8);
                            for (d, b) in
                                q[g * CHUNKS + u].0[4 * l..4 * l + 4].iter_mut().zip(bytes)
                            {
                                *d = b;
                            }
                        }
                    }
                    if !wide {
                        neg[g].0[l] = -8 * block.iter().sum::<i32>();
                    }
                }
            }
        };
        // Prefill-sized inputs quantise on all threads; decode's few rows on this one.
        if m * k >= 1 << 16 {
            rows.par_bridge().for_each(one);
        } else {
            rows.for_each(one);
        }
        acts
    }
}

/// One activation block (`x` at most [`BLOCK`] long) quantised to `-top..=top` in `q`;
/// returns its scale. The reference for the vector versions, which give the same values.
fn quantize_act_block(x: &[f32], top: f32, q: &mut [i32; BLOCK]) -> f32 {
    let (d, inv) = act_scale(x.iter().fold(0f32, |a, v| a.max(v.abs())), top);
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_even(v * inv) as i32;
    }
    d
}

/// An activation block's scale `max|x| / top` and the inverse its values are multiplied
/// by; both 0 for a block too small for `top / max` to stay finite (all zero, in practice).
fn act_scale(amax: f32, top: f32) -> (f32, f32) {
    if amax >= 1e-30 {
        (amax / top, top / amax)
    } else {
        (0.0, 0.0)
    }
}

/// `v` rounded to nearest, ties to even, for `|v| < 2^22`: adding 1.5 · 2^23 leaves no
/// fraction bits (a vectorisable add instead of a `roundf` call on baseline x86-64), the
/// same rounding as `VCVTPS2DQ` under the default MXCSR.
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// What a kernel can use: `Isa` narrowed by the extra features the quant kernels need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Plain,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW + VNNI.
    Avx512,
}

impl Level {
    /// The level `isa` allows: AVX-512 needs VNNI (else AVX2), AVX2 needs F16C.
    fn of(isa: Isa) -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if isa == Isa::Avx512Bf16 && has!("avx512vnni") {
                return Level::Avx512;
            }
            if isa >= Isa::Avx2 && has!("f16c") {
                return Level::Avx2;
            }
        }
        let _ = isa;
        Level::Plain
    }
}

/// One tile's operands: `groups` groups of activation rows from `xq`, `neg`, `dx` (row
/// strides: `stride` groups of lines and of `Lanes`; see [`QuantActs`]) and of one weight
/// quad from `wq` and `ws`, and the output at `out` (row stride `ldo`), whose first `cols`
/// (at most 4) columns the tile writes, or adds to if `add`.
#[derive(Clone, Copy)]
struct TileArgs {
    xq: *const Line,
    neg: *const Lanes<i32>,
    dx: *const Lanes<f32>,
    stride: usize,
    groups: usize,
    wq: *const Line,
    ws: *const i8,
    wd: *const f32,
    out: *mut f32,
    ldo: usize,
    cols: usize,
    add: bool,
}

impl TileArgs {
    /// Line `s` of group `g` of the quad's weight row `r`.
    ///
    /// # Safety
    /// `g` < `groups`, `r` < 4, `s` < the format's lines per group `lpg`.
    #[inline(always)]
    unsafe fn w_line(&self, lpg: usize, g: usize, s: usize, r: usize) -> *const Line {
        self.wq.add((g * lpg + s) * QUAD + r)
    }

    /// The 16 scale bytes of group `g` of the quad's weight row `r`, and their shared
    /// scale (block scales [`block_scale`]`(s, d)`).
    ///
    /// # Safety
    /// `g` < `groups`, `r` < 4.
    #[inline(always)]
    unsafe fn w_scales(&self, g: usize, r: usize) -> (*const i8, f32) {
        let at = g * QUAD + r;
        (self.ws.add(at * GROUP_BLOCKS), *self.wd.add(at))
    }

    /// Writes (or adds) activation row `i`'s result for the quad's weight row `r`.
    ///
    /// # Safety
    /// `i` is one of the tile's rows, `r` < `cols`.
    #[inline(always)]
    unsafe fn store(&self, i: usize, r: usize, v: f32) {
        let out = self.out.add(i * self.ldo + r);
        *out = if self.add { *out + v } else { v };
    }
}

/// One tile: `rows` (at most [`TILE_ROWS`]) activation rows times one weight quad.
///
/// # Safety
/// `a` points at operands of that many rows (see [`TileArgs`]) quantised for `format`;
/// the CPU supports `level`.
unsafe fn tile(level: Level, format: QuantFormat, rows: usize, a: TileArgs) {
    match (level, format) {
        #[cfg(target_arch = "x86_64")]
        (Level::Avx512, QuantFormat::Q8) => avx512::tile_q8(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Level::Avx512, QuantFormat::Q4) => avx512::tile_q4(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Level::Avx2, QuantFormat::Q8) => avx2::tile_q8(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Level::Avx2, QuantFormat::Q4) => avx2::tile_q4(rows, a),
        _ => plain_tile(format, rows, a),
    }
}

/// The reference: per block, the exact integer dot times both scales, summed in f32.
unsafe fn plain_tile(format: QuantFormat, rows: usize, a: TileArgs) {
    let wide = format == QuantFormat::Q8;
    let lpg = format.lines_per_group();
    let lines = if wide { 2 * CHUNKS } else { CHUNKS };
    for r in 0..a.cols {
        for i in 0..rows {
            let mut acc = 0f32;
            for g in 0..a.groups {
                let xq = a.xq.add((i * a.stride + g) * lines);
                for l in 0..GROUP_BLOCKS {
                    let mut dot = 0i32;
                    for s in 0..BLOCK {
                        let (u, e) = chunk_pos(l, s);
                        let byte = (*a.w_line(lpg, g, u % lpg, r)).0[e];
                        let (w, x) = if wide {
                            let x = xq.add(2 * u + e % 2).cast::<[u8; 2]>().add(e / 2).read();
                            (byte as i8 as i32, i16::from_le_bytes(x) as i32)
                        } else {
                            let w = ((byte >> (4 * (u / lpg))) & 0x0F) as i32 - 8;
                            (w, (*xq.add(u)).0[e] as i8 as i32)
                        };
                        dot += w * x;
                    }
                    let dx = (*a.dx.add(i * a.stride + g)).0[l];
                    let (s, d) = a.w_scales(g, r);
                    let dw = block_scale(*s.add(l), d);
                    acc += dot as f32 * (dw * dx);
                }
            }
            a.store(i, r, acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in about [-1, 1], roughly bell-shaped (a sum of 3 uniforms).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        spiky_values(len, seed, 0.0)
    }

    /// [`values`] with a fraction `spikes` of them 8x larger (the outliers real weights
    /// and activations have).
    fn spiky_values(len: usize, seed: u32, spikes: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761) ^ 0x9E37_79B9;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        };
        (0..len)
            .map(|_| {
                let v = (next() + next() + next() - 1.5) / 1.5;
                if next() < spikes {
                    8.0 * v
                } else {
                    v
                }
            })
            .collect()
    }

    const FORMATS: [QuantFormat; 2] = [QuantFormat::Q8, QuantFormat::Q4];

    #[test]
    fn formats_parse_and_name_themselves() {
        for f in FORMATS {
            assert_eq!(f.name().parse::<QuantFormat>(), Ok(f));
        }
        assert_eq!("Q4".parse::<QuantFormat>(), Ok(QuantFormat::Q4));
        let err = "q5".parse::<QuantFormat>().unwrap_err().to_string();
        assert!(
            err.contains("q5") && err.contains("q8") && err.contains("q4"),
            "{err}"
        );
        assert_eq!(QuantFormat::Q8.bits_per_weight(), 8.3125);
        assert_eq!(QuantFormat::Q4.bits_per_weight(), 4.3125);
    }

    #[test]
    fn sizes_match_bits_per_weight_on_whole_lines() {
        for f in FORMATS {
            let (rows, cols) = (8, 2048);
            let q = QuantMatrix::quantize_f32(&values(rows * cols, 1), rows, cols, f);
            assert_eq!((q.rows(), q.cols(), q.format()), (rows, cols, f));
            let want = (rows * cols) as f64 * f.bits_per_weight() / 8.0;
            assert_eq!(q.size_bytes() as f64, want, "{f:?}");
            // Rows are stored in quads: 5 take the room of 8.
            let q = QuantMatrix::quantize_f32(&values(5 * cols, 1), 5, cols, f);
            assert_eq!(q.size_bytes() as f64, want, "{f:?}");
        }
    }

    #[test]
    fn dequantised_weights_are_within_half_a_step() {
        for f in FORMATS {
            for &(rows, cols) in &[(1, 8), (3, 31), (2, 33), (5, 100), (4, 257), (2, 2048)] {
                let mut w = values(rows * cols, cols as u32);
                // A zero block and a constant one.
                w[..cols.min(BLOCK)].fill(0.0);
                let last = rows * cols - cols.min(BLOCK);
                w[last..].fill(-0.3);
                let q = QuantMatrix::quantize_f32(&w, rows, cols, f);
                let deq = q.dequantize();
                for j in 0..rows {
                    for c in 0..cols {
                        let d = q.scale(j, c / BLOCK).abs();
                        let (v, r) = (w[j * cols + c], deq[j * cols + c]);
                        // Q4 clips the largest magnitude's opposite twin, +8 steps, at +7.
                        let clipped = f == QuantFormat::Q4 && (v / -d).abs() > 7.5;
                        let step = if clipped { d } else { d / 2.0 };
                        assert!(
                            (v - r).abs() <= step * (1.0 + 1e-5),
                            "{f:?} {rows}x{cols} at ({j},{c}): {v} -> {r} (scale {d})"
                        );
                    }
                }
                // Each scale is as small as its byte allows: a byte one step nearer zero
                // would clip the block's largest magnitude (f32 rounding of the product
                // aside); the group's largest takes the byte 127.
                for j in 0..rows {
                    for b in 0..cols.div_ceil(BLOCK) {
                        let top = w[j * cols..][b * BLOCK..((b + 1) * BLOCK).min(cols)]
                            .iter()
                            .fold(0f32, |a, v| a.max(v.abs()));
                        let g = b / GROUP_BLOCKS;
                        let at = (j / QUAD * q.groups + g) * QUAD + j % QUAD;
                        let (byte, shared) =
                            (q.subs[at * GROUP_BLOCKS + b % GROUP_BLOCKS], q.supers[at]);
                        let codes = if f == QuantFormat::Q8 { 127.0 } else { 8.0 };
                        let d = q.scale(j, b).abs();
                        assert!(d * codes >= top * (1.0 - 1e-6), "{f:?} row {j} block {b}");
                        let below = (f32::from(byte).abs() - 1.0) * shared;
                        assert!(top == 0.0 || below * codes < top, "{f:?} row {j} block {b}");
                        let group = (0..GROUP_BLOCKS)
                            .map(|l| q.subs[at * GROUP_BLOCKS + l].unsigned_abs())
                            .max();
                        assert!(
                            group == Some(127) || shared == 0.0,
                            "{f:?} row {j} group {g}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes_give_zeros_or_nothing() {
        for f in FORMATS {
            let q = QuantMatrix::quantize_f32(&[], 3, 0, f);
            let mut out = vec![f32::NAN; 6];
            q.matmul(&[], 2, &mut out, Isa::Plain);
            assert_eq!(out, [0.0; 6]);
            assert_eq!(q.dequantize(), Vec::<f32>::new());
            // Many rows of nothing (the bf16 entry, which may take the panel path).
            let mut out = vec![f32::NAN; 3 * DEQUANT_ROWS];
            q.matmul_bf16(&[], DEQUANT_ROWS, &mut out, super::super::isa());
            assert!(out.iter().all(|&v| v == 0.0));
            let q = QuantMatrix::quantize_f32(&[], 0, 40, f);
            q.matmul(&[1.0; 40], 1, &mut [], super::super::isa());
            let x = vec![bf16::ONE; 40 * DEQUANT_ROWS];
            q.matmul_bf16(&x, DEQUANT_ROWS, &mut [], super::super::isa());
            assert_eq!(q.size_bytes(), 0);
        }
    }

    #[test]
    fn bf16_f32_and_packed_inputs_quantise_alike() {
        let w: Vec<bf16> = values(7 * 101, 5).into_iter().map(bf16::from_f32).collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let packed = super::super::packed::PackedBf16::pack(&w, 7, 101);
        for f in FORMATS {
            let a = QuantMatrix::quantize_bf16(&w, 7, 101, f).dequantize();
            let b = QuantMatrix::quantize_f32(&wf, 7, 101, f).dequantize();
            let c = QuantMatrix::quantize_packed(&packed, f).dequantize();
            assert_eq!(a, b, "{f:?}");
            assert_eq!(a, c, "{f:?}");
        }
    }

    /// Every level the kernels can run at here.
    fn levels() -> Vec<Level> {
        let mut levels: Vec<Level> = Isa::available().into_iter().map(Level::of).collect();
        levels.dedup();
        levels
    }

    #[test]
    fn activation_blocks_round_to_nearest_even_at_every_level() {
        for top in [127.0, TOP12] {
            // With `top` the block's largest, each value is its own q before rounding.
            let x = [top, 2.5, -3.5, 0.5, -0.5, 1.5, -1.0];
            for level in levels() {
                let mut q = [0i32; BLOCK];
                // SAFETY: `levels` only lists what this CPU runs.
                let d = unsafe {
                    match level {
                        #[cfg(target_arch = "x86_64")]
                        Level::Avx512 => avx512::quantize_act_block(&x, top, &mut q),
                        #[cfg(target_arch = "x86_64")]
                        Level::Avx2 => avx2::quantize_act_block(&x, top, &mut q),
                        _ => quantize_act_block(&x, top, &mut q),
                    }
                };
                assert_eq!(d, 1.0, "{level:?}");
                assert_eq!(q[..8], [top as i32, 2, -4, 0, 0, 2, -1, 0], "{level:?}");
            }
        }
    }

    #[test]
    fn activations_quantise_to_the_same_values_at_every_level() {
        for &k in &[8, 31, 33, 100, 257, 2048] {
            let mut x = spiky_values(3 * k, k as u32, 0.02);
            x[k..(k + BLOCK).min(2 * k)].fill(0.0);
            for f in FORMATS {
                let groups = k.div_ceil(GROUP);
                let want = QuantActs::new(&x, 3, k, groups, f, Level::Plain);
                for level in levels() {
                    let got = QuantActs::new(&x, 3, k, groups, f, level);
                    for (o, (a, b)) in got.q.iter().zip(&want.q).enumerate() {
                        assert_eq!(a.0, b.0, "{level:?} k={k} {f:?} line {o}");
                    }
                    for (a, b) in got.neg.iter().zip(&want.neg) {
                        assert_eq!(a.0, b.0, "{level:?} k={k} {f:?}");
                    }
                    for (a, b) in got.scale.iter().zip(&want.scale) {
                        assert_eq!(a.0, b.0, "{level:?} k={k} {f:?}");
                    }
                }
            }
        }
        // Ties: each block's largest value is `top`, so its scale is 1 and every other
        // value, x.5, is its own quant before rounding (to even, at every level).
        let k = 600;
        for f in FORMATS {
            let top = if f == QuantFormat::Q8 { TOP12 } else { 127.0 };
            let x: Vec<f32> = (0..2 * k)
                .map(|i| match i % BLOCK {
                    5 => top,
                    _ => (i % 9) as f32 - 4.5,
                })
                .collect();
            let groups = k.div_ceil(GROUP);
            let want = QuantActs::new(&x, 2, k, groups, f, Level::Plain);
            assert!(want
                .scale
                .iter()
                .flat_map(|s| s.0)
                .all(|d| d == 1.0 || d == 0.0));
            for level in levels() {
                let got = QuantActs::new(&x, 2, k, groups, f, level);
                assert!(
                    got.q.iter().zip(&want.q).all(|(a, b)| a.0 == b.0),
                    "{level:?} {f:?}"
                );
                assert!(got.neg.iter().zip(&want.neg).all(|(a, b)| a.0 == b.0));
            }
        }
    }

    #[test]
    fn every_level_agrees_with_plain_on_awkward_sizes() {
        let awkward = [1, 7, 13, 300]
            .into_iter()
            .flat_map(|rows| [8, 31, 33, 100, 257, 2048].map(|cols| (rows, cols)));
        // Long rows: decoding two rows one at a time, prefill in K blocks.
        let shapes: Vec<(usize, usize)> = awkward.chain([(13, 5632), (5, 8192)]).collect();
        for (f, &(rows, cols)) in FORMATS
            .iter()
            .flat_map(|f| shapes.iter().map(move |s| (f, s)))
        {
            let w = values(rows * cols, (rows * cols) as u32);
            let q = QuantMatrix::quantize_f32(&w, rows, cols, *f);
            let deq = q.dequantize();
            for m in (1..=5).chain([15, 67]) {
                let x = values(m * cols, m as u32);
                let mut want = vec![0.0; m * rows];
                q.matmul(&x, m, &mut want, Isa::Plain);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; m * rows];
                    q.matmul(&x, m, &mut got, isa);
                    assert_eq!(q.matmul_to_vec(&x, m, isa), got, "{f:?} {isa:?}");
                    for i in 0..m {
                        for j in 0..rows {
                            // Sums in another order: a few f32 roundings of the terms.
                            let bound: f32 = (0..cols)
                                .map(|c| (x[i * cols + c] * deq[j * cols + c]).abs())
                                .sum();
                            let (a, b) = (got[i * rows + j], want[i * rows + j]);
                            assert!(
                                (a - b).abs() <= 2e-6 * bound + 1e-6,
                                "{f:?} {isa:?} m={m} {rows}x{cols} at ({i},{j}): {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// `RMS(got - want) / RMS(want)`.
    fn relative_rms(got: &[f32], want: &[f32]) -> f64 {
        let err: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (err / norm).sqrt()
    }

    /// `x · wᵀ` for `x` `(m, k)` and `w` `(n, k)`, summed in f64.
    fn exact_product(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let dot = |i: usize, j: usize| {
            let (x, w) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            x.iter()
                .zip(w)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32
        };
        (0..m * n).map(|o| dot(o / n, o % n)).collect()
    }

    #[test]
    fn products_are_close_to_the_exact_ones() {
        // Relative RMS errors measured (bell-shaped values; with 1% of them 8x larger):
        // Q8 0.48-0.50% (0.79-0.85%), Q4 7.8-8.2% (13.3-14.1%). The activations'
        // quantisation adds under 1% of that: the weights' error is all there is.
        let (n, k) = (256, 2048);
        for (spikes, q8_bound, q4_bound) in [(0.0, 0.006, 0.09), (0.01, 0.01, 0.15)] {
            let w = spiky_values(n * k, 11, spikes);
            for (f, bound) in [(QuantFormat::Q8, q8_bound), (QuantFormat::Q4, q4_bound)] {
                let q = QuantMatrix::quantize_f32(&w, n, k, f);
                let deq = q.dequantize();
                for m in [1, 2, 67] {
                    let x = spiky_values(m * k, 12 + m as u32, spikes);
                    let exact = exact_product(&x, &w, m, n, k);
                    let mut got = vec![0.0; m * n];
                    q.matmul(&x, m, &mut got, super::super::isa());
                    let err = relative_rms(&got, &exact);
                    let weights_only = relative_rms(&exact_product(&x, &deq, m, n, k), &exact);
                    assert!(
                        err < bound && err < 1.02 * weights_only,
                        "{f:?} spikes {spikes} m={m}: relative RMS error {err} (bound {bound}; \
                         dequantised weights alone {weights_only})"
                    );
                }
            }
        }
    }

    #[test]
    fn dequantised_panels_hold_the_dequantised_weights_in_bf16_at_every_level() {
        // Partial panels and quads, a partial last group, an odd column count.
        for &(rows, cols) in &[(1, 8), (7, 31), (33, 513), (70, 1100), (36, 2048)] {
            let w = spiky_values(rows * cols, (rows + cols) as u32, 0.01);
            let q = QuantMatrix::quantize_f32(&w, rows, cols, QuantFormat::Q8);
            let deq = q.dequantize();
            for isa in Isa::available() {
                for j0 in (0..rows).step_by(2 * PANEL) {
                    let mut panels = PackedBf16::zeros((2 * PANEL).min(rows - j0), cols);
                    // Stale values from a previous use are overwritten.
                    panels.panels_mut().fill(bf16::NAN);
                    dequantize_panels(isa, &q, j0, &mut panels);
                    let mut row = vec![0f32; cols];
                    for r in 0..panels.rows() {
                        panels.row_f32(r, &mut row);
                        for (c, &v) in row.iter().enumerate() {
                            let want = super::super::narrow(deq[(j0 + r) * cols + c]).to_f32();
                            assert_eq!(
                                v.to_bits(),
                                want.to_bits(),
                                "{isa:?} {rows}x{cols} row {} col {c}: {v} vs {want}",
                                j0 + r
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q8_products_through_bf16_panels_agree_with_the_integer_ones() {
        // Relative RMS error against the exact product of bell-shaped values with 1% 8x
        // outliers: integer path 0.84%, through bf16 panels 0.86% (the weights' bf16
        // rounding on top of Q8's step; the activations are bf16 to begin with).
        for &(rows, cols, m) in &[(33, 513, 17), (70, 1100, 40), (256, 2048, 67)] {
            let w = spiky_values(rows * cols, 11, 0.01);
            let q = QuantMatrix::quantize_f32(&w, rows, cols, QuantFormat::Q8);
            let x: Vec<bf16> = spiky_values(m * cols, 5, 0.01)
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let exact = exact_product(&x32, &w, m, rows, cols);
            let mut int = vec![0.0; m * rows];
            q.matmul(&x32, m, &mut int, Isa::Plain);
            let int_err = relative_rms(&int, &exact);
            let mut want = vec![0.0; m * rows];
            // SAFETY: `want` holds the (m, rows) output.
            unsafe { q.matmul_dequantized(&x, m, want.as_mut_ptr(), Isa::Plain) };
            let err = relative_rms(&want, &exact);
            assert!(err < 1.05 * int_err, "{rows}x{cols}: {err} vs {int_err}");
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; m * rows];
                // SAFETY: as above.
                unsafe { q.matmul_dequantized(&x, m, got.as_mut_ptr(), isa) };
                assert!(relative_rms(&got, &want) < 1e-6, "{isa:?} {rows}x{cols}");
                // The public entry takes this path (or the integer one) by itself.
                let mut got = vec![f32::NAN; m * rows];
                q.matmul_bf16(&x, m, &mut got, isa);
                assert!(relative_rms(&got, &exact) < 1.05 * int_err, "{isa:?}");
                assert_eq!(q.matmul_bf16_to_vec(&x, m, isa), got, "{isa:?}");
            }
        }
    }
}
