//! Pixels: anti-aliased strokes, filled rectangles and bitmap text on an `RgbImage`, all
//! clipped to the image so callers may draw partly outside it.

use image::{Rgb, RgbImage};

use crate::train::font;

/// Text is the font at twice its size: 12 px per character, 16 px per line.
pub(super) const SCALE: i32 = 2;
pub(super) const CHAR_W: i32 = font::ADVANCE as i32 * SCALE;
pub(super) const LINE_H: i32 = font::HEIGHT as i32 * SCALE;

/// A rectangle of pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rect {
    pub(super) x: i32,
    pub(super) y: i32,
    pub(super) w: i32,
    pub(super) h: i32,
}

/// Anti-aliased coverage (0..=1) of one series over the plot area. Kept apart from the
/// image so that where strokes overlap the larger coverage wins instead of blending twice.
pub(super) struct Coverage {
    /// The pixels covered: the plot area.
    pub(super) area: Rect,
    cov: Vec<f32>,
}

impl Coverage {
    /// Zero coverage over `area`.
    pub(super) fn new(area: Rect) -> Coverage {
        Coverage {
            area,
            cov: vec![0.0; area.w as usize * area.h as usize],
        }
    }

    /// Zero coverage everywhere, ready for the next series.
    pub(super) fn clear(&mut self) {
        self.cov.fill(0.0);
    }

    /// Adds a round-capped stroke of half-width `half` from `a` to `b` (pixel coordinates,
    /// pixel centres at +0.5); `a == b` gives a dot of radius `half`.
    pub(super) fn stroke(&mut self, a: (f32, f32), b: (f32, f32), half: f32) {
        let r = self.area;
        let reach = half + 1.0;
        let x0 = ((a.0.min(b.0) - reach).floor() as i32).max(r.x);
        let x1 = ((a.0.max(b.0) + reach).ceil() as i32).min(r.x + r.w - 1);
        let y0 = ((a.1.min(b.1) - reach).floor() as i32).max(r.y);
        let y1 = ((a.1.max(b.1) + reach).ceil() as i32).min(r.y + r.h - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let d = segment_distance((x as f32 + 0.5, y as f32 + 0.5), a, b);
                let c = (half + 0.5 - d).clamp(0.0, 1.0);
                let i = ((y - r.y) * r.w + (x - r.x)) as usize;
                self.cov[i] = self.cov[i].max(c);
            }
        }
    }

    /// Paints `colour` over `img` with each pixel's coverage as its opacity.
    pub(super) fn blend_into(&self, img: &mut RgbImage, colour: Rgb<u8>) {
        let r = self.area;
        for (i, &c) in self.cov.iter().enumerate().filter(|&(_, &c)| c > 0.0) {
            let (x, y) = (r.x + i as i32 % r.w, r.y + i as i32 / r.w);
            if x < 0 || y < 0 || x >= img.width() as i32 || y >= img.height() as i32 {
                continue;
            }
            let px = img.get_pixel_mut(x as u32, y as u32);
            for (dst, &src) in px.0.iter_mut().zip(&colour.0) {
                *dst = (f32::from(*dst) * (1.0 - c) + f32::from(src) * c).round() as u8;
            }
        }
    }
}

/// Distance from `p` to the segment `a`-`b`.
fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (a.0 + t * dx - p.0).hypot(a.1 + t * dy - p.1)
}

/// Fills a rectangle, clipped to the image.
pub(super) fn fill_rect(img: &mut RgbImage, x: i32, y: i32, w: i32, h: i32, colour: Rgb<u8>) {
    let (iw, ih) = (img.width() as i32, img.height() as i32);
    for py in y.max(0)..(y + h).min(ih) {
        for px in x.max(0)..(x + w).min(iw) {
            img.put_pixel(px as u32, py as u32, colour);
        }
    }
}

/// Draws the 1 px outline of a rectangle.
pub(super) fn stroke_rect(img: &mut RgbImage, x: i32, y: i32, w: i32, h: i32, colour: Rgb<u8>) {
    fill_rect(img, x, y, w, 1, colour);
    fill_rect(img, x, y + h - 1, w, 1, colour);
    fill_rect(img, x, y, 1, h, colour);
    fill_rect(img, x + w - 1, y, 1, h, colour);
}

/// Width in pixels of `text` drawn by [`draw_text`] (no trailing blank column).
pub(super) fn text_width(text: &str) -> i32 {
    let n = text.chars().count() as i32;
    if n == 0 {
        0
    } else {
        n * CHAR_W - SCALE
    }
}

/// Draws `text` with its top-left corner at (`x`, `y`).
pub(super) fn draw_text(img: &mut RgbImage, text: &str, x: i32, y: i32, colour: Rgb<u8>) {
    for_each_text_pixel(text, |u, v| {
        fill_rect(img, x + u, y + v, SCALE, SCALE, colour)
    });
}

/// Draws `text` turned a quarter-turn anticlockwise, reading upwards, with the bottom-left
/// corner of the turned text at (`x`, `y`).
pub(super) fn draw_text_up(img: &mut RgbImage, text: &str, x: i32, y: i32, colour: Rgb<u8>) {
    // Unturned (u, v) goes to (v, -u): along the text is up, down the glyph is right.
    for_each_text_pixel(text, |u, v| {
        fill_rect(img, x + v, y - u - SCALE, SCALE, SCALE, colour)
    });
}

/// Calls `f(u, v)` with the offset of every set (scaled) font pixel of `text`.
fn for_each_text_pixel(text: &str, mut f: impl FnMut(i32, i32)) {
    for (i, c) in text.chars().enumerate() {
        for gy in 0..font::HEIGHT {
            for gx in 0..font::WIDTH {
                if font::pixel(c, gx, gy) {
                    f(i as i32 * CHAR_W + gx as i32 * SCALE, gy as i32 * SCALE);
                }
            }
        }
    }
}
