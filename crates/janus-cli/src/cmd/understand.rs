//! `janus understand`: images plus a question in, the answer out.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use janus::engine::SamplingParams;
use janus::pipeline::UnderstandOptions;
use janus::processor::{ImageInput, Message};
use serde_json::json;

use crate::args::{DeviceArgs, ModelArgs};
use crate::output;
use crate::progress::Progress;

/// Arguments of `janus understand`.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct UnderstandArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
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
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object on stdout instead of streaming the answer.
    #[arg(long)]
    json: bool,
}

/// Text sampling options shared by `understand` and `chat`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    /// Validated sampling parameters.
    pub fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
        };
        p.validate()?;
        Ok(p)
    }
}

/// Runs `janus understand`.
pub fn run(a: UnderstandArgs, progress: &Progress) -> Result<()> {
    let sampling = a.sampling.params()?;
    for img in &a.images {
        if !img.is_file() {
            bail!("image {} does not exist", img.display());
        }
    }
    let pipe = a.model.load(progress, &a.device)?;
    let message =
        Message::user(a.prompt.clone()).with_images(a.images.iter().cloned().map(ImageInput::Path));
    let opts = UnderstandOptions {
        sampling,
        max_new_tokens: a.max_new_tokens,
        ..Default::default()
    };
    let json = a.json;
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
