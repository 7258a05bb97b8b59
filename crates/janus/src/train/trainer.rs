//! The training loop: each step takes the stage's mix of samples, accumulates gradients
//! over micro-batches, clips, and takes one AdamW step; checkpoints and metrics go to the
//! run directory.
//!
//! Every choice that could differ between a run and its resumption is a pure function of
//! the seed and the step: which sample fills each slot (a per-epoch permutation of each
//! kind's records), caption drops, first-sentence cuts. Resuming therefore needs only the
//! step, the weights and the optimiser state, and replays the run exactly.
//!
//! Under `mpirun` ([`crate::dist`]) the batch stays the run's whole batch: rank r of N takes
//! the step's slots r, r+N, r+2N, ..., and the gradients, scaled by the whole batch's
//! target count, are summed over the ranks before clipping. N ranks therefore take the
//! optimiser steps one process takes with the same batch, up to the order of f32 sums, and a
//! run may resume on another number of ranks. Rank 0 alone writes the run directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, TrainerState};
use super::codes::{vq_fingerprint, CodeCache};
use super::data::{Dataset, Kind, Located, Record};
use super::loss::micro_batch_backward;
use super::metrics::{EvalMetrics, StepMetrics};
use super::optim::{clip_grad_norm, lr_at, AdamW};
use super::params::{TrainModel, Trainable};
use super::recipe::TrainConfig;
use super::sample::{
    first_sentence, sample_rng, t2i_sample, text_sample, understanding_ids, SampleDraws,
    TrainSample,
};
use crate::dist::{self, Comm, Single};
use crate::error::{Error, Result};
use crate::kernels::quant::QuantFormat;
use crate::processor::{load_image, ImageProcessorConfig, JanusTokenizer};
use crate::weights::lora::LoraSpec;

/// The run's settings, written to `RUN_DIR/run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The model the run started from.
    pub model: PathBuf,
    /// The data manifest.
    pub data: PathBuf,
    /// Held-out manifest, if any.
    pub eval: Option<PathBuf>,
    /// Compute dtype (`f32` or `bf16`).
    pub dtype: String,
    /// Where VQ codes are cached (`None`: next to the manifest).
    pub vq_cache: Option<PathBuf>,
    /// Hyperparameters in force.
    pub config: TrainConfig,
    /// LoRA adapters instead of the recipe's parts (`--lora`).
    #[serde(default)]
    pub lora: Option<LoraSpec>,
    /// Recompute each decoder layer in the backward pass (`--checkpoint-layers`).
    #[serde(default)]
    pub checkpoint_layers: bool,
    /// Quantisation of the frozen base under LoRA (`q8`, `q4`; `--quant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<String>,
}

impl RunSpec {
    /// The run file inside a run directory.
    pub const FILE: &'static str = "run.json";

    /// Reads `RUN_DIR/run.json`.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            Error::InvalidInput(format!(
                "{} is not a training run directory (no {})",
                run_dir.display(),
                Self::FILE
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The base's quantisation (`None`: as loaded); only LoRA runs quantise.
    pub fn quant_format(&self) -> Result<Option<QuantFormat>> {
        let Some(q) = self.quant.as_deref().filter(|q| *q != "none") else {
            return Ok(None);
        };
        if self.lora.is_none() {
            return Err(Error::InvalidInput(
                "--quant needs --lora: only a frozen base can be quantised".into(),
            ));
        }
        q.parse::<QuantFormat>()
            .map(Some)
            .map_err(|_| Error::InvalidInput(format!("--quant {q:?}: use q8 or q4")))
    }

    /// The compute dtype.
    pub fn compute_dtype(&self) -> Result<DType> {
        match self.dtype.as_str() {
            "f32" => Ok(DType::F32),
            "bf16" => Ok(DType::BF16),
            d => Err(Error::InvalidInput(format!(
                "training dtype {d:?}: use f32 or bf16"
            ))),
        }
    }
}

/// What one step's forward and backward passes give.
#[derive(Debug)]
pub struct Gradients {
    /// Mean cross-entropy over every target.
    pub loss: f64,
    /// Per kind: (sum of cross-entropies, targets).
    pub by_kind: [(f64, usize); 3],
    /// Positions fed.
    pub tokens: usize,
    /// f32 gradient of the mean loss per parameter, in parameter order.
    pub grads: Vec<Tensor>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// All steps done; the final checkpoint.
    Finished(PathBuf),
    /// Stopped on request after a step; the checkpoint written.
    Stopped(PathBuf),
}

