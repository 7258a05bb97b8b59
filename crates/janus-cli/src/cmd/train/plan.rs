//! `janus train plan`: what a run of the recipes costs, from the papers' figures to this
//! machine (docs/training.md, "What a run costs").

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use janus::config::JanusConfig;
use janus::train::data::{Dataset, Kind};
use janus::train::plan::flops::RowShape;
use janus::train::plan::measure::{self, MeasureOptions};
use janus::train::plan::sizes::{ModelParams, ModelSize};
use janus::train::plan::{
    gpus, plan, report, Hardware, ModelChoice, PlanRequest, DEFAULT_MFU, DEFAULT_TOKENS_PER_SAMPLE,
    FAMILIES,
};
use janus::train::recipe::{parse_ratio, Overrides};
use janus::weights::lora::{LoraSpec, Target};

use crate::progress::Progress;

/// Arguments of `janus train plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Recipe: janus or janus-pro (all three stages), one stage (janus-pro/stage2), or a
    /// recipe JSON file.
    #[arg(long, default_value = "janus-pro")]
    recipe: String,
    /// Published model size: 1b, 1.3b or 7b (default: 1.3b for janus, 7b for janus-pro).
    #[arg(long, conflicts_with = "model")]
    model_size: Option<String>,
    /// A local model directory: its config.json gives the sizes (and --measure times it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Stages of the family to plan, comma-separated (default: 1,2,3).
    #[arg(long)]
    stages: Option<String>,
    /// Steps replacing the recipes': N for every stage, or STAGE=N,... (2=270000: Janus-Pro
    /// stage 2 as the paper ran it).
    #[arg(long)]
    steps: Option<String>,
    /// Samples per step, replacing the recipes'.
    #[arg(long)]
    batch_size: Option<u64>,
    /// Samples per step by kind, understanding:text:text-to-image (e.g. 2:3:5).
    #[arg(long)]
    ratio: Option<String>,
    /// Parts to train, comma-separated, replacing the recipes'.
    #[arg(long)]
    train: Option<String>,
    /// Your dataset's records per kind, U:T:G: each stage runs until every record has been
    /// seen --epochs times (--steps wins where given).
    #[arg(long, conflicts_with = "data")]
    dataset: Option<String>,
    /// A data manifest: its records per kind set the steps (as --dataset does), and
    /// --measure times its samples.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Passes over the dataset (--dataset, --data).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    epochs: f64,
    /// Train LoRA adapters of this rank instead of the recipes' parts.
    #[arg(long, value_name = "RANK")]
    lora: Option<usize>,
    /// Layers given adapters: q,k,v,o,gate,up,down,gen_head,lm_head (default: the seven
    /// projections of every decoder layer).
    #[arg(long, requires = "lora")]
    lora_targets: Option<String>,
    /// GPU of the estimate (--list-gpus shows the table).
    #[arg(long, default_value = "a100-40gb")]
    gpu: String,
    /// Peak dense bf16 TFLOP/s replacing the table's (for a GPU the table lacks).
    #[arg(long, allow_negative_numbers = true)]
    peak_tflops: Option<f64>,
    /// GPUs the run uses (for the wall time).
    #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
    gpus: u64,
    /// USD per GPU-hour (default: the table's price for --gpu).
    #[arg(long, allow_negative_numbers = true)]
    price: Option<f64>,
    /// Model FLOPs utilisation assumed, in (0, 1].
    #[arg(long, default_value_t = DEFAULT_MFU, allow_negative_numbers = true)]
    mfu: f64,
    /// Positions per batch row: N for every kind, U:T:G per kind, or `natural` (one
    /// unpacked sample per row).
    #[arg(long, default_value_t = DEFAULT_TOKENS_PER_SAMPLE.to_string())]
    tokens_per_sample: String,
    /// Time a few real training steps of each stage on this machine (needs --model) and
    /// extrapolate each stage's time here.
    #[arg(long)]
    measure: bool,
    /// Steps timed per stage (each run once untimed first).
    #[arg(long, default_value_t = 2, requires = "measure")]
    measure_steps: u64,
    /// Samples per timed step (default: the smallest batch that keeps the ratio).
    #[arg(long, requires = "measure")]
    measure_batch: Option<u64>,
    /// Compute dtype of the timed steps.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"], requires = "measure")]
    dtype: String,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Print the GPU table with its sources, and nothing else.
    #[arg(long)]
    list_gpus: bool,
}

