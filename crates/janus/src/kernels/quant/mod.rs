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
//! - On aarch64 (`neon.rs`) a register holds a quarter of a line: Q4 through `SDOT` where
//!   the CPU has dot products, widening multiplies (`SMLAL`) otherwise; Q8 through `SMLAL`
//!   on the 12-bit activations at every level.
//!
//! A tile is one quad of weight rows against up to 4 activation rows: each activation
//! load serves 4 weight rows (with one weight row per tile, the activations' L1 and L2
//! traffic, 2 to 4 times the weights', held a two-row Q8 product to half the speed of
//! memory). Decoding (1 or 2 rows) reads each weight once, as one sequential stream per
//! thread; prefill (hundreds of rows) re-reads blocks of 32 weight rows from L2. Threads
//! split the weight quads, as [`super::gemm`] splits rows.
//!
//! Q8 products of bf16 activations with [`DEQUANT_ROWS`] rows or more (prefill) go
//! through bf16 panels instead at the levels with a packed bf16 kernel but no faster
//! integer one (`avx512`, `avx2`; see [`QuantMatrix::matmul_bf16`]). So do Q4's where the
//! CPU has AMX tiles. Below that row count (and for Q4 without AMX, Q8 at `avx-vnni` and
//! `avx512-vnni`, f32 activations or other CPUs) every row count takes the integer path,
//! so a row's result does not depend on the batch it came in.

use std::fmt;
use std::str::FromStr;

use half::bf16;
use rayon::prelude::*;

use super::packed::{self, PackedBf16, TileOut, PANEL};
use super::{chunk_len, vectorized_fn, Isa, SendPtr};

mod acts;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dequant;
#[cfg(target_arch = "aarch64")]
mod neon;
mod tiles;
mod weights;