/// A training run in progress.
pub struct Trainer {
    /// The model with its trainable tensors.
    pub model: TrainModel,
    /// Settings.
    pub spec: RunSpec,
    run_dir: PathBuf,
    tok: JanusTokenizer,
    image_proc: ImageProcessorConfig,
    data: Dataset,
    eval: Option<Dataset>,
    opt: AdamW,
    codes: CodeCache,
    /// Counters (the step is the number of optimiser steps done).
    pub state: TrainerState,
    perms: HashMap<(usize, bool, u64), Vec<usize>>,
    comm: Comm,
}

impl Trainer {
    /// Starts a new run in `run_dir` (which must not hold a run already).
    pub fn create(run_dir: &Path, spec: RunSpec, device: &Device) -> Result<Self> {
        Self::create_on(run_dir, spec, device, Rc::new(Single))
    }

    /// [`create`](Self::create) as one rank of a data-parallel job: every rank calls it.
    pub fn create_on(run_dir: &Path, spec: RunSpec, device: &Device, comm: Comm) -> Result<Self> {
        let exists = run_dir.join(RunSpec::FILE).exists();
        // Every rank has looked before rank 0 writes run.json below.
        comm.barrier()?;
        if exists {
            return Err(Error::InvalidInput(format!(
                "{} already holds a training run; use --resume {0} to continue it, or \
                 another --out",
                run_dir.display()
            )));
        }
        let trainer = Self::open(run_dir, spec, device, None, comm)?;
        if trainer.writes() {
            std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
            trainer.write_spec()?;
        }
        Ok(trainer)
    }

    /// Continues the run in `run_dir` from its latest checkpoint (`steps`: a new total;
    /// `checkpoint_layers`: recompute layers from now on, which changes no result).
    pub fn resume(
        run_dir: &Path,
        steps: Option<u64>,
        checkpoint_layers: bool,
        device: &Device,
    ) -> Result<Self> {
        Self::resume_on(run_dir, steps, checkpoint_layers, device, Rc::new(Single))
    }

    /// [`resume`](Self::resume) as one rank of a data-parallel job (of any size: the run
    /// may have been trained on another number of ranks).
    pub fn resume_on(
        run_dir: &Path,
        steps: Option<u64>,
        checkpoint_layers: bool,
        device: &Device,
        comm: Comm,
    ) -> Result<Self> {
        let mut spec = RunSpec::read(run_dir)?;
        spec.checkpoint_layers |= checkpoint_layers;
        if let Some(s) = steps {
            spec.config.steps = s;
            spec.config.validate()?;
        }
        let ckpts = checkpoint::list(run_dir)?;
        let Some((step, dir)) = ckpts.last().cloned() else {
            return Err(Error::InvalidInput(format!(
                "{} has no checkpoint to resume from (no step-N directory)",
                run_dir.display()
            )));
        };
        let restored = checkpoint::restore(&dir, device)?;
        let mut t = Self::open(run_dir, spec.clone(), device, Some((dir, restored)), comm)?;
        t.spec = spec;
        if t.writes() {
            t.write_spec()?;
            super::metrics::truncate_after(&run_dir.join(super::metrics::FILE), step)?;
        }
        Ok(t)
    }

