//! Products with many rows on Intel AMX tiles (`TDPBF16PS`), where the CPU has them.
//!
//! The packed panels already are AMX's B-tile layout: a panel's 16 rows' pairs of one
//! column pair are 64 bytes, one tile row, so 16 pairs of a panel are one 16 x 64-byte
//! tile read in place. A tiles (16 rows of 32 values) are read at any row stride: the
//! input pixels under one tap of a direct convolution, in place (each k tile then lies
//! within one tap, which needs the input channels to be a multiple of 32), or x's rows
//! for a plain product, copied to an odd number of tiles apart ([`a_stride`]: rows an
//! even number of 64-byte lines apart share L1 sets) and padded with zeros. The weights'
//! last, partial k tile, where `k` is no multiple of 32, comes from a zero-padded copy.
//!
//! A task takes up to 32 rows and two panels: two A tiles, two B tiles and four C tiles
//! of 16 x 16 f32 (all eight tile registers), over the whole of `k`; each B tile serves
//! two A tiles and each A tile two B tiles. Fewer rows are tiles configured with fewer
//! rows, so nothing is read past the last row. Each output element is one sum in k order,
//! whatever rows share its tile: a row's outputs do not depend on the rows around it,
//! but they round differently from the `VDPBF16PS` kernel's.
//!
//! Linux hands out AMX state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); where
//! the request fails, or `JANUS_AMX=0`, the AVX-512 kernel runs instead.

use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

use super::{line_values, Bf16Line, PackedBf16, LINE_VALUES, PANEL};
use crate::kernels::fused::{round_bias_into, round_into};
use crate::kernels::{Isa, SendPtr};

/// Values of k per A-tile row (64 bytes of bf16).
pub(super) const K_TILE: usize = 32;
/// Rows per tile.
const ROWS: usize = 16;
/// Rows per task: two A tiles.
pub(super) const TASK_ROWS: usize = 2 * ROWS;
/// One task's outputs where they cannot go straight to their place: 32 rows of 32 f32
/// (C tile (row tile `i`, panel `q`) at row `16 i`, column `16 q`).
pub(super) type TaskOut = [f32; 4 * ROWS * PANEL];
/// Row length of a [`TaskOut`].
const TASK_LD: usize = 2 * PANEL;
/// Bytes of x's rows a group of row blocks holds (L2 is 2 MiB per core where AMX
/// exists): the rows of one group pass under every panel pair while they stay in L2.
const GROUP_BYTES: usize = 1 << 20;

/// Where a tile product's outputs go: `f32` rows `ld` apart, or `bf16` rows rounded from
/// `sum + bias` (f32 sum, nearest even; `bias` holds the product's `n` values).
pub(crate) enum TileOut<'a> {
    F32(SendPtr<f32>, usize),
    Bf16 {
        out: SendPtr<bf16>,
        ld: usize,
        bias: Option<&'a [f32]>,
        isa: Isa,
    },
}

impl TileOut<'_> {
    fn ld(&self) -> usize {
        match self {
            TileOut::F32(_, ld) | TileOut::Bf16 { ld, .. } => *ld,
        }
    }

    /// Runs one task through `run(at, ld)` (which writes `rows` rows of 32 f32 at `at`,
    /// `ld` apart) and stores its outputs `(r0.., j0..j0 + cols)`: whole f32 tasks in
    /// place, the rest through `c`.
    ///
    /// # Safety
    /// Those outputs lie inside the output this describes.
    unsafe fn task(
        &self,
        r0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
        c: &mut TaskOut,
        run: impl FnOnce(*mut f32, usize),
    ) {
        match *self {
            TileOut::F32(out, ld) => {
                let at = out.get().add(r0 * ld + j0);
                if rows == TASK_ROWS && cols == 2 * PANEL {
                    return run(at, ld);
                }
                run(c.as_mut_ptr(), TASK_LD);
                for (r, src) in c.chunks_exact(TASK_LD).take(rows).enumerate() {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), at.add(r * ld), cols);
                }
            }
            TileOut::Bf16 { out, ld, bias, isa } => {
                run(c.as_mut_ptr(), TASK_LD);
                for (r, src) in c.chunks_exact(TASK_LD).take(rows).enumerate() {
                    let dst =
                        std::slice::from_raw_parts_mut(out.get().add((r0 + r) * ld + j0), cols);
                    match bias {
                        Some(b) => round_bias_into(isa, &src[..cols], &b[j0..j0 + cols], dst),
                        None => round_into(isa, &src[..cols], dst),
                    }
                }
            }
        }
    }
}

