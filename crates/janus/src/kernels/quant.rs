//! Weight-only quantised matrix products `out = x · wᵀ`: 8-bit (Q8) and 4-bit (Q4) weights
//! in blocks of 32 along K with one f16 scale per block, so 8.5 and 4.5 bits per weight
//! (GGML's Q8_0 and Q4_0 arithmetic in a layout of our own).
//!
//! # Layout
//! Each weight row is padded with zeros to whole *lines* of 64 bytes (64 Q8 or 128 Q4
//! weights), 64-byte aligned, so every kernel load is one aligned vector. Weights go in
//! *pairs* of blocks (64 weights): byte `4l + t` of a pair holds weight `4(l / 2) + t` of
//! block `l % 2`. The 16 dword lanes of a 512-bit register then alternate between the two
//! blocks, and a 32-bit broadcast of the pair's two scales lines up with them, so no
//! kernel ever shuffles. Q8 stores `q + 128` (one pair per line); Q4 stores `q + 8`, the
//! line's first pair in the low nibbles and its second in the high ones (one AND, or a
//! shift and an AND, to unpack). Scales sit in their own array, one f16 per block.
//!
//! # Kernels
//! Fewer than [`DEQUANT_MIN_ROWS`] activation rows (decoding): the activations are
//! quantised per block to int8 as well (like GGML's q8_0 · q8_0 dot) and every block
//! contributes `d_w d_x Σ q_w q_x`, the inner sum exact in i32. AVX-512 multiplies the
//! stored unsigned weights with `VPDPBUSD` (VNNI) and removes their offset by starting the
//! accumulator at `-offset · Σ q_x`; AVX2 uses `VPMADDUBSW`. Each weight is read once,
//! at close to memory speed. More rows (prefill): a block of weight rows is dequantised
//! to bf16 into an L2-sized buffer and multiplied with [`super::gemm::matmul_bf16`], the
//! activations rounded to bf16. Both paths see K in the weights' pair order (the
//! activations are permuted to match), which a dot product does not mind.
//!
//! Threads split the weight rows, as in [`super::gemm`].

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};
use rayon::prelude::*;

use super::{chunk_len, gemm::matmul_bf16, Isa};

/// Weights per block (one scale each).
pub const BLOCK: usize = 32;

/// Activation rows from which [`QuantMatrix::matmul`] dequantises to bf16 and runs the
/// bf16 tiles instead of the int8 dot (measured crossover with `examples/quant_bench.rs`).
pub const DEQUANT_MIN_ROWS: usize = 16;

