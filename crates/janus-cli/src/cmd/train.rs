//! `janus train`: one stage of the Janus / Janus-Pro recipes, resumable; `janus train plot`
//! draws a run's loss curves; `janus train plan` says what a run costs before it runs.

mod plan;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use janus::dist::{Comm, Launch};
use janus::train::recipe::{large_model, parse_ratio, Overrides, Recipe, Schedule, TrainConfig};
use janus::train::{EvalMetrics, RunEnd, RunSpec, StepMetrics, Trainer};
use janus::weights::lora::{LoraSpec, Target};

use crate::args::{DeviceArgs, ModelArgs};
use crate::progress::Progress;

/// Arguments of `janus train`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrainArgs {
    #[command(subcommand)]
    action: Option<TrainAction>,
    #[command(flatten)]
    run: RunArgs,
}

/// `janus train` subcommands.
#[derive(Subcommand, Debug)]
enum TrainAction {
    /// Draw a run's loss, learning-rate and gradient-norm curves to a PNG.
    Plot(PlotArgs),
    /// What a run costs: samples, tokens, FLOPs, GPU-hours, wall time and price per stage,
    /// beside the papers' reported compute (or timed on this machine with --measure).
    Plan(Box<plan::PlanArgs>),
    /// Fold LoRA adapters into their base model and write a plain model directory.
    Merge(MergeArgs),
}

/// Arguments of `janus train merge`.
#[derive(Args, Debug)]
struct MergeArgs {
    /// A LoRA run directory (its latest checkpoint is merged) or one adapter directory
    /// (a step-N checkpoint of a LoRA run, or any peft LoRA adapter of Janus).
    path: PathBuf,
    /// The model directory to write (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// The base model (default: the run's model, or the adapter's base_model_name_or_path).
    #[arg(long)]
    base: Option<PathBuf>,
}

/// Arguments of `janus train plot`.
#[derive(Args, Debug)]
struct PlotArgs {
    /// The run directory (holding metrics.jsonl).
    run_dir: PathBuf,
    /// The PNG to write (default: RUN_DIR/loss.png).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1000)]
    width: u32,
}

/// Arguments of a training run.
#[derive(Args, Debug)]
struct RunArgs {
    /// Recipe: janus/stage1..3, janus-pro/stage1..3, or a recipe JSON file.
    #[arg(long)]
    recipe: Option<String>,
    /// Model to start from: a local directory or a hub repo id.
    #[arg(long)]
    model: Option<String>,
    /// Branch, tag or commit of a hub model.
    #[arg(long, default_value = janus::hub::DEFAULT_REVISION)]
    revision: String,
    /// Use only the Hugging Face cache.
    #[arg(long)]
    offline: bool,
    /// Data manifest (JSON naming JSONL files per kind).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory to create (checkpoints, metrics.jsonl, run.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, conflicts_with_all = ["recipe", "data", "out"])]
    resume: Option<PathBuf>,
    /// Held-out manifest, evaluated every --eval-every steps.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Directory of the VQ code cache (default: .janus-cache next to the manifest).
    #[arg(long)]
    vq_cache: Option<PathBuf>,
    /// Compute dtype: f32 (the reference) or bf16 (f32 master weights and moments).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    dtype: String,
    /// Optimiser steps (total; with --resume, a new total).
    #[arg(long)]
    steps: Option<u64>,
    /// Samples per optimiser step.
    #[arg(long)]
    batch_size: Option<u64>,
    /// Samples per forward/backward pass (gradients accumulate to the batch).
    #[arg(long)]
    micro_batch_size: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Learning-rate shape after warm-up: constant or cosine.
    #[arg(long)]
    schedule: Option<String>,
    /// AdamW weight decay (matrices and embeddings only).
    #[arg(long)]
    weight_decay: Option<f64>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Samples per step by kind, understanding:text:text-to-image (e.g. 2:3:5).
    #[arg(long)]
    ratio: Option<String>,
    /// Parts to train, comma-separated: vision, aligner, gen_embed, gen_aligner, gen_head,
    /// llm, embed_tokens, lm_head (everything else is frozen; the VQ always is).
    #[arg(long)]
    train: Option<String>,
    /// Probability of replacing a caption with pads (classifier-free guidance).
    #[arg(long)]
    cfg_drop: Option<f64>,
    /// Probability of cutting a caption to its first sentence.
    #[arg(long)]
    first_sentence: Option<f64>,
    /// Seed of the data order and caption drops.
    #[arg(long)]
    seed: Option<u64>,
    /// Save a checkpoint every N steps (always at the end and on Ctrl-C).
    #[arg(long)]
    save_every: Option<u64>,
    /// Evaluate on --eval every N steps.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Take each kind's samples in file order (step k of batch B uses lines kB..kB+B-1).
    #[arg(long)]
    no_shuffle: bool,
    /// Train LoRA adapters of this rank instead of the recipe's parts: every weight of the
    /// model stays frozen and checkpoints hold only the adapters, in peft's format.
    #[arg(long, value_name = "RANK")]
    lora: Option<usize>,
    /// LoRA alpha: updates are scaled by alpha / rank (default: the rank, a scale of 1).
    #[arg(long, requires = "lora")]
    lora_alpha: Option<f64>,
    /// Layers given adapters, comma-separated: q,k,v,o,gate,up,down,gen_head,lm_head
    /// (default: q,k,v,o,gate,up,down of every decoder layer).
    #[arg(long, requires = "lora")]
    lora_targets: Option<String>,
    /// With --lora: hold the frozen LLM and generation-head weights quantised, q8 or q4
    /// (QLoRA-style: a quarter to a sixth of the f32 memory; products through the
    /// quantised kernels).
    #[arg(long, requires = "lora", value_parser = ["none", "q8", "q4"])]
    quant: Option<String>,
    /// Recompute each decoder layer's activations in the backward pass instead of keeping
    /// them (less memory, about a third more compute).
    #[arg(long)]
    checkpoint_layers: bool,
    /// Memory the run may use, in GiB (default: the memory available now); a run estimated
    /// to need more is refused before it starts.
    #[arg(long, value_name = "GIB")]
    memory_limit: Option<f64>,
}