/// Whether AMX's bf16 tiles can be used in this process: the CPU has AMX-TILE and
/// AMX-BF16, Linux granted the tile state, and `JANUS_AMX` is not `0`.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("JANUS_AMX").is_ok_and(|v| v == "0") {
            return false;
        }
        cpu_has_amx() && request_tile_state()
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> bool {
    // CPUID leaf 7 (when leaf 0 says it exists): EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    if std::arch::x86_64::__cpuid(0).eax < 7 {
        return false;
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx() -> bool {
    false
}

/// Asks Linux for the AMX tile data state (once per process; every thread then has it).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permitted
    // extended state; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}

/// The A side of a product: row `i`'s k tile `t` starts at `base + i * stride +
/// offsets[t]` (in values), 32 values in a row.
pub(super) struct TileRows<'a> {
    pub(super) base: *const bf16,
    pub(super) stride: usize,
    pub(super) offsets: &'a [usize],
}

/// The row stride (in values) for A rows of `k` values, whole tiles of 32, to read in
/// place or copy to: an odd number of tiles. Rows whose stride is a multiple of 4 KiB
/// (`k = 2048`) all map to the same L1 sets, and so do half the rows of any even count
/// of 64-byte lines; an A tile's 16 rows then evict each other (docs/kernels.md).
pub(super) fn a_stride(k: usize) -> usize {
    let tiles = k.div_ceil(K_TILE);
    (tiles | 1) * K_TILE
}

// SAFETY: only read through, while the slice it points into is borrowed by the product.
unsafe impl Sync for TileRows<'_> {}

/// The rows of a plain product's x as the tiles read them: in place where `k` is an odd
/// number of whole tiles and x starts a cache line, else copied to [`a_stride`] values
/// apart, padded with zeros, from a line's start (tile rows across two lines read both).
pub(crate) struct TileInput<'a> {
    base: *const bf16,
    stride: usize,
    m: usize,
    k: usize,
    _copy: Vec<Bf16Line>,
    _x: std::marker::PhantomData<&'a [bf16]>,
}

impl<'a> TileInput<'a> {
    /// `m` rows of `k` values from `x` (which holds at least `m * k`).
    pub(crate) fn new(x: &'a [bf16], m: usize, k: usize) -> Self {
        assert!(x.len() >= m * k);
        let stride = a_stride(k);
        let in_place = k == stride && (x.as_ptr() as usize).is_multiple_of(64);
        let copy: Vec<Bf16Line> = if in_place {
            Vec::new()
        } else {
            // SAFETY: every row's k values and its padding are written (whole lines: the
            // stride is whole tiles); reads stay in x.
            unsafe {
                crate::kernels::filled_by(m * stride / LINE_VALUES, |p: *mut Bf16Line| {
                    let (p, src) = (SendPtr(p.cast::<bf16>()), SendPtr(x.as_ptr().cast_mut()));
                    (0..m).into_par_iter().with_min_len(16).for_each(|r| {
                        let dst = p.get().add(r * stride);
                        std::ptr::copy_nonoverlapping(src.get().add(r * k), dst, k);
                        std::ptr::write_bytes(dst.add(k), 0, stride - k);
                    });
                })
            }
        };
        let base = match in_place {
            true => x.as_ptr(),
            false => line_values(&copy).as_ptr(),
        };
        Self {
            base,
            stride,
            m,
            k,
            _copy: copy,
            _x: std::marker::PhantomData,
        }
    }
}

// SAFETY: read only, through a pointer into `x` (borrowed) or into its own copy.
unsafe impl Sync for TileInput<'_> {}

impl PackedBf16 {
    /// `out (m, n) = x (m, k) W^T` on AMX tiles (see the module docs); `x` row-major,
    /// row `i` of `out` at `out + i * ldo`.
    ///
    /// # Safety
    /// [`available`] holds, `x` holds `m * k` values and `out` room for `m` rows of `ldo
    /// >= n` values.
    pub(super) unsafe fn matmul_amx(&self, x: &[bf16], m: usize, out: *mut f32, ldo: usize) {
        let x = TileInput::new(x, m, self.k);
        self.tile_tasks(&x, TileOut::F32(SendPtr(out), ldo), false)
    }