    fn open(
        run_dir: &Path,
        spec: RunSpec,
        device: &Device,
        restored: Option<(PathBuf, checkpoint::Restored)>,
        comm: Comm,
    ) -> Result<Self> {
        spec.config.validate()?;
        let dtype = spec.compute_dtype()?;
        let trainable = match &spec.lora {
            Some(l) => Trainable::Lora {
                spec: l.clone(),
                seed: spec.config.seed,
                quant: spec.quant_format()?,
            },
            None => Trainable::Parts(spec.config.train.iter().copied().collect()),
        };
        let (model_dir, masters, moments, opt_t, state) = match restored {
            Some((dir, r)) => (
                dir,
                Some(r.masters),
                Some(r.moments),
                r.optimizer_steps,
                r.state,
            ),
            None => (spec.model.clone(), None, None, 0, TrainerState::default()),
        };
        // A LoRA checkpoint holds adapters only: the model is always the run's base.
        let model_dir = if spec.lora.is_some() {
            spec.model.clone()
        } else {
            model_dir
        };
        let model = TrainModel::load(&model_dir, &trainable, dtype, device, masters)?;
        if model_dir != spec.model {
            check_same_model(&spec.model, &model)?;
        }
        let tok = JanusTokenizer::from_file(model_dir.join("tokenizer.json"))?;
        let image_proc = ImageProcessorConfig::from_model_dir(&model_dir)?;
        // Unparsable lines are listed by `bad_lines` for the caller to report.
        let data = Dataset::load(&spec.data)?;
        let counts = spec.config.kind_counts();
        for kind in Kind::ALL {
            if counts[kind.index()] > 0 && data.of(kind).is_empty() {
                return Err(Error::InvalidInput(format!(
                    "the ratio asks for {} {kind} samples per step but {} has no usable {kind} \
                     data",
                    counts[kind.index()],
                    spec.data.display()
                )));
            }
        }
        let eval = spec.eval.as_deref().map(Dataset::load).transpose()?;
        let cache_dir = spec
            .vq_cache
            .clone()
            .unwrap_or_else(|| default_cache_dir(&spec.data));
        // Codes depend on the dtype the VQ runs in: bf16 and f32 runs keep separate caches.
        let fp = format!(
            "{}-{}",
            vq_fingerprint(&model.cfg, &model.store)?,
            dtype.as_str()
        );
        let codes = CodeCache::new(Some(&cache_dir), &fp, model.cfg.gen_image_size())?;
        let masters: Vec<Tensor> = model
            .params
            .iter()
            .map(|p| p.master())
            .collect::<Result<_>>()?;
        let mut opt = AdamW::new(
            &masters,
            spec.config.beta1,
            spec.config.beta2,
            spec.config.eps,
        )?;
        if let Some(moments) = moments {
            for (i, p) in model.params.iter().enumerate() {
                let m = moments.get(&p.name).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the checkpoint's optimiser state has no moments for {}; was the run \
                         trained with other parts?",
                        p.name
                    ))
                })?;
                opt.moments[i] = m.clone();
            }
            opt.t = opt_t;
        }
        same_on_every_rank(&*comm, &spec, state.step, &model)?;
        Ok(Self {
            model,
            spec,
            run_dir: run_dir.to_path_buf(),
            tok,
            image_proc,
            data,
            eval,
            opt,
            codes,
            state,
            perms: HashMap::new(),
            comm,
        })
    }

    /// Writes the settings in force to `RUN_DIR/run.json`.
    fn write_spec(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.spec).unwrap_or_default() + "\n";
        super::atomic::write_file(&self.run_dir.join(RunSpec::FILE), text.as_bytes())
    }

    /// Whether this process writes the run directory (rank 0 of a job, or a plain run).
    pub fn writes(&self) -> bool {
        self.comm.rank() == 0
    }

    /// The ranks this run is trained on.
    pub fn comm(&self) -> &Comm {
        &self.comm
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The settings in force.
    pub fn config(&self) -> &TrainConfig {
        &self.spec.config
    }

    /// The dataset's bad lines (already reported as warnings).
    pub fn bad_lines(&self) -> &[String] {
        &self.data.bad
    }

    /// The record that fills slot `position` of `kind`'s stream at `step`.
    fn pick(&mut self, kind: Kind, step: u64, position: u64) -> (Located, u64) {
        let switch = match &self.data.t2i_after {
            Some((manifest_step, _)) => manifest_step.or(self.spec.config.t2i_switch_step),
            None => None,
        };
        let after = kind == Kind::T2i && switch.is_some_and(|s| step >= s);
        let per_step = self.spec.config.kind_counts()[kind.index()];
        let position = if after {
            position - switch.unwrap_or(0) * per_step
        } else {
            position
        };
        let list: &[Located] = match (&self.data.t2i_after, after) {
            (Some((_, recs)), true) => recs,
            _ => self.data.of(kind),
        };
        let n = list.len() as u64;
        let (epoch, within) = (position / n, (position % n) as usize);
        let idx = if self.spec.config.no_shuffle {
            within
        } else {
            let seed = self.spec.config.seed;
            let perm = self
                .perms
                .entry((kind.index(), after, epoch))
                .or_insert_with(|| {
                    let mut p: Vec<usize> = (0..n as usize).collect();
                    p.shuffle(&mut sample_rng(seed, kind, epoch, 2 + u64::from(after)));
                    p
                });
            perm[within]
        };
        (list[idx].clone(), position)
    }

    /// Builds the sample for a record; `draws` decide caption drops and cuts.
    pub fn build(&mut self, rec: &Record, draws: SampleDraws) -> Result<TrainSample> {
        let cfg = self.model.cfg.clone();
        let max = cfg.text.max_position_embeddings;
        let sample = match rec {
            Record::Text { text } => text_sample(&self.tok, text)?,
            Record::T2i { image, caption } => {
                let caption = if draws.first_sentence {
                    first_sentence(caption)
                } else {
                    caption
                };
                let codes = self.codes.codes(&self.model.model, image)?;
                t2i_sample(&self.tok, caption, codes, draws.drop_caption)?
            }
            Record::Understanding { images, messages } => {
                let n = cfg.vision.num_image_tokens();
                let u = understanding_ids(&self.tok, messages, images.len(), n, false)?;
                let pixels = images
                    .iter()
                    .map(|p| self.image_proc.preprocess(&load_image(p)?))
                    .collect::<Result<Vec<_>>>()?;
                TrainSample {
                    kind: Kind::Understanding,
                    input_ids: u.ids,
                    image_spans: u.spans,
                    pixels,
                    codes: Vec::new(),
                    text_targets: u.targets,
                    image_targets: Vec::new(),
                    dropped: false,
                }
            }
        };
        if sample.len() > max {
            return Err(Error::InvalidInput(format!(
                "sample is {} positions long; the model's context is {max}",
                sample.len()
            )));
        }
        Ok(sample)
    }

    /// This rank's samples of step `step` (0-based): slots `rank`, `rank + size`, ... of
    /// the step's kinds in order; bad ones skipped with a warning and counted.
    fn step_samples(&mut self, step: u64) -> (Vec<TrainSample>, u64) {
        let counts = self.spec.config.kind_counts();
        let (seed, drop, first) = (
            self.spec.config.seed,
            self.spec.config.cfg_drop,
            self.spec.config.first_sentence,
        );
        let (rank, size) = (self.comm.rank() as u64, self.comm.size() as u64);
        let mut out = Vec::new();
        let mut bad = 0;
        let mut slot = 0u64;
        for kind in Kind::ALL {
            let c = counts[kind.index()];
            for j in 0..c {
                slot += 1;
                if (slot - 1) % size != rank {
                    continue;
                }
                let (rec, pos) = self.pick(kind, step, step * c + j);
                let draws = SampleDraws::new(seed, kind, pos, drop, first);
                match self.build(&rec.record, draws) {
                    Ok(s) => out.push(s),
                    Err(e) => {
                        bad += 1;
                        tracing::warn!("skipping bad sample {}: {e}", rec.origin());
                    }
                }
            }
        }
        (out, bad)
    }

    /// Loss and gradients (f32, summed over micro-batches, already divided by the number
    /// of targets) for `samples`, in parameter order. Gradients of parameters no sample
    /// reaches are zeros.
    pub fn gradients(&self, samples: &[TrainSample]) -> Result<Gradients> {
        let n_targets: usize = samples.iter().map(TrainSample::num_targets).sum();
        if n_targets == 0 {
            return Err(Error::InvalidInput("no usable sample in this step".into()));
        }
        self.gradients_over(samples, n_targets)
    }

    /// [`gradients`](Self::gradients) of a share of a batch that has `n_targets` targets
    /// in all (`samples` may have none).
    fn gradients_over(&self, samples: &[TrainSample], n_targets: usize) -> Result<Gradients> {
        let mut grads: Vec<Option<Tensor>> = vec![None; self.model.params.len()];
        let mut by_kind = [(0f64, 0usize); 3];
        let mut tokens = 0;
        let micro = self.spec.config.micro_batch_size.max(1) as usize;
        let refs: Vec<&TrainSample> = samples.iter().collect();
        let params = &self.model.params;
        let mut accumulate = |store: &GradStore| -> Result<()> {
            for (slot, p) in grads.iter_mut().zip(params) {
                if let Some(g) = store.get(p.var.as_tensor()) {
                    let g = g.to_dtype(DType::F32)?;
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + g)?,
                        None => g,
                    });
                }
            }
            Ok(())
        };
        let (scale, recompute) = (1.0 / n_targets as f64, self.spec.checkpoint_layers);
        for chunk in refs.chunks(micro) {
            let model = &self.model.model;
            let ml = micro_batch_backward(model, chunk, scale, recompute, &mut accumulate)?;
            tokens += ml.tokens;
            for (acc, k) in by_kind.iter_mut().zip(ml.by_kind) {
                acc.0 += k.0;
                acc.1 += k.1;
            }
        }
        let loss = by_kind.iter().map(|k| k.0).sum::<f64>() / n_targets as f64;
        let grads = grads
            .into_iter()
            .zip(&self.model.params)
            .map(|(g, p)| match g {
                Some(g) => Ok(g),
                None => Ok(p.master()?.zeros_like()?),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gradients {
            loss,
            by_kind,
            tokens,
            grads,
        })
    }

    /// One optimiser step.
    pub fn step(&mut self) -> Result<StepMetrics> {
        let start = Instant::now();
        super::metrics::reset_peak_rss();
        let step = self.state.step;
        let (samples, bad) = self.step_samples(step);
        let local_targets: usize = samples.iter().map(TrainSample::num_targets).sum();
        // The whole batch's counts, then each rank's share of its gradients, summed.
        let mut counts = [local_targets as f64, bad as f64, samples.len() as f64];
        self.comm.all_reduce_f64(&mut counts)?;
        let [n_targets, bad, n_samples] = counts.map(|c| c as u64);
        self.state.bad_samples += bad;
        if n_targets == 0 {
            return Err(Error::InvalidInput("no usable sample in this step".into()));
        }
        let Gradients {
            by_kind,
            tokens,
            mut grads,
            ..
        } = self.gradients_over(&samples, n_targets as usize)?;
        let sync = Instant::now();
        dist::all_reduce_tensors(&*self.comm, &mut grads, dist::BUCKET_ELEMS)?;
        let sync_seconds = sync.elapsed().as_secs_f64();
        let (by_kind, tokens) = self.sum_counters(by_kind, tokens)?;
        let loss = by_kind.iter().map(|k| k.0).sum::<f64>() / n_targets as f64;
        let cfg = self.spec.config.clone();
        let grad_norm = clip_grad_norm(&mut grads, cfg.clip_grad_norm)?;
        let lr = lr_at(cfg.lr, cfg.schedule, cfg.warmup_steps, cfg.steps, step);
        let masters: Vec<Tensor> = self
            .model
            .params
            .iter()
            .map(|p| p.master())
            .collect::<Result<_>>()?;
        let decay: Vec<bool> = self.model.params.iter().map(|p| p.decay).collect();
        let new = self
            .opt
            .step(&masters, &grads, &decay, lr, cfg.weight_decay)?;
        for (p, v) in self.model.params.iter_mut().zip(new) {
            p.set_master(v)?;
        }
        self.state.step += 1;
        self.state.tokens_seen += tokens as u64;
        let kind_loss = |k: Kind| {
            let (s, n) = by_kind[k.index()];
            (n > 0).then(|| s / n as f64)
        };
        Ok(StepMetrics {
            step: self.state.step,
            loss,
            loss_understanding: kind_loss(Kind::Understanding),
            loss_text: kind_loss(Kind::Text),
            loss_t2i: kind_loss(Kind::T2i),
            lr,
            grad_norm,
            tokens: tokens as u64,
            samples: n_samples,
            bad_samples: self.state.bad_samples,
            seconds: start.elapsed().as_secs_f64(),
            peak_rss: super::metrics::peak_rss(),
            ranks: (self.comm.size() > 1).then_some(self.comm.size() as u64),
            sync_seconds: (self.comm.size() > 1).then_some(sync_seconds),
        })
    }

    /// Per-kind loss sums and target counts, and positions fed, over every rank.
    fn sum_counters(
        &self,
        by_kind: [(f64, usize); 3],
        tokens: usize,
    ) -> Result<([(f64, usize); 3], usize)> {
        if self.comm.size() == 1 {
            return Ok((by_kind, tokens));
        }
        let mut v: Vec<f64> = by_kind
            .iter()
            .flat_map(|&(s, n)| [s, n as f64])
            .chain([tokens as f64])
            .collect();
        self.comm.all_reduce_f64(&mut v)?;
        let by_kind = [0, 1, 2].map(|k| (v[2 * k], v[2 * k + 1] as usize));
        Ok((by_kind, v[6] as usize))
    }

    /// Writes a checkpoint for the current step (rank 0; other ranks only name it).
    pub fn save(&mut self) -> Result<PathBuf> {
        let counts = self.spec.config.kind_counts();
        self.state.data_position = counts.map(|c| c * self.state.step);
        if !self.writes() {
            return Ok(self
                .run_dir
                .join(checkpoint::step_dir_name(self.state.step)));
        }
        checkpoint::save(&self.run_dir, &self.model, &self.opt, &self.state)
    }

    /// Loss over every held-out sample (captions kept) and greedy answer accuracy on the
    /// held-out understanding samples.
    pub fn evaluate(&mut self) -> Result<Option<EvalMetrics>> {
        let Some(eval) = self.eval.clone() else {
            return Ok(None);
        };
        let step = self.state.step;
        super::eval::evaluate(self, &eval, step).map(Some)
    }

    /// Runs until `steps`, saving every `save_every` steps and at the end; `stop` asks
    /// for a checkpoint and an early return after the current step.
    pub fn run(
        &mut self,
        stop: &std::sync::atomic::AtomicBool,
        mut on_step: impl FnMut(&StepMetrics),
        mut on_eval: impl FnMut(&EvalMetrics),
    ) -> Result<RunEnd> {
        let metrics_path = self.run_dir.join(super::metrics::FILE);
        while self.state.step < self.spec.config.steps {
            let m = self.step()?;
            if self.writes() {
                super::metrics::append(&metrics_path, &m.to_json())?;
            }
            on_step(&m);
            let every = self.spec.config.eval_every;
            // Rank 0 evaluates; the others wait for it at the stop check below.
            if self.writes() && every > 0 && self.state.step.is_multiple_of(every) {
                if let Some(e) = self.evaluate()? {
                    super::metrics::append(&metrics_path, &e.to_json())?;
                    on_eval(&e);
                }
            }
            let done = self.state.step == self.spec.config.steps;
            let save_every = self.spec.config.save_every;
            // A stop asked of any rank (mpirun passes signals on to every rank, but not
            // at the same instant) stops all of them after the same step.
            let stopping = dist::any(&*self.comm, stop.load(std::sync::atomic::Ordering::SeqCst))?;
            if done || stopping || (save_every > 0 && self.state.step.is_multiple_of(save_every)) {
                let dir = self.save()?;
                if done {
                    return Ok(RunEnd::Finished(dir));
                }
                if stopping {
                    return Ok(RunEnd::Stopped(dir));
                }
            }
        }
        // Already at the end (resumed a finished run): the last checkpoint stands.
        let dir = self
            .run_dir
            .join(checkpoint::step_dir_name(self.state.step));
        if !dir.is_dir() {
            return Ok(RunEnd::Finished(self.save()?));
        }
        Ok(RunEnd::Finished(dir))
    }
}

