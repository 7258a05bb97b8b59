//! The plan as text: the data each stage sees, what it costs, the paper's figure beside
//! the estimate, and the time measured here.

use std::fmt::Write;

use super::{thousands, Cost, Plan, StagePlan};

/// 5120000 -> `5.12M`, 755000000000 -> `755.0B`.
pub fn si(x: f64) -> String {
    let (v, unit) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "B")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        return format!("{x:.0}");
    };
    if v >= 100.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// Hours as hours below two days, days above.
pub fn duration(hours: f64) -> String {
    if hours < 1.0 / 60.0 {
        format!("{:.1} s", hours * 3600.0)
    } else if hours < 1.0 {
        format!("{:.1} min", hours * 60.0)
    } else if hours < 48.0 {
        format!("{hours:.1} h")
    } else {
        format!("{:.1} days", hours / 24.0)
    }
}

/// USD: whole dollars from $100, cents below.
pub fn money(usd: f64) -> String {
    if usd >= 100.0 {
        format!("${}", thousands(usd.round() as u64))
    } else {
        format!("${usd:.2}")
    }
}

/// GPU-hours: grouped thousands from 100, decimals below.
pub fn hours(h: f64) -> String {
    if h >= 100.0 {
        thousands(h.round() as u64)
    } else if h >= 1.0 {
        format!("{h:.1}")
    } else if h >= 0.01 {
        format!("{h:.3}")
    } else {
        format!("{h:.1e}")
    }
}

fn gpus(n: u64) -> String {
    if n == 1 {
        "1 GPU".into()
    } else {
        format!("{n} GPUs")
    }
}

fn percent(f: f64) -> String {
    format!("{:.1}%", 100.0 * f)
}

/// Rows of cells as aligned columns: the first left-aligned, the others right-aligned.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, "{cell:<w$}", w = width[0]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = width[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn data_row(name: &str, s: Option<&StagePlan>, c: &Cost) -> Vec<String> {
    let k = &c.samples_by_kind;
    let (steps, batch, ratio) = match s {
        Some(s) => (
            thousands(s.steps),
            s.batch_size.to_string(),
            format!("{}:{}:{}", s.ratio[0], s.ratio[1], s.ratio[2]),
        ),
        None => Default::default(),
    };
    vec![
        name.to_string(),
        steps,
        batch,
        ratio,
        si(c.samples as f64),
        si(k.understanding as f64),
        si(k.text as f64),
        si(k.t2i as f64),
        si(c.tokens as f64),
    ]
}

fn cost_row(name: &str, s: Option<&StagePlan>, c: &Cost) -> Vec<String> {
    let (trained, shares) = match s {
        Some(s) => (
            si(s.trained_parameters as f64),
            [s.share.samples, s.share.flops, s.share.cost].map(percent),
        ),
        None => (
            String::new(),
            ["100%".to_string(), "100%".into(), "100%".into()],
        ),
    };
    let [a, b, d] = shares;
    vec![
        name.to_string(),
        trained,
        format!("{:.2e}", c.flops),
        hours(c.gpu_hours),
        duration(c.wall_hours),
        money(c.cost),
        a,
        b,
        d,
    ]
}

