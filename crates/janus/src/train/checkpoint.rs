//! Checkpoints: `RUN_DIR/step-N/` is a model directory in the input's layout (its config,
//! tokenizer and processor files, one `model.safetensors` with every tensor under the
//! checkpoint's own names), loadable as it is by `janus understand` / `generate` / `serve`
//! and by the PyTorch reference; for a LoRA run it holds peft's adapter files instead
//! (`--lora DIR` at inference, [`merge_adapters`]). Beside them, `trainer/` holds what
//! resuming needs: the f32 masters and AdamW moments of the trained tensors and the step.
//!
//! A checkpoint is written into a hidden temporary directory and renamed into place, so a
//! crash while saving leaves the previous checkpoints as they were.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::{AdamW, Moments};
use super::params::TrainModel;
use crate::error::{Error, Result};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;

use crate::config::Layout;
use crate::weights::lora::Adapters;
use crate::weights::names::Source;
use crate::weights::{checkpoint_source, CheckpointProvider, TensorStore};

/// Name of a checkpoint directory.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step}")
}

/// The trainer's own files inside a checkpoint.
pub const TRAINER_DIR: &str = "trainer";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";

/// Counters saved with a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: u64,
    /// Samples skipped as bad so far.
    pub bad_samples: u64,
    /// Positions fed so far.
    pub tokens_seen: u64,
    /// Samples taken so far from each kind's stream (understanding, text, text-to-image):
    /// the data position. Informational: the trainer derives it, and every random choice,
    /// from the seed and the step.
    #[serde(default)]
    pub data_position: [u64; 3],
}

/// Writes `RUN_DIR/step-N` (replacing one that exists) and returns its path.
pub fn save(run_dir: &Path, tm: &TrainModel, opt: &AdamW, state: &TrainerState) -> Result<PathBuf> {
    let final_dir = run_dir.join(step_dir_name(state.step));
    let tmp = run_dir.join(format!(
        ".{}.tmp-{}",
        step_dir_name(state.step),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let result = write_into(&tmp, tm, opt, state);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        let old = run_dir.join(format!(
            ".{}.old-{}",
            step_dir_name(state.step),
            std::process::id()
        ));
        std::fs::rename(&final_dir, &old).map_err(|e| Error::io(&final_dir, e))?;
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    Ok(final_dir)
}

fn write_into(dir: &Path, tm: &TrainModel, opt: &AdamW, state: &TrainerState) -> Result<()> {
    let trainer = dir.join(TRAINER_DIR);
    std::fs::create_dir_all(&trainer).map_err(|e| Error::io(&trainer, e))?;
    let mut masters = HashMap::new();
    match &tm.lora {
        Some(spec) => {
            let mut adapters = Adapters {
                spec: spec.clone(),
                base: Some(absolute(&tm.dir).display().to_string()),
                tensors: Default::default(),
            };
            for p in &tm.params {
                let master = p.master()?.to_device(&Device::Cpu)?;
                adapters.tensors.insert(p.name.clone(), master.clone());
                masters.insert(format!("master.{}", p.name), master);
            }
            adapters.save(dir, &tm.cfg)?;
        }
        None => write_model(dir, tm, &mut masters)?,
    }
    for (p, st) in tm.params.iter().zip(&opt.moments) {
        masters.insert(format!("exp_avg.{}", p.name), st.m.to_device(&Device::Cpu)?);
        masters.insert(
            format!("exp_avg_sq.{}", p.name),
            st.v.to_device(&Device::Cpu)?,
        );
    }
    candle_core::safetensors::save(&masters, trainer.join(OPTIMIZER_FILE))?;
    let state_json = serde_json::json!({
        "state": state,
        "optimizer_steps": opt.t,
    });
    let path = trainer.join(STATE_FILE);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&state_json).unwrap_or_default() + "\n",
    )
    .map_err(|e| Error::io(&path, e))
}

/// `path` made absolute (as it is when that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The model files of a full checkpoint; the f32 masters go into `masters`.
fn write_model(dir: &Path, tm: &TrainModel, masters: &mut HashMap<String, Tensor>) -> Result<()> {
    let mut replaced = Vec::with_capacity(tm.params.len());
    for p in &tm.params {
        let master = p.master()?.to_device(&Device::Cpu)?;
        masters.insert(format!("master.{}", p.name), master.clone());
        replaced.push((p.name.clone(), master));
    }
    write_model_files(dir, &tm.dir, &tm.store, tm.layout(), replaced)
}