    /// The tile product of `x`'s rows into `out`, on the calling thread (for a task of a
    /// parallel loop).
    ///
    /// # Safety
    /// [`available`] holds at `out`'s level; `out` is valid for writes of `x`'s rows of
    /// its `ld` values.
    pub(crate) unsafe fn matmul_tiles_serial(&self, x: &TileInput, out: TileOut) {
        self.tile_tasks(x, out, true)
    }

    /// [`Self::matmul_amx`] rounded to bf16 with `bias` (`n` values) added on the way:
    /// each output `round(sum + bias)` as [`crate::kernels::fused::round_bf16_bias`]
    /// gives it, without an f32 output to write and read again.
    ///
    /// # Safety
    /// [`available`] holds, `x` holds `m * k` values, `isa` is a level this CPU has, and
    /// `out` has room for `m` rows of `ldo >= n` values.
    pub(super) unsafe fn matmul_amx_bf16(
        &self,
        x: &[bf16],
        m: usize,
        bias: Option<&[f32]>,
        isa: Isa,
        out: *mut bf16,
        ldo: usize,
    ) {
        let out = TileOut::Bf16 {
            out: SendPtr(out),
            ld: ldo,
            bias,
            isa,
        };
        self.tile_tasks(&TileInput::new(x, m, self.k), out, false)
    }

    /// Every task of the product of `x`'s rows, each task's outputs stored as `out` says;
    /// on the calling thread where `serial`, else on the pool.
    ///
    /// # Safety
    /// [`available`] holds; `out` is valid for writes of `x`'s rows of its `ld` values.
    unsafe fn tile_tasks(&self, x: &TileInput, out: TileOut, serial: bool) {
        let (n, k, m) = (self.n, self.k, x.m);
        assert!(x.k == k && out.ld() >= n);
        if let TileOut::Bf16 { bias: Some(b), .. } = out {
            assert!(b.len() == n, "{} bias values for {n} outputs", b.len());
        }
        if m == 0 || n == 0 {
            return;
        }
        let offsets: Vec<usize> = (0..k.div_ceil(K_TILE)).map(|t| t * K_TILE).collect();
        let a = TileRows {
            base: x.base,
            stride: x.stride,
            offsets: &offsets,
        };
        let tails = self.tile_tails();
        let tails = line_values(&tails);
        let row_blocks = m.div_ceil(TASK_ROWS);
        let panel_pairs = n.div_ceil(2 * PANEL);
        // Rows in groups of about GROUP_BYTES, even in size, groups outermost: a group's
        // rows stay in L2 while the panel pairs pass, each pair's weights read once per
        // group (with the panel pairs outermost, x streamed from L3 for every pair).
        let most = (GROUP_BYTES / (2 * x.stride * TASK_ROWS)).max(1);
        let groups = row_blocks.div_ceil(most);
        let per_group = row_blocks.div_ceil(groups);
        let run = |c: &mut TaskOut, task: usize| {
            let (g, pp) = (task / panel_pairs, task % panel_pairs);
            let j0 = pp * 2 * PANEL;
            let cols = (2 * PANEL).min(n - j0);
            for rb in g * per_group..((g + 1) * per_group).min(row_blocks) {
                let r0 = rb * TASK_ROWS;
                let rows = TASK_ROWS.min(m - r0);
                out.task(r0, rows, j0, cols, c, |at, ld| {
                    self.tile_task(&a, r0, rows, pp, tails, at, ld)
                });
            }
        };
        let tasks = 0..groups * panel_pairs;
        match serial {
            true => {
                let mut c = [0f32; 4 * ROWS * PANEL];
                tasks.for_each(|task| run(&mut c, task));
            }
            false => tasks
                .into_par_iter()
                .for_each_init(|| [0f32; 4 * ROWS * PANEL], run),
        }
    }

    /// Serially, `out[i * ldo + j] = Σ_t` (row `i`'s k tile `t` of `a`) · (k tile `t` of
    /// `W[j]`) for rows `i < m` and columns `j < cols`, over k tiles `0..a.offsets.len()`;
    /// `tails` as [`Self::tile_tails`] gives them.
    ///
    /// # Safety
    /// [`available`]; `a` addresses every tile row asked for; `out` holds `m` rows of
    /// `ldo >= cols` values; `cols <= n`.
    pub(super) unsafe fn matmul_amx_serial(
        &self,
        a: &TileRows,
        m: usize,
        cols: usize,
        tails: &[bf16],
        out: *mut f32,
        ldo: usize,
    ) {
        let mut c: TaskOut = [0.0; 4 * ROWS * PANEL];
        let out = TileOut::F32(SendPtr(out), ldo);
        for pp in 0..cols.div_ceil(2 * PANEL) {
            let j0 = pp * 2 * PANEL;
            let width = (2 * PANEL).min(cols - j0);
            for r0 in (0..m).step_by(TASK_ROWS) {
                let rows = TASK_ROWS.min(m - r0);
                out.task(r0, rows, j0, width, &mut c, |at, ld| {
                    self.tile_task(a, r0, rows, pp, tails, at, ld)
                });
            }
        }
    }