use acts::*;
use dequant::*;
use tiles::*;
use weights::*;

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
    /// prefill) at the AVX-512 BF16 and AVX2 levels takes the packed bf16 kernel instead:
    /// each task dequantises a pair of weight panels (32 rows) into bf16 and runs every row
    /// over them, so a Q8 prefill runs about as fast as a bf16 one (on AVX-512 the 12-bit
    /// integer product, `VPDPWSSD`, has the same 32 products per instruction as
    /// `VDPBF16PS` and more work per block: 0.75 times the speed; on AVX2 the dequantising
    /// leaves it at 0.96-0.99x of bf16, docs/kernels.md; at the `avx-vnni` and
    /// `avx512-vnni` levels `VPDPWSSD` is the faster, so the integer path runs); on AMX
    /// tiles where the CPU has them, every row at once under each panel pair. The weights then carry one more
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
        let many = m >= DEQUANT_ROWS && self.cols > 0 && !super::row_invariance();
        // Q4 too on AMX tiles, whose bf16 products outrun its integer kernel; Q8 not
        // where `VPDPWSSD` outruns the f32-widening bf16 kernel (docs/kernels.md).
        let route = match self.format {
            QuantFormat::Q8 => {
                PackedBf16::packs_at(isa) && !matches!(isa, Isa::AvxVnni | Isa::Avx512Vnni)
            }
            QuantFormat::Q4 => PackedBf16::tiles_at(isa),
        };
        if many && route {
            return self.matmul_dequantized(x, m, out, isa);
        }
        let x32: Vec<f32> = x[..m * self.cols]
            .iter()
            .map(|&v| super::widen(v))
            .collect();
        self.matmul_raw(&x32, m, out, isa)
    }

    /// Rows `j0..j0 + 32` (or fewer at the end) dequantised into the bf16 panels that
    /// `scratch` holds (made, or remade for another row count, as needed).
    fn dequantized_pair<'s>(
        &self,
        scratch: &'s mut Option<PackedBf16>,
        j0: usize,
        isa: Isa,
    ) -> &'s PackedBf16 {
        let rows = (2 * PANEL).min(self.rows - j0);
        if scratch.as_ref().is_none_or(|w| w.rows() != rows) {
            *scratch = Some(PackedBf16::zeros(rows, self.cols));
        }
        let panels = scratch.as_mut().expect("made above");
        dequantize_panels(isa, self, j0, panels);
        panels
    }

    /// [`Self::matmul_bf16`] on AMX tiles, rounded to bf16 with `bias` added as the
    /// tiles are stored (the bits of [`super::fused::round_bf16_bias`] of its f32
    /// product); `None` where that route does not run (no tiles, fewer than
    /// [`DEQUANT_ROWS`] rows, or under [`super::with_row_invariance`]).
    ///
    /// # Panics
    /// If `x` is shorter than `m` rows or `bias` does not hold `rows` values.
    pub fn matmul_bf16_to_bf16_tiles(
        &self,
        x: &[bf16],
        m: usize,
        bias: Option<&[f32]>,
        isa: Isa,
    ) -> Option<Vec<bf16>> {
        let n = self.rows;
        let tiles = PackedBf16::tiles_at(isa) && !super::row_invariance();
        if m < DEQUANT_ROWS || self.cols == 0 || !tiles {
            return None;
        }
        self.check_operands(x.len(), m, m * n);
        assert!(
            bias.is_none_or(|b| b.len() == n),
            "bias of {n} values expected"
        );
        // SAFETY: every one of the m * n values is written: each chunk's columns of all
        // rows, rounded into their places (tiles available, checked above).
        Some(unsafe {
            super::filled_by(m * n, |out: *mut bf16| {
                let out = SendPtr(out);
                let bf16_out = |j0: usize, rows: usize| TileOut::Bf16 {
                    out: SendPtr(out.get().add(j0)),
                    ld: n,
                    bias: bias.map(|b| &b[j0..j0 + rows]),
                    isa,
                };
                self.matmul_dequantized_tiles(x, m, isa, bf16_out)
            })
        })
    }

    /// The product on AMX tiles through bf16 panels, in tasks of a few panel pairs: each
    /// dequantises its pairs, then runs every row over them, the row groups passing under
    /// all its pairs (a task of one pair streamed all of x from L3 for it). `out(j0,
    /// rows)` says where output columns `j0..j0 + rows` go.
    ///
    /// # Safety
    /// Tiles are available; each `out(j0, rows)` describes writable room for those
    /// columns of all `m` rows, and different chunks' columns do not overlap.
    unsafe fn matmul_dequantized_tiles<'b>(
        &self,
        x: &[bf16],
        m: usize,
        isa: Isa,
        out: impl Fn(usize, usize) -> TileOut<'b> + Sync,
    ) {
        let (n, k) = (self.rows, self.cols);
        let rows = packed::TileInput::new(x, m, k);
        let pair_rows = 2 * PANEL;
        let chunk = (DEQUANT_CHUNK_BYTES / (2 * k * pair_rows)).max(1) * pair_rows;
        (0..n.div_ceil(chunk)).into_par_iter().for_each_init(
            || None::<PackedBf16>,
            |scratch, c| {
                let j0 = c * chunk;
                let rows_here = chunk.min(n - j0);
                if scratch.as_ref().is_none_or(|w| w.rows() != rows_here) {
                    *scratch = Some(PackedBf16::zeros(rows_here, k));
                }
                let panels = scratch.as_mut().expect("made above");
                dequant::dequantize_all_panels(isa, self, j0, panels);
                // SAFETY: as the caller promises for out(j0, rows_here).
                unsafe { panels.matmul_tiles_serial(&rows, out(j0, rows_here)) }
            },
        );
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
        let out_ptr = SendPtr(out);
        if PackedBf16::tiles_at(isa) {
            // SAFETY: tiles are available at this level; columns j0..j0 + rows of all m
            // rows lie inside `out`, asserted by the caller.
            let f32_out = |j0, _| TileOut::F32(SendPtr(out_ptr.get().add(j0)), n);
            return self.matmul_dequantized_tiles(x, m, isa, f32_out);
        }
        let block_rows = packed::block_rows(k, isa);
        for r0 in (0..m).step_by(block_rows) {
            let rows = block_rows.min(m - r0);
            let grouped = packed::regroup(x, k, r0..r0 + rows, isa);
            (0..n.div_ceil(pair_rows)).into_par_iter().for_each_init(
                || None::<PackedBf16>,
                |scratch, p| {
                    let j0 = p * pair_rows;
                    let panels = self.dequantized_pair(scratch, j0, isa);
                    // SAFETY: output rows r0..r0 + rows < m and columns j0..j0 + 32 (or
                    // fewer) < n lie inside `out`, asserted by the caller; tasks own
                    // disjoint columns; `grouped` holds rows 0..rows of this block.
                    unsafe {
                        let out = out_ptr.get().add(r0 * n + j0);
                        let all = 0..panels.rows().div_ceil(PANEL);
                        panels.grouped_range(&grouped, 0..rows, all, k.div_ceil(2), out, n)
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
        let (groups, level) = (self.groups, isa);
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
        } else if super::row_invariance() {
            // K blocks would add partial sums, which rounds differently from one pass.
            (TILE_ROWS, groups)
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
                                streams: m <= STREAM_ROWS,
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

/// Rows up to which a product counts as streaming its weights ([`TileArgs::streams`]):
/// blocks of speculative drafts (2 x 8 codes); prefills have hundreds.
const STREAM_ROWS: usize = 16;

/// Weight quads walked together while every group of activation rows passes over them.
const REUSE_QUADS: usize = 8;

/// Bytes of quantised activations a decoding tile keeps in L1 next to the weights
/// streaming through; beyond it the rows go one at a time (docs/kernels.md).
const DECODE_ACTS: usize = 16 << 10;

/// Bytes of quantised activations a prefill tile keeps in L1: longer rows are cut into
/// even K blocks (docs/kernels.md).
const PREFILL_ACTS: usize = 32 << 10;

/// Activation rows from which a Q8 product goes through bf16 panels (see
/// [`QuantMatrix::matmul_bf16`]): the crossover measured on AVX-512 BF16
/// (docs/kernels.md).
pub const DEQUANT_ROWS: usize = 64;
/// Bytes of bf16 weights dequantised at once for a product on AMX tiles (with a group
/// of x's rows, about what L2 holds: 2 MiB per core there).
const DEQUANT_CHUNK_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests;
