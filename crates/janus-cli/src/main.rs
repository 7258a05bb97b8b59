//! `janus`: chat about images and generate images with DeepSeek Janus / Janus-Pro.

mod output;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use janus::engine::{GenerateParams, SamplingParams};
use janus::pipeline::{DTypeChoice, Pipeline, UnderstandOptions};
use janus::processor::{ImageInput, Message};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "janus",
    version,
    about = "DeepSeek Janus / Janus-Pro: understand and generate images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer a question about zero or more images.
    Understand(UnderstandArgs),
    /// Generate images from a text prompt.
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
struct ModelArgs {
    /// Model directory (original deepseek or transformers layout).
    #[arg(long)]
    model: PathBuf,
    /// Compute dtype: auto (f32 when it fits in half the RAM, else bf16), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Print one JSON object on stdout instead of plain text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
struct UnderstandArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The user's message. Without `<image_placeholder>` markers, one marker and a newline
    /// per image go in front.
    #[arg(long)]
    prompt: String,
    /// An image to attach (repeatable; in placeholder order).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
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
    /// Directory for the PNGs (created if missing).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JANUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Understand(a) => understand(a),
        Command::Generate(a) => generate(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, without a backtrace.
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ModelArgs) -> Result<Pipeline> {
    let dtype: DTypeChoice = args.dtype.parse()?;
    if !args.model.is_dir() {
        bail!("model directory {} does not exist", args.model.display());
    }
    Ok(Pipeline::load(&args.model, dtype, &Device::Cpu)?)
}

fn understand(a: UnderstandArgs) -> Result<()> {
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
    };
    sampling.validate()?;
    for img in &a.images {
        if !img.is_file() {
            bail!("image {} does not exist", img.display());
        }
    }
    let pipe = load(&a.model)?;
    let message =
        Message::user(a.prompt.clone()).with_images(a.images.iter().cloned().map(ImageInput::Path));
    let opts = UnderstandOptions {
        sampling,
        max_new_tokens: a.max_new_tokens,
        ..Default::default()
    };
    let json = a.model.json;
    let mut stdout = std::io::stdout();
    let result = pipe.understand(&[message], &opts, |piece| {
        if !json {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
        ControlFlow::Continue(())
    })?;
    if json {
        let obj = json!({
            "text": result.text,
            "token_ids": result.token_ids,
            "prompt_tokens": result.prompt_tokens,
            "finish_reason": result.finish.as_str(),
            "timings": output::timings_json(&result.timings),
        });
        println!("{obj}");
    } else {
        println!();
    }
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    let params = GenerateParams {
        parallel: a.parallel,
        cfg_weight: a.cfg_weight,
        temperature: a.temperature,
        seed: a.seed.unwrap_or_else(output::random_seed),
    };
    params.validate()?;
    output::prepare_out_dir(&a.out)?;
    let pipe = load(&a.model)?;
    let total = pipe.config().gen_image_tokens();
    let quiet = a.model.json;
    let result = pipe.generate(&a.prompt, &params, |done, _| {
        if !quiet && (done % 48 == 0 || done == total) {
            eprintln!("step {done}/{total}");
        }
        ControlFlow::Continue(())
    })?;
    let paths = output::write_pngs(&a.out, &a.prompt, params.seed, &result.images)
        .with_context(|| format!("writing images to {}", a.out.display()))?;
    if a.model.json {
        let obj = json!({
            "images": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "image_tokens": result.codes,
            "prompt": a.prompt,
            "seed": params.seed,
            "cfg_weight": params.cfg_weight,
            "temperature": params.temperature,
            "parallel": params.parallel,
            "timings": output::timings_json(&result.timings),
        });
        println!("{obj}");
    } else {
        for p in &paths {
            println!("{}", p.display());
        }
    }
    Ok(())
}
