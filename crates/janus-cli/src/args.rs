//! Options shared by the subcommands and the model loading they all do.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use janus::device::DeviceChoice;
use janus::engine::{Accept, Speculative, Window};
use janus::hub::{self, FileProgress, HubOptions, ModelRef};
use janus::kernels::quant::QuantFormat;
use janus::pipeline::{DTypeChoice, LoadOptions, Pipeline};

use crate::progress::{Bar, Progress};

/// How to find and load the model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a local directory (original deepseek or transformers layout) or a Hugging Face
    /// repo id, downloaded into the Hugging Face cache (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT,
    /// HF_TOKEN apply).
    #[arg(long, default_value = hub::DEFAULT_MODEL)]
    pub model: String,
    /// Branch, tag or commit of a hub model.
    #[arg(long, default_value = hub::DEFAULT_REVISION)]
    pub revision: String,
    /// Use only the Hugging Face cache, without network access (as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Compute dtype: auto (bf16 on CPUs with AVX2 or AVX-512 BF16; elsewhere f32 when it
    /// fits in half the RAM, else bf16), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Weight-only quantisation of the LLM and generation head, converted at load: q8
    /// (8-bit blocks, ~half the memory of bf16) or q4 (4-bit, ~a quarter); none keeps
    /// the checkpoint's precision. CPU only.
    #[arg(long, default_value = "none", value_parser = ["none", "q8", "q4"])]
    pub quant: String,
    /// LoRA adapters to apply (a directory with peft's adapter_config.json and
    /// adapter_model.safetensors, such as a `janus train --lora` checkpoint), folded into
    /// the weights at load.
    #[arg(long, value_name = "DIR")]
    pub lora: Option<PathBuf>,
}

impl ModelArgs {
    /// The local directory holding the model's files, downloading a hub model's missing
    /// files with one progress bar per file.
    pub fn resolve(&self, progress: &Progress) -> Result<PathBuf> {
        match ModelRef::parse(&self.model)? {
            ModelRef::Local(dir) => {
                if !dir.is_dir() {
                    bail!("model directory {} does not exist", dir.display());
                }
                Ok(dir)
            }
            ModelRef::Hub(repo) => {
                let mut opts = HubOptions::from_env();
                opts.offline |= self.offline;
                let mut bar: Option<Bar> = None;
                let mut on_progress = |p: FileProgress<'_>| match p {
                    FileProgress::Started { file, total } => {
                        bar = Some(progress.bytes(&format!("downloading {file}"), total));
                    }
                    FileProgress::Advanced { downloaded, .. } => {
                        if let Some(b) = bar.as_mut() {
                            b.set(downloaded);
                        }
                    }
                    FileProgress::Finished { .. } => {
                        if let Some(b) = bar.take() {
                            b.finish();
                        }
                    }
                };
                Ok(hub::resolve(
                    &repo,
                    &self.revision,
                    &opts,
                    &mut on_progress,
                )?)
            }
        }
    }

    /// [`Self::resolve`] for the commands that read the checkpoint as it is (`info`,
    /// `convert`, `data`): `--lora` is refused there rather than ignored.
    pub fn resolve_without_lora(&self, progress: &Progress) -> Result<PathBuf> {
        if let Some(l) = &self.lora {
            bail!(
                "--lora {} applies to understand, generate, chat and serve; to write a model \
                 with the adapters folded in, use janus train merge",
                l.display()
            );
        }
        self.resolve(progress)
    }

    /// Names the model for records: the local path (absolute when it exists), or
    /// `owner/name@revision` for a hub model.
    pub fn model_id(&self) -> String {
        match ModelRef::parse(&self.model) {
            Ok(ModelRef::Hub(repo)) => format!("{repo}@{}", self.revision),
            Ok(ModelRef::Local(dir)) => std::fs::canonicalize(&dir)
                .unwrap_or(dir)
                .display()
                .to_string(),
            Err(_) => self.model.clone(),
        }
    }

    /// The `--quant` choice (`None` for none).
    pub fn quant_format(&self) -> Result<Option<QuantFormat>> {
        match self.quant.as_str() {
            "none" => Ok(None),
            q => match q.parse::<QuantFormat>() {
                Ok(f) => Ok(Some(f)),
                Err(_) => bail!("unsupported --quant {q:?} (use none, q8 or q4)"),
            },
        }
    }

    /// Resolves and loads the model onto the device `device` names.
    pub fn load(&self, progress: &Progress, device: &DeviceArgs) -> Result<Pipeline> {
        let dtype: DTypeChoice = self.dtype.parse()?;
        let quant = self.quant_format()?;
        // The quantised formats are CPU kernels.
        let device = device.device.open_unless_cpu_only(quant.is_some())?;
        let dir = self.resolve(progress)?;
        let spinner = progress.spinner(&format!(
            "loading {} on {}",
            self.model_id(),
            janus::device::name(&device)
        ));
        let opts = LoadOptions {
            dtype,
            quant,
            lora: self.lora.clone(),
            device,
        };
        let pipe = Pipeline::load_with(&dir, &opts)?;
        spinner.finish();
        // After loading, whose large temporaries should go back to the system at once.
        janus::kernels::tune_allocator();
        Ok(pipe)
    }
}

/// Where the model runs, for the commands that run it.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// cpu, cuda (GPU 0), cuda:N, or auto: the GPU when this janus was built with CUDA
    /// (`--features cuda`) and one is present, else the CPU (also with --quant, which
    /// runs on the CPU only).
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: DeviceChoice,
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: janus::Error| e.to_string())
}

/// Applies `--threads` to every thread pool the tensor code uses.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    // candle's matmul (gemm) reads RAYON_NUM_THREADS; the rest uses rayon's global pool.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    Ok(())
}

/// Speculative decoding of image codes, shared by `generate`, `serve` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct SpeculativeArgs {
    /// Image codes per forward pass (speculative Jacobi decoding): 1 is plain decoding,
    /// up to 64, or `auto` (picked from this machine's measured pass costs).
    #[arg(long, default_value = "1", value_parser = parse_window)]
    speculative: Window,
    /// How drafted codes are checked: `exact` gives the plain image bit for bit, `sjd`
    /// the paper's probabilistic test (the plain distribution, another image).
    #[arg(long, default_value = "exact", value_parser = parse_accept)]
    accept: Accept,
}

impl SpeculativeArgs {
    /// The engine's settings.
    pub fn get(&self) -> Speculative {
        Speculative {
            window: self.speculative,
            accept: self.accept,
        }
    }
}

fn parse_window(s: &str) -> Result<Window, String> {
    s.parse().map_err(|e: janus::Error| e.to_string())
}

fn parse_accept(s: &str) -> Result<Accept, String> {
    s.parse().map_err(|e: janus::Error| e.to_string())
}