/// Runs `janus train plan`.
pub fn run(a: PlanArgs, progress: &Progress) -> Result<()> {
    if a.list_gpus {
        return list_gpus(a.json);
    }
    let (model, cfg) = model(&a)?;
    let mut gpu = gpus::find(&a.gpu)?;
    if let Some(p) = a.peak_tflops {
        gpu.peak_bf16_tflops = p;
        gpu.label = format!("{} at {p} TFLOP/s (--peak-tflops)", gpu.label);
    }
    let lora = match a.lora {
        Some(rank) => Some(LoraSpec {
            rank,
            alpha: rank as f64,
            targets: match &a.lora_targets {
                Some(t) => Target::parse_list(t)?,
                None => Target::DEFAULT.to_vec(),
            },
        }),
        None => None,
    };
    let dataset = match (&a.dataset, &a.data) {
        (Some(d), _) => Some(parse_counts(d)?),
        (None, Some(manifest)) => {
            let data = Dataset::load(manifest)?;
            Some(Kind::ALL.map(|k| data.of(k).len() as u64))
        }
        (None, None) => None,
    };
    let request = PlanRequest {
        recipe: a.recipe.clone(),
        model,
        stages: a.stages.as_deref().map(parse_stages).transpose()?,
        steps: a
            .steps
            .as_deref()
            .map(parse_steps)
            .transpose()?
            .unwrap_or_default(),
        overrides: Overrides {
            batch_size: a.batch_size,
            ratio: a.ratio.as_deref().map(parse_ratio).transpose()?,
            train: a.train.clone(),
            ..Default::default()
        },
        dataset,
        epochs: a.epochs,
        lora: lora.clone(),
        rows: parse_rows(&a.tokens_per_sample, &cfg)?,
        hardware: Hardware {
            price: a.price.unwrap_or(gpu.price_per_hour),
            gpu,
            gpus: a.gpus,
            mfu: a.mfu,
        },
    };
    let mut p = plan(&request)?;
    if a.measure {
        let Some(dir) = &a.model else {
            bail!("--measure needs --model DIR: a model directory to time on this machine");
        };
        janus::kernels::tune_allocator_for_training();
        let opts = MeasureOptions {
            model_dir: dir.clone(),
            data: a.data.clone(),
            steps: a.measure_steps,
            batch_size: a.measure_batch,
            dtype: a.dtype.clone(),
            lora,
            memory_limit: janus::pipeline::available_memory_bytes(),
        };
        measure::measure(&mut p, &opts, |stage| {
            if !progress.is_quiet() {
                eprintln!("measuring {stage} on this machine");
            }
        })?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", report::render(&p));
    }
    Ok(())
}

/// The model to plan: a directory's config, a published size, or the family's default.
fn model(a: &PlanArgs) -> Result<(ModelChoice, JanusConfig)> {
    if let Some(dir) = &a.model {
        if !dir.is_dir() {
            bail!("{}: model directory not found", dir.display());
        }
        let file = dir.join("config.json");
        if !file.is_file() {
            bail!("{}: no config.json in the model directory", dir.display());
        }
        let config = JanusConfig::from_file(&file)?;
        let choice = ModelChoice::Config {
            label: dir.display().to_string(),
            config: Box::new(config.clone()),
        };
        return Ok((choice, config));
    }
    let size = match &a.model_size {
        Some(s) => ModelSize::parse(s)?,
        None if a.recipe == "janus" || a.recipe.starts_with("janus/") => ModelSize::B1_3,
        None if FAMILIES.contains(&a.recipe.as_str()) || a.recipe.starts_with("janus-pro/") => {
            ModelSize::B7
        }
        None => ModelSize::B1,
    };
    Ok((ModelChoice::Size(size), size.config()?))
}

/// `1,3` -> [1, 3].
fn parse_stages(s: &str) -> Result<Vec<u8>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<u8>()
                .with_context(|| format!("--stages {s:?}: stages are 1, 2 and 3, comma-separated"))
        })
        .collect()
}

/// `270000` (every stage) or `2=270000,3=40000`.
fn parse_steps(s: &str) -> Result<Vec<(Option<u8>, u64)>> {
    let bad = || format!("--steps {s:?}: use N (every stage) or STAGE=N,... (e.g. 2=270000)");
    s.split(',')
        .map(|item| match item.split_once('=') {
            Some((stage, n)) => Ok((
                Some(stage.trim().parse::<u8>().with_context(bad)?),
                n.trim().parse::<u64>().with_context(bad)?,
            )),
            None => Ok((None, item.trim().parse::<u64>().with_context(bad)?)),
        })
        .collect()
}

/// `U:T:G` record counts.
fn parse_counts(s: &str) -> Result<[u64; 3]> {
    let parts: Vec<u64> = s
        .split(':')
        .map(|p| p.trim().parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .ok()
        .filter(|v: &Vec<u64>| v.len() == 3)
        .with_context(|| {
            format!("--dataset {s:?}: give the records per kind as U:T:G (e.g. 5000:0:20000)")
        })?;
    Ok([parts[0], parts[1], parts[2]])
}

/// `4096`, `704:512:640` or `natural`.
fn parse_rows(s: &str, cfg: &JanusConfig) -> Result<RowShape> {
    if s == "natural" {
        return Ok(RowShape::natural(&ModelParams::of(cfg)));
    }
    let bad = || {
        format!(
            "--tokens-per-sample {s:?}: give N, U:T:G (positions per row of each kind) or \
             natural"
        )
    };
    let v: Vec<u64> = s
        .split(':')
        .map(|p| p.trim().parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .ok()
        .with_context(bad)?;
    match v.as_slice() {
        [n] => Ok(RowShape::uniform(*n)),
        [u, t, g] => Ok(RowShape {
            tokens: [*u, *t, *g],
        }),
        _ => bail!(bad()),
    }
}

fn list_gpus(json: bool) -> Result<()> {
    let table = gpus::all()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&table)?);
        return Ok(());
    }
    for g in table {
        println!(
            "{:<10} {:>6} TFLOP/s bf16  ${:.2}/GPU-hour  {}",
            g.name, g.peak_bf16_tflops, g.price_per_hour, g.label
        );
        println!("           peak:  {}", g.peak_source);
        println!("           price: {}", g.price_source);
    }
    Ok(())
}
