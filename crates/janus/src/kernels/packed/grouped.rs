//! Rows of x regrouped for the packed product with many rows.
//!
//! Groups of [`PackedBf16::group_rows`] rows; within a group, for each column pair, the
//! rows' pairs side by side, so a kernel call's broadcasts read one contiguous stream and
//! the rows' common stride (often a multiple of 4 KiB) cannot alias in the L1 cache. At
//! the AVX2 level the values are widened to f32 here, once, instead of once per panel in
//! the kernel (AVX2 has no bf16 product; see `avx2.rs`).

use half::bf16;
use rayon::prelude::*;

use super::block::XPtr;
#[allow(unused_imports)] // named in the docs
use super::PackedBf16;
use super::{max_rows, Isa, X_BLOCK_BYTES};
use crate::kernels::widen;

/// Regrouped rows of x for one level's kernel (see the module doc).
#[derive(Debug, Clone)]
pub struct Grouped {
    values: Values,
    /// Column pairs per row.
    pairs: usize,
    /// Rows it has room for (whole groups).
    capacity: usize,
    isa: Isa,
}

#[derive(Debug, Clone)]
enum Values {
    Bf16(Vec<bf16>),
    F32(Vec<f32>),
}

impl Grouped {
    /// Room for `m` rows of `k` values at `isa`'s level, all zeros.
    pub fn new(m: usize, k: usize, isa: Isa) -> Self {
        let (mr, pairs) = (max_rows(isa), k.div_ceil(2));
        let len = m.div_ceil(mr) * mr * 2 * pairs;
        let values = if widens_x(isa) {
            Values::F32(vec![0.0; len])
        } else {
            Values::Bf16(vec![bf16::ZERO; len])
        };
        Self {
            values,
            pairs,
            capacity: m.div_ceil(mr) * mr,
            isa,
        }
    }

    /// Puts row `i` of x (`k` values, the `k` it was made for) into its group.
    ///
    /// # Panics
    /// If `row` has another length or `i` is past the rows it has room for.
    pub fn put_row(&mut self, row: &[bf16], i: usize) {
        assert_eq!(row.len().div_ceil(2), self.pairs, "row length");
        assert!(i < self.capacity, "row {i} of {}", self.capacity);
        let (mr, pairs) = (max_rows(self.isa), self.pairs);
        let (g, r) = (i / mr, i % mr);
        let group = g * mr * 2 * pairs..(g + 1) * mr * 2 * pairs;
        match &mut self.values {
            Values::Bf16(v) => put(row, &mut v[group], mr, r, |v| v),
            Values::F32(v) => put(row, &mut v[group], mr, r, widen),
        }
    }

    /// The level it was made for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Rows it has room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Column pairs per row.
    pub(super) fn pairs(&self) -> usize {
        self.pairs
    }

    /// Where group `g` starts.
    pub(super) fn group(&self, g: usize) -> XPtr {
        let at = g * max_rows(self.isa) * 2 * self.pairs;
        match &self.values {
            Values::Bf16(v) => XPtr::Bf16(v[at..].as_ptr()),
            Values::F32(v) => XPtr::F32(v[at..].as_ptr()),
        }
    }
}

/// Row `r` of a group of `mr` rows: pair `c` at `2 * (c * mr + r)`; an odd row's last
/// value is paired with a zero.
fn put<T: Copy + Default>(
    row: &[bf16],
    group: &mut [T],
    mr: usize,
    r: usize,
    f: impl Fn(bf16) -> T,
) {
    let pairs = row.chunks_exact(2);
    if let [last] = pairs.remainder() {
        let at = 2 * ((row.len() / 2) * mr + r);
        group[at] = f(*last);
        group[at + 1] = T::default();
    }
    for (pair, d) in pairs.zip(group.chunks_exact_mut(2 * mr)) {
        d[2 * r] = f(pair[0]);
        d[2 * r + 1] = f(pair[1]);
    }
}

/// Whether `isa`'s kernel takes x widened to f32.
pub(super) fn widens_x(isa: Isa) -> bool {
    isa.is_avx2()
}

/// Rows of x that products with many rows take per block (see [`X_BLOCK_BYTES`]): a
/// multiple of [`PackedBf16::group_rows`].
pub(crate) fn block_rows(k: usize, isa: Isa) -> usize {
    let mr = max_rows(isa);
    (X_BLOCK_BYTES / (4 * mr * k.div_ceil(2)).max(1)).max(1) * mr
}

/// Rows `rows` of x (`k` values each) regrouped for [`PackedBf16::grouped_range`], in
/// parallel.
pub(crate) fn regroup(x: &[bf16], k: usize, rows: std::ops::Range<usize>, isa: Isa) -> Grouped {
    let mut grouped = Grouped::new(rows.len(), k, isa);
    let mr = max_rows(isa);
    match &mut grouped.values {
        Values::Bf16(v) => fill_groups(v, x, k, rows, mr, |v| v),
        Values::F32(v) => fill_groups(v, x, k, rows, mr, widen),
    }
    grouped
}

/// Rows `rows` of x into the groups of `mr` rows of `values`, one task per group.
fn fill_groups<T: Copy + Default + Send>(
    values: &mut [T],
    x: &[bf16],
    k: usize,
    rows: std::ops::Range<usize>,
    mr: usize,
    f: impl Fn(bf16) -> T + Sync,
) {
    let group_len = 2 * mr * k.div_ceil(2);
    values
        .par_chunks_mut(group_len.max(1))
        .enumerate()
        .for_each(|(g, dst)| {
            for r in 0..mr.min(rows.len() - g * mr) {
                put(&x[(rows.start + g * mr + r) * k..][..k], dst, mr, r, &f);
            }
        });
}