    /// [`Self::matmul_taps`] on AMX tiles, serially: `out[j * ldo + i] = Σ_t Σ_c x[i *
    /// row_stride + taps[t] + c] · W[j, t * run + c]` with `run = k / taps.len()`, a
    /// multiple of 32 (so no k tile straddles two taps; [`Self::taps_on_tiles`]).
    ///
    /// # Safety
    /// [`available`]; `x` holds every run the taps address for rows `0..m`, `out` holds
    /// `(n - 1) * ldo + m` values and `ldo >= m`.
    pub(super) unsafe fn matmul_taps_amx(
        &self,
        x: &[bf16],
        row_stride: usize,
        taps: &[usize],
        m: usize,
        out: &mut [f32],
        ldo: usize,
    ) {
        let run = self.k / taps.len();
        let offsets: Vec<usize> = (0..self.k / K_TILE)
            .map(|t| taps[t * K_TILE / run] + t * K_TILE % run)
            .collect();
        let a = TileRows {
            base: x.as_ptr(),
            stride: row_stride,
            offsets: &offsets,
        };
        let mut c: TaskOut = [0.0; 4 * ROWS * PANEL];
        for pp in 0..self.n.div_ceil(2 * PANEL) {
            for r0 in (0..m).step_by(TASK_ROWS) {
                let rows = TASK_ROWS.min(m - r0);
                self.tile_task(&a, r0, rows, pp, &[], c.as_mut_ptr(), TASK_LD);
                // Channel-major outputs: each column of the tiles is one output row.
                let j0 = pp * 2 * PANEL;
                for j in j0..(j0 + 2 * PANEL).min(self.n) {
                    let dst = &mut out[j * ldo + r0..][..rows];
                    for (r, d) in dst.iter_mut().enumerate() {
                        *d = c[r * TASK_LD + j - j0];
                    }
                }
            }
        }
    }

    /// k tiles of 32 the weights fill whole (the rest, if any, is [`Self::tile_tails`]).
    pub(super) fn whole_k_tiles(&self) -> usize {
        self.pairs / (K_TILE / 2)
    }

    /// The B tiles of every panel's last, partial k tile, padded with zero pairs (empty
    /// when `k` is a multiple of 32): panel `p`'s at value `p * K_TILE * PANEL` of
    /// [`line_values`]. For [`Self::matmul_part_tiles`], made once per matrix.
    pub(crate) fn tile_tails(&self) -> Vec<Bf16Line> {
        let full = self.whole_k_tiles();
        let rem = self.pairs - full * (K_TILE / 2);
        if rem == 0 {
            return Vec::new();
        }
        let panels = self.n.div_ceil(PANEL);
        let panel_len = self.pairs * 2 * PANEL;
        let mut lines = vec![Bf16Line::ZERO; panels * K_TILE * PANEL / LINE_VALUES];
        let t = super::line_values_mut(&mut lines);
        for p in 0..panels {
            let src = &self.values()[p * panel_len + full * K_TILE * PANEL..][..rem * 2 * PANEL];
            t[p * K_TILE * PANEL..][..src.len()].copy_from_slice(src);
        }
        lines
    }

    /// Rows `r0..r0 + rows` (`rows <= 32`) of `a` times panels `2 pp` and `2 pp + 1` (the
    /// last panel twice where their count is odd), over `a.offsets.len()` k tiles, into
    /// `rows` rows of 32 f32 at `c`, `ld` apart.
    ///
    /// # Safety
    /// [`available`]; `a` addresses every A-tile row it is asked for; the k tiles are
    /// the weights' (whole ones, then the tail from `tails` when `k % 32 != 0`); `c` is
    /// valid for those writes.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_task(
        &self,
        a: &TileRows,
        r0: usize,
        rows: usize,
        pp: usize,
        tails: &[bf16],
        c: *mut f32,
        ld: usize,
    ) {
        let panels = self.n.div_ceil(PANEL);
        let panel_len = self.pairs * 2 * PANEL;
        let p = [2 * pp, (2 * pp + 1).min(panels - 1)];
        let full = self.whole_k_tiles();
        let values = self.values().as_ptr();
        let b = |t: usize, q: usize| -> *const bf16 {
            match t < full {
                true => values.add(p[q] * panel_len + t * K_TILE * PANEL),
                false => tails.as_ptr().add(p[q] * K_TILE * PANEL),
            }
        };
        let a_at = |t: usize, tile: usize| a.base.add((r0 + tile * ROWS) * a.stride + a.offsets[t]);
        let rows = [rows.min(ROWS), rows.saturating_sub(ROWS)];
        tiles(rows, a.stride * 2, a.offsets.len(), a_at, b, c, ld);
    }
}