/// The whole plan as text.
pub fn render(p: &Plan) -> String {
    let mut out = String::new();
    let h = &p.hardware;
    let rows = p.tokens_per_sample.tokens;
    let rows = if rows[0] == rows[1] && rows[1] == rows[2] {
        format!("{} positions", thousands(rows[0]))
    } else {
        format!("{}:{}:{} positions (U:T:G)", rows[0], rows[1], rows[2])
    };
    let _ = writeln!(
        out,
        "{}: {} parameters (the VQ model not counted); recipe {}",
        p.model.label,
        si(p.model.parameters as f64),
        p.recipe
    );
    let _ = writeln!(
        out,
        "assumed: batch rows of {rows} (--tokens-per-sample); {} at {} TFLOP/s bf16 peak x MFU \
         {} (--mfu); {}; {}/GPU-hour",
        h.gpu,
        h.peak_bf16_tflops,
        h.mfu,
        gpus(h.gpus),
        money(h.price_per_hour)
    );
    out.push('\n');

    let mut data = vec![[
        "stage",
        "steps",
        "batch",
        "U:T:G",
        "samples",
        "understanding",
        "text",
        "t2i",
        "tokens",
    ]
    .map(String::from)
    .to_vec()];
    for s in &p.stages {
        data.push(data_row(&s.recipe, Some(s), &s.cost));
    }
    if p.stages.len() > 1 {
        data.push(data_row("total", None, &p.total));
    }
    out.push_str(&table(&data));
    out.push('\n');

    let wall = format!("wall ({})", gpus(h.gpus));
    let mut cost = vec![vec![
        "stage".to_string(),
        "trained".into(),
        "FLOPs".into(),
        "GPU-hours".into(),
        wall,
        "cost".into(),
        "% samples".into(),
        "% FLOPs".into(),
        "% cost".into(),
    ]];
    for s in &p.stages {
        cost.push(cost_row(&s.recipe, Some(s), &s.cost));
    }
    if p.stages.len() > 1 {
        cost.push(cost_row("total", None, &p.total));
    }
    out.push_str(&table(&cost));

    if let Some(r) = &p.reported {
        out.push('\n');
        let est = &p.total;
        let rows = vec![
            vec![
                "whole run".to_string(),
                "reported".into(),
                "estimated".into(),
            ],
            vec![
                "GPU-hours".to_string(),
                format!("{} {}", thousands(r.gpu_hours), r.gpu),
                format!("{} {}", hours(est.gpu_hours), h.gpu),
            ],
            vec![
                "wall time".to_string(),
                format!("{} days on {} GPUs", r.reported.days, r.gpus),
                format!(
                    "{} on {} ({} on {})",
                    duration(est.wall_hours),
                    gpus(h.gpus),
                    duration(est.gpu_hours / r.gpus as f64),
                    r.gpus
                ),
            ],
            vec![
                "cost".to_string(),
                format!("{} at {}/h", money(r.cost), money(r.price)),
                format!("{} at {}/h", money(est.cost), money(h.price_per_hour)),
            ],
            vec![
                "MFU".to_string(),
                format!("{:.3} (implied)", r.implied_mfu),
                format!("{} (assumed)", h.mfu),
            ],
        ];
        out.push_str(&table(&rows));
        let _ = writeln!(
            out,
            "reported: {}; implied MFU = the {:.2e} FLOPs above / ({} A100-hours x 3600 x 312 \
             TFLOP/s)",
            r.reported.source,
            est.flops,
            thousands(r.gpu_hours)
        );
    }

    if p.stages.iter().any(|s| s.measured.is_some()) {
        out.push('\n');
        let mut rows = vec![[
            "measured here",
            "batch",
            "s/step",
            "s/sample",
            "positions/sample",
            "tokens/s",
            "s/image code",
            "images",
            "time here",
        ]
        .map(String::from)
        .to_vec()];
        let mut data = String::new();
        for s in &p.stages {
            let Some(m) = &s.measured else { continue };
            data.clone_from(&m.data);
            rows.push(vec![
                s.recipe.clone(),
                m.batch_size.to_string(),
                format!("{:.3}", m.seconds_per_step),
                format!("{:.4}", m.seconds_per_sample),
                format!("{:.0}", m.positions_per_sample),
                format!("{:.0}", m.tokens_per_second),
                m.seconds_per_image
                    .map_or("-".to_string(), |s| format!("{s:.3}")),
                si(m.images_encoded as f64),
                duration(m.hours),
            ]);
        }
        if let (Some(total), true) = (p.measured_hours, p.stages.len() > 1) {
            rows.push(vec![
                "total".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                duration(total),
            ]);
        }
        out.push_str(&table(&rows));
        let _ = writeln!(
            out,
            "timed with the trainer on this machine ({data} data, micro-batch 1, after an \
             untimed pass over the same steps); time here = the stage's samples x s/sample + \
             images met for the first time x s/image code"
        );
    }

    let notes: Vec<&String> = p.stages.iter().flat_map(|s| &s.notes).collect();
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(si(5_120_000.0), "5.12M");
        assert_eq!(si(184_320_000.0), "184.3M");
        assert_eq!(si(755e9), "755.0B");
        assert_eq!(si(12.0), "12");
        assert_eq!(thousands(86_016), "86,016");
        assert_eq!(thousands(360_000), "360,000");
        assert_eq!(thousands(7), "7");
        assert_eq!(money(352_665.6), "$352,666");
        assert_eq!(money(0.421), "$0.42");
        assert_eq!(duration(336.0), "14.0 days");
        assert_eq!(duration(2.5), "2.5 h");
        assert_eq!(duration(0.5), "30.0 min");
        assert_eq!(duration(0.001), "3.6 s");
        assert_eq!(hours(114_436.4), "114,436");
        assert_eq!(hours(2.54), "2.5");
        assert_eq!(hours(0.0312), "0.031");
        assert_eq!(hours(3.2e-6), "3.2e-6");
    }
}
