//! Weight-only quantised matrix products `out = x · wᵀ`: 8-bit (Q8) and 4-bit (Q4) weights
//! in blocks of 32 along K with one f16 scale per block, so 8.5 and 4.5 bits per weight
//! (GGML's Q8_0 and Q4_0 arithmetic in a layout of our own).
//!
//! # Layout
//! A weight row is cut into *groups* of 16 blocks (512 weights; the row is padded with
//! zero weights to whole groups), and a group is stored as 8 *chunks* of 64 bytes: chunk
//! `u` holds weights `4u..4u + 4` of all 16 blocks, block `l` in bytes `4l..4l + 4`.
//! Loaded into a 512-bit register, dword lane `l` then always belongs to block `l`: the 8
//! chunks of a group sum into one integer accumulator (VNNI adds each lane's 4 products
//! into that lane), and the group's 16 scales, converted with one `VCVTPH2PS`, line up
//! with the lanes. So the float work (convert, scale, add) is done once per 512 weights,
//! not once per block, and nothing is ever shuffled. Q8 stores `q + 128`, one chunk per
//! 64-byte line; Q4 stores `q + 8`, chunk `u` in the low nibbles of line `u` and chunk
//! `u + 4` in the high ones (an AND, or a shift and an AND, to unpack). Lines are 64-byte
//! aligned; the f16 scales have an array of their own, 16 per group.
//!
//! # Kernels
//! The activations are quantised per block to int8 as well (GGML's q8_0 · q8_0 dot), in
//! the same layout, and every block contributes `d_w d_x Σ q_w q_x`, the inner sum exact
//! in i32. AVX-512 multiplies the stored unsigned weights with `VPDPBUSD` (VNNI) and
//! removes their offset by starting each accumulator at `-offset · Σ q_x`; AVX2 uses
//! `VPMADDUBSW`. A tile is one weight row against up to 4 activation rows. Decoding (1
//! or 2 rows) reads each weight once, as one sequential stream per thread, at memory
//! speed; prefill (hundreds of rows) re-reads 32-row blocks of weights from L2 and runs
//! faster than the bf16 kernel (4 times the multiply-adds per instruction). Every row
//! count takes this one path, so a row's result never depends on the batch it came in.
//!
//! Threads split the weight rows, as in [`super::gemm`].

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};
use rayon::prelude::*;

use super::{chunk_len, Isa};

/// Weights per block (one scale each).
pub const BLOCK: usize = 32;

/// Blocks per group: one per dword lane of a 512-bit register.
const GROUP_BLOCKS: usize = 16;

/// Weights per group.
const GROUP: usize = GROUP_BLOCKS * BLOCK;

