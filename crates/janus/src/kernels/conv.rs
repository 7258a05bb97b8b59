//! 2-D convolution on bf16 tensors (the VQ decoder's convolutions, where candle's CPU path
//! has no bf16 kernel and is slow in f32).
//!
//! The input is first copied to a zero-padded channels-last image, so one output pixel's
//! patch is `k·k` contiguous runs of `cin` values; weights are kept as
//! `(cout, kh, kw, cin)` rows to match. With packed weights and an even `cin` the product
//! is direct: per output row, the packed kernel reads each tap's input run in place
//! ([`PackedBf16::matmul_taps`]) and stores channel-major, so nothing is copied per tap;
//! on AMX tiles where the CPU has them and `cin` is a multiple of 32.
//! Otherwise (row-major weights, odd `cin`) each task builds the patches of a block of
//! output pixels (im2col) and multiplies them.

use half::bf16;
use rayon::prelude::*;

use super::gemm::matmul_bf16_serial;
use super::packed::{line_values_mut, Bf16Line, PackedBf16, LINE_VALUES};
use super::Isa;
use super::SendPtr;

/// Convolution weights `(cout, k·k·cin)` in `(ky, kx, c)` column order.
#[derive(Debug, Clone, Copy)]
pub enum ConvWeight<'a> {
    /// Row-major.
    Rows(&'a [bf16]),
    /// Packed for the CPU kernel (see [`PackedBf16`]).
    Packed(&'a PackedBf16),
}

/// Output pixels per task.
const PIXEL_BLOCK: usize = 128;

/// Shape of one convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvDims {
    /// Batch.
    pub b: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height and width.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Square kernel size.
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl ConvDims {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let ho = (self.h + 2 * self.pad).saturating_sub(self.k) / self.stride + 1;
        let wo = (self.w + 2 * self.pad).saturating_sub(self.k) / self.stride + 1;
        (ho, wo)
    }
}

