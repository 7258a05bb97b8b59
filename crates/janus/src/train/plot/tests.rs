//! Charts from metrics files, and the PNG they draw.

use super::*;

const METRICS: &str = r#"{"step": 1, "loss": 2.5, "loss_understanding": 2.0, "loss_text": null, "loss_t2i": 3.0, "lr": 1e-4, "grad_norm": 1.5, "tokens": 100, "seconds": 0.5}
{"step": 2, "loss": 2.4, "loss_understanding": null, "loss_text": null, "loss_t2i": 2.9, "lr": 2e-4, "grad_norm": 1.2, "tokens": 100, "seconds": 0.5}

{"eval": true, "step": 2, "loss": 2.6, "accuracy": 0.3}
"#;

fn names(chart: &Chart) -> Vec<&str> {
    chart.series.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn metrics_give_loss_lr_and_grad_norm_panels() {
    let charts = charts_from_metrics(METRICS).unwrap();
    assert_eq!(charts.len(), 3);
    // loss_text is null throughout, so it has no series; eval comes last.
    assert_eq!(names(&charts[0]), ["total", "understanding", "t2i", "eval"]);
    assert_eq!(charts[0].series[0].points, [(1.0, 2.5), (2.0, 2.4)]);
    assert_eq!(charts[0].series[1].points, [(1.0, 2.0)]);
    assert_eq!(charts[0].series[3].points, [(2.0, 2.6)]);
    assert_eq!(charts[1].series[0].points, [(1.0, 1e-4), (2.0, 2e-4)]);
    assert_eq!(names(&charts[2]), ["grad norm"]);
    assert!(charts[2].log_y && !charts[0].log_y);
}

#[test]
fn malformed_line_is_an_error_naming_it() {
    let text = format!("{METRICS}{{\"step\": 3, \"loss\": }}\n");
    let err = charts_from_metrics(&text).unwrap_err();
    assert!(err.starts_with("line 5, column"), "{err}");
    let err = charts_from_metrics("{\"step\": 1}\n{\"step\": 2, \"loss\": \"x\"}").unwrap_err();
    assert!(err.starts_with("line 2: \"loss\""), "{err}");
    let err = charts_from_metrics("[1, 2]").unwrap_err();
    assert!(err.starts_with("line 1:"), "{err}");
    let err = charts_from_metrics("{\"loss\": 1}").unwrap_err();
    assert_eq!(err, "line 1: no \"step\"");
}

#[test]
fn no_metrics_give_three_empty_charts() {
    let charts = charts_from_metrics("\n").unwrap();
    assert_eq!(charts.len(), 3);
    assert!(charts.iter().all(|c| c.series.is_empty()));
}

fn chart_of(series: Vec<Vec<(f64, f64)>>) -> Chart {
    Chart {
        title: "Loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: series
            .into_iter()
            .enumerate()
            .map(|(i, points)| Series {
                name: format!("s{i}"),
                points,
            })
            .collect(),
        log_y: false,
    }
}

/// Pixels of exactly `colour` inside `area`.
fn count(img: &RgbImage, area: Rect, colour: Rgb<u8>) -> usize {
    img.enumerate_pixels()
        .filter(|&(x, y, p)| {
            let (x, y) = (x as i32, y as i32);
            *p == colour && x >= area.x && x < area.x + area.w && y >= area.y && y < area.y + area.h
        })
        .count()
}

#[test]
fn render_draws_each_series_in_its_colour_inside_the_plot_area() {
    let series = (0..4).map(|k| (0..50).map(|i| (i as f64, (i * k) as f64)).collect());
    let chart = chart_of(series.collect());
    let img = render(&chart, 640, 360);
    let plot = layout(&chart, 640, 360, 0).plot;
    for colour in &PALETTE[..4] {
        assert!(count(&img, plot, *colour) > 50, "{colour:?}");
    }
    // The frame just outside the plot area is drawn, the corner of the image is not.
    assert_eq!(*img.get_pixel(plot.x as u32 - 1, plot.y as u32 + 5), FRAME);
    assert_eq!(*img.get_pixel(0, 0), WHITE);
}

#[test]
fn non_finite_points_are_skipped_and_lone_points_are_dots() {
    let inf = f64::INFINITY;
    let points = vec![(0.5, 1.0), (1.0, f64::NAN), (2.0, inf), (2.5, 2.0)];
    // Series 2 sets the axes to 0..3 so the dots of the others are not clipped.
    let chart = chart_of(vec![points, vec![(1.5, 2.5)], vec![(0.0, 0.0), (3.0, 3.0)]]);
    let lay = layout(&chart, 400, 300, 0);
    let (x_axis, y_axis) = lay.axes.as_ref().unwrap();
    assert!(y_axis.ticks.iter().all(|t| t.is_finite()) && *y_axis.ticks.last().unwrap() < 5.0);
    assert!(*x_axis.ticks.last().unwrap() >= 3.0);
    let img = render(&chart, 400, 300);
    // Both lone points of series 0 and the single point of series 1 show as dots, and
    // nothing joins them: between x = 1 and 2 there is no pixel of series 0.
    assert!(count(&img, lay.plot, PALETTE[0]) >= 2 * 20);
    assert!(count(&img, lay.plot, PALETTE[1]) >= 20);
    let p = lay.plot;
    let px = |x: f64| p.x + (x_axis.frac(x) * f64::from(p.w - 1)) as i32;
    let gap = Rect {
        x: px(1.0),
        y: p.y,
        w: px(2.0) - px(1.0),
        h: p.h,
    };
    assert_eq!(count(&img, gap, PALETTE[0]), 0);
}

#[test]
fn empty_chart_says_no_data() {
    for chart in [chart_of(vec![]), chart_of(vec![vec![(0.0, f64::NAN)]])] {
        let lay = layout(&chart, 400, 300, 0);
        assert!(lay.axes.is_none());
        let img = render(&chart, 400, 300);
        let p = lay.plot;
        let middle = Rect {
            x: p.x + p.w / 2 - 40,
            y: p.y + p.h / 2 - 8,
            w: 80,
            h: 16,
        };
        assert!(count(&img, middle, TEXT) > 20);
        assert!(PALETTE.iter().all(|&c| count(&img, p, c) == 0));
    }
}

#[test]
fn tiny_and_log_charts_render_without_panicking() {
    let mut chart = chart_of(vec![vec![(0.0, 0.0), (1.0, 1e-3), (2.0, 10.0)]]);
    chart.log_y = true;
    for (w, h) in [(1, 1), (30, 20), (200, 150), (1200, 300)] {
        let img = render(&chart, w, h);
        assert_eq!(img.dimensions(), (w, h));
    }
}

#[test]
fn write_png_stacks_panels_into_a_decodable_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    let charts = charts_from_metrics(METRICS).unwrap();
    write_png(&charts, 500, 200, &path).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (500, 600));
    // The left frame of every panel is at the same x, though their tick labels differ.
    let frame_x = |panel: u32| (0..500).find(|&x| *img.get_pixel(x, panel * 200 + 120) == FRAME);
    assert!(frame_x(0).is_some());
    assert!(frame_x(0) == frame_x(1) && frame_x(1) == frame_x(2));
    // Only the PNG is left behind: the temporary file was renamed over it.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["loss.png"]);
    assert!(write_png(&[], 500, 200, &path).is_err());
}
