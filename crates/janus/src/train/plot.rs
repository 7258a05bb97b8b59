//! Loss curves of a training run, drawn to a PNG without a plotting crate.
//!
//! `janus train plot RUN_DIR` reads the run's `metrics.jsonl` ([`charts_from_metrics`]) and
//! writes one image of stacked panels ([`write_png`]): losses, learning rate, gradient norm.
//! Everything is drawn here on an `image::RgbImage`, with text from the bitmap font in
//! `train/font.rs`, because the plotting crates bring a font rasteriser and system font
//! lookup, far more than three line charts need. This file lays charts out and reads the
//! metrics; `plot/axis.rs` picks ticks and `plot/draw.rs` sets pixels.
//!
//! Lines are 2 px wide and anti-aliased by coverage (the distance of each pixel centre to
//! the segment). A series is stamped into its own coverage buffer and blended once, so the
//! joints of a polyline are not blended twice and do not darken. Non-finite points, and
//! points with y <= 0 on a log axis, are skipped and break the line there; a point with no
//! drawable neighbour is drawn as a dot.

use std::io;
use std::path::Path;

use image::{Rgb, RgbImage};
use serde_json::{Map, Value};

mod axis;
mod draw;

use axis::Axis;
use draw::{draw_text, draw_text_up, fill_rect, stroke_rect, text_width};
use draw::{Coverage, Rect, CHAR_W, LINE_H, SCALE};

/// Blank border around the whole chart.
const PAD: i32 = 10;
/// Space between stacked pieces of text and between labels and what they label.
const GAP: i32 = 6;
const TICK_LEN: i32 = 5;
/// Half the stroke width of a line (2 px wide) and the radius of a dot.
const LINE_HALF_WIDTH: f32 = 1.0;
const DOT_RADIUS: f32 = 3.5;
/// A series whose points lie at least this far apart on average (in px) also gets a dot at
/// each point, so a handful of eval points read as measurements rather than a smooth curve.
const MARKER_SPACING: f32 = 12.0;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const TEXT: Rgb<u8> = Rgb([34, 34, 34]);
const FRAME: Rgb<u8> = Rgb([80, 80, 80]);
const GRID: Rgb<u8> = Rgb([230, 230, 230]);
/// Series colours in order: matplotlib's "tab10", distinct from one another and dark
/// enough to read as text on white.
const PALETTE: [Rgb<u8>; 10] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
];

/// One line on the chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` in data units, joined in this order.
    pub points: Vec<(f64, f64)>,
}

/// A chart: title, x label, y label, series (colours assigned in order from a fixed
/// palette, wrapping after ten).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    /// Centred above the legend; empty for none.
    pub title: String,
    /// Centred below the x tick labels; empty for none.
    pub x_label: String,
    /// Written upwards left of the y tick labels; empty for none.
    pub y_label: String,
    /// Drawn in order, later series on top.
    pub series: Vec<Series>,
    /// Logarithmic y axis; points with y <= 0 are then skipped.
    pub log_y: bool,
}

/// Renders to an RGB image of the given size. Never fails: a chart with no drawable point
/// shows "no data", and pieces that do not fit a small image are clipped.
pub fn render(chart: &Chart, width: u32, height: u32) -> RgbImage {
    render_from(chart, width, height, 0)
}

