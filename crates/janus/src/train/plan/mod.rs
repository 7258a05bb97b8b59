//! `janus train plan`: what a training run costs, before it runs.
//!
//! The planner reads the recipe files (steps, global batch, data ratio per stage) and a
//! model's parameter counts, and gives per stage and in total the samples, tokens,
//! training FLOPs, GPU-hours, wall time and cost on a GPU of the table, with each stage's
//! share; where a paper reports its run's compute, the reported figure beside the
//! estimate and the MFU the report implies. `--measure` times real steps here instead.
//!
//! - [`sizes`]: parameter counts per part, from a config or the published sizes;
//! - [`flops`]: the FLOPs of one batch row of each kind of data;
//! - [`gpus`]: the GPU table (peak bf16 throughput, default price, sources);
//! - [`reported`]: the papers' compute figures;
//! - [`Plan`] and its parts (per stage, totals, the paper's figure): what [`plan`] gives;
//! - [`report`]: the human-readable tables;
//! - [`measure`]: timing real steps of the trainer and extrapolating.

pub mod flops;
pub mod gpus;
pub mod measure;
mod output;
pub mod report;
pub mod reported;
pub mod sizes;

pub use self::output::{
    ByKind, Comparison, Cost, HardwareSummary, ModelSummary, Plan, Shares, StagePlan,
};

use self::flops::{row_flops, RowShape, Trained};
use self::gpus::Gpu;
use self::reported::Reported;
use self::sizes::{ModelParams, ModelSize};
use crate::config::JanusConfig;
use crate::error::{Error, Result};
use crate::train::data::Kind;
use crate::train::parts::Part;
use crate::train::recipe::{large_model, Overrides, Recipe, TrainConfig};
use crate::weights::lora::{self, LoraSpec};

/// The default MFU of the estimate: about what Janus-Pro-7B's reported run implies for
/// the 270k stage-2 steps it ran (0.16 to 0.33 over the papers' runs, docs/training.md).
pub const DEFAULT_MFU: f64 = 0.25;
/// The default positions per batch row: a packed 4096-position sequence.
pub const DEFAULT_TOKENS_PER_SAMPLE: u64 = 4096;
/// The recipe families, each three stages of built-in recipes.
pub const FAMILIES: [&str; 2] = ["janus", "janus-pro"];

/// The model whose run is planned.
#[derive(Debug, Clone)]
pub enum ModelChoice {
    /// A published size.
    Size(ModelSize),
    /// A parsed config (a model directory's), with a label for the output.
    Config {
        /// What to call it (the directory).
        label: String,
        /// Its config.
        config: Box<JanusConfig>,
    },
}

impl ModelChoice {
    fn config(&self) -> Result<JanusConfig> {
        match self {
            ModelChoice::Size(s) => s.config(),
            ModelChoice::Config { config, .. } => Ok((**config).clone()),
        }
    }

    fn label(&self) -> String {
        match self {
            ModelChoice::Size(s) => format!("{} (published sizes)", s.label()),
            ModelChoice::Config { label, .. } => label.clone(),
        }
    }
}

/// The hardware of the estimate.
#[derive(Debug, Clone)]
pub struct Hardware {
    /// The GPU (peak throughput; its table price is the default).
    pub gpu: Gpu,
    /// GPUs the run uses (for the wall time).
    pub gpus: u64,
    /// USD per GPU-hour.
    pub price: f64,
    /// Model FLOPs utilisation assumed: achieved / peak, in (0, 1].
    pub mfu: f64,
}