/// Weight-only quantisation formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantFormat {
    /// 8-bit: `w ≈ d q`, `q` in -127..=127, `d = max|w| / 127` per block (Q8_0).
    Q8,
    /// 4-bit: `w ≈ d q`, `q` in -8..=7, `d = max / -8` for the block's signed value of
    /// largest magnitude, which lands on -8 exactly (Q4_0; the other sign clips at +7).
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

    /// Storage per weight, the f16 block scale included (padding to whole lines aside).
    pub fn bits_per_weight(self) -> f64 {
        let quant = match self {
            QuantFormat::Q8 => 8.0,
            QuantFormat::Q4 => 4.0,
        };
        quant + 16.0 / BLOCK as f64
    }

    /// Pairs of blocks per 64-byte line.
    fn pairs_per_line(self) -> usize {
        match self {
            QuantFormat::Q8 => 1,
            QuantFormat::Q4 => 2,
        }
    }

    /// What is added to `q` to store it unsigned.
    fn offset(self) -> i32 {
        match self {
            QuantFormat::Q8 => 128,
            QuantFormat::Q4 => 8,
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

/// 16 dword lanes on a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes([i32; 16]);

/// Byte of a 64-byte pair that holds element `t` of the pair's block `h` (0 or 1).
const fn pair_byte(h: usize, t: usize) -> usize {
    8 * (t / 4) + 4 * h + t % 4
}

/// A quantised `(rows, cols)` matrix, row-major like the bf16 weight it came from
/// (`rows` = out_features, `cols` = in_features).
#[derive(Clone)]
pub struct QuantMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    /// Lines per row (`cols` rounded up to 64 or 128 weights).
    lines: usize,
    /// `(rows, lines)`: the stored quants, see the module doc.
    quants: Vec<Line>,
    /// `(rows, 2 · pairs)`: one scale per block, padding blocks 0.
    scales: Vec<f16>,
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
        assert!(w.len() >= rows * cols, "{} weights for {rows}x{cols}", w.len());
        Self::quantize_rows(rows, cols, format, |j, row| {
            for (d, s) in row.iter_mut().zip(&w[j * cols..(j + 1) * cols]) {
                *d = s.to_f32();
            }
        })
    }

    /// Quantises a row-major f32 `(rows, cols)` weight.
    ///
    /// # Panics
    /// If `w` is shorter than `rows * cols`.
    pub fn quantize_f32(w: &[f32], rows: usize, cols: usize, format: QuantFormat) -> Self {
        assert!(w.len() >= rows * cols, "{} weights for {rows}x{cols}", w.len());
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
        let weights_per_line = 2 * BLOCK * format.pairs_per_line();
        let lines = cols.div_ceil(weights_per_line);
        let blocks = 2 * lines * format.pairs_per_line();
        let mut quants = vec![Line([0; 64]); rows * lines];
        let mut scales = vec![f16::ZERO; rows * blocks];
        if lines > 0 {
            quants
                .par_chunks_mut(lines)
                .zip(scales.par_chunks_mut(blocks))
                .enumerate()
                .for_each_init(
                    || vec![0f32; cols],
                    |buf, (j, (q, s))| {
                        row(j, buf);
                        quantize_row(buf, format, q, s);
                    },
                );
        }
        QuantMatrix {
            format,
            rows,
            cols,
            lines,
            quants,
            scales,
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

    /// Bytes of quants and scales held (row padding included).
    pub fn size_bytes(&self) -> usize {
        self.quants.len() * std::mem::size_of::<Line>() + self.scales.len() * 2
    }

    /// Pairs of blocks per (padded) row.
    fn pairs(&self) -> usize {
        self.lines * self.format.pairs_per_line()
    }

    /// The stored weight of row `j`, pair `p`, pair byte `b`, as the signed `q`.
    fn quant(&self, j: usize, p: usize, b: usize) -> i32 {
        let ppl = self.format.pairs_per_line();
        let byte = self.quants[j * self.lines + p / ppl].0[b];
        let q = match self.format {
            QuantFormat::Q8 => byte,
            QuantFormat::Q4 => (byte >> (4 * (p % ppl))) & 0x0F,
        };
        q as i32 - self.format.offset()
    }

    /// The `(rows, cols)` f32 weight the quants stand for, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.rows * self.cols];
        let blocks = 2 * self.pairs();
        for j in 0..self.rows {
            for (c, v) in w[j * self.cols..(j + 1) * self.cols].iter_mut().enumerate() {
                let (b, t) = (c / BLOCK, c % BLOCK);
                let d = self.scales[j * blocks + b].to_f32();
                *v = self.quant(j, b / 2, pair_byte(b % 2, t)) as f32 * d;
            }
        }
        w
    }

    /// `out[i, j] = Σ_k x[i, k] · W[j, k]` for `x` `(m, cols)` and `out` `(m, rows)`, both
    /// f32 row-major. Below [`DEQUANT_MIN_ROWS`] rows the activations are quantised to int8
    /// per block, from there on rounded to bf16 (see the module doc).
    ///
    /// # Shapes
    /// `x`: `(m, cols)`, `out`: `(m, rows)`.
    ///
    /// # Panics
    /// If a slice is shorter than its shape says (callers check shapes first).
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], isa: Isa) {
        let (n, k) = (self.rows, self.cols);
        assert!(
            x.len() >= m * k && out.len() >= m * n,
            "matmul of {n}x{k} weights: {} inputs, {} outputs for {m} rows",
            x.len(),
            out.len()
        );
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            out[..m * n].fill(0.0);
            return;
        }
        if m >= DEQUANT_MIN_ROWS {
            self.matmul_dequant(x, m, out, isa);
        } else {
            self.matmul_int8(x, m, out, int8_level(isa));
        }
    }

    /// The decode path: int8 activations, one pass over the weights.
    fn matmul_int8(&self, x: &[f32], m: usize, out: &mut [f32], level: Level) {
        let (n, k, pairs) = (self.rows, self.cols, self.pairs());
        let acts = QuantActs::new(x, m, k, pairs, self.format.offset());
        let (mr, nr) = tile_shape(level);
        let parallel = m * n * k >= 1 << 18;
        let chunk = if parallel {
            chunk_len(n, nr, 2 * nr)
        } else {
            n
        };
        let out_ptr = SendPtr(out.as_mut_ptr());
        let q4 = self.format == QuantFormat::Q4;
        let run = |c: usize| {
            let n0 = c * chunk;
            let n1 = (n0 + chunk).min(n);
            // Above `mr` rows, every row group re-reads a few weight rows from L1/L2.
            for j0 in (n0..n1).step_by(REUSE_ROWS) {
                let j1 = (j0 + REUSE_ROWS).min(n1);
                for i in (0..m).step_by(mr) {
                    for j in (j0..j1).step_by(nr) {
                        let args = TileArgs {
                            xq: acts.q[i * pairs..].as_ptr(),
                            neg: acts.neg[i * pairs..].as_ptr(),
                            dx: acts.scale[i * pairs..].as_ptr(),
                            pairs,
                            wq: self.quants[j * self.lines..].as_ptr(),
                            ws: self.scales[j * 2 * pairs..].as_ptr(),
                            lines: self.lines,
                            // SAFETY: (i, j) is inside the (m, n) output, asserted above.
                            out: unsafe { out_ptr.get().add(i * n + j) },
                            ldo: n,
                        };
                        // SAFETY: tiles stay inside the operands (row i + rows <= m,
                        // j + cols <= n); tasks own disjoint output columns; `level` was
                        // checked against the CPU.
                        unsafe { int8_tile(level, q4, mr.min(m - i), nr.min(j1 - j), args) }
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

    /// The prefill path: weight rows dequantised to bf16 a few at a time, bf16 tiles.
    fn matmul_dequant(&self, x: &[f32], m: usize, out: &mut [f32], isa: Isa) {
        let (n, k) = (self.rows, self.cols);
        let kp = 2 * BLOCK * self.pairs();
        // (m, kp): the activations in the weights' pair order, zero padded.
        let mut xb = vec![bf16::ZERO; m * kp];
        xb.par_chunks_mut(kp).enumerate().for_each(|(i, row)| {
            for (c, &v) in x[i * k..(i + 1) * k].iter().enumerate() {
                let (b, t) = (c / BLOCK, c % BLOCK);
                row[(b / 2) * 2 * BLOCK + pair_byte(b % 2, t)] = bf16::from_f32(v);
            }
        });
        let level = dequant_level(isa);
        // Weight rows per dequantised block: about 512 KiB of bf16, L2-resident while all
        // m activation rows stream past, and a multiple of the bf16 tile width (6).
        let sub = ((1usize << 18) / kp / 12 * 12).max(12);
        let chunk = chunk_len(n, sub, sub);
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let n0 = c * chunk;
            let n1 = (n0 + chunk).min(n);
            let mut wb = vec![bf16::ZERO; sub * kp];
            let mut ob = vec![0f32; m * sub];
            for j0 in (n0..n1).step_by(sub) {
                let nb = sub.min(n1 - j0);
                for (r, dst) in wb.chunks_exact_mut(kp).take(nb).enumerate() {
                    self.dequant_row_bf16(j0 + r, dst, level);
                }
                // Nested in this task, matmul_bf16's own rayon split mostly stays on
                // this thread (the other one is busy with its own chunk).
                matmul_bf16(&xb, &wb, m, nb, kp, &mut ob, isa);
                for i in 0..m {
                    // SAFETY: row i, columns j0..j0 + nb are inside the (m, n) output
                    // and owned by this task alone.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add(i * n + j0), nb)
                    };
                    dst.copy_from_slice(&ob[i * nb..(i + 1) * nb]);
                }
            }
        });
    }

    /// Row `j` dequantised to bf16 in the stored pair order, padding included.
    fn dequant_row_bf16(&self, j: usize, dst: &mut [bf16], level: Level) {
        let pairs = self.pairs();
        assert!(dst.len() >= pairs * 2 * BLOCK);
        let wq = self.quants[j * self.lines..(j + 1) * self.lines].as_ptr();
        let ws = self.scales[j * 2 * pairs..(j + 1) * 2 * pairs].as_ptr();
        let q4 = self.format == QuantFormat::Q4;
        // SAFETY: the row holds `lines` lines and `2 pairs` scales, `dst` `64 pairs`
        // values (asserted); `level` was checked against the CPU.
        unsafe {
            match level {
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 if q4 => avx512::dequant_row::<true>(wq, ws, pairs, dst.as_mut_ptr()),
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => avx512::dequant_row::<false>(wq, ws, pairs, dst.as_mut_ptr()),
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 if q4 => avx2::dequant_row::<true>(wq, ws, pairs, dst.as_mut_ptr()),
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => avx2::dequant_row::<false>(wq, ws, pairs, dst.as_mut_ptr()),
                _ => {
                    for p in 0..pairs {
                        for b in 0..2 * BLOCK {
                            let d = self.scales[j * 2 * pairs + 2 * p + (b / 4) % 2].to_f32();
                            let w = self.quant(j, p, b) as f32 * d;
                            dst[p * 2 * BLOCK + b] = bf16::from_f32(w);
                        }
                    }
                }
            }
        }
    }
}

/// Weight rows walked together while every group of activation rows passes over them.
const REUSE_ROWS: usize = 32;

/// Quantises one row (`w`, `cols` long) into its lines and block scales.
fn quantize_row(w: &[f32], format: QuantFormat, lines: &mut [Line], scales: &mut [f16]) {
    let ppl = format.pairs_per_line();
    for (b, scale) in scales.iter_mut().enumerate() {
        let c0 = b * BLOCK;
        let src = w.get(c0..(c0 + BLOCK).min(w.len())).unwrap_or(&[]);
        let (s, q) = quantize_block(src, format);
        *scale = s;
        let p = b / 2;
        let (line, shift) = (&mut lines[p / ppl].0, 4 * (p % ppl));
        for (t, &q) in q.iter().enumerate() {
            let stored = (q as i32 + format.offset()) as u8;
            line[pair_byte(b % 2, t)] |= stored << shift;
        }
    }
}

/// One block's scale and quants (`w` at most [`BLOCK`] long; the rest is zero padding).
///
/// The scale is the f16 at or above `max|w| / 127` (Q8) or `max|w| / 8` (Q4) in
/// magnitude, so `|w / d|` never passes 127 (or 8), and each quant is `w / d` rounded to
/// nearest: `|w - d q| <= |d| / 2`, except Q4's +8 clipped to +7 (`<= |d|`).
fn quantize_block(w: &[f32], format: QuantFormat) -> (f16, [i8; BLOCK]) {
    let mut q = [0i8; BLOCK];
    // The value of largest magnitude, with its sign (the first one on ties).
    let top = w
        .iter()
        .fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
    let (scale, lo, hi) = match format {
        QuantFormat::Q8 => (scale_up(top.abs() / 127.0), -127.0, 127.0),
        // Q4_0: the largest magnitude lands on -8, the code with no positive twin.
        QuantFormat::Q4 if top > 0.0 => (-scale_up(top / 8.0), -8.0, 7.0),
        QuantFormat::Q4 => (scale_up(-top / 8.0), -8.0, 7.0),
    };
    let d = scale.to_f32();
    if d != 0.0 {
        for (q, &v) in q.iter_mut().zip(w) {
            *q = (v / d).round().clamp(lo, hi) as i8;
        }
    }
    (scale, q)
}

/// The smallest f16 at or above `d >= 0` (f16::MAX for anything beyond it).
fn scale_up(d: f32) -> f16 {
    let s = f16::from_f32(d);
    if !s.is_finite() || s == f16::MAX {
        f16::MAX
    } else if s.to_f32() >= d {
        s
    } else {
        f16::from_bits(s.to_bits() + 1)
    }
}

/// Activations quantised to int8 per block, laid out in the weights' pair order.
struct QuantActs {
    /// `(m, pairs)` int8 quants (as bytes).
    q: Vec<Line>,
    /// `(m, pairs)`: `-offset · Σ q` over each dword lane, where the dot of the stored
    /// (offset) weights starts so that it ends at the dot of the signed ones.
    neg: Vec<Lanes>,
    /// `(m, pairs)`: the two blocks' scales, `max|x| / 127`.
    scale: Vec<[f32; 2]>,
}

impl QuantActs {
    /// Quantises `x` `(m, k)` into `pairs` pairs per row (zero padded).
    fn new(x: &[f32], m: usize, k: usize, pairs: usize, offset: i32) -> Self {
        let mut q = vec![Line([0; 64]); m * pairs];
        let mut neg = vec![Lanes([0; 16]); m * pairs];
        let mut scale = vec![[0f32; 2]; m * pairs];
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            for p in 0..pairs {
                let o = i * pairs + p;
                for h in 0..2 {
                    let c0 = (2 * p + h) * BLOCK;
                    let src = row.get(c0..(c0 + BLOCK).min(k)).unwrap_or(&[]);
                    let amax = src.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                    scale[o][h] = amax / 127.0;
                    for (t, &v) in src.iter().enumerate() {
                        let qv = round_even(v * inv) as i8;
                        q[o].0[pair_byte(h, t)] = qv as u8;
                        neg[o].0[2 * (t / 4) + h] -= offset * qv as i32;
                    }
                }
            }
        }
        QuantActs { q, neg, scale }
    }
}