/// [`render`] with the plot area starting at least `min_left` pixels from the left, so
/// stacked panels can share one x position.
fn render_from(chart: &Chart, width: u32, height: u32, min_left: i32) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, WHITE);
    let lay = layout(chart, width, height, min_left);
    let p = lay.plot;

    if let Some((x_axis, y_axis)) = &lay.axes {
        // Grid, tick marks and labels first: the series go over the grid, and the rest
        // lies outside the plot area, which is all the series can touch.
        for (&t, label) in y_axis.ticks.iter().zip(&y_axis.labels) {
            let y = p.y + (p.h - 1) - (y_axis.frac(t) * f64::from(p.h - 1)).round() as i32;
            fill_rect(&mut img, p.x, y, p.w, 1, GRID);
            fill_rect(&mut img, p.x - 1 - TICK_LEN, y, TICK_LEN, 1, FRAME);
            // Centred on the tick: digits are 7 font rows tall.
            let x = p.x - 1 - TICK_LEN - 4 - text_width(label);
            draw_text(&mut img, label, x, y - 7 * SCALE / 2, TEXT);
        }
        for (&t, label) in x_axis.ticks.iter().zip(&x_axis.labels) {
            let x = p.x + (x_axis.frac(t) * f64::from(p.w - 1)).round() as i32;
            fill_rect(&mut img, x, p.y, 1, p.h, GRID);
            fill_rect(&mut img, x, p.y + p.h + 1, 1, TICK_LEN, FRAME);
            // Labels at the edges slide inwards rather than leave the image.
            let w = text_width(label);
            let left = (x - w / 2).clamp(0, (img.width() as i32 - w).max(0));
            draw_text(&mut img, label, left, p.y + p.h + 1 + TICK_LEN + 4, TEXT);
        }
        let mut cov = Coverage::new(p);
        for (i, series) in chart.series.iter().enumerate() {
            cov.clear();
            draw_series(&mut cov, series, x_axis, y_axis, chart.log_y);
            cov.blend_into(&mut img, PALETTE[i % PALETTE.len()]);
        }
    } else {
        let msg = "no data";
        let (cx, cy) = (p.x + p.w / 2, p.y + p.h / 2);
        draw_text(
            &mut img,
            msg,
            cx - text_width(msg) / 2,
            cy - LINE_H / 2,
            TEXT,
        );
    }
    stroke_rect(&mut img, p.x - 1, p.y - 1, p.w + 2, p.h + 2, FRAME);

    let w = img.width() as i32;
    // Bold by drawing twice one pixel apart.
    let title_x = (w - text_width(&chart.title)) / 2;
    draw_text(&mut img, &chart.title, title_x, PAD, TEXT);
    draw_text(&mut img, &chart.title, title_x + 1, PAD, TEXT);
    for item in &lay.legend {
        let colour = PALETTE[item.series % PALETTE.len()];
        // Level with the middle of the lower-case letters (font rows 3 and 4).
        fill_rect(&mut img, item.x, item.y + 3 * SCALE, SWATCH_W, 3, colour);
        let name = &chart.series[item.series].name;
        draw_text(&mut img, name, item.x + SWATCH_W + GAP, item.y, colour);
    }
    let bottom = img.height() as i32 - PAD - LINE_H;
    draw_text(
        &mut img,
        &chart.x_label,
        p.x + (p.w - text_width(&chart.x_label)) / 2,
        bottom,
        TEXT,
    );
    let y_label_bottom = p.y + (p.h + text_width(&chart.y_label)) / 2;
    draw_text_up(&mut img, &chart.y_label, PAD, y_label_bottom, TEXT);
    img
}

/// Reads a metrics.jsonl text and builds the standard charts: panel 1 the losses (total,
/// and per kind where present, plus eval loss points if any), panel 2 learning rate,
/// panel 3 gradient norm (log scale: spikes would flatten the rest). Always three charts.
/// A null or missing value gives no point; malformed JSON, a line that is not an object,
/// a line without `step` or a value that is neither a number nor null is an error naming
/// its line (1-based).
pub fn charts_from_metrics(jsonl: &str) -> Result<Vec<Chart>, String> {
    const LOSSES: [(&str, &str); 4] = [
        ("loss", "total"),
        ("loss_understanding", "understanding"),
        ("loss_text", "text"),
        ("loss_t2i", "t2i"),
    ];
    let series = |name: &str| Series {
        name: name.to_string(),
        points: Vec::new(),
    };
    let mut losses = LOSSES.map(|(_, name)| series(name));
    let mut eval = series("eval");
    let mut lr = series("lr");
    let mut grad_norm = series("grad norm");

    for (i, line) in jsonl.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            // serde_json's message ends " at line 1 column C": the line is ours to name.
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m);
            format!("line {n}, column {}: invalid JSON: {msg}", e.column())
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| format!("line {n}: not a JSON object"))?;
        let step = number(obj, "step", n)?.ok_or_else(|| format!("line {n}: no \"step\""))?;
        let push = |s: &mut Series, key: &str| -> Result<(), String> {
            if let Some(v) = number(obj, key, n)? {
                s.points.push((step, v));
            }
            Ok(())
        };
        if obj.get("eval") == Some(&Value::Bool(true)) {
            push(&mut eval, "loss")?;
            continue;
        }
        for ((key, _), s) in LOSSES.iter().zip(losses.iter_mut()) {
            push(s, key)?;
        }
        push(&mut lr, "lr")?;
        push(&mut grad_norm, "grad_norm")?;
    }

    let chart = |title: &str, y_label: &str, series: Vec<Series>, log_y| Chart {
        title: title.to_string(),
        x_label: "step".to_string(),
        y_label: y_label.to_string(),
        series: series
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect(),
        log_y,
    };
    let mut loss_series = losses.to_vec();
    loss_series.push(eval);
    Ok(vec![
        chart("Loss", "loss", loss_series, false),
        chart("Learning rate", "lr", vec![lr], false),
        chart("Gradient norm", "grad norm", vec![grad_norm], true),
    ])
}