/// Everything a plan is made from.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// A family (`janus`, `janus-pro`: its three stages), one built-in stage
    /// (`janus-pro/stage2`) or a recipe JSON file.
    pub recipe: String,
    /// The model.
    pub model: ModelChoice,
    /// Stages of a family to plan (`None`: all three).
    pub stages: Option<Vec<u8>>,
    /// Step counts replacing the recipes': `(stage, steps)`, `None` for every stage.
    pub steps: Vec<(Option<u8>, u64)>,
    /// Batch size, ratio and trained parts replacing the recipes' (their `steps` unused).
    pub overrides: Overrides,
    /// The user's dataset: records per kind (understanding, text, text-to-image); a stage
    /// without a `steps` entry runs until every record has been seen `epochs` times.
    pub dataset: Option<[u64; 3]>,
    /// Passes over the dataset.
    pub epochs: f64,
    /// LoRA adapters instead of the recipes' parts.
    pub lora: Option<LoraSpec>,
    /// Positions per batch row.
    pub rows: RowShape,
    /// The hardware.
    pub hardware: Hardware,
}

/// Validates the numbers of a request: one message per bad value, with the value.
fn validate(r: &PlanRequest) -> Result<()> {
    let h = &r.hardware;
    let bad = |m: String| Err(Error::InvalidInput(m));
    if h.gpus == 0 {
        return bad("--gpus must be at least 1".into());
    }
    if !(h.price.is_finite() && h.price >= 0.0) {
        return bad(format!(
            "--price must be a non-negative number of USD per GPU-hour, not {}",
            h.price
        ));
    }
    if !(h.mfu.is_finite() && h.mfu > 0.0 && h.mfu <= 1.0) {
        return bad(format!("--mfu {} is out of range (0, 1]", h.mfu));
    }
    if !(h.gpu.peak_bf16_tflops.is_finite() && h.gpu.peak_bf16_tflops > 0.0) {
        return bad(format!(
            "peak throughput {} TFLOP/s must be positive",
            h.gpu.peak_bf16_tflops
        ));
    }
    if r.rows.tokens.contains(&0) {
        return bad("--tokens-per-sample must be at least 1".into());
    }
    if !(r.epochs.is_finite() && r.epochs > 0.0) {
        return bad(format!("--epochs must be positive, not {}", r.epochs));
    }
    if r.lora.is_some() && r.overrides.train.is_some() {
        return bad(
            "--train chooses parts to fine-tune fully; with --lora only the adapters train".into(),
        );
    }
    Ok(())
}

/// The recipes a request names, in stage order.
fn recipes(r: &PlanRequest) -> Result<Vec<(Option<u8>, Recipe)>> {
    if FAMILIES.contains(&r.recipe.as_str()) {
        let stages = r.stages.clone().unwrap_or_else(|| vec![1, 2, 3]);
        if stages.is_empty() {
            return Err(Error::InvalidInput("--stages names no stage".into()));
        }
        let mut out = Vec::new();
        for s in stages {
            if !(1..=3).contains(&s) {
                return Err(Error::InvalidInput(format!(
                    "unknown stage {s}: {} has stages 1, 2 and 3",
                    r.recipe
                )));
            }
            if out.iter().any(|(n, _)| *n == Some(s)) {
                continue;
            }
            out.push((Some(s), Recipe::load(&format!("{}/stage{s}", r.recipe))?));
        }
        out.sort_by_key(|(n, _)| *n);
        return Ok(out);
    }
    if r.stages.is_some() {
        return Err(Error::InvalidInput(format!(
            "--stages picks stages of a family (janus, janus-pro); {:?} is one recipe",
            r.recipe
        )));
    }
    // A file's own error (bad JSON, unknown field) says more than "unknown recipe".
    let is_file = std::path::Path::new(&r.recipe).is_file();
    let recipe = Recipe::load(&r.recipe).map_err(|e| {
        if is_file {
            return e;
        }
        Error::InvalidInput(format!(
            "unknown recipe {:?}: use janus or janus-pro (all three stages), one stage \
             ({}), or a recipe JSON file",
            r.recipe,
            Recipe::builtin_names().join(", ")
        ))
    })?;
    let stage = recipe
        .name
        .rsplit_once("/stage")
        .and_then(|(_, n)| n.parse().ok());
    Ok(vec![(stage, recipe)])
}

