//! The many-row product on Intel AMX tiles (`TDPBF16PS`), where the CPU has them.
//!
//! The packed panels already are AMX's B-tile layout: a panel's 16 rows' pairs of one
//! column pair are 64 bytes, one tile row, so 16 pairs of a panel are one 16 x 64-byte
//! tile read in place. x is read in place too where its rows hold whole A-tile rows (32
//! values) and fill 16-row blocks; other rows are copied into blocks padded with zeros.
//! Each task takes 16 rows and two panels at a time: one A tile, two B tiles, two C
//! tiles of 16 x 16 f32, over the whole of `k`, then stores the outputs through a small
//! buffer (rows past `m` and columns past `n` are dropped there). The last, partial group of pairs reads its B tiles from a zero-padded
//! copy, so no tile reads past the weights.
//!
//! Linux hands out AMX state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); where
//! the request fails, or `JANUS_AMX=0`, the AVX-512 kernel runs instead.

use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

use super::{PackedBf16, PANEL};
use crate::kernels::SendPtr;

/// Values of k per A-tile row (64 bytes of bf16).
const K_TILE: usize = 32;
/// Rows per tile.
const ROWS: usize = 16;

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

/// The 64-byte tile configuration: tile 0 and 1 the C tiles (16 x 64 bytes of f32), 2 the
/// A tile (16 x 64 bytes of bf16 pairs), 3 and 4 the B tiles (16 pairs x 16 columns).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        for t in 0..5 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes()); // bytes per row
            c[48 + t] = ROWS as u8; // rows
        }
        TileConfig(c)
    }
}

impl PackedBf16 {
    /// `out (m, n) = x (m, k) W^T` on AMX tiles (see the module docs); `x` row-major.
    ///
    /// # Safety
    /// [`available`] holds, `x` holds `m * k` values and `out` room for `m * n`.
    pub(super) unsafe fn matmul_amx(&self, x: &[bf16], m: usize, out: *mut f32) {
        let (n, k) = (self.n, self.k);
        let kp = k.div_ceil(K_TILE) * K_TILE;
        // Whole row blocks of x with whole k tiles are read in place; the rest is copied
        // into blocks padded with zeros to (16, kp), in parallel by row blocks.
        let in_place = if k == kp { m / ROWS } else { 0 };
        let copied = m - in_place * ROWS;
        let mut xp = vec![bf16::ZERO; copied.div_ceil(ROWS) * ROWS * kp];
        xp.par_chunks_mut(ROWS * kp)
            .enumerate()
            .for_each(|(b, block)| {
                for (r, dst) in block.chunks_exact_mut(kp).enumerate() {
                    let row = (in_place + b) * ROWS + r;
                    if row < m {
                        dst[..k].copy_from_slice(&x[row * k..(row + 1) * k]);
                    }
                }
            });
        let panels = n.div_ceil(PANEL);
        let panel_len = self.pairs * 2 * PANEL;
        // The pairs of the last, partial k tile of every panel, zero-padded to 16 pairs.
        let full = self.pairs / (K_TILE / 2);
        let rem = self.pairs - full * (K_TILE / 2);
        let tails: Vec<bf16> = if rem > 0 {
            let mut t = vec![bf16::ZERO; panels * K_TILE * PANEL];
            for p in 0..panels {
                let src = &self.data[p * panel_len + full * K_TILE * PANEL..][..rem * 2 * PANEL];
                t[p * K_TILE * PANEL..][..src.len()].copy_from_slice(src);
            }
            t
        } else {
            Vec::new()
        };
        let out = SendPtr(out);
        let row_blocks = m.div_ceil(ROWS);
        let pairs_of_panels = panels.div_ceil(2);
        // Tasks over (panel pair, row block), panel pairs outermost: a panel pair's weights
        // stay in L2 while its row blocks pass.
        (0..pairs_of_panels * row_blocks)
            .into_par_iter()
            .for_each(|task| {
                let (pp, rb) = (task / row_blocks, task % row_blocks);
                let p0 = 2 * pp;
                let p1 = (p0 + 1).min(panels - 1);
                let mut c = [0f32; 2 * ROWS * PANEL];
                let w0 = self.data.as_ptr().add(p0 * panel_len);
                let w1 = self.data.as_ptr().add(p1 * panel_len);
                let t0 = tails.as_ptr().wrapping_add(p0 * K_TILE * PANEL);
                let t1 = tails.as_ptr().wrapping_add(p1 * K_TILE * PANEL);
                let rows_at = match rb < in_place {
                    true => x.as_ptr().add(rb * ROWS * k),
                    false => xp.as_ptr().add((rb - in_place) * ROWS * kp),
                };
                tile_block(rows_at, kp, [w0, w1], [t0, t1], full, rem > 0, &mut c);
                // Outputs: rows below m, columns below n.
                let rows = ROWS.min(m - (rb * ROWS).min(m));
                for (q, p) in [p0, p1].into_iter().enumerate() {
                    if q == 1 && p1 == p0 {
                        break;
                    }
                    let cols = PANEL.min(n - p * PANEL);
                    for r in 0..rows {
                        let src = &c[q * ROWS * PANEL + r * PANEL..][..cols];
                        let dst = out.get().add((rb * ROWS + r) * n + p * PANEL);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, cols);
                    }
                }
            });
    }
}