/// Writes a model directory: `src_dir`'s side files and every tensor of `store` under its
/// own name and dtype, with the canonical tensors of `replaced` (f32) cut back into the
/// layout's pieces in their place.
fn write_model_files(
    dir: &Path,
    src_dir: &Path,
    store: &TensorStore,
    layout: Layout,
    replaced: Vec<(String, Tensor)>,
) -> Result<()> {
    crate::weights::convert::copy_side_files(src_dir, dir)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in store.names() {
        tensors.insert(name.to_string(), store.load(name, &Device::Cpu)?);
    }
    for (canonical, value) in replaced {
        let source = checkpoint_source(layout, &canonical).ok_or_else(|| {
            Error::Model(format!("{canonical} has no place in a {layout} checkpoint"))
        })?;
        for (name, value) in split_for_layout(&source, &value)? {
            let dtype = tensors.get(&name).map_or(DType::F32, Tensor::dtype);
            tensors.insert(name, value.to_dtype(dtype)?);
        }
    }
    let model_file = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &model_file)?;
    Ok(())
}

/// Folds the adapters of `adapter_dir` into the model `base` and writes the result as a
/// plain model directory `out` in the base's layout and dtypes (`janus train merge`).
/// `out` must not exist; it appears complete or not at all.
pub fn merge_adapters(adapter_dir: &Path, base: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::InvalidInput(format!(
            "{} exists; merge writes a new directory",
            out.display()
        )));
    }
    let (cfg, store) = crate::weights::load_model_dir(base)?;
    let adapters = Adapters::load(adapter_dir, &cfg)?;
    let backend = CheckpointProvider::new(store.clone(), cfg.layout);
    let mut replaced = Vec::new();
    for (name, delta) in adapters.deltas()? {
        let dims = delta.dims().to_vec();
        let w = backend.get(
            dims.into(),
            &name,
            Init::Const(0.0),
            DType::F32,
            &Device::Cpu,
        )?;
        replaced.push((name, (w + delta)?));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let written = write_model_files(&tmp, base, &store, cfg.layout, replaced)
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e)));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// A canonical tensor as the checkpoint layout stores it: (name, value) pieces.
fn split_for_layout(source: &Source, value: &Tensor) -> Result<Vec<(String, Tensor)>> {
    Ok(match source {
        Source::Name(n) => vec![(n.clone(), value.clone())],
        Source::Unsqueeze(n) => vec![(n.clone(), value.squeeze(0)?)],
        Source::Concat(parts) => {
            let rows = value.dim(0)? / parts.len().max(1);
            parts
                .iter()
                .enumerate()
                .map(|(i, n)| Ok((n.clone(), value.narrow(0, i * rows, rows)?.contiguous()?)))
                .collect::<Result<_>>()?
        }
    })
}

/// What resuming reads back from a checkpoint.
pub struct Restored {
    /// Canonical name -> f32 master.
    pub masters: HashMap<String, Tensor>,
    /// Canonical name -> moments.
    pub moments: HashMap<String, Moments>,
    /// AdamW steps taken.
    pub optimizer_steps: u64,
    /// Counters.
    pub state: TrainerState,
}

/// Reads a checkpoint's trainer files.
pub fn restore(step_dir: &Path, device: &Device) -> Result<Restored> {
    let trainer = step_dir.join(TRAINER_DIR);
    let path = trainer.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let state: TrainerState = serde_json::from_value(v["state"].clone())
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let optimizer_steps = v["optimizer_steps"].as_u64().unwrap_or(state.step);
    let file = trainer.join(OPTIMIZER_FILE);
    let all = candle_core::safetensors::load(&file, device).map_err(|e| Error::Weights {
        path: file.clone(),
        msg: e.to_string(),
    })?;
    let mut masters = HashMap::new();
    let mut m = HashMap::new();
    let mut v2 = HashMap::new();
    for (k, t) in all {
        if let Some(n) = k.strip_prefix("master.") {
            masters.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("exp_avg_sq.") {
            v2.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("exp_avg.") {
            m.insert(n.to_string(), t);
        }
    }
    let mut moments = HashMap::new();
    for (n, mt) in m {
        let vt = v2.remove(&n).ok_or_else(|| Error::Weights {
            path: file.clone(),
            msg: format!("exp_avg_sq.{n} is missing"),
        })?;
        moments.insert(n, Moments { m: mt, v: vt });
    }
    Ok(Restored {
        masters,
        moments,
        optimizer_steps,
        state,
    })
}

/// The checkpoints in a run directory, by step, complete ones only (hidden temporaries
/// are ignored).
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(|e| Error::io(run_dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if e.path().join(TRAINER_DIR).join(STATE_FILE).is_file() {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}
