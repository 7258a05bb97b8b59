//! `janus data check|encode`: validate a training manifest, and VQ-encode its
//! text-to-image images into the code cache ahead of training.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::DType;
use clap::{Args, Subcommand};
use janus::train::check::{check, KindReport};
use janus::train::codes::{vq_fingerprint, CodeCache};
use janus::train::data::{Dataset, Kind, Record};

use crate::args::{DeviceArgs, ModelArgs};
use crate::progress::Progress;

/// The data subcommands.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Check a manifest: every line parses, every image decodes, lengths fit the context.
    Check(CheckArgs),
    /// VQ-encode the text-to-image images, in f32, into the code cache of f32 training runs.
    Encode(EncodeArgs),
}

/// Arguments of `janus data check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The manifest (JSON naming JSONL files per kind).
    manifest: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `janus data encode`.
#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// The manifest.
    manifest: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Cache directory (default: .janus-cache next to the manifest, as `janus train`).
    #[arg(long)]
    vq_cache: Option<PathBuf>,
}

/// Runs a `janus data` subcommand.
pub fn run(c: DataCommand, progress: &Progress) -> Result<()> {
    match c {
        DataCommand::Check(a) => run_check(a, progress),
        DataCommand::Encode(a) => run_encode(a, progress),
    }
}

fn run_check(a: CheckArgs, progress: &Progress) -> Result<()> {
    let dir = a.model.resolve_without_lora(progress)?;
    let report = check(&a.manifest, &dir)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let line = |name: &str, k: &KindReport| {
            println!(
                "{name:<14} {:>7} samples  {:>9} targets  length {}..{} (mean {:.1})",
                k.samples, k.targets, k.min_len, k.max_len, k.mean_len
            )
        };
        for kind in Kind::ALL {
            line(kind.key(), &report.kinds[kind.index()]);
        }
        if let Some(k) = &report.t2i_after {
            line("t2i_after", k);
        }
        for p in &report.problems {
            println!("problem: {p}");
        }
        println!("{} problem(s)", report.problems.len());
    }
    if !report.problems.is_empty() {
        bail!(
            "{}: {} bad sample(s) (training skips them with a warning)",
            a.manifest.display(),
            report.problems.len()
        );
    }
    Ok(())
}

fn run_encode(a: EncodeArgs, progress: &Progress) -> Result<()> {
    let dir = a.model.resolve_without_lora(progress)?;
    let data = Dataset::load(&a.manifest)?;
    let mut images: Vec<PathBuf> = data
        .of(Kind::T2i)
        .iter()
        .chain(data.t2i_after.iter().flat_map(|(_, r)| r.iter()))
        .filter_map(|l| match &l.record {
            Record::T2i { image, .. } => Some(image.clone()),
            _ => None,
        })
        .collect();
    images.sort();
    images.dedup();
    let device = a.device.device.open()?;
    let spinner = progress.spinner(&format!(
        "loading {} on {}",
        dir.display(),
        janus::device::name(&device)
    ));
    let (cfg, store) = janus::weights::load_model_dir(&dir)?;
    let vb = janus::weights::var_builder(&store, cfg.layout, DType::F32, &device);
    let model = janus::model::Janus::new(&cfg, vb)?;
    spinner.finish();
    let cache_dir = a
        .vq_cache
        .unwrap_or_else(|| janus::train::trainer::default_cache_dir(&a.manifest));
    // Encodes in f32, into the cache `janus train --dtype f32` (the default) reads.
    let fp = format!("{}-f32", vq_fingerprint(&cfg, &store)?);
    let mut cache = CodeCache::new(Some(&cache_dir), &fp, cfg.gen_image_size())?;
    let mut bar = progress.steps("encoding", images.len() as u64);
    let (mut new, mut failed) = (0, 0);
    for (i, img) in images.iter().enumerate() {
        let known = cache.contains(img);
        match cache.codes(&model, img) {
            Ok(_) => new += usize::from(!known),
            Err(e) => {
                failed += 1;
                eprintln!("warning: {e}");
            }
        }
        bar.set(i as u64 + 1);
    }
    drop(bar);
    println!(
        "{} images: {new} encoded, {} already cached, {failed} failed; cache {}",
        images.len(),
        images.len() - new - failed,
        cache_dir.join(format!("vq-{fp}")).display()
    );
    if failed > 0 {
        bail!("{failed} image(s) could not be encoded");
    }
    Ok(())
}