/// `obj[key]` as a number: `None` when missing or null, an error naming line `n` otherwise.
fn number(obj: &Map<String, Value>, key: &str, n: usize) -> Result<Option<f64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("line {n}: \"{key}\" is {v}, expected a number or null")),
    }
}

/// Stacks charts vertically into one image and writes it as PNG atomically (write to a
/// temporary file in the same directory, then rename), never leaving a half-written file.
/// Each chart gets `width` x `panel_height` pixels.
pub fn write_png(charts: &[Chart], width: u32, panel_height: u32, path: &Path) -> io::Result<()> {
    use image::ImageEncoder;

    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if charts.is_empty() || width == 0 || panel_height == 0 {
        return Err(invalid(format!(
            "cannot plot {} charts at {width}x{panel_height} px each",
            charts.len()
        )));
    }
    let height = u32::try_from(charts.len())
        .ok()
        .and_then(|n| n.checked_mul(panel_height))
        .ok_or_else(|| invalid(format!("{} panels of {panel_height} px", charts.len())))?;
    // Plot areas start at the same x, so the panels' steps line up one under another.
    let left = charts
        .iter()
        .map(|c| layout(c, width, panel_height, 0).plot.x)
        .max()
        .unwrap_or(0);
    // Panels share the width, so stacking them is concatenating their rows.
    let mut raw = Vec::with_capacity(width as usize * height as usize * 3);
    for chart in charts {
        raw.extend_from_slice(render_from(chart, width, panel_height, left).as_raw());
    }
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(&raw, width, height, image::ExtendedColorType::Rgb8)
        .map_err(io::Error::other)?;
    super::atomic::write(path, &bytes)
}

/// Width of the colour swatch before a legend name.
const SWATCH_W: i32 = 20;

/// One legend entry: swatch and name starting at (`x`, `y`), in series `series`' colour.
struct LegendItem {
    x: i32,
    y: i32,
    series: usize,
}

/// Where everything goes on a chart of a given size.
struct Layout {
    /// The data area; lines are clipped to it and the frame lies one pixel outside it.
    plot: Rect,
    /// The x and y axes, or `None` when the chart has no drawable point.
    axes: Option<(Axis, Axis)>,
    legend: Vec<LegendItem>,
}