/// `out (B, cout, ho, wo) = conv(x (B, cin, h, w), weight (cout, k, k, cin)) + bias`.
///
/// # Panics
/// If a slice is shorter than its shape or the kernel is larger than the padded input.
pub fn conv2d_bf16(
    x: &[bf16],
    weight: ConvWeight,
    bias: Option<&[f32]>,
    d: ConvDims,
    out: &mut [bf16],
    isa: Isa,
) {
    let (hp, wp) = (d.h + 2 * d.pad, d.w + 2 * d.pad);
    assert!(d.k >= 1 && d.stride >= 1 && hp >= d.k && wp >= d.k);
    let (ho, wo) = d.out_hw();
    let kk = d.k * d.k * d.cin;
    assert!(x.len() >= d.b * d.cin * d.h * d.w);
    match weight {
        ConvWeight::Rows(w) => assert!(w.len() >= d.cout * kk),
        ConvWeight::Packed(p) => assert!(p.rows() == d.cout && p.cols() == kk),
    }
    assert!(out.len() >= d.b * d.cout * ho * wo);
    assert!(bias.is_none_or(|b| b.len() >= d.cout));
    let pixels = ho * wo;
    for bi in 0..d.b {
        // Channels-last, zero-padded copy of this image: (hp, wp, cin), from a cache
        // line's start (the tiles read 32 channels of a pixel as one 64-byte row).
        let mut lines = vec![Bf16Line::ZERO; (hp * wp * d.cin).div_ceil(LINE_VALUES)];
        let xp = &mut line_values_mut(&mut lines)[..hp * wp * d.cin];
        let img = &x[bi * d.cin * d.h * d.w..][..d.cin * d.h * d.w];
        xp.par_chunks_mut(wp * d.cin)
            .enumerate()
            .skip(d.pad)
            .take(d.h)
            .for_each(|(yp, row)| {
                // Image row y of every channel to (w, cin) from column `pad`, 16 channels
                // at a time: 16 sequential reads, one contiguous write per pixel.
                let src = &img[(yp - d.pad) * d.w..];
                let dst = &mut row[d.pad * d.cin..][..d.w * d.cin];
                channels_last_row(src, d.cin, d.w, d.h * d.w, dst, isa);
            });
        let out_img = SendPtr(out[bi * d.cout * pixels..].as_mut_ptr());
        if let (ConvWeight::Packed(p), true) = (weight, d.cin.is_multiple_of(2)) {
            // Direct: each output row's pixels read their k·k input runs in place.
            let taps: Vec<usize> = (0..d.k * d.k)
                .map(|t| ((t / d.k) * wp + t % d.k) * d.cin)
                .collect();
            let tiles = p.taps_on_tiles(taps.len(), isa);
            // Where the kernel reads x as f32, the image is widened once here.
            let wide: Vec<f32> = match PackedBf16::takes_f32(isa) {
                true => super::fused::widened(isa, xp),
                false => Vec::new(),
            };
            (0..ho).into_par_iter().for_each(|oy| {
                let at = oy * d.stride * wp * d.cin;
                let mut acc = vec![0f32; d.cout * wo];
                if tiles {
                    let x = &xp[at..];
                    p.matmul_taps_tiles(x, d.stride * d.cin, &taps, wo, &mut acc, wo, isa);
                } else if wide.is_empty() {
                    p.matmul_taps(&xp[at..], d.stride * d.cin, &taps, wo, &mut acc, wo, isa);
                } else {
                    p.matmul_taps(&wide[at..], d.stride * d.cin, &taps, wo, &mut acc, wo, isa);
                }
                for (co, row) in acc.chunks_exact(wo).enumerate() {
                    let b = bias.map_or(0.0, |b| b[co]);
                    // SAFETY: (co, oy, 0..wo) lies inside this image's output (asserted);
                    // the tasks write disjoint output rows.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_img.get().add(co * pixels + oy * wo), wo)
                    };
                    round_bias(isa, row, b, dst);
                }
            });
            continue;
        }
        let blocks = pixels.div_ceil(PIXEL_BLOCK);
        (0..blocks).into_par_iter().for_each(|blk| {
            let p0 = blk * PIXEL_BLOCK;
            let np = PIXEL_BLOCK.min(pixels - p0);
            // One output pixel's patch: k runs of k·cin contiguous values.
            let patch = |q: usize, dst: &mut [bf16]| {
                let (oy, ox) = ((p0 + q) / wo, (p0 + q) % wo);
                for ky in 0..d.k {
                    let row = (oy * d.stride + ky) * wp + ox * d.stride;
                    let src = &xp[row * d.cin..][..d.k * d.cin];
                    dst[ky * d.k * d.cin..][..d.k * d.cin].copy_from_slice(src);
                }
            };
            let mut acc = vec![0f32; d.cout * np];
            // acc[co, q] (row stride `cs`) or acc[q, co] (`qs`), by weight layout.
            let (cs, qs) = match weight {
                ConvWeight::Rows(w) => {
                    let mut patches = vec![bf16::ZERO; np * kk];
                    for (q, dst) in patches.chunks_exact_mut(kk).enumerate() {
                        patch(q, dst);
                    }
                    matmul_bf16_serial(w, kk, &patches, kk, d.cout, np, kk, &mut acc, np, isa);
                    (np, 1)
                }
                ConvWeight::Packed(p) => {
                    // Patches straight into the packed kernel's row groups.
                    let mut grouped = p.grouped(np, isa);
                    let mut row = vec![bf16::ZERO; kk];
                    for q in 0..np {
                        patch(q, &mut row);
                        grouped.put_row(&row, q);
                    }
                    p.matmul_grouped(&grouped, np, &mut acc);
                    (1, d.cout)
                }
            };
            for co in 0..d.cout {
                let b = bias.map_or(0.0, |b| b[co]);
                for q in 0..np {
                    // SAFETY: (co, p0 + q) lies inside this image's output (asserted); the
                    // blocks write disjoint pixel ranges.
                    unsafe {
                        *out_img.get().add(co * pixels + p0 + q) =
                            bf16::from_f32(acc[co * cs + q * qs] + b)
                    };
                }
            }
        });
    }
}

/// `dst[x * c + ch] = src[ch * plane + x]` for `x < w`, `ch < c`: one image row of every
/// channel to channels-last order.
fn channels_last_row(src: &[bf16], c: usize, w: usize, plane: usize, dst: &mut [bf16], isa: Isa) {
    assert!(dst.len() >= w * c && (c == 0 || src.len() >= (c - 1) * plane + w));
    // Only x86 has a vector path that moves it on.
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Bf16 && w >= 2 && plane <= (i32::MAX as usize) / c.max(1) {
        // SAFETY: bounds asserted above (the gathers read pixels x and x + 1 < w of
        // channels < c; the stores write pixels x, x + 1 of channels < c).
        unsafe { simd::channels_last_pairs(src, c, w / 2 * 2, plane, dst) };
        done = w / 2 * 2;
    }
    let _ = isa;
    for x in done..w {
        for ch in 0..c {
            dst[x * c + ch] = src[ch * plane + x];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use half::bf16;

    /// [`super::channels_last_row`] for an even `w`: per 16 channels and pixel pair, one
    /// gather of the 16 channels' (x, x + 1) words, split into two 16-channel stores.
    ///
    /// # Safety
    /// `src` holds `(c - 1) * plane + w` values, `dst` `w * c`, `c * plane` fits in i32;
    /// AVX-512 F/BW/VL present.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn channels_last_pairs(
        src: &[bf16],
        c: usize,
        w: usize,
        plane: usize,
        dst: &mut [bf16],
    ) {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        // Byte offsets of the 16 channels' rows.
        let index = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((plane * 2) as i32));
        for c0 in (0..c).step_by(16) {
            let n = 16.min(c - c0);
            let mask: __mmask16 = if n == 16 { !0 } else { (1u16 << n) - 1 };
            let base = src.as_ptr().add(c0 * plane);
            for x in (0..w).step_by(2) {
                let words = _mm512_mask_i32gather_epi32::<1>(
                    _mm512_setzero_si512(),
                    mask,
                    index,
                    base.add(x) as *const _,
                );
                let lo = _mm512_cvtepi32_epi16(words);
                let hi = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(words));
                _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(x * c + c0) as *mut _, mask, lo);
                _mm256_mask_storeu_epi16(
                    dst.as_mut_ptr().add((x + 1) * c + c0) as *mut _,
                    mask,
                    hi,
                );
            }
        }
    }
}