/// 64-byte chunks per group (4 weights of each block per chunk).
const CHUNKS: usize = BLOCK / 4;

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

    /// Storage per weight, the f16 block scale included (padding to whole groups aside).
    pub fn bits_per_weight(self) -> f64 {
        let quant = match self {
            QuantFormat::Q8 => 8.0,
            QuantFormat::Q4 => 4.0,
        };
        quant + 16.0 / BLOCK as f64
    }

    /// 64-byte lines per group.
    fn lines_per_group(self) -> usize {
        match self {
            QuantFormat::Q8 => CHUNKS,
            QuantFormat::Q4 => CHUNKS / 2,
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

/// One value per block of a group, on a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes<T>([T; GROUP_BLOCKS]);

/// Chunk and byte of a group that hold weight `s` of the group's block `l`.
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
    /// `(rows, groups, lines_per_group)`: the stored quants, see the module doc.
    quants: Vec<Line>,
    /// `(rows, groups, 16)`: one scale per block, padding blocks 0.
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
        let groups = cols.div_ceil(GROUP);
        let lines = groups * format.lines_per_group();
        let mut quants = vec![Line([0; 64]); rows * lines];
        let mut scales = vec![f16::ZERO; rows * groups * GROUP_BLOCKS];
        if groups > 0 {
            quants
                .par_chunks_mut(lines)
                .zip(scales.par_chunks_mut(groups * GROUP_BLOCKS))
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
            groups,
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

    /// Bytes of quants and scales held (padding to whole groups included).
    pub fn size_bytes(&self) -> usize {
        self.quants.len() * std::mem::size_of::<Line>() + self.scales.len() * 2
    }

    /// The signed `q` of row `j`, group `g`, chunk `u`, chunk byte `b`.
    fn quant(&self, j: usize, g: usize, u: usize, b: usize) -> i32 {
        let lpg = self.format.lines_per_group();
        let byte = self.quants[(j * self.groups + g) * lpg + u % lpg].0[b];
        let q = match self.format {
            QuantFormat::Q8 => byte,
            QuantFormat::Q4 => (byte >> (4 * (u / lpg))) & 0x0F,
        };
        q as i32 - self.format.offset()
    }

    /// The scale of row `j`, group `g`, block `l`.
    fn scale(&self, j: usize, g: usize, l: usize) -> f32 {
        self.scales[(j * self.groups + g) * GROUP_BLOCKS + l].to_f32()
    }

    /// The `(rows, cols)` f32 weight the quants stand for, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.rows * self.cols];
        for j in 0..self.rows {
            for (c, v) in w[j * self.cols..(j + 1) * self.cols].iter_mut().enumerate() {
                let (g, l, s) = (c / GROUP, c % GROUP / BLOCK, c % BLOCK);
                let (u, b) = chunk_pos(l, s);
                *v = self.quant(j, g, u, b) as f32 * self.scale(j, g, l);
            }
        }
        w
    }

    /// `out[i, j] = Σ_k x[i, k] · W[j, k]` for `x` `(m, cols)` and `out` `(m, rows)`, both
    /// f32 row-major; the activations are quantised to int8 per block on the way (see the
    /// module doc).
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
        let (groups, level) = (self.groups, int8_level(isa));
        let acts = QuantActs::new(x, m, k, groups, self.format.offset(), level);
        let parallel = m * n * k >= 1 << 18;
        let chunk = if parallel { chunk_len(n, 1, 2) } else { n };
        let lines = groups * self.format.lines_per_group();
        let out_ptr = SendPtr(out.as_mut_ptr());
        let q4 = self.format == QuantFormat::Q4;
        let run = |c: usize| {
            let n0 = c * chunk;
            let n1 = (n0 + chunk).min(n);
            // Above `INT8_ROWS` rows, each row group re-reads a few weight rows from L2.
            for j0 in (n0..n1).step_by(REUSE_ROWS) {
                let j1 = (j0 + REUSE_ROWS).min(n1);
                for i in (0..m).step_by(INT8_ROWS) {
                    for j in j0..j1 {
                        let args = TileArgs {
                            xq: acts.q[i * groups * CHUNKS..].as_ptr(),
                            neg: acts.neg[i * groups..].as_ptr(),
                            dx: acts.scale[i * groups..].as_ptr(),
                            groups,
                            wq: self.quants[j * lines..].as_ptr(),
                            ws: self.scales[j * groups * GROUP_BLOCKS..].as_ptr(),
                            // SAFETY: (i, j) is inside the (m, n) output, asserted above.
                            out: unsafe { out_ptr.get().add(i * n + j) },
                            ldo: n,
                        };
                        // SAFETY: the tile stays inside the operands (row i + rows <= m,
                        // j < n); tasks own disjoint output columns; `level` was checked
                        // against the CPU.
                        unsafe { int8_tile(level, q4, INT8_ROWS.min(m - i), args) }
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
}

/// Weight rows walked together while every group of activation rows passes over them.
const REUSE_ROWS: usize = 32;

/// Quantises one row (`w`, `cols` long) into its lines and block scales.
fn quantize_row(w: &[f32], format: QuantFormat, lines: &mut [Line], scales: &mut [f16]) {
    let lpg = format.lines_per_group();
    for (b, scale) in scales.iter_mut().enumerate() {
        let c0 = b * BLOCK;
        let src = w.get(c0..(c0 + BLOCK).min(w.len())).unwrap_or(&[]);
        let (s, q) = quantize_block(src, format);
        *scale = s;
        let (g, l) = (b / GROUP_BLOCKS, b % GROUP_BLOCKS);
        for (s, &q) in q.iter().enumerate() {
            let (u, byte) = chunk_pos(l, s);
            let stored = (q as i32 + format.offset()) as u8;
            lines[g * lpg + u % lpg].0[byte] |= stored << (4 * (u / lpg));
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

/// Activations quantised to int8 per block, in the weights' group layout.
struct QuantActs {
    /// `(m, groups, 8)` chunks of int8 quants (as bytes).
    q: Vec<Line>,
    /// `(m, groups)`: `-offset · Σ q` per block, where the dot of the stored (offset)
    /// weights starts so that it ends at the dot of the signed ones.
    neg: Vec<Lanes<i32>>,
    /// `(m, groups)`: the blocks' scales, `max|x| / 127`.
    scale: Vec<Lanes<f32>>,
}

impl QuantActs {
    /// Quantises `x` `(m, k)` into `groups` groups per row (zero padded). Every level
    /// gives the same bytes (the scalar loop is the reference).
    fn new(x: &[f32], m: usize, k: usize, groups: usize, offset: i32, level: Level) -> Self {
        let mut acts = QuantActs {
            q: vec![Line([0; 64]); m * groups * CHUNKS],
            neg: vec![Lanes([0; GROUP_BLOCKS]); m * groups],
            scale: vec![Lanes([0.0; GROUP_BLOCKS]); m * groups],
        };
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            let q = &mut acts.q[i * groups * CHUNKS..(i + 1) * groups * CHUNKS];
            let neg = &mut acts.neg[i * groups..(i + 1) * groups];
            let scale = &mut acts.scale[i * groups..(i + 1) * groups];
            for (g, scale) in scale.iter_mut().enumerate() {
                for (l, scale) in scale.0.iter_mut().enumerate() {
                    let c0 = g * GROUP + l * BLOCK;
                    let src = row.get(c0..(c0 + BLOCK).min(k)).unwrap_or(&[]);
                    let mut block = [0i8; BLOCK];
                    // SAFETY: `level` was checked against the CPU.
                    *scale = unsafe {
                        match level {
                            #[cfg(target_arch = "x86_64")]
                            Level::Avx512 => avx512::quantize_act_block(src, &mut block),
                            #[cfg(target_arch = "x86_64")]
                            Level::Avx2 => avx2::quantize_act_block(src, &mut block),
                            _ => quantize_act_block(src, &mut block),
                        }
                    };
                    for (u, four) in block.chunks_exact(4).enumerate() {
                        let line = &mut q[g * CHUNKS + u].0;
                        for (t, &v) in four.iter().enumerate() {
                            line[4 * l + t] = v as u8;
                        }
                    }
                    neg[g].0[l] = -offset * block.iter().map(|&v| v as i32).sum::<i32>();
                }
            }
        }
        acts
    }
}

/// One activation block (`x` at most [`BLOCK`] long) to int8 in `q`; returns its scale.
/// The reference for the vector versions, which give the same bytes.
fn quantize_act_block(x: &[f32], q: &mut [i8; BLOCK]) -> f32 {
    let (d, inv) = act_scale(x.iter().fold(0f32, |a, v| a.max(v.abs())));
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_even(v * inv) as i8;
    }
    d
}

/// An activation block's scale `max|x| / 127` and the inverse its values are multiplied
/// by; both 0 for a block too small for `127 / max` to stay finite (all zero, in practice).
fn act_scale(amax: f32) -> (f32, f32) {
    if amax >= 1e-30 {
        (amax / 127.0, 127.0 / amax)
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

/// Activation rows an int8 tile takes at once (sharing each weight load).
///
/// A tile reads a single weight row: one sequential stream per thread keeps the hardware
/// prefetcher ahead, where several rows in flight (up to 4 were tried) each share 4 KiB
/// pages with their neighbours and decode ran up to 2x slower.
const INT8_ROWS: usize = 4;

/// One int8 tile's operands: activation rows from `xq`, `neg`, `dx` (strides `8 groups`,
/// `groups`, `groups`), one weight row from `wq` and `ws`, and the output column at `out`
/// (stride `ldo`).
#[derive(Clone, Copy)]
struct TileArgs {
    xq: *const Line,
    neg: *const Lanes<i32>,
    dx: *const Lanes<f32>,
    groups: usize,
    wq: *const Line,
    ws: *const f16,
    out: *mut f32,
    ldo: usize,
}

/// One int8 tile: `rows` (at most [`INT8_ROWS`]) activation rows times one weight row.
///
/// # Safety
/// `a` points at operands of that many rows (see [`TileArgs`]); the CPU supports `level`.
unsafe fn int8_tile(level: Level, q4: bool, rows: usize, a: TileArgs) {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if q4 => avx512::tile::<true>(rows, a),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => avx512::tile::<false>(rows, a),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 if q4 => avx2::tile::<true>(rows, a),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => avx2::tile::<false>(rows, a),
        _ => plain_tile(q4, rows, a),
    }
}

/// The reference: per block, the exact integer dot times both scales, summed in f32.
unsafe fn plain_tile(q4: bool, rows: usize, a: TileArgs) {
    let (lpg, offset, mask) = if q4 { (4, 8, 0x0F) } else { (8, 128, 0xFF) };
    for i in 0..rows {
        let mut acc = 0f32;
        for g in 0..a.groups {
            let dx = &(*a.dx.add(i * a.groups + g)).0;
            for (l, dx) in dx.iter().enumerate() {
                let mut dot = 0i32;
                for s in 0..BLOCK {
                    let (u, b) = chunk_pos(l, s);
                    let w = ((*a.wq.add(g * lpg + u % lpg)).0[b] >> (4 * (u / lpg))) & mask;
                    let x = (*a.xq.add((i * a.groups + g) * CHUNKS + u)).0[b] as i8;
                    dot += (w as i32 - offset) * x as i32;
                }
                let dw = (*a.ws.add(g * GROUP_BLOCKS + l)).to_f32();
                acc += dot as f32 * (dw * dx);
            }
        }
        *a.out.add(i * a.ldo) = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{TileArgs, BLOCK, CHUNKS, GROUP_BLOCKS};

    /// # Safety
    /// As [`super::int8_tile`], with `rows <= 2` and AVX-512 VNNI present.
    pub(super) unsafe fn tile<const Q4: bool>(rows: usize, a: TileArgs) {
        match rows {
            1 => kernel::<Q4, 1>(a),
            2 => kernel::<Q4, 2>(a),
            3 => kernel::<Q4, 3>(a),
            _ => kernel::<Q4, 4>(a),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const Q4: bool, const R: usize>(a: TileArgs) {
        let lpg = if Q4 { CHUNKS / 2 } else { CHUNKS };
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); R];
        for g in 0..a.groups {
            let x = |i: usize, u: usize| {
                _mm512_load_si512(a.xq.add((i * a.groups + g) * CHUNKS + u).cast())
            };
            // One i32 lane per block: all 8 chunks of the group add into it.
            let mut dot: [__m512i; R] =
                std::array::from_fn(|i| _mm512_load_si512(a.neg.add(i * a.groups + g).cast()));
            for c in 0..lpg {
                let v = _mm512_load_si512(a.wq.add(g * lpg + c).cast());
                if Q4 {
                    let lo = _mm512_and_si512(v, low);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                    for (i, dot) in dot.iter_mut().enumerate() {
                        *dot = _mm512_dpbusd_epi32(*dot, lo, x(i, c));
                        *dot = _mm512_dpbusd_epi32(*dot, hi, x(i, c + CHUNKS / 2));
                    }
                } else {
                    for (i, dot) in dot.iter_mut().enumerate() {
                        *dot = _mm512_dpbusd_epi32(*dot, v, x(i, c));
                    }
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(a.ws.add(g * GROUP_BLOCKS).cast()));
            for (i, acc) in acc.iter_mut().enumerate() {
                let dx = _mm512_load_ps(a.dx.add(i * a.groups + g).cast());
                let dot = _mm512_cvtepi32_ps(dot[i]);
                *acc = _mm512_fmadd_ps(dot, _mm512_mul_ps(dw, dx), *acc);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            *a.out.add(i * a.ldo) = _mm512_reduce_add_ps(*acc);
        }
    }

    /// [`super::quantize_act_block`] with AVX-512 (the same bytes).
    ///
    /// # Safety
    /// AVX-512 F/BW present.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_act_block(x: &[f32], q: &mut [i8; BLOCK]) -> f32 {
        let n = x.len().min(BLOCK);
        let mask = |from: usize| ((1u32 << n.saturating_sub(from).min(16)) - 1) as __mmask16;
        // Masked-off lanes are not read: the tail needs no copy.
        let v0 = _mm512_maskz_loadu_ps(mask(0), x.as_ptr());
        let v1 = _mm512_maskz_loadu_ps(mask(16), x.as_ptr().wrapping_add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let (d, inv) = super::act_scale(amax);
        let inv = _mm512_set1_ps(inv);
        // Rounds to nearest even (MXCSR's default), as `round_even`.
        let q0 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)));
        let q1 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, inv)));
        _mm256_storeu_si256(q.as_mut_ptr().cast(), _mm256_set_m128i(q1, q0));
        d
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{TileArgs, BLOCK, CHUNKS, GROUP_BLOCKS};

    /// # Safety
    /// As [`super::int8_tile`], with `rows <= 2` and AVX2 + FMA + F16C present.
    pub(super) unsafe fn tile<const Q4: bool>(rows: usize, a: TileArgs) {
        match rows {
            1 => kernel::<Q4, 1>(a),
            2 => kernel::<Q4, 2>(a),
            3 => kernel::<Q4, 3>(a),
            _ => kernel::<Q4, 4>(a),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel<const Q4: bool, const R: usize>(a: TileArgs) {
        let lpg = if Q4 { CHUNKS / 2 } else { CHUNKS };
        let low = _mm256_set1_epi8(0x0F);
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for g in 0..a.groups {
            // A 256-bit register holds half a chunk: blocks 0..8 or 8..16.
            for half in 0..2 {
                let x = |i: usize, u: usize| {
                    let line = a.xq.add((i * a.groups + g) * CHUNKS + u);
                    _mm256_load_si256(line.cast::<__m256i>().add(half))
                };
                let mut dot = [_mm256_setzero_si256(); R];
                if Q4 {
                    for (i, dot) in dot.iter_mut().enumerate() {
                        let neg = a.neg.add(i * a.groups + g).cast::<__m256i>();
                        *dot = _mm256_load_si256(neg.add(half));
                    }
                }
                for c in 0..lpg {
                    let line = a.wq.add(g * lpg + c);
                    let v = _mm256_load_si256(line.cast::<__m256i>().add(half));
                    for (i, dot) in dot.iter_mut().enumerate() {
                        let pairs = if Q4 {
                            // Nibble x int8 pairs stay far inside i16: add two first.
                            let lo = _mm256_maddubs_epi16(_mm256_and_si256(v, low), x(i, c));
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                            let hi = _mm256_maddubs_epi16(hi, x(i, c + CHUNKS / 2));
                            _mm256_add_epi16(lo, hi)
                        } else {
                            // Signed q times x as |x| times sign(q, x).
                            let (w, xv) = (_mm256_xor_si256(v, flip), x(i, c));
                            let signed = _mm256_sign_epi8(w, xv);
                            _mm256_maddubs_epi16(_mm256_abs_epi8(xv), signed)
                        };
                        *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(pairs, ones));
                    }
                }
                let ws = a.ws.add(g * GROUP_BLOCKS + 8 * half);
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(ws.cast()));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let dx = a.dx.add(i * a.groups + g).cast::<f32>().add(8 * half);
                    let d = _mm256_mul_ps(dw, _mm256_load_ps(dx));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[i]), d, *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let lanes: [f32; 8] = std::mem::transmute(*acc);
            *a.out.add(i * a.ldo) = lanes.iter().sum();
        }
    }

    /// [`super::quantize_act_block`] with AVX2 (the same bytes).
    ///
    /// # Safety
    /// AVX2 present.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_act_block(x: &[f32], q: &mut [i8; BLOCK]) -> f32 {
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
        let (d, inv) = super::act_scale(_mm_cvtss_f32(m));
        let inv = _mm256_set1_ps(inv);
        // Rounds to nearest even (MXCSR's default), as `round_even`.
        let q32 = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inv)));
        let q16 = [
            _mm256_packs_epi32(q32[0], q32[1]),
            _mm256_packs_epi32(q32[2], q32[3]),
        ];
        // The packs work per 128-bit half: put the dwords back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16[0], q16[1]), order);
        _mm256_storeu_si256(q.as_mut_ptr().cast(), q8);
        d
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
                let blocks = q.groups * GROUP_BLOCKS;
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

    /// Every level an int8 path can run here.
    fn int8_levels() -> Vec<Level> {
        let mut levels: Vec<Level> = Isa::available().into_iter().map(int8_level).collect();
        levels.dedup();
        levels
    }

    #[test]
    fn activations_quantise_to_the_same_bytes_at_every_level() {
        for &k in &[8, 31, 33, 100, 257, 2048] {
            let mut x = spiky_values(3 * k, k as u32, 0.02);
            // Ties: with 127 the block's largest, each value is its own q before rounding.
            let ties = [127.0, 2.5, -3.5, 0.5, -0.5, 1.5];
            x[..ties.len().min(k)].copy_from_slice(&ties[..ties.len().min(k)]);
            x[k..(k + BLOCK).min(2 * k)].fill(0.0);
            for f in FORMATS {
                let groups = k.div_ceil(GROUP);
                let want = QuantActs::new(&x, 3, k, groups, f.offset(), Level::Plain);
                // Block 0's weights 0..4 are chunk 0's bytes 0..4, 4..6 chunk 1's 0..2.
                let ties_q = [&want.q[0].0[..4], &want.q[1].0[..2]].concat();
                assert_eq!(ties_q, [127, 2, -4i8 as u8, 0, 0, 2], "ties, {f:?}");
                for level in int8_levels() {
                    let got = QuantActs::new(&x, 3, k, groups, f.offset(), level);
                    for (o, (a, b)) in got.q.iter().zip(&want.q).enumerate() {
                        assert_eq!(a.0, b.0, "{level:?} k={k} {f:?} chunk {o}");
                    }
                    for g in 0..3 * groups {
                        assert_eq!(got.neg[g].0, want.neg[g].0, "{level:?} k={k} {f:?}");
                        assert_eq!(got.scale[g].0, want.scale[g].0, "{level:?} k={k} {f:?}");
                    }
                }
            }
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
                    for m in (1..=5).chain([15, 67]) {
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
        let err: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (err / norm).sqrt()
    }

    #[test]
    fn products_are_close_to_the_exact_ones() {
        let (n, k) = (256, 2048);
        for spikes in [0.0, 0.01] {
            let w = spiky_values(n * k, 11, spikes);
            for (f, bound) in [(QuantFormat::Q8, 0.01), (QuantFormat::Q4, 0.1)] {
                let q = QuantMatrix::quantize_f32(&w, n, k, f);
                for m in [1, 2, 67] {
                    let x = spiky_values(m * k, 12 + m as u32, spikes);
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
                    let deq = q.dequantize();
                    let mut wonly = vec![0.0; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            wonly[i * n + j] = (0..k)
                                .map(|c| x[i * k + c] as f64 * deq[j * k + c] as f64)
                                .sum::<f64>() as f32;
                        }
                    }
                    let werr = relative_rms(&wonly, &exact);
                    eprintln!("spikes {spikes} {f:?} m={m}: relative RMS error {err:.5} (weights only {werr:.5})");
                    assert!(
                        err < bound * 10.0,
                        "{f:?} m={m}: relative RMS error {err} >= {bound}"
                    );
                }
            }
        }
    }
}
