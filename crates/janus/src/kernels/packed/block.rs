//! One kernel call's operands, where its rows of x are, and the plain kernel.

use half::bf16;

#[allow(unused_imports)] // named in the docs
use super::PackedBf16;
use super::PANEL;

/// Where a kernel call's rows of x are: pair `c` of row `r` is the two values at
/// `ptr + r * row_stride + c * pair_stride` (elements).
#[derive(Clone, Copy)]
pub(super) struct XRows {
    pub(super) ptr: XPtr,
    pub(super) row_stride: usize,
    pub(super) pair_stride: usize,
}

/// x's values: bf16 for the levels with a bf16 product, f32 for AVX2 (widened once before
/// the product; see [`Grouped`]).
#[derive(Clone, Copy, Debug)]
#[doc(hidden)]
pub enum XPtr {
    Bf16(*const bf16),
    F32(*const f32),
}

// SAFETY: the pointers are read only, into x that outlives the product's tasks.
unsafe impl Send for XPtr {}
// SAFETY: as for Send.
unsafe impl Sync for XPtr {}

impl XPtr {
    /// `n` values on.
    ///
    /// # Safety
    /// As `pointer::add`.
    pub(super) unsafe fn add(self, n: usize) -> Self {
        match self {
            XPtr::Bf16(p) => XPtr::Bf16(p.add(n)),
            XPtr::F32(p) => XPtr::F32(p.add(n)),
        }
    }

    /// Value `at` as f32.
    ///
    /// # Safety
    /// The value is readable.
    unsafe fn get(self, at: usize) -> f32 {
        match self {
            XPtr::Bf16(p) => (*p.add(at)).to_f32(),
            XPtr::F32(p) => *p.add(at),
        }
    }
}

/// The element types [`PackedBf16::matmul_taps`] reads x in: bf16, or f32 (at every level;
/// fastest at the levels that widen x anyway, [`PackedBf16::takes_f32`]).
pub trait TapValue: Copy {
    /// Where `x` starts.
    #[doc(hidden)]
    fn ptr(x: &[Self]) -> XPtr;
}

impl TapValue for bf16 {
    fn ptr(x: &[Self]) -> XPtr {
        XPtr::Bf16(x.as_ptr())
    }
}

impl TapValue for f32 {
    fn ptr(x: &[Self]) -> XPtr {
        XPtr::F32(x.as_ptr())
    }
}

/// One kernel call's operands.
pub(super) struct Block<'a> {
    pub(super) x: XRows,
    /// Offsets (elements) of x for each tap; tap `t` meets the weights' pairs
    /// `t * pairs..(t + 1) * pairs`. One tap at 0 for a plain product.
    pub(super) taps: &'a [usize],
    pub(super) w: *const bf16,
    pub(super) panel_len: usize,
    /// Column pairs per tap.
    pub(super) pairs: usize,
    pub(super) out: *mut f32,
    pub(super) ldo: usize,
    /// Valid output columns (the last panel may be partial).
    pub(super) cols: usize,
    /// Continue the sums already in `out` (a later block of column pairs): the
    /// accumulators start from `out`, so splitting K gives the bits of one pass over it.
    pub(super) accumulate: bool,
    /// Output element (r, j) at `out + j * ldo + r` instead of `out + r * ldo + j` (never
    /// with `accumulate`).
    pub(super) transposed: bool,
    /// The weights come from memory, read once (a few rows of x): the kernel prefetches
    /// [`STREAM_AHEAD`] lines ahead in each panel, which the hardware prefetchers alone
    /// do not keep up with from two rows on (docs/kernels.md).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) stream: bool,
}

/// Lines (64 bytes: one column pair of a panel) a streaming kernel prefetches ahead of
/// the one it reads.
#[cfg(target_arch = "x86_64")]
pub(super) const STREAM_AHEAD: usize = 40;

/// The reference: one f32 sum per output, column pairs in order.
pub(super) unsafe fn plain_block(rows: usize, np: usize, a: &Block) {
    for r in 0..rows {
        let mut acc = [0f32; 2 * PANEL];
        if a.accumulate {
            for (j, s) in acc.iter_mut().enumerate().take(a.cols) {
                *s = *a.out.add(r * a.ldo + j);
            }
        }
        for (q, accq) in acc.chunks_exact_mut(PANEL).enumerate().take(np) {
            for (t, &off) in a.taps.iter().enumerate() {
                let w = a.w.add(q * a.panel_len + t * a.pairs * 2 * PANEL);
                let x = a.x.ptr.add(off);
                for c in 0..a.pairs {
                    let xp = x.add(r * a.x.row_stride + c * a.x.pair_stride);
                    let (x0, x1) = (xp.get(0), xp.get(1));
                    let wp = w.add(c * 2 * PANEL);
                    for (j, s) in accq.iter_mut().enumerate() {
                        let (w0, w1) = ((*wp.add(2 * j)).to_f32(), (*wp.add(2 * j + 1)).to_f32());
                        *s += x0 * w0 + x1 * w1;
                    }
                }
            }
        }
        for (j, v) in acc.iter().enumerate().take(a.cols) {
            let o = if a.transposed {
                a.out.add(j * a.ldo + r)
            } else {
                a.out.add(r * a.ldo + j)
            };
            *o = *v;
        }
    }
}