/// Runs `janus train`.
pub fn run(a: TrainArgs, progress: &Progress) -> Result<()> {
    match a.action {
        Some(TrainAction::Plot(p)) => plot(p),
        Some(TrainAction::Plan(p)) => plan::run(*p, progress),
        Some(TrainAction::Merge(m)) => merge(m, progress),
        None => train(a.run, progress),
    }
}

fn plot(p: PlotArgs) -> Result<()> {
    let metrics = p.run_dir.join(janus::train::metrics::FILE);
    let text = std::fs::read_to_string(&metrics)
        .with_context(|| format!("{}: no metrics to plot", metrics.display()))?;
    let charts = janus::train::plot::charts_from_metrics(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", metrics.display()))?;
    let out = p.out.unwrap_or_else(|| p.run_dir.join("loss.png"));
    janus::train::plot::write_png(&charts, p.width, 360, &out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}

fn merge(m: MergeArgs, progress: &Progress) -> Result<()> {
    let (adapter_dir, base) = if m.path.join(RunSpec::FILE).is_file() {
        let spec = RunSpec::read(&m.path)?;
        if spec.lora.is_none() {
            bail!(
                "{} is a full fine-tuning run: its checkpoints are model directories already",
                m.path.display()
            );
        }
        let ckpts = janus::train::checkpoint::list(&m.path)?;
        let Some((_, dir)) = ckpts.last() else {
            bail!("{} has no checkpoint yet", m.path.display());
        };
        (dir.clone(), m.base.clone().unwrap_or(spec.model))
    } else {
        let base = janus::weights::lora::base_of(&m.path, m.base.as_deref())?;
        (m.path.clone(), base)
    };
    let spinner = progress.spinner(&format!(
        "merging {} into {}",
        adapter_dir.display(),
        base.display()
    ));
    janus::train::checkpoint::merge_adapters(&adapter_dir, &base, &m.out)?;
    spinner.finish();
    println!("{}", m.out.display());
    Ok(())
}

/// The memory check before a run loads anything (the estimate goes to stderr); ranks on
/// one machine share its memory, and all of them measure it before any of them loads.
fn check_memory(
    a: &RunArgs,
    spec: &RunSpec,
    device: &Device,
    launch: &Launch,
    comm: &Comm,
) -> Result<()> {
    let (cfg, store) = janus::weights::load_model_dir(&spec.model)?;
    let settings = janus::train::memory::PlanSettings::for_run(spec)?;
    let limit = match a.memory_limit {
        Some(g) if g.is_finite() && g > 0.0 => (g * (1u64 << 30) as f64) as u64,
        Some(g) => bail!("--memory-limit must be a positive number of GiB, not {g}"),
        // On a GPU, its free memory (the host's says nothing about it).
        None if !device.is_cpu() => janus::device::gpu_free_memory(device).unwrap_or(u64::MAX),
        // Each rank on this machine holds a whole copy of the model and optimiser.
        None => {
            janus::pipeline::available_memory_bytes().unwrap_or(u64::MAX) / launch.local_size as u64
        }
    };
    let plan = janus::train::memory::check_fits(&cfg, &store, &settings, limit)?;
    if launch.rank == 0 {
        eprintln!("memory estimate: {plan}");
    }
    comm.barrier()?;
    Ok(())
}

/// Set by Ctrl-C or SIGUSR1: save a checkpoint after the current step and return.
static STOP: AtomicBool = AtomicBool::new(false);

/// SIGUSR1 asks for the same stop as Ctrl-C. `mpirun` passes SIGUSR1 on to every rank
/// (its SIGINT and SIGTERM kill the ranks), and `scancel --signal=USR1` is how Slurm
/// warns a job before its end, so a cluster job can stop with a checkpoint.
fn stop_on_sigusr1() {
    #[cfg(unix)]
    {
        extern "C" fn on_usr1(_: libc::c_int) {
            // Only an atomic store: async-signal-safe.
            STOP.store(true, Ordering::SeqCst);
        }
        // SAFETY: the handler only stores to an atomic; SIGUSR1 has no other user here.
        unsafe {
            libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        }
    }
}

/// A run in this process, or as one rank of a job `mpirun` / `srun` started.
fn train(a: RunArgs, progress: &Progress) -> Result<()> {
    let launch = Launch::from_env();
    let comm = janus::dist::init(&launch)?;
    let result = train_on(a, progress, &launch, comm.clone());
    if let Err(e) = &result {
        if comm.size() > 1 {
            // The other ranks may be waiting for this one in a sum: stop the whole job.
            eprintln!("error: rank {} of {}: {e:#}", comm.rank(), comm.size());
            comm.abort(1);
        }
    }
    result
}

fn train_on(a: RunArgs, progress: &Progress, launch: &Launch, comm: Comm) -> Result<()> {
    // Several ranks and quantised weights run on the CPU only.
    let quantised = a.quant.as_deref().is_some_and(|q| q != "none");
    let device = a
        .device
        .device
        .open_unless_cpu_only(comm.size() > 1 || quantised)?;
    if comm.size() > 1 && !device.is_cpu() {
        // The gradient sums read CPU tensors; NCCL is not wired into the trainer yet.
        bail!(
            "data-parallel training runs on CPUs only for now: run one rank, or add \
             --device cpu"
        );
    }
    janus::kernels::tune_allocator_for_training();
    let mut trainer = match &a.resume {
        Some(run_dir) => resume(&a, run_dir, progress, &device, launch, comm)?,
        None => start(&a, progress, &device, launch, comm)?,
    };
    let cfg = trainer.config().clone();
    if !progress.is_quiet() {
        eprintln!(
            "training {} of {} tensors ({} parameters) in {}: steps {}..{} of {}, batch {} \
             (micro {}){}, ratio {}:{}:{}, lr {} {:?} warm-up {}",
            parts_list(&trainer.spec),
            trainer.model.params.len(),
            trainer.model.num_trainable(),
            trainer.spec.dtype,
            trainer.state.step + 1,
            cfg.steps,
            cfg.steps,
            cfg.batch_size,
            cfg.micro_batch_size,
            match trainer.comm().size() {
                1 => String::new(),
                n => format!(" over {n} ranks ({})", launch.launcher),
            },
            cfg.ratio[0],
            cfg.ratio[1],
            cfg.ratio[2],
            cfg.lr,
            cfg.schedule,
            cfg.warmup_steps,
        );
    }
    // Every rank read the same manifest: rank 0 speaks for all.
    let speaks = trainer.writes();
    if speaks {
        for bad in trainer.bad_lines() {
            eprintln!("warning: skipped bad sample {bad}");
        }
    }

    let presses = Arc::new(AtomicUsize::new(0));
    {
        let presses = presses.clone();
        // A second Ctrl-C leaves at once; the last checkpoint is intact either way.
        let _ = ctrlc::set_handler(move || {
            if presses.fetch_add(1, Ordering::SeqCst) > 0 {
                std::process::exit(130);
            }
            if speaks {
                eprintln!(
                    "\nstopping after this step (saving a checkpoint; Ctrl-C again to quit now)"
                );
            }
            STOP.store(true, Ordering::SeqCst);
        });
    }
    stop_on_sigusr1();

    let mut bar = progress.steps("training", cfg.steps);
    bar.set(trainer.state.step);
    let log_every = (cfg.steps / 100).max(1);
    let lines = !progress.is_quiet() && !progress.is_terminal();
    let mut tokens_total = 0u64;
    let mut seconds_total = 0f64;
    let mut done_here = 0u64;
    let steps_total = cfg.steps;
    let end = trainer.run(
        &STOP,
        |m: &StepMetrics| {
            tokens_total += m.tokens;
            seconds_total += m.seconds;
            done_here += 1;
            let left = (steps_total - m.step) as f64 * seconds_total / done_here as f64;
            let msg = step_line(m, tokens_total as f64 / seconds_total.max(1e-9), left);
            bar.set_message(msg.clone());
            bar.set(m.step);
            if lines && (m.step.is_multiple_of(log_every) || m.step == steps_total) {
                eprintln!("{msg}");
            }
        },
        |e: &EvalMetrics| {
            if !progress.is_quiet() {
                eprintln!("{}", eval_line(e));
            }
        },
    )?;
    drop(bar);
    if !speaks {
        return Ok(());
    }
    match end {
        RunEnd::Finished(dir) => println!("{}", dir.display()),
        RunEnd::Stopped(dir) => {
            println!("{}", dir.display());
            eprintln!(
                "stopped at step {}; continue with: janus train --resume {}",
                trainer.state.step,
                trainer.run_dir().display()
            );
        }
    }
    if trainer.state.bad_samples > 0 {
        eprintln!("warning: {} bad samples skipped", trainer.state.bad_samples);
    }
    Ok(())
}

fn start(
    a: &RunArgs,
    progress: &Progress,
    device: &Device,
    launch: &Launch,
    comm: Comm,
) -> Result<Trainer> {
    let (Some(recipe), Some(data), Some(out)) = (&a.recipe, &a.data, &a.out) else {
        bail!("janus train needs --recipe, --data and --out (or --resume RUN_DIR)");
    };
    // Rank 0 resolves (and downloads) a hub model first; the others then find it cached.
    if comm.rank() > 0 {
        comm.barrier()?;
    }
    let model = model_dir(a, progress)?;
    if comm.rank() == 0 {
        comm.barrier()?;
    }
    let recipe = Recipe::load(recipe)?;
    let (cfg, _) = janus::weights::load_model_dir(&model)?;
    let config = TrainConfig::resolve(&recipe, &overrides(a)?, large_model(&cfg))?;
    let lora = match a.lora {
        Some(rank) => {
            let targets = match &a.lora_targets {
                Some(t) => Target::parse_list(t)?,
                None => Target::DEFAULT.to_vec(),
            };
            let spec = LoraSpec {
                rank,
                alpha: a.lora_alpha.unwrap_or(rank as f64),
                targets,
            };
            spec.validate()?;
            Some(spec)
        }
        None => None,
    };
    if lora.is_some() && a.train.is_some() {
        bail!("--train chooses parts to fine-tune fully; with --lora only the adapters train");
    }
    let spec = RunSpec {
        model: absolute(&model),
        data: absolute(data),
        eval: a.eval.as_deref().map(absolute),
        dtype: a.dtype.clone(),
        vq_cache: a.vq_cache.as_deref().map(absolute),
        config,
        lora,
        checkpoint_layers: a.checkpoint_layers,
        quant: a.quant.clone().filter(|q| q != "none"),
    };
    spec.quant_format()?;
    if out.join(RunSpec::FILE).exists() {
        bail!(
            "{} already holds a training run; use --resume {0} to continue it, or another --out",
            out.display()
        );
    }
    check_memory(a, &spec, device, launch, &comm)?;
    let spinner = progress.spinner(&format!("loading {}", model.display()));
    let t = Trainer::create_on(out, spec, device, comm)?;
    spinner.finish();
    Ok(t)
}

fn resume(
    a: &RunArgs,
    run_dir: &std::path::Path,
    progress: &Progress,
    device: &Device,
    launch: &Launch,
    comm: Comm,
) -> Result<Trainer> {
    let o = overrides(a)?;
    let changed = o.batch_size.is_some()
        || o.micro_batch_size.is_some()
        || o.lr.is_some()
        || o.warmup_steps.is_some()
        || o.schedule.is_some()
        || o.weight_decay.is_some()
        || o.ratio.is_some()
        || o.train.is_some()
        || o.cfg_drop.is_some()
        || o.first_sentence.is_some()
        || o.seed.is_some()
        || o.no_shuffle
        || a.eval.is_some()
        || a.vq_cache.is_some()
        || a.dtype != "f32"
        || a.lora.is_some()
        || a.quant.is_some();
    if changed {
        bail!(
            "--resume continues a run with the values in {}; only --steps, --save-every and \
             --eval-every may change",
            run_dir.join(RunSpec::FILE).display()
        );
    }
    let spec = RunSpec::read(run_dir)?;
    if a.model.is_some() {
        let model = absolute(&model_dir(a, progress)?);
        if model != spec.model {
            bail!(
                "{} was trained from {}, not from {}; resume without --model (the run's \
                 checkpoints hold the model)",
                run_dir.display(),
                spec.model.display(),
                model.display()
            );
        }
    }
    let mut spec = spec;
    spec.checkpoint_layers |= a.checkpoint_layers;
    check_memory(a, &spec, device, launch, &comm)?;
    let spinner = progress.spinner(&format!("resuming {}", run_dir.display()));
    let mut t = Trainer::resume_on(run_dir, o.steps, spec.checkpoint_layers, device, comm)?;
    spinner.finish();
    if let Some(s) = o.save_every {
        t.spec.config.save_every = s;
    }
    if let Some(e) = o.eval_every {
        t.spec.config.eval_every = e;
    }
    Ok(t)
}

fn model_dir(a: &RunArgs, progress: &Progress) -> Result<PathBuf> {
    let model = a
        .model
        .clone()
        .unwrap_or_else(|| janus::hub::DEFAULT_MODEL.to_string());
    let args = ModelArgs {
        model,
        revision: a.revision.clone(),
        offline: a.offline,
        dtype: "f32".into(),
        quant: "none".into(),
        lora: None,
    };
    args.resolve(progress)
}

fn overrides(a: &RunArgs) -> Result<Overrides> {
    Ok(Overrides {
        steps: a.steps,
        batch_size: a.batch_size,
        micro_batch_size: a.micro_batch_size,
        lr: a.lr,
        warmup_steps: a.warmup_steps,
        schedule: a.schedule.as_deref().map(Schedule::parse).transpose()?,
        weight_decay: a.weight_decay,
        ratio: a.ratio.as_deref().map(parse_ratio).transpose()?,
        train: a.train.clone(),
        cfg_drop: a.cfg_drop,
        first_sentence: a.first_sentence,
        seed: a.seed,
        save_every: a.save_every,
        no_shuffle: a.no_shuffle,
        eval_every: a.eval_every,
    })
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn parts_list(spec: &RunSpec) -> String {
    if let Some(l) = &spec.lora {
        let targets: Vec<_> = l.targets.iter().map(|t| t.name()).collect();
        return format!(
            "LoRA adapters (rank {}, alpha {}) on {}",
            l.rank,
            l.alpha,
            targets.join(",")
        );
    }
    spec.config
        .train
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(",")
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.4}"))
}

fn step_line(m: &StepMetrics, tokens_per_s: f64, left_s: f64) -> String {
    let sync = m
        .sync_seconds
        .map(|s| format!(" (sum over {} ranks {s:.2}s)", m.ranks.unwrap_or(1)))
        .unwrap_or_default();
    let peak = m
        .peak_rss
        .map(|b| format!(" peak {:.1} GiB", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_default();
    format!(
        "step {} loss {:.4} (und {} text {} t2i {}) lr {:.2e} grad {:.3} {:.0} tok/s {:.1}s/step{sync}{peak} left {}",
        m.step,
        m.loss,
        fmt_opt(m.loss_understanding),
        fmt_opt(m.loss_text),
        fmt_opt(m.loss_t2i),
        m.lr,
        m.grad_norm,
        tokens_per_s,
        m.seconds,
        human_duration(left_s),
    )
}

fn eval_line(e: &EvalMetrics) -> String {
    format!(
        "eval at step {}: loss {:.4} (und {} text {} t2i {}) answer accuracy {} code accuracy {}",
        e.step,
        e.loss,
        fmt_opt(e.loss_understanding),
        fmt_opt(e.loss_text),
        fmt_opt(e.loss_t2i),
        fmt_opt(e.accuracy),
        fmt_opt(e.t2i_code_accuracy),
    )
}

fn human_duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=99 => format!("{s}s"),
        100..=5999 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}
