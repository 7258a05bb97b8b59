//! Quantised rows dequantised into bf16 panels (the bf16 route for prefill: Q8 wherever
//! the CPU has a packed bf16 kernel, Q4 where it has AMX tiles).

use super::*;

/// Rows `j0..j0 + dst.rows()` (at most 32) of `w` (`j0` at a quad), dequantised into
/// `dst`'s panels: `q d` rounded to bf16 to nearest even, as [`super::narrow`] rounds.
///
/// # Panics
/// If the rows or shapes do not fit.
pub(super) fn dequantize_panels(isa: Isa, w: &QuantMatrix, j0: usize, dst: &mut PackedBf16) {
    assert!(dst.rows() <= 2 * PANEL && dst.cols() == w.cols);
    dequantize_rows(isa, w, j0, dst.rows(), dst.panels_mut())
}

/// Rows `j0..j0 + dst.rows()` (any number) of `w` (`j0` at a quad), dequantised into
/// `dst`'s panels as [`dequantize_panels`] does, a panel pair at a time.
///
/// # Panics
/// If the rows or shapes do not fit.
pub(super) fn dequantize_all_panels(isa: Isa, w: &QuantMatrix, j0: usize, dst: &mut PackedBf16) {
    assert!(dst.cols() == w.cols);
    let rows = dst.rows();
    // Two panels of `pairs` column pairs of 16 rows each.
    let pair_len = 2 * (w.cols.div_ceil(2) * 2 * PANEL);
    for (p, data) in dst.panels_mut().chunks_mut(pair_len).enumerate() {
        let r0 = p * 2 * PANEL;
        dequantize_rows(isa, w, j0 + r0, (2 * PANEL).min(rows - r0), data)
    }
}

/// Rows `j0..j0 + rows` (at most 32) of `w` into the panels `data` holds.
fn dequantize_rows(isa: Isa, w: &QuantMatrix, j0: usize, rows: usize, data: &mut [bf16]) {
    assert!(j0.is_multiple_of(QUAD) && j0 + rows <= w.rows && rows <= 2 * PANEL);
    let pairs = w.cols.div_ceil(2);
    assert!(data.len() >= rows.div_ceil(PANEL) * pairs * 2 * PANEL);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Bf16 {
        // SAFETY: the level was checked against the CPU; shapes asserted above.
        return unsafe { avx512::dequantize(w, j0, rows, data.as_mut_ptr(), pairs) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() && w.format == QuantFormat::Q8 {
        // SAFETY: as above.
        return unsafe { avx2::dequantize_q8(w, j0, rows, data.as_mut_ptr(), pairs) };
    }
    dequantize_panels_loops(isa, w, j0, rows, data);
}

vectorized_fn! {
    /// [`dequantize_panels`] as plain loops (after its checks).
    pub(super) fn dequantize_panels_loops(isa: Isa, w: &QuantMatrix, j0: usize, rows: usize, data: &mut [bf16]) {
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
                    let lpg = w.format.lines_per_group();
                    let line = &w.quants[((j / QUAD * w.groups + g) * lpg + u % lpg) * QUAD + j % QUAD];
                    // Q4: chunk u in the low nibbles of line u, chunk u + 4 in the high ones.
                    let q = |byte: u8| match w.format {
                        QuantFormat::Q8 => byte as i8 as f32,
                        QuantFormat::Q4 => ((byte >> (4 * (u / lpg))) & 0x0F) as f32 - 8.0,
                    };
                    let mut v = [0u32; 32];
                    for (e2, p) in v.iter_mut().enumerate() {
                        let scale = dr[e2 / 2];
                        let lo = crate::kernels::narrow(q(line.0[2 * e2]) * scale).to_bits();
                        let hi = crate::kernels::narrow(q(line.0[2 * e2 + 1]) * scale).to_bits();
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
    pub(super) fn quantize_row(
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
