//! One output tile: the dispatch to an instruction set's kernel and the plain one.

use super::*;

/// Groups ahead of the one it reads whose lines a streaming AVX-512 kernel (and an AVX-VNNI
/// one for 1-2 rows) prefetches into L2, a line at a time (4 to 8 KiB of a quad's weights;
/// docs/kernels.md).
#[cfg(target_arch = "x86_64")]
pub(super) const STREAM_GROUPS_AHEAD: usize = 4;

/// Whether the streaming AVX-512 kernels prefetch their weights at all: on Intel, whose
/// hardware prefetchers alone left two-row Q8 and Q4 products well below the memory's
/// speed; not on AMD, whose prefetchers keep up alone (Zen 4: Q8 8-10 % faster without
/// the extra loads, Q4 alike; docs/kernels.md).
#[cfg(target_arch = "x86_64")]
pub(super) fn avx512_prefetches() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !crate::kernels::cpu_is_amd())
}

/// One tile's operands: `groups` groups of activation rows from `xq`, `neg`, `dx` (row
/// strides: `stride` groups of lines and of `Lanes`; see [`QuantActs`]) and of one weight
/// quad from `wq` and `ws`, and the output at `out` (row stride `ldo`), whose first `cols`
/// (at most 4) columns the tile writes, or adds to if `add`. `streams`: the product has
/// few rows (decoding, a block of drafts), so the weights stream from memory and kernels
/// that read them in storage order pay even for 3-4 rows.
#[derive(Clone, Copy)]
pub(super) struct TileArgs {
    pub(super) xq: *const Line,
    pub(super) neg: *const Lanes<i32>,
    pub(super) dx: *const Lanes<f32>,
    pub(super) stride: usize,
    pub(super) groups: usize,
    pub(super) wq: *const Line,
    pub(super) ws: *const i8,
    pub(super) wd: *const f32,
    pub(super) out: *mut f32,
    pub(super) ldo: usize,
    pub(super) cols: usize,
    pub(super) add: bool,
    pub(super) streams: bool,
}

impl TileArgs {
    /// Line `s` of group `g` of the quad's weight row `r`.
    ///
    /// # Safety
    /// `g` < `groups`, `r` < 4, `s` < the format's lines per group `lpg`.
    #[inline(always)]
    pub(super) unsafe fn w_line(&self, lpg: usize, g: usize, s: usize, r: usize) -> *const Line {
        self.wq.add((g * lpg + s) * QUAD + r)
    }

    /// Where line `s` of group `g` of the quad's weight row `r` is, for a prefetch that
    /// may reach past the tile's weights (into the next quad's, or nothing: a prefetch
    /// never faults); [`Self::w_line`] for addresses that are read.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) fn w_line_ahead(&self, lpg: usize, g: usize, s: usize, r: usize) -> *const Line {
        self.wq.wrapping_add((g * lpg + s) * QUAD + r)
    }

    /// The 16 scale bytes of group `g` of the quad's weight row `r`, and their shared
    /// scale (block scales [`block_scale`]`(s, d)`).
    ///
    /// # Safety
    /// `g` < `groups`, `r` < 4.
    #[inline(always)]
    pub(super) unsafe fn w_scales(&self, g: usize, r: usize) -> (*const i8, f32) {
        let at = g * QUAD + r;
        (self.ws.add(at * GROUP_BLOCKS), *self.wd.add(at))
    }

    /// Writes (or adds) activation row `i`'s result for the quad's weight row `r`.
    ///
    /// # Safety
    /// `i` is one of the tile's rows, `r` < `cols`.
    #[inline(always)]
    pub(super) unsafe fn store(&self, i: usize, r: usize, v: f32) {
        let out = self.out.add(i * self.ldo + r);
        *out = if self.add { *out + v } else { v };
    }
}

/// One tile: `rows` (at most [`TILE_ROWS`]) activation rows times one weight quad.
///
/// # Safety
/// `a` points at operands of that many rows (see [`TileArgs`]) quantised for `format`;
/// the CPU supports `level`.
pub(super) unsafe fn tile(level: Isa, format: QuantFormat, rows: usize, a: TileArgs) {
    match (level, format) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Bf16 | Isa::Avx512Vnni, QuantFormat::Q8) => avx512::tile_q8(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Bf16 | Isa::Avx512Vnni, QuantFormat::Q4) => avx512::tile_q4(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, QuantFormat::Q8) => avx2::tile_q8::<false>(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, QuantFormat::Q4) => avx2::tile_q4::<false>(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Isa::AvxVnni, QuantFormat::Q8) => avx2::tile_q8::<true>(rows, a),
        #[cfg(target_arch = "x86_64")]
        (Isa::AvxVnni, QuantFormat::Q4) => avx2::tile_q4::<true>(rows, a),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon | Isa::NeonDotprod | Isa::NeonBf16, QuantFormat::Q8) => neon::tile_q8(rows, a),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, QuantFormat::Q4) => neon::tile_q4(rows, a),
        #[cfg(target_arch = "aarch64")]
        (Isa::NeonDotprod | Isa::NeonBf16, QuantFormat::Q4) => neon::tile_q4_dotprod(rows, a),
        _ => plain_tile(format, rows, a),
    }
}

/// The reference: per block, the exact integer dot times both scales, summed in f32.
pub(super) unsafe fn plain_tile(format: QuantFormat, rows: usize, a: TileArgs) {
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
