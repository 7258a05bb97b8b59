//! `janus convert`: a safetensors copy of a checkpoint, for memory-mapped loading.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::DType;
use clap::Args;
use janus::pipeline::human_bytes;
use janus::weights::convert::{convert_checkpoint, ConvertOptions};

use crate::args::ModelArgs;
use crate::progress::{Bar, Progress};

/// Arguments of `janus convert`.
#[derive(Args, Debug)]
#[command(
    after_help = "For convert, --dtype is the dtype to store float tensors in: \
                        keep (or auto, the default) keeps each tensor's own, f32, bf16 or f16 \
                        converts them. Integer tensors are always kept."
)]
pub struct ConvertArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// New directory for the copy (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
}

/// The storage dtype `--dtype` asks for (`None`: keep).
fn target_dtype(s: &str) -> Result<Option<DType>> {
    Ok(match s {
        "keep" | "auto" => None,
        "f32" | "float32" => Some(DType::F32),
        "bf16" | "bfloat16" => Some(DType::BF16),
        "f16" | "float16" => Some(DType::F16),
        other => {
            anyhow::bail!("unsupported dtype {other:?} for convert (use keep, f32, bf16 or f16)")
        }
    })
}

/// Runs `janus convert`.
pub fn run(a: ConvertArgs, progress: &Progress) -> Result<()> {
    let opts = ConvertOptions {
        dtype: target_dtype(&a.model.dtype)?,
        ..Default::default()
    };
    let src = a.model.resolve_without_lora(progress)?;
    let mut bar: Option<Bar> = None;
    let report = convert_checkpoint(&src, &a.out, &opts, |done, total| {
        bar.get_or_insert_with(|| progress.bytes("converting", total))
            .set(done);
    })
    .with_context(|| format!("converting {}", a.model.model_id()))?;
    if let Some(b) = bar {
        b.finish();
    }
    if !progress.is_quiet() {
        eprintln!(
            "wrote {} tensors ({}) in {} file(s), copied {}",
            report.tensors,
            human_bytes(report.bytes),
            report.weight_files.len(),
            report.copied.join(", ")
        );
    }
    println!("{}", report.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names() {
        assert_eq!(target_dtype("auto").unwrap(), None);
        assert_eq!(target_dtype("keep").unwrap(), None);
        assert_eq!(target_dtype("bf16").unwrap(), Some(DType::BF16));
        assert!(target_dtype("f64").is_err());
    }
}
