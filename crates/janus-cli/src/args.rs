//! Options shared by the subcommands and the model loading they all do.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use janus::pipeline::{DTypeChoice, Pipeline};

use crate::progress::Progress;

/// How to find and load the model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory (original deepseek or transformers layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Compute dtype: auto (f32 when it fits in half the RAM, else bf16), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

impl ModelArgs {
    /// The local directory holding the model's files.
    pub fn resolve(&self, _progress: &Progress) -> Result<PathBuf> {
        if !self.model.is_dir() {
            bail!("model directory {} does not exist", self.model.display());
        }
        Ok(self.model.clone())
    }

    /// Resolves and loads the model.
    pub fn load(&self, progress: &Progress) -> Result<Pipeline> {
        let dtype: DTypeChoice = self.dtype.parse()?;
        let dir = self.resolve(progress)?;
        let spinner = progress.spinner(&format!("loading {}", dir.display()));
        let pipe = Pipeline::load(&dir, dtype, &Device::Cpu)?;
        spinner.finish();
        Ok(pipe)
    }
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