/// What trains in a stage of `config`, with `lora` replacing the parts.
fn trained(config: &TrainConfig, lora: Option<&LoraSpec>, cfg: &JanusConfig) -> Trained {
    let Some(spec) = lora else {
        return Trained {
            parts: config.train.clone(),
            adapters: Vec::new(),
        };
    };
    let mut adapters: Vec<(Part, u64)> = Vec::new();
    for m in lora::modules(cfg, &spec.targets) {
        let part = Part::of(&format!("{}.weight", m.name)).unwrap_or(Part::Llm);
        let n = m.params(spec.rank) as u64;
        match adapters.iter_mut().find(|(p, _)| *p == part) {
            Some(entry) => entry.1 += n,
            None => adapters.push((part, n)),
        }
    }
    Trained {
        parts: Vec::new(),
        adapters,
    }
}

/// Steps that show every record of `dataset` at least `epochs` times at `per_step`
/// samples of each kind; an error when the ratio asks for a kind the dataset lacks.
fn dataset_steps(dataset: [u64; 3], epochs: f64, per_step: [u64; 3]) -> Result<u64> {
    let mut steps = 0f64;
    for kind in Kind::ALL {
        let (n, c) = (dataset[kind.index()], per_step[kind.index()]);
        if c == 0 {
            continue;
        }
        if n == 0 {
            return Err(Error::InvalidInput(format!(
                "the ratio asks for {c} {kind} samples per step but the dataset has none"
            )));
        }
        steps = steps.max((epochs * n as f64 / c as f64).ceil());
    }
    Ok((steps as u64).max(1))
}

