//! `janus generate`: text in, PNGs out.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use janus::engine::sampling::random_seed;
use janus::engine::GenerateParams;
use serde_json::json;

use crate::args::{DeviceArgs, ModelArgs, SpeculativeArgs};
use crate::output;
use crate::progress::Progress;

/// Arguments of `janus generate`.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// Images to generate for the prompt.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Classifier-free guidance weight.
    #[arg(long, default_value_t = 5.0)]
    cfg_weight: f64,
    /// Sampling temperature; 0 picks the most likely code.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Random seed (default: a random one, reported in the output).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    speculative: SpeculativeArgs,
    /// Directory for the PNGs (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object on stdout instead of the paths.
    #[arg(long)]
    json: bool,
}

/// Runs `janus generate`.
pub fn run(a: GenerateArgs, progress: &Progress) -> Result<()> {
    let params = GenerateParams {
        parallel: a.parallel,
        cfg_weight: a.cfg_weight,
        temperature: a.temperature,
        seed: a.seed.unwrap_or_else(random_seed),
        speculative: a.speculative.get(),
    };
    params.validate()?;
    output::prepare_out_dir(&a.out)?;
    let pipe = a.model.load(progress, &a.device)?;
    let total = pipe.config().gen_image_tokens() as u64;
    let mut bar = progress.steps("generating", total);
    let result = pipe.generate(&a.prompt, &params, |done, _| {
        bar.set(done as u64);
        ControlFlow::Continue(())
    })?;
    bar.finish();
    let model = a.model.model_id();
    let meta = output::GenerationMeta {
        prompt: &a.prompt,
        seed: params.seed,
        cfg_weight: params.cfg_weight,
        temperature: params.temperature,
        parallel: params.parallel,
        model: &model,
        speculative: output::GenerationMeta::speculative_record(
            params.speculative.accept,
            &result.stats.window.to_string(),
        ),
    };
    let paths = output::write_pngs(&a.out, &meta, &result.images)
        .with_context(|| format!("writing images to {}", a.out.display()))?;
    if a.json {
        let obj = json!({
            "images": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "image_tokens": result.codes,
            "prompt": a.prompt,
            "seed": params.seed,
            "cfg_weight": params.cfg_weight,
            "temperature": params.temperature,
            "parallel": params.parallel,
            "model": model,
            "version": env!("CARGO_PKG_VERSION"),
            "timings": output::timings_json(&result.timings),
            "sampling": output::decode_stats_json(&result.stats),
        });
        println!("{obj}");
    } else {
        for p in &paths {
            println!("{}", p.display());
        }
    }
    Ok(())
}
