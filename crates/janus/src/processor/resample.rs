//! Pillow's BICUBIC resampling of 8-bit RGB, reproduced to the byte.
//!
//! The reference resizes with `torchvision.transforms.functional.resize(pil_img, ...,
//! BICUBIC, antialias=True)`, which for a PIL image is `Image.resize(size, BICUBIC)`, i.e.
//! `ImagingResample` in Pillow's `libImaging/Resample.c`. We reimplement it instead of
//! using `fast_image_resize` because that crate follows Pillow-SIMD: its 8-bit
//! convolution stores the weights as `i16` with a per-axis precision of at most 15 bits,
//! while Pillow uses `i32` weights with 22 fractional bits. The weights then round
//! differently and outputs differ by ±1 on a fraction of the pixels, which breaks exact
//! parity with the reference (required: identical bytes).
//!
//! Pillow's algorithm, followed step by step below:
//! 1. per axis and output sample, a window of input samples around
//!    `center = (i + 0.5) * scale` with support `2 * max(scale, 1)` (the filter is
//!    stretched when downscaling: antialiasing), weights `bicubic((j - center + 0.5) / max(scale, 1))`
//!    with `a = -0.5`, normalised to sum 1 in `f64`;
//! 2. weights to fixed point: `trunc(w * 2^22 ± 0.5)` (rounding half away from zero);
//! 3. horizontal pass first (only over the rows the vertical pass will read), then
//!    vertical; a pass is skipped when its axis keeps its size; each pass accumulates in
//!    integers from `2^21` (rounding), shifts right by 22 and clamps to `0..=255`, so the
//!    intermediate image is `u8`.

/// Fractional bits of the fixed-point weights (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Support of Pillow's bicubic filter.
const BICUBIC_SUPPORT: f64 = 2.0;

/// Pillow's `bicubic_filter` (Keys cubic convolution with `a = -0.5`); the expression
/// order is Pillow's so the `f64` results are identical.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of one output sample: `weights[k]` applies to input `start + k`.
struct Tap {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis (`in_size`,
/// `out_size` > 0).
fn coefficients(in_size: usize, out_size: usize) -> Vec<Tap> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C `(int)` casts truncate toward zero, as `as i64` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let sum: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if sum != 0.0 { w / sum } else { w };
                    let fixed = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 {
                        (fixed - 0.5) as i32
                    } else {
                        (fixed + 0.5) as i32
                    }
                })
                .collect();
            Tap {
                start: xmin,
                weights,
            }
        })
        .collect()
}

/// Pillow's `clip8`: drop the fractional bits and clamp to a byte.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Applies one tap to `channels` interleaved samples read through `sample(k, c)`.
fn convolve(tap: &Tap, channels: usize, out: &mut [u8], sample: impl Fn(usize, usize) -> u8) {
    for (c, o) in out.iter_mut().enumerate().take(channels) {
        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
        for (k, &w) in tap.weights.iter().enumerate() {
            acc += i64::from(sample(tap.start + k, c)) * i64::from(w);
        }
        *o = clip8(acc);
    }
}

/// Resizes an interleaved 8-bit image (`channels` per pixel, row-major `width × height`)
/// to `out_width × out_height` exactly as Pillow's `Image.resize(..., BICUBIC)`.
///
/// All sizes must be non-zero and `src.len() == width * height * channels`.
pub(crate) fn resize_bicubic(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    debug_assert_eq!(src.len(), width * height * channels);
    let vert = coefficients(height, out_height);
    // Rows of the source the vertical pass reads (Pillow's ybox_first..ybox_last).
    let (row_first, row_last) = match (vert.first(), vert.last()) {
        (Some(first), Some(last)) => (first.start, last.start + last.weights.len()),
        _ => (0, height),
    };

    // Horizontal pass over the needed rows only, into a u8 intermediate.
    let (tmp, tmp_width, row_offset) = if out_width != width {
        let horiz = coefficients(width, out_width);
        let rows = row_last - row_first;
        let mut tmp = vec![0u8; rows * out_width * channels];
        for (r, out_row) in tmp.chunks_exact_mut(out_width * channels).enumerate() {
            let in_row = &src[(row_first + r) * width * channels..][..width * channels];
            for (tap, px) in horiz.iter().zip(out_row.chunks_exact_mut(channels)) {
                convolve(tap, channels, px, |x, c| in_row[x * channels + c]);
            }
        }
        (std::borrow::Cow::Owned(tmp), out_width, row_first)
    } else {
        (std::borrow::Cow::Borrowed(src), width, 0)
    };

    if out_height == height {
        return tmp.into_owned();
    }
    // Vertical pass.
    let stride = tmp_width * channels;
    let mut out = vec![0u8; out_height * stride];
    for (tap, out_row) in vert.iter().zip(out.chunks_exact_mut(stride)) {
        for (x, px) in out_row.chunks_exact_mut(channels).enumerate() {
            convolve(tap, channels, px, |y, c| {
                tmp[(y - row_offset) * stride + x * channels + c]
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(1000, 384), (384, 384), (10, 384), (7, 3), (640, 14)] {
            for tap in coefficients(i, o) {
                let sum: i32 = tap.weights.iter().sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= tap.weights.len() as i32,
                    "{i}->{o}: {sum}"
                );
                assert!(tap.start + tap.weights.len() <= i);
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 13 * 9 * 3];
        for (w, h) in [(5, 4), (26, 18), (13, 20), (3, 9)] {
            let out = resize_bicubic(&src, 13, 9, 3, w, h);
            assert_eq!(out.len(), w * h * 3);
            assert!(out.iter().all(|&v| v == 77), "{w}x{h}");
        }
    }

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..6 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(resize_bicubic(&src, 6, 5, 3, 6, 5), src);
    }
}