/// `v` rounded to nearest, ties to even, for `|v| < 2^22`: adding 1.5 · 2^23 leaves no
/// fraction bits (a vectorisable add instead of a `roundf` call on baseline x86-64).
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// A raw output pointer that rayon tasks may share (each writes its own columns).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the tasks write disjoint elements; the pointer outlives the parallel loop.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// What a kernel can use: `Isa` narrowed by the extra features the quant kernels need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Plain,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW + VNNI (int8 dot) or + BF16 (dequantisation).
    Avx512,
}

/// The int8-dot level `isa` allows: AVX-512 needs VNNI (else AVX2), AVX2 needs F16C.
fn int8_level(isa: Isa) -> Level {
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

/// The bf16-dequantisation level `isa` allows (AVX2 needs F16C).
fn dequant_level(isa: Isa) -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512Bf16 {
            return Level::Avx512;
        }
        if isa == Isa::Avx2 && std::arch::is_x86_feature_detected!("f16c") {
            return Level::Avx2;
        }
    }
    let _ = isa;
    Level::Plain
}

/// Activation rows x weight rows of one int8 tile at this level.
fn tile_shape(level: Level) -> (usize, usize) {
    match level {
        Level::Avx512 => (4, 4),
        Level::Avx2 => (2, 4),
        Level::Plain => (1, 1),
    }
}