/// `MANIFEST_DIR/.janus-cache`.
pub fn default_cache_dir(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .unwrap_or(Path::new("."))
        .join(".janus-cache")
}

/// Every rank must start from the same step with the same trainable tensors and settings: a
/// rank that sees another checkpoint or run.json (a run directory not shared between
/// machines) would train another model in lockstep, silently.
fn same_on_every_rank(
    comm: &dyn dist::Collective,
    spec: &RunSpec,
    step: u64,
    model: &TrainModel,
) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    // FNV-1a of the settings, as two exactly representable halves.
    let settings = serde_json::to_string(spec).unwrap_or_default();
    let hash = settings.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mine = [
        step as f64,
        model.params.len() as f64,
        model.num_trainable() as f64,
        (hash >> 32) as f64,
        (hash & 0xffff_ffff) as f64,
    ];
    let mut sum = mine;
    comm.all_reduce_f64(&mut sum)?;
    let n = comm.size() as f64;
    if mine.iter().zip(&sum).any(|(m, s)| m * n != *s) {
        return Err(Error::InvalidInput(format!(
            "rank {} starts at step {step} with {} trainable tensors or other settings than \
             the other ranks: every rank must see the same run directory (a shared \
             filesystem), model and data, and be given the same arguments",
            comm.rank(),
            model.params.len()
        )));
    }
    Ok(())
}

/// A resumed checkpoint must be of the model the run started from.
fn check_same_model(base: &Path, model: &TrainModel) -> Result<()> {
    let Ok((cfg, _)) = crate::weights::load_model_dir(base) else {
        return Ok(()); // The base model may be gone: the checkpoint is self-contained.
    };
    let mut a = cfg.clone();
    let b = model.cfg.clone();
    a.layout = b.layout;
    if a != b {
        return Err(Error::InvalidInput(format!(
            "the checkpoint in {} is not of the model {} the run started from",
            model.dir.display(),
            base.display()
        )));
    }
    Ok(())
}

impl super::eval::EvalModel for Trainer {
    fn model(&self) -> &crate::model::Janus {
        &self.model.model
    }

    fn tokenizer(&self) -> &JanusTokenizer {
        &self.tok
    }

    fn image_processor(&self) -> &ImageProcessorConfig {
        &self.image_proc
    }

    fn sample(&mut self, rec: &Record, draws: SampleDraws) -> Result<TrainSample> {
        self.build(rec, draws)
    }
}