/// Groups digits in threes: 360000 -> 360,000.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Plans a run.
pub fn plan(r: &PlanRequest) -> Result<Plan> {
    validate(r)?;
    let cfg = r.model.config()?;
    if let Some(l) = &r.lora {
        l.validate_for(&cfg)?;
    }
    let params = ModelParams::of(&cfg);
    let large = large_model(&cfg);
    let h = &r.hardware;
    let flops_per_gpu_hour = h.gpu.peak_flops() * h.mfu * 3600.0;
    let mut stages = Vec::new();
    let mut total = Cost::default();
    let recipes = recipes(r)?;
    let named: Vec<u8> = recipes.iter().filter_map(|(n, _)| *n).collect();
    if let Some(s) = r
        .steps
        .iter()
        .filter_map(|(s, _)| *s)
        .find(|s| !named.contains(s))
    {
        let have: Vec<String> = named.iter().map(|n| n.to_string()).collect();
        return Err(Error::InvalidInput(format!(
            "--steps names stage {s} but the plan has stage(s) {}",
            have.join(", ")
        )));
    }
    for (stage, recipe) in &recipes {
        let step_override = r
            .steps
            .iter()
            .rev()
            .find(|(s, _)| s.is_none() || *s == *stage)
            .map(|(_, n)| *n);
        let o = Overrides {
            steps: step_override,
            ..r.overrides.clone()
        };
        let mut config = TrainConfig::resolve(recipe, &o, large)?;
        let mut notes = Vec::new();
        let steps_from = if step_override.is_some() {
            "--steps".to_string()
        } else if let Some(d) = r.dataset {
            config.steps = dataset_steps(d, r.epochs, config.kind_counts())?;
            format!("dataset, {} epoch(s)", r.epochs)
        } else if large && recipe.steps_7b.is_some() {
            "recipe (steps_7b)".to_string()
        } else {
            "recipe".to_string()
        };
        if let Some(run) = reported::steps_run(&recipe.name) {
            if config.steps != run {
                let flag = match stage {
                    Some(n) => format!("--steps {n}={run}"),
                    None => format!("--steps {run}"),
                };
                notes.push(format!(
                    "{}: {} steps assumed; the paper's run stopped at {} ({flag})",
                    recipe.name,
                    thousands(config.steps),
                    thousands(run)
                ));
            }
        }
        if large && recipe.steps_7b.is_some() && step_override.is_none() {
            notes.push(format!(
                "{}: {} steps for the 7B ({} for smaller models)",
                recipe.name,
                thousands(config.steps),
                thousands(recipe.steps)
            ));
        }
        let t = trained(&config, r.lora.as_ref(), &cfg);
        let counts = config.kind_counts();
        let mut cost = Cost {
            samples: config.steps * config.batch_size,
            samples_by_kind: ByKind::from(counts.map(|c| c * config.steps)),
            ..Cost::default()
        };
        for kind in Kind::ALL {
            let rows = (counts[kind.index()] * config.steps) as f64;
            let len = r.rows.tokens[kind.index()];
            cost.tokens += counts[kind.index()] * config.steps * len;
            cost.flops += rows * row_flops(kind, len, &params, &t);
        }
        cost.gpu_hours = cost.flops / flops_per_gpu_hour;
        cost.wall_hours = cost.gpu_hours / h.gpus as f64;
        cost.cost = cost.gpu_hours * h.price;
        total.add(&cost);
        let trained_names = match &r.lora {
            Some(l) => vec![format!(
                "LoRA rank {} on {}",
                l.rank,
                l.targets
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(",")
            )],
            None => config.train.iter().map(|p| p.name().to_string()).collect(),
        };
        stages.push(StagePlan {
            recipe: recipe.name.clone(),
            steps: config.steps,
            steps_from,
            batch_size: config.batch_size,
            ratio: config.ratio,
            trained: trained_names,
            trained_parameters: t.count(&params),
            cost,
            share: Shares::default(),
            notes,
            measured: None,
            config,
        });
    }
    let frac = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for s in &mut stages {
        s.share = Shares {
            samples: frac(s.cost.samples as f64, total.samples as f64),
            flops: frac(s.cost.flops, total.flops),
            cost: frac(s.cost.cost, total.cost),
        };
    }
    let whole_run = FAMILIES.contains(&r.recipe.as_str()) && stages.len() == 3;
    let size = match &r.model {
        ModelChoice::Size(s) => Some(*s),
        ModelChoice::Config { config, .. } => ModelSize::of_config(config),
    };
    let reported = match size.and_then(|s| reported::find(&r.recipe, s)) {
        Some(rep) if whole_run => Some(compare(rep, h, total.flops)?),
        _ => None,
    };
    Ok(Plan {
        recipe: r.recipe.clone(),
        model: ModelSummary {
            label: r.model.label(),
            parameters: params.total(),
            parts: params.parts.clone(),
        },
        tokens_per_sample: r.rows,
        hardware: HardwareSummary {
            gpu: h.gpu.name.clone(),
            label: h.gpu.label.clone(),
            peak_bf16_tflops: h.gpu.peak_bf16_tflops,
            gpus: h.gpus,
            price_per_hour: h.price,
            mfu: h.mfu,
        },
        stages,
        total,
        reported,
        dataset: r.dataset.map(ByKind::from),
        measured_hours: None,
    })
}

/// The paper's figure priced at the plan's price when the plan's GPU is the paper's,
/// else at the table's A100-40GB price.
fn compare(rep: Reported, h: &Hardware, flops: f64) -> Result<Comparison> {
    let a100 = gpus::find(reported::GPU)?;
    let price = if h.gpu.name == a100.name {
        h.price
    } else {
        a100.price_per_hour
    };
    let hours = rep.gpu_hours();
    Ok(Comparison {
        reported: rep,
        gpus: rep.gpus(),
        gpu_hours: hours,
        gpu: a100.name.clone(),
        price,
        cost: hours as f64 * price,
        implied_mfu: flops / (hours as f64 * 3600.0 * a100.peak_flops()),
    })
}

#[cfg(test)]
mod tests;
