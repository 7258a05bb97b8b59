//! The model as training holds it: trainable tensors are candle `Var`s (with f32 master
//! copies when the compute dtype is narrower), frozen ones plain tensors that no gradient
//! is ever computed for.
//!
//! The model is built by the same code as for inference ([`Janus::new`]) from a backend
//! that wraps the checkpoint's: the trainable canonical tensors come back as variables, so
//! every module that holds them (or a view of them) sees the optimiser's in-place updates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::parts::Part;
use crate::config::{JanusConfig, Layout};
use crate::error::{Error, Result};
use crate::model::Janus;
use crate::weights::{load_model_dir, JanusBackend, TensorStore};

/// One trainable tensor.
#[derive(Debug, Clone)]
pub struct Param {
    /// Canonical (original-layout) name.
    pub name: String,
    /// What the model computes with (compute dtype).
    pub var: Var,
    /// The f32 master when the compute dtype is not f32 (else the variable is the master).
    pub master: Option<Tensor>,
    /// Whether weight decay applies (tensors of rank >= 2: matrices, embeddings, the
    /// position table; not biases or norm weights, as is usual for transformers).
    pub decay: bool,
}

impl Param {
    /// The f32 value the optimiser updates.
    pub fn master(&self) -> Result<Tensor> {
        Ok(match &self.master {
            Some(m) => m.clone(),
            None => self.var.as_tensor().clone(),
        })
    }

    /// Sets the f32 master and the compute copy the model uses.
    pub fn set_master(&mut self, value: Tensor) -> Result<()> {
        match &mut self.master {
            Some(m) => {
                self.var.set(&value.to_dtype(self.var.dtype())?)?;
                *m = value;
            }
            None => self.var.set(&value)?,
        }
        Ok(())
    }
}

/// A model loaded for training.
pub struct TrainModel {
    /// The network (trainable tensors are variables).
    pub model: Janus,
    /// Trainable tensors, sorted by name.
    pub params: Vec<Param>,
    /// The model directory the weights came from.
    pub dir: PathBuf,
    /// Its configuration (`layout` is the weights' layout).
    pub cfg: JanusConfig,
    /// Its weights, for writing checkpoints in the same layout.
    pub store: TensorStore,
    /// Compute dtype.
    pub dtype: DType,
}

impl TrainModel {
    /// Loads `dir` with the tensors of `parts` trainable. `masters` (canonical name -> f32)
    /// replace the checkpoint's values of trainable tensors (resuming).
    pub fn load(
        dir: &Path,
        parts: &BTreeSet<Part>,
        dtype: DType,
        device: &Device,
        masters: Option<HashMap<String, Tensor>>,
    ) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            return Err(Error::InvalidInput(format!(
                "training computes in f32 or bf16, not {dtype:?}"
            )));
        }
        let (cfg, store) = load_model_dir(dir)?;
        let created = Arc::new(Mutex::new(BTreeMap::new()));
        let backend = TrainBackend {
            inner: JanusBackend::new(store.clone(), cfg.layout),
            parts: parts.clone(),
            masters: masters.unwrap_or_default(),
            created: created.clone(),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let model = Janus::new(&cfg, vb)?;
        let params: Vec<Param> = std::mem::take(&mut *lock(&created)).into_values().collect();
        if params.is_empty() {
            return Err(Error::InvalidInput(
                "no tensor of the chosen parts is trainable".into(),
            ));
        }
        Ok(Self {
            model,
            params,
            dir: dir.to_path_buf(),
            cfg,
            store,
            dtype,
        })
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// The layout of the checkpoint the model came from.
    pub fn layout(&self) -> Layout {
        self.cfg.layout
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves trainable canonical tensors as fresh variables and everything else as loaded.
struct TrainBackend {
    inner: JanusBackend,
    parts: BTreeSet<Part>,
    masters: HashMap<String, Tensor>,
    created: Arc<Mutex<BTreeMap<String, Param>>>,
}

impl SimpleBackend for TrainBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let trainable = Part::of(name).is_some_and(|p| self.parts.contains(&p));
        if !trainable {
            return self.inner.get(s, name, init, dtype, dev);
        }
        let master = match self.masters.get(name) {
            Some(m) if m.dims() == s.dims() => m.to_dtype(DType::F32)?.to_device(dev)?,
            Some(m) => candle_core::bail!(
                "saved optimiser state for {name} has shape {:?}, the model {:?}",
                m.dims(),
                s.dims()
            ),
            None => self.inner.get(s.clone(), name, init, DType::F32, dev)?,
        };
        let var = Var::from_tensor(&master.to_dtype(dtype)?)?;
        let param = Param {
            name: name.to_string(),
            decay: master.rank() >= 2,
            master: (dtype != DType::F32).then_some(master),
            var: var.clone(),
        };
        lock(&self.created).insert(name.to_string(), param);
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