/// Lays out `chart` on `width` x `height` pixels, the plot area at least `min_left` from
/// the left edge.
fn layout(chart: &Chart, width: u32, height: u32, min_left: i32) -> Layout {
    let w = width.min(i32::MAX as u32) as i32;
    let h = height.min(i32::MAX as u32) as i32;
    let mut y = PAD;
    if !chart.title.is_empty() {
        y += LINE_H + GAP;
    }

    // Legend rows under the title, each centred, wrapping at the image width.
    let mut legend = Vec::new();
    let mut row: Vec<(i32, usize)> = Vec::new();
    let mut row_w = 0;
    let item_w = |s: &Series| SWATCH_W + GAP + text_width(&s.name);
    let mut flush = |row: &mut Vec<(i32, usize)>, row_w: i32, y: &mut i32| {
        if row.is_empty() {
            return;
        }
        let left = (w - row_w) / 2;
        legend.extend(row.drain(..).map(|(x, series)| LegendItem {
            x: left + x,
            y: *y,
            series,
        }));
        *y += LINE_H + GAP / 2;
    };
    for (i, s) in chart.series.iter().enumerate() {
        let x = if row.is_empty() { 0 } else { row_w + 3 * GAP };
        if !row.is_empty() && x + item_w(s) > w - 2 * PAD {
            flush(&mut row, row_w, &mut y);
            row.push((0, i));
            row_w = item_w(s);
        } else {
            row.push((x, i));
            row_w = x + item_w(s);
        }
    }
    flush(&mut row, row_w, &mut y);

    let top = y + GAP;
    let x_label_h = if chart.x_label.is_empty() {
        0
    } else {
        LINE_H + GAP
    };
    let bottom = h - PAD - x_label_h - LINE_H - 4 - TICK_LEN - 1;
    let plot_h = (bottom - top).max(2);
    let y_label_w = if chart.y_label.is_empty() {
        0
    } else {
        LINE_H + GAP
    };

    let Some((x_range, y_range)) = data_ranges(chart) else {
        let left = (PAD + y_label_w + 2 * CHAR_W + 4 + TICK_LEN + 1).max(min_left);
        let plot = Rect {
            x: left,
            y: top,
            w: (w - PAD - 2 * CHAR_W - left).max(2),
            h: plot_h,
        };
        return Layout {
            plot,
            axes: None,
            legend,
        };
    };
    let y_axis = Axis::new(y_range, (plot_h / 45).clamp(2, 10) as usize, chart.log_y);
    let tick_labels_w = y_axis
        .labels
        .iter()
        .map(|l| text_width(l))
        .max()
        .unwrap_or(0);
    let left = (PAD + y_label_w + tick_labels_w + 4 + TICK_LEN + 1).max(min_left);
    // Fewer x ticks until neighbouring labels leave a character's gap between them, and
    // room on the right for half the last label, which is centred on the plot's edge.
    let mut right = 2 * CHAR_W;
    let mut target = ((w - PAD - right - left) / 110).clamp(2, 12) as usize;
    let (x_axis, plot_w) = loop {
        let plot_w = (w - PAD - right - left).max(2);
        let axis = Axis::new(x_range, target, false);
        let last_half = axis.labels.last().map_or(0, |l| text_width(l) / 2 + 1);
        if last_half > right {
            right = last_half;
            continue;
        }
        let widest = axis.labels.iter().map(|l| text_width(l)).max().unwrap_or(0);
        let spacing = plot_w / (axis.ticks.len() as i32 - 1).max(1);
        if spacing >= widest + CHAR_W || target <= 2 {
            break (axis, plot_w);
        }
        target -= 1;
    };
    let plot = Rect {
        x: left,
        y: top,
        w: plot_w,
        h: plot_h,
    };
    Layout {
        plot,
        axes: Some((x_axis, y_axis)),
        legend,
    }
}

/// Whether a point can be drawn on this chart.
fn drawable((x, y): (f64, f64), log_y: bool) -> bool {
    x.is_finite() && y.is_finite() && (!log_y || y > 0.0)
}

/// The x and y ranges `(min, max)` of all drawable points, or `None` if there are none.
fn data_ranges(chart: &Chart) -> Option<((f64, f64), (f64, f64))> {
    let mut points = chart.series.iter().flat_map(|s| &s.points).copied();
    let first = points.find(|&p| drawable(p, chart.log_y))?;
    let init = ((first.0, first.0), (first.1, first.1));
    Some(
        points
            .filter(|&p| drawable(p, chart.log_y))
            .fold(init, |(xr, yr), (x, y)| {
                ((xr.0.min(x), xr.1.max(x)), (yr.0.min(y), yr.1.max(y)))
            }),
    )
}

/// Stamps `series` into `cov`: runs of drawable points as lines, isolated points as dots,
/// and a dot at every point of a sparse series.
fn draw_series(cov: &mut Coverage, series: &Series, x_axis: &Axis, y_axis: &Axis, log_y: bool) {
    let p = cov.area;
    let to_px = |(x, y): (f64, f64)| {
        let fx = x_axis.frac(x) * f64::from(p.w - 1);
        let fy = (1.0 - y_axis.frac(y)) * f64::from(p.h - 1);
        (
            (f64::from(p.x) + 0.5 + fx) as f32,
            (f64::from(p.y) + 0.5 + fy) as f32,
        )
    };
    // Runs of consecutive drawable points, in pixels.
    let mut runs: Vec<Vec<(f32, f32)>> = Vec::new();
    let mut run = Vec::new();
    for &pt in &series.points {
        if drawable(pt, log_y) {
            run.push(to_px(pt));
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    runs.push(run);
    let (mut length, mut segments) = (0.0f32, 0usize);
    for run in &runs {
        for pair in run.windows(2) {
            cov.stroke(pair[0], pair[1], LINE_HALF_WIDTH);
            length += (pair[1].0 - pair[0].0).hypot(pair[1].1 - pair[0].1);
            segments += 1;
        }
    }
    let sparse = segments > 0 && length / segments as f32 >= MARKER_SPACING;
    for run in &runs {
        if run.len() == 1 || sparse {
            for &pt in run {
                cov.stroke(pt, pt, DOT_RADIUS);
            }
        }
    }
}

#[cfg(test)]
mod tests;