/// 16 rows of padded x times two panels over `full` whole k tiles and, with `tail`, the
/// zero-padded last one: the two 16 x 16 f32 products into `c` (panel 0's then panel 1's).
///
/// # Safety
/// AMX state granted ([`available`]); `x` holds 16 rows of `kp` values; `w[i]` holds
/// `full` k tiles of panel pairs (16 pairs of 64 bytes each) and `tails[i]` one more when
/// `tail`.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_block(
    x: *const bf16,
    kp: usize,
    w: [*const bf16; 2],
    tails: [*const bf16; 2],
    full: usize,
    tail: bool,
    c: &mut [f32; 2 * ROWS * PANEL],
) {
    use std::arch::asm;
    let config = TileConfig::new();
    let x_stride = kp * 2;
    let w_stride = PANEL * 4; // one pair of 16 columns: 64 bytes
    let tile_values = K_TILE * PANEL; // bf16 values of one B tile
    asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
    asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
    let step = |a: *const bf16, b0: *const bf16, b1: *const bf16| {
        asm!(
            "tileloadd tmm2, [{a} + {xs}*1]",
            "tileloadd tmm3, [{b0} + {ws}*1]",
            "tileloadd tmm4, [{b1} + {ws}*1]",
            "tdpbf16ps tmm0, tmm2, tmm3",
            "tdpbf16ps tmm1, tmm2, tmm4",
            a = in(reg) a,
            b0 = in(reg) b0,
            b1 = in(reg) b1,
            xs = in(reg) x_stride,
            ws = in(reg) w_stride,
            options(nostack, readonly),
        );
    };
    for t in 0..full {
        step(
            x.add(t * K_TILE),
            w[0].add(t * tile_values),
            w[1].add(t * tile_values),
        );
    }
    if tail {
        step(x.add(full * K_TILE), tails[0], tails[1]);
    }
    let cs = PANEL * 4;
    asm!(
        "tilestored [{c0} + {cs}*1], tmm0",
        "tilestored [{c1} + {cs}*1], tmm1",
        "tilerelease",
        c0 = in(reg) c.as_mut_ptr(),
        c1 = in(reg) c.as_mut_ptr().add(ROWS * PANEL),
        cs = in(reg) cs,
        options(nostack),
    );
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_block(
    _: *const bf16,
    _: usize,
    _: [*const bf16; 2],
    _: [*const bf16; 2],
    _: usize,
    _: bool,
    _: &mut [f32; 2 * ROWS * PANEL],
) {
    unreachable!("AMX exists on x86-64 only")
}