/// One int8 tile's operands: `rows` activation rows from `xq`/`neg`/`dx` (stride `pairs`),
/// `cols` weight rows from `wq` (stride `lines`) and `ws` (stride `2 pairs`), and the
/// `rows x cols` output at `out` (stride `ldo`).
#[derive(Clone, Copy)]
struct TileArgs {
    xq: *const Line,
    neg: *const Lanes,
    dx: *const [f32; 2],
    pairs: usize,
    wq: *const Line,
    ws: *const f16,
    lines: usize,
    out: *mut f32,
    ldo: usize,
}

/// Expands a `match` over the runtime tile shape into calls of the const-generic kernel.
macro_rules! dispatch_tile {
    ($kernel:ident, $q4:literal, $rows:expr, $cols:expr, $args:tt;
     $(($r:literal, $c:literal)),*) => {
        match ($rows, $cols) {
            $(($r, $c) => $kernel::<$q4, $r, $c> $args,)*
            (r, c) => unreachable!("no {r}x{c} tile"),
        }
    };
}

/// One `rows x cols` int8 tile (at most [`tile_shape`]).
///
/// # Safety
/// `a` points at operands of that many rows (see [`TileArgs`]); the CPU supports `level`.
unsafe fn int8_tile(level: Level, q4: bool, rows: usize, cols: usize, a: TileArgs) {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if q4 => avx512::tile::<true>(rows, cols, a),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => avx512::tile::<false>(rows, cols, a),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 if q4 => avx2::tile::<true>(rows, cols, a),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => avx2::tile::<false>(rows, cols, a),
        _ => plain_tile(q4, rows, cols, a),
    }
}

