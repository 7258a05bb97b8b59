//! `janus bench`: the standard workloads, timed per stage ([`janus::bench`]).

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use janus::bench::{self, BenchParams, BenchReport, T2I_PROMPT_TOKENS};
use janus::engine::{window, Window};
use janus::machine::MachineInfo;
use serde_json::json;

use crate::args::{DeviceArgs, ModelArgs};
use crate::progress::{Bar, Progress};

/// Arguments of `janus bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Timed text-to-image steps.
    #[arg(long, default_value_t = 32)]
    t2i_steps: usize,
    /// Images in the text-to-image batch (2P rows with guidance).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Tokens decoded greedily after the prefill.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Also time one pass over W image codes (2P rows each) for each listed window, the
    /// t(W) curve speculative decoding's gain depends on (`1,2,4,8,16`), or `auto` for
    /// those windows and the one `--speculative auto` would pick before any request.
    #[arg(long, value_name = "W,W,...|auto")]
    speculative: Option<String>,
    /// End stdout with one JSON object of the results.
    #[arg(long)]
    json: bool,
}

/// The windows `--speculative` lists, and whether it said `auto`.
fn bench_windows(arg: &str) -> Result<(Vec<usize>, bool)> {
    if arg == "auto" {
        return Ok((window::AUTO_WINDOWS.to_vec(), true));
    }
    let windows = arg
        .split(',')
        .map(|w| match w.trim().parse::<Window>() {
            Ok(Window::Fixed(w)) => Ok(w),
            Ok(Window::Auto) => anyhow::bail!("auto cannot be one of several windows"),
            Err(e) => Err(e.into()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((windows, false))
}

/// Runs `janus bench`.
pub fn run(a: BenchArgs, progress: &Progress) -> Result<()> {
    let params = BenchParams {
        decode_tokens: a.decode_tokens,
        t2i_steps: a.t2i_steps,
        parallel: a.parallel,
    };
    params.validate()?;
    let windows = a.speculative.as_deref().map(bench_windows).transpose()?;
    let t0 = Instant::now();
    let pipe = a.model.load(progress, &a.device)?;
    let load_s = t0.elapsed().as_secs_f64();
    params.validate_for(&pipe.model)?;
    pipe.check_generate_memory(T2I_PROMPT_TOKENS, params.parallel)?;

    // Measured before the model runs, while nothing else of ours reads memory.
    let machine = MachineInfo::measure();
    let header = [
        ("cpu", machine.cpu.clone()),
        (
            "kernels",
            format!("{} ({} threads)", machine.kernels, machine.threads),
        ),
        ("memory", format!("{:.1} GB/s read", machine.read_gb_s)),
        ("device", device_label(pipe.model.device())),
        ("model", a.model.model_id()),
        ("dtype", pipe.model.dtype().as_str().to_string()),
        ("quant", a.model.quant.clone()),
        ("load", format!("{load_s:.2} s")),
        (
            "workload",
            format!(
                "{} decode tokens, {} t2i steps x {} rows",
                params.decode_tokens,
                params.t2i_steps,
                2 * params.parallel
            ),
        ),
    ];
    // With --json, stdout carries only the results; the context goes with the progress.
    if !a.json {
        for (k, v) in &header {
            println!("{k:<10}{v}");
        }
        println!();
    } else if !progress.is_quiet() {
        for (k, v) in &header {
            eprintln!("{k:<10}{v}");
        }
    }

    let mut spinner: Option<Bar> = None;
    let report = bench::run(
        &pipe.model,
        pipe.tokenizer.special().pad,
        &params,
        |stage| {
            // Dropping the previous spinner clears it before the next one starts.
            drop(spinner.take());
            spinner = Some(progress.spinner(stage.name()));
        },
    )?;
    drop(spinner);
    let passes = match &windows {
        Some((ws, auto)) => {
            let _spin = progress.spinner("speculative passes");
            let costs = window::pass_costs(&pipe.model, 2 * params.parallel, ws)?;
            let pick = auto.then(|| window::best_window(&costs, &window::prior_acceptance()));
            Some((costs, pick))
        }
        None => None,
    };
    let peak = bench::peak_rss_mb();

    if a.json {
        let mut out = results_json(&report, peak, &machine);
        out["machine"]["device"] = json!(device_label(pipe.model.device()));
        if let Some((costs, pick)) = &passes {
            out["pass_s"] = costs
                .iter()
                .map(|(w, t)| (w.to_string(), json!(t)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            out["auto_window"] = json!(pick);
        }
        println!("{out}");
    } else {
        print_table(&report, &params, peak);
        if let Some((costs, pick)) = &passes {
            println!();
            println!("{:<10} {:>12}  {:<7} t(W)/t(1)", "window", "pass", "unit");
            let t1 = costs.iter().find(|(w, _)| *w == 1).map(|c| c.1);
            for (w, t) in costs {
                let ratio = t1.map_or_else(|| "-".to_string(), |t1| format!("{:.2}", t / t1));
                println!("{w:<10} {t:>12.4}  {:<7} {ratio}", "s");
            }
            if let Some(w) = pick {
                println!("auto picks window {w} (acceptance prior, no request seen)");
            }
        }
    }
    Ok(())
}

/// `cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3)`.
fn device_label(device: &candle_core::Device) -> String {
    let name = janus::device::name(device);
    match janus::device::gpu_model(device) {
        Some(gpu) => format!("{name} ({gpu})"),
        None => name,
    }
}

/// The seven result keys and the machine they ran on; `peak_rss_mb` is null where the
/// peak is unknown (not Linux).
fn results_json(r: &BenchReport, peak_rss_mb: Option<f64>, m: &MachineInfo) -> serde_json::Value {
    json!({
        "machine": m,
        "siglip_s": r.siglip_s,
        "prefill_tokens": r.prefill_tokens,
        "prefill_s": r.prefill_s,
        "decode_tok_s": r.decode_tok_s,
        "t2i_step_s": r.t2i_step_s,
        "vq_decode_s": r.vq_decode_s,
        "peak_rss_mb": peak_rss_mb,
    })
}

fn print_table(r: &BenchReport, params: &BenchParams, peak_rss_mb: Option<f64>) {
    let rows = [
        (
            "siglip",
            format!("{:.4}", r.siglip_s),
            "s",
            "1 image".to_string(),
        ),
        (
            "prefill",
            format!("{:.4}", r.prefill_s),
            "s",
            format!(
                "{} tokens, {:.1} tok/s",
                r.prefill_tokens,
                r.prefill_tokens as f64 / r.prefill_s
            ),
        ),
        (
            "decode",
            format!("{:.2}", r.decode_tok_s),
            "tok/s",
            format!("{} tokens, greedy", params.decode_tokens),
        ),
        (
            "t2i step",
            format!("{:.4}", r.t2i_step_s),
            "s/step",
            format!("{} rows, cfg {}", 2 * params.parallel, bench::CFG_WEIGHT),
        ),
        (
            "vq decode",
            format!("{:.4}", r.vq_decode_s),
            "s",
            "1 image".to_string(),
        ),
        (
            "peak rss",
            peak_rss_mb.map_or_else(|| "-".to_string(), |m| format!("{m:.1}")),
            "MiB",
            String::new(),
        ),
    ];
    println!("{:<10} {:>12}  {:<7} note", "stage", "value", "unit");
    for (stage, value, unit, note) in rows {
        println!("{stage:<10} {value:>12}  {unit:<7} {note}");
    }
}