super::vectorized_fn! {
    /// `out = round(src + bias)`.
    fn round_bias(isa: Isa, src: &[f32], bias: f32, out: &mut [bf16]) {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = super::narrow(v + bias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::tests::values;

    /// Direct convolution from the definition (f64), weight `(cout, k, k, cin)`.
    fn reference(x: &[bf16], wt: &[bf16], bias: &[f32], d: ConvDims) -> Vec<f32> {
        let (ho, wo) = d.out_hw();
        let mut out = vec![0f32; d.b * d.cout * ho * wo];
        for b in 0..d.b {
            for co in 0..d.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut s = bias[co] as f64;
                        for ky in 0..d.k {
                            for kx in 0..d.k {
                                let iy = (oy * d.stride + ky) as isize - d.pad as isize;
                                let ix = (ox * d.stride + kx) as isize - d.pad as isize;
                                if iy < 0 || ix < 0 || iy >= d.h as isize || ix >= d.w as isize {
                                    continue;
                                }
                                for c in 0..d.cin {
                                    let xv = x
                                        [((b * d.cin + c) * d.h + iy as usize) * d.w + ix as usize];
                                    let wv = wt[((co * d.k + ky) * d.k + kx) * d.cin + c];
                                    s += xv.to_f64() * wv.to_f64();
                                }
                            }
                        }
                        out[((b * d.cout + co) * ho + oy) * wo + ox] = s as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_level_matches_a_direct_convolution() {
        let cases = [
            ConvDims {
                b: 1,
                cin: 3,
                h: 5,
                w: 7,
                cout: 4,
                k: 3,
                stride: 1,
                pad: 1,
            },
            ConvDims {
                b: 2,
                cin: 17,
                h: 9,
                w: 6,
                cout: 5,
                k: 3,
                stride: 2,
                pad: 0,
            },
            ConvDims {
                b: 1,
                cin: 33,
                h: 13,
                w: 11,
                cout: 7,
                k: 1,
                stride: 1,
                pad: 0,
            },
            ConvDims {
                b: 1,
                cin: 8,
                h: 12,
                w: 12,
                cout: 3,
                k: 3,
                stride: 1,
                pad: 1,
            },
            // Even channel counts take the direct path at the packed levels: partial row
            // groups, strides, several panel pairs, a 1x1 kernel.
            ConvDims {
                b: 2,
                cin: 6,
                h: 7,
                w: 29,
                cout: 37,
                k: 3,
                stride: 2,
                pad: 1,
            },
            ConvDims {
                b: 1,
                cin: 10,
                h: 3,
                w: 14,
                cout: 20,
                k: 1,
                stride: 1,
                pad: 0,
            },
            // Channels in whole k tiles run on AMX tiles where the CPU has them: output
            // rows of a partial task, a stride of 2, an odd panel count, a 1x1 kernel.
            ConvDims {
                b: 1,
                cin: 32,
                h: 6,
                w: 37,
                cout: 40,
                k: 3,
                stride: 1,
                pad: 1,
            },
            ConvDims {
                b: 2,
                cin: 64,
                h: 9,
                w: 20,
                cout: 16,
                k: 3,
                stride: 2,
                pad: 1,
            },
            ConvDims {
                b: 1,
                cin: 64,
                h: 4,
                w: 5,
                cout: 3,
                k: 1,
                stride: 1,
                pad: 0,
            },
        ];
        for d in cases {
            let (ho, wo) = d.out_hw();
            let x = values(d.b * d.cin * d.h * d.w, 5);
            let wt = values(d.cout * d.k * d.k * d.cin, 6);
            let bias: Vec<f32> = (0..d.cout).map(|i| i as f32 * 0.25 - 0.5).collect();
            let want = reference(&x, &wt, &bias, d);
            let packed = PackedBf16::pack(&wt, d.cout, d.k * d.k * d.cin);
            let layouts = [ConvWeight::Rows(&wt), ConvWeight::Packed(&packed)];
            for (isa, weight) in Isa::available()
                .into_iter()
                .flat_map(|i| layouts.iter().map(move |w| (i, *w)))
            {
                let mut got = vec![bf16::from_f32(f32::NAN); d.b * d.cout * ho * wo];
                conv2d_bf16(&x, weight, Some(&bias), d, &mut got, isa);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let g = g.to_f32();
                    assert!(
                        (g - w).abs() <= 8e-3 * w.abs() + 1e-3 * (d.cin * d.k * d.k) as f32,
                        "{isa:?} {d:?} at {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