/// The reference: per block, the exact integer dot times both scales, summed in f32.
unsafe fn plain_tile(q4: bool, rows: usize, cols: usize, a: TileArgs) {
    let (ppl, offset) = if q4 { (2, 8) } else { (1, 128) };
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = 0f32;
            for p in 0..a.pairs {
                let line = &(*a.wq.add(j * a.lines + p / ppl)).0;
                let xq = &(*a.xq.add(i * a.pairs + p)).0;
                let dx = *a.dx.add(i * a.pairs + p);
                for (h, dx) in dx.into_iter().enumerate() {
                    let mut dot = 0i32;
                    for t in 0..BLOCK {
                        let b = pair_byte(h, t);
                        let w = if q4 {
                            (line[b] >> (4 * (p % ppl))) & 0x0F
                        } else {
                            line[b]
                        };
                        dot += (w as i32 - offset) * xq[b] as i8 as i32;
                    }
                    let dw = (*a.ws.add(j * 2 * a.pairs + 2 * p + h)).to_f32();
                    acc += dot as f32 * (dw * dx);
                }
            }
            *a.out.add(i * a.ldo + j) = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{Line, TileArgs};

    /// # Safety
    /// As [`super::int8_tile`], with `rows <= 4`, `cols <= 4` and AVX-512 VNNI present.
    pub(super) unsafe fn tile<const Q4: bool>(rows: usize, cols: usize, a: TileArgs) {
        if Q4 {
            dispatch_tile!(kernel, true, rows, cols, (a);
                (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4),
                (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4))
        } else {
            dispatch_tile!(kernel, false, rows, cols, (a);
                (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4),
                (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3), (4, 4))
        }
    }

    /// Two f16 scales broadcast to the 16 lanes of a pair (alternating, as the lanes do).
    #[inline(always)]
    unsafe fn pair_scales(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_set1_epi32(p.cast::<i32>().read_unaligned()))
    }

    /// The quants of pair `h` of a line, unsigned.
    #[inline(always)]
    unsafe fn unpack<const Q4: bool>(line: *const Line, h: usize) -> __m512i {
        let v = _mm512_load_si512(line.cast());
        if !Q4 {
            v
        } else if h == 0 {
            _mm512_and_si512(v, _mm512_set1_epi8(0x0F))
        } else {
            _mm512_and_si512(_mm512_srli_epi16::<4>(v), _mm512_set1_epi8(0x0F))
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const Q4: bool, const R: usize, const C: usize>(a: TileArgs) {
        let ppl = if Q4 { 2 } else { 1 };
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for l in 0..a.lines {
            for h in 0..ppl {
                let p = l * ppl + h;
                for j in 0..C {
                    let wv = unpack::<Q4>(a.wq.add(j * a.lines + l), h);
                    let dw = pair_scales(a.ws.add(j * 2 * a.pairs + 2 * p));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let o = i * a.pairs + p;
                        let xv = _mm512_load_si512(a.xq.add(o).cast());
                        let start = _mm512_load_si512(a.neg.add(o).cast());
                        let dx = a.dx.add(o).cast::<f64>().read_unaligned();
                        let d = _mm512_mul_ps(dw, _mm512_castpd_ps(_mm512_set1_pd(dx)));
                        let dot = _mm512_dpbusd_epi32(start, wv, xv);
                        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), d, acc[j]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                *a.out.add(i * a.ldo + j) = _mm512_reduce_add_ps(*acc);
            }
        }
    }

    /// # Safety
    /// As [`super::QuantMatrix::dequant_row_bf16`]'s call; AVX-512 BF16 present.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn dequant_row<const Q4: bool>(
        wq: *const Line,
        ws: *const f16,
        pairs: usize,
        dst: *mut bf16,
    ) {
        let ppl = if Q4 { 2 } else { 1 };
        let offset = _mm512_set1_epi32(if Q4 { 8 } else { 128 });
        // Lanes of 4 weights alternate between the blocks: scales [A x4, B x4] x2.
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
        for p in 0..pairs {
            let line = wq.add(p / ppl).cast::<u8>();
            let d = _mm512_permutexvar_ps(spread, pair_scales(ws.add(2 * p)));
            for g in 0..4 {
                let raw = _mm512_cvtepu8_epi32(_mm_load_si128(line.add(16 * g).cast()));
                let q = if !Q4 {
                    raw
                } else if p % 2 == 0 {
                    _mm512_and_si512(raw, _mm512_set1_epi32(0x0F))
                } else {
                    _mm512_srli_epi32::<4>(raw)
                };
                let w = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, offset)), d);
                let w: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(w));
                _mm256_storeu_si256(dst.add(64 * p + 16 * g).cast(), w);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{Line, TileArgs};

    /// # Safety
    /// As [`super::int8_tile`], with `rows <= 2`, `cols <= 4` and AVX2 + FMA + F16C.
    pub(super) unsafe fn tile<const Q4: bool>(rows: usize, cols: usize, a: TileArgs) {
        if Q4 {
            dispatch_tile!(kernel, true, rows, cols, (a);
                (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4))
        } else {
            dispatch_tile!(kernel, false, rows, cols, (a);
                (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4))
        }
    }

    /// Two f16 scales broadcast to 8 lanes (alternating, as the lanes do).
    #[inline(always)]
    unsafe fn pair_scales(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_set1_epi32(p.cast::<i32>().read_unaligned()))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel<const Q4: bool, const R: usize, const C: usize>(a: TileArgs) {
        let ppl = if Q4 { 2 } else { 1 };
        let low = _mm256_set1_epi8(0x0F);
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        for l in 0..a.lines {
            for h in 0..ppl {
                let p = l * ppl + h;
                // A pair is two halves of 8 lanes each.
                for half in 0..2 {
                    for j in 0..C {
                        let v = _mm256_load_si256(a.wq.add(j * a.lines + l).cast::<__m256i>().add(half));
                        // Q4: unsigned nibbles (times an int8 fit VPMADDUBSW's i16 pairs);
                        // Q8: signed q, multiplied by way of |x| and sign(q, x).
                        let wv = if !Q4 {
                            _mm256_xor_si256(v, flip)
                        } else if h == 0 {
                            _mm256_and_si256(v, low)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(v), low)
                        };
                        let dw = pair_scales(a.ws.add(j * 2 * a.pairs + 2 * p));
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let o = i * a.pairs + p;
                            let xv = _mm256_load_si256(a.xq.add(o).cast::<__m256i>().add(half));
                            let dx = a.dx.add(o).cast::<f64>().read_unaligned();
                            let d = _mm256_mul_ps(dw, _mm256_castpd_ps(_mm256_set1_pd(dx)));
                            let dot = if Q4 {
                                let start = _mm256_load_si256(a.neg.add(o).cast::<__m256i>().add(half));
                                let pairs16 = _mm256_maddubs_epi16(wv, xv);
                                _mm256_add_epi32(_mm256_madd_epi16(pairs16, ones), start)
                            } else {
                                let signed = _mm256_sign_epi8(wv, xv);
                                let pairs16 = _mm256_maddubs_epi16(_mm256_abs_epi8(xv), signed);
                                _mm256_madd_epi16(pairs16, ones)
                            };
                            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[j]);
                        }
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                let lanes: [f32; 8] = std::mem::transmute(*acc);
                *a.out.add(i * a.ldo + j) = lanes.iter().sum();
            }
        }
    }

    /// # Safety
    /// As [`super::QuantMatrix::dequant_row_bf16`]'s call; AVX2 + FMA + F16C present.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dequant_row<const Q4: bool>(
        wq: *const Line,
        ws: *const f16,
        pairs: usize,
        dst: *mut bf16,
    ) {
        let ppl = if Q4 { 2 } else { 1 };
        let offset = _mm256_set1_epi32(if Q4 { 8 } else { 128 });
        let spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
        for p in 0..pairs {
            let line = wq.add(p / ppl).cast::<u8>();
            // 8 weights are one lane of block A, then one of block B.
            let d = _mm256_permutevar8x32_ps(pair_scales(ws.add(2 * p)), spread);
            let eight = |g: usize| {
                let raw = _mm256_cvtepu8_epi32(_mm_loadl_epi64(line.add(8 * g).cast()));
                let q = if !Q4 {
                    raw
                } else if p % 2 == 0 {
                    _mm256_and_si256(raw, _mm256_set1_epi32(0x0F))
                } else {
                    _mm256_srli_epi32::<4>(raw)
                };
                let w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, offset)), d);
                // To bf16, rounding to nearest even (as half::bf16::from_f32 for finite w).
                let bits = _mm256_castps_si256(w);
                let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
                let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF));
                _mm256_srli_epi32::<16>(_mm256_add_epi32(bits, bias))
            };
            for g in (0..8).step_by(2) {
                let packed = _mm256_packus_epi32(eight(g), eight(g + 1));
                let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
                _mm256_storeu_si256(dst.add(64 * p + 8 * g).cast(), ordered);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in about [-1, 1], roughly bell-shaped (a sum of 3 uniforms),
    /// with a scattered few 8x larger (the outliers real weights and activations have).
    fn values(len: usize, seed: u32) -> Vec<f32> {
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
                if next() < 0.01 {
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
        assert!(err.contains("q5") && err.contains("q8") && err.contains("q4"), "{err}");
        assert_eq!(QuantFormat::Q8.bits_per_weight(), 8.5);
        assert_eq!(QuantFormat::Q4.bits_per_weight(), 4.5);
    }

    #[test]
    fn sizes_match_bits_per_weight_on_whole_lines() {
        for f in FORMATS {
            let (rows, cols) = (3, 2048);
            let q = QuantMatrix::quantize_f32(&values(rows * cols, 1), rows, cols, f);
            assert_eq!((q.rows(), q.cols(), q.format()), (rows, cols, f));
            let want = (rows * cols) as f64 * f.bits_per_weight() / 8.0;
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
                let blocks = 2 * q.pairs();
                for j in 0..rows {
                    for c in 0..cols {
                        let d = q.scales[j * blocks + c / BLOCK].to_f32().abs();
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
                // The scale is as small as f16 allows: one f16 step less would clip.
                for (b, s) in q.scales[..cols.div_ceil(BLOCK)].iter().enumerate() {
                    let top = w[b * BLOCK..((b + 1) * BLOCK).min(cols)]
                        .iter()
                        .fold(0f32, |a, v| a.max(v.abs()));
                    let codes = if f == QuantFormat::Q8 { 127.0 } else { 8.0 };
                    let below = f16::from_bits(s.to_bits().saturating_sub(1)).to_f32();
                    assert!(s.to_f32().abs() * codes >= top, "{f:?} block {b}");
                    assert!(top == 0.0 || below.abs() * codes < top, "{f:?} block {b}");
                }
            }
        }
    }

    #[test]
    fn bf16_and_f32_inputs_quantise_alike() {
        let w: Vec<bf16> = values(7 * 100, 5).into_iter().map(bf16::from_f32).collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        for f in FORMATS {
            let a = QuantMatrix::quantize_bf16(&w, 7, 100, f).dequantize();
            let b = QuantMatrix::quantize_f32(&wf, 7, 100, f).dequantize();
            assert_eq!(a, b, "{f:?}");
        }
    }

    #[test]
    fn every_level_agrees_with_plain_on_awkward_sizes() {
        for f in FORMATS {
            for &rows in &[1, 7, 13, 300] {
                for &cols in &[8, 31, 33, 100, 257, 2048] {
                    let w = values(rows * cols, (rows * cols) as u32);
                    let q = QuantMatrix::quantize_f32(&w, rows, cols, f);
                    let deq = q.dequantize();
                    for m in (1..=5).chain([DEQUANT_MIN_ROWS - 1, 67]) {
                        let x = values(m * cols, m as u32);
                        let mut want = vec![0.0; m * rows];
                        q.matmul(&x, m, &mut want, Isa::Plain);
                        for isa in Isa::available() {
                            let mut got = vec![f32::NAN; m * rows];
                            q.matmul(&x, m, &mut got, isa);
                            for i in 0..m {
                                for j in 0..rows {
                                    let bound: f32 = (0..cols)
                                        .map(|c| (x[i * cols + c] * deq[j * cols + c]).abs())
                                        .sum();
                                    let (a, b) = (got[i * rows + j], want[i * rows + j]);
                                    assert!(
                                        (a - b).abs() <= 2e-6 * bound + 1e-6,
                                        "{f:?} {isa:?} m={m} {rows}x{cols} at ({i},{j}): \
                                         {a} vs {b}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `RMS(got - want) / RMS(want)`.
    fn relative_rms(got: &[f32], want: &[f32]) -> f64 {
        let err: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (err / norm).sqrt()
    }

    #[test]
    fn products_are_close_to_the_exact_ones() {
        let (n, k) = (256, 2048);
        let w = values(n * k, 11);
        for (f, bound) in [(QuantFormat::Q8, 0.01), (QuantFormat::Q4, 0.1)] {
            let q = QuantMatrix::quantize_f32(&w, n, k, f);
            for m in [1, 2, 67] {
                let x = values(m * k, 12 + m as u32);
                let mut exact = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        exact[i * n + j] = (0..k)
                            .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                            .sum::<f64>() as f32;
                    }
                }
                let mut got = vec![0.0; m * n];
                q.matmul(&x, m, &mut got, super::super::isa());
                let err = relative_rms(&got, &exact);
                eprintln!("{f:?} m={m}: relative RMS error {err:.5}");
                assert!(err < bound, "{f:?} m={m}: relative RMS error {err} >= {bound}");
            }
        }
    }
}