/// The 64-byte tile configuration: tiles 0-3 the C tiles (`rows[0]` rows for 0 and 1,
/// `rows[1]` for 2 and 3), 4 and 5 the A tiles, 6 and 7 the B tiles (16 pairs x 16
/// columns); every row 64 bytes. A tile of 0 rows is left unconfigured.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(rows: [usize; 2]) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        let tile_rows = [
            rows[0], rows[0], rows[1], rows[1], rows[0], rows[1], ROWS, ROWS,
        ];
        for (t, &r) in tile_rows.iter().enumerate() {
            if r > 0 {
                c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                c[48 + t] = r as u8;
            }
        }
        TileConfig(c)
    }
}

/// Sums over `k_tiles` tiles of `a_at(t, i)` (A tile `i`, rows `rows[i]`, `a_stride`
/// bytes apart) times `b(t, q)` (B tile of panel `q`), stored at `c + 16 i ld + 16 q`
/// (rows `ld` f32 apart).
///
/// # Safety
/// AMX state granted ([`available`]); the pointers address whole tiles.
#[cfg(target_arch = "x86_64")]
unsafe fn tiles(
    rows: [usize; 2],
    a_stride: usize,
    k_tiles: usize,
    a_at: impl Fn(usize, usize) -> *const bf16,
    b: impl Fn(usize, usize) -> *const bf16,
    c: *mut f32,
    ld: usize,
) {
    use std::arch::asm;
    let config = TileConfig::new(rows);
    let w_stride = PANEL * 4; // one pair of 16 columns: 64 bytes
    asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
    if rows[1] > 0 {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for t in 0..k_tiles {
            asm!(
                "tileloadd tmm4, [{a0} + {xs}*1]",
                "tileloadd tmm6, [{b0} + {ws}*1]",
                "tileloadd tmm7, [{b1} + {ws}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {xs}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a_at(t, 0),
                a1 = in(reg) a_at(t, 1),
                b0 = in(reg) b(t, 0),
                b1 = in(reg) b(t, 1),
                xs = in(reg) a_stride,
                ws = in(reg) w_stride,
                options(nostack, readonly),
            );
        }
    } else {
        asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
        for t in 0..k_tiles {
            asm!(
                "tileloadd tmm4, [{a0} + {xs}*1]",
                "tileloadd tmm6, [{b0} + {ws}*1]",
                "tileloadd tmm7, [{b1} + {ws}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                a0 = in(reg) a_at(t, 0),
                b0 = in(reg) b(t, 0),
                b1 = in(reg) b(t, 1),
                xs = in(reg) a_stride,
                ws = in(reg) w_stride,
                options(nostack, readonly),
            );
        }
    }
    let cs = ld * 4;
    asm!(
        "tilestored [{c0} + {cs}*1], tmm0",
        "tilestored [{c1} + {cs}*1], tmm1",
        c0 = in(reg) c,
        c1 = in(reg) c.add(PANEL),
        cs = in(reg) cs,
        options(nostack),
    );
    if rows[1] > 0 {
        asm!(
            "tilestored [{c2} + {cs}*1], tmm2",
            "tilestored [{c3} + {cs}*1], tmm3",
            c2 = in(reg) c.add(ROWS * ld),
            c3 = in(reg) c.add(ROWS * ld + PANEL),
            cs = in(reg) cs,
            options(nostack),
        );
    }
    asm!("tilerelease", options(nostack, nomem));
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tiles(
    _: [usize; 2],
    _: usize,
    _: usize,
    _: impl Fn(usize, usize) -> *const bf16,
    _: impl Fn(usize, usize) -> *const bf16,
    _: *mut f32,
    _: usize,
) {
    unreachable!("AMX exists on x86-64 only")
}
