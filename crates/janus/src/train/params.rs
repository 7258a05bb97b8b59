//! The model as training holds it: trainable tensors are candle `Var`s (with f32 master
//! copies when the compute dtype is narrower), frozen ones plain tensors that no gradient
//! is ever computed for.
//!
//! The model is built by the same code as for inference ([`Janus::new`]) from a backend
//! that wraps the checkpoint's: the trainable canonical tensors come back as variables, so
//! every module that holds them (or a view of them) sees the optimiser's in-place updates.
//! With LoRA the backend also serves each adapted layer's `lora_A` / `lora_B` (new
//! variables: A uniform in ±1/√in as peft's Kaiming init, B zero) and its scale, and
//! every checkpoint tensor stays frozen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use rand::{Rng, SeedableRng};

use super::parts::Part;
use crate::config::{JanusConfig, Layout};
use crate::error::{Error, Result};
use crate::kernels::quant::QuantFormat;
use crate::model::Janus;
use crate::weights::lora::{self, LoraSpec, Module};
use crate::weights::{load_model_dir, CheckpointProvider, TensorStore};

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
    /// The adapters' settings when training LoRA adapters (then `params` are exactly the
    /// adapters' A and B).
    pub lora: Option<LoraSpec>,
}

/// What a run trains: whole parts of the checkpoint, or LoRA adapters over a frozen one.
#[derive(Debug, Clone)]
pub enum Trainable {
    /// These parts' tensors.
    Parts(BTreeSet<Part>),
    /// Adapters (seeded initialisation) over the frozen checkpoint, whose LLM and
    /// generation-head products may be quantised (QLoRA-style).
    Lora {
        /// Rank, alpha and target layers.
        spec: LoraSpec,
        /// Seed of the A matrices' initialisation.
        seed: u64,
        /// The frozen products' weight format, if quantised.
        quant: Option<QuantFormat>,
    },
}

impl TrainModel {
    /// Loads `dir` with the tensors of `parts` trainable. `masters` (canonical name -> f32)
    /// replace the checkpoint's values of trainable tensors (resuming).
    pub fn load(
        dir: &Path,
        trainable: &Trainable,
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
        let (parts, lora) = match trainable {
            Trainable::Parts(p) => (p.clone(), None),
            Trainable::Lora { spec, seed, .. } => {
                spec.validate_for(&cfg)?;
                let modules = lora::modules(&cfg, &spec.targets)
                    .into_iter()
                    .map(|m| (m.name.clone(), m))
                    .collect();
                let plan = LoraPlan {
                    rank: spec.rank,
                    scale: spec.scale() as f32,
                    modules,
                    seed: *seed,
                };
                (BTreeSet::new(), Some(plan))
            }
        };
        let backend = TrainProvider {
            inner: CheckpointProvider::new(store.clone(), cfg.layout),
            parts,
            lora,
            masters: masters.unwrap_or_default(),
            created: created.clone(),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let quant = match trainable {
            Trainable::Lora { quant, .. } => *quant,
            Trainable::Parts(_) => None,
        };
        if quant.is_some() && !device.is_cpu() {
            return Err(Error::InvalidInput(
                "quantised base weights (--quant) train on the CPU only".into(),
            ));
        }
        let model = Janus::load(&cfg, vb, quant)?;
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
            lora: match trainable {
                Trainable::Lora { spec, .. } => Some(spec.clone()),
                Trainable::Parts(_) => None,
            },
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
struct TrainProvider {
    inner: CheckpointProvider,
    parts: BTreeSet<Part>,
    lora: Option<LoraPlan>,
    masters: HashMap<String, Tensor>,
    created: Arc<Mutex<BTreeMap<String, Param>>>,
}

/// The adapted layers of a LoRA run.
struct LoraPlan {
    rank: usize,
    scale: f32,
    modules: HashMap<String, Module>,
    seed: u64,
}

/// What a LoRA tensor name asks for.
enum LoraName<'a> {
    A(&'a Module),
    B(&'a Module),
    Scaling,
}

impl LoraPlan {
    fn lookup(&self, name: &str) -> Option<LoraName<'_>> {
        let (module, tail) = name.rsplit_once(".lora_")?;
        let m = self.modules.get(module)?;
        match tail {
            "A.weight" => Some(LoraName::A(m)),
            "B.weight" => Some(LoraName::B(m)),
            "scaling" => Some(LoraName::Scaling),
            _ => None,
        }
    }

    /// peft's initialisation: A ~ U(±1/√in) (Kaiming-uniform with a = √5), seeded per
    /// tensor name; B = 0, so the adapted model starts as the base.
    fn init(&self, name: &str, rows: usize, cols: usize, zero: bool) -> Vec<f32> {
        if zero {
            return vec![0.0; rows * cols];
        }
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ h);
        let bound = 1.0 / (cols as f32).sqrt();
        (0..rows * cols)
            .map(|_| rng.random_range(-bound..bound))
            .collect()
    }
}

impl TrainProvider {
    /// Registers `master` (f32) as the trainable `name` and returns the compute copy.
    fn variable(&self, name: &str, master: Tensor, dtype: DType) -> candle_core::Result<Tensor> {
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

    /// The saved master of `name` when resuming, checked against `dims`.
    fn saved(
        &self,
        name: &str,
        dims: &[usize],
        dev: &Device,
    ) -> candle_core::Result<Option<Tensor>> {
        match self.masters.get(name) {
            Some(m) if m.dims() == dims => Ok(Some(m.to_dtype(DType::F32)?.to_device(dev)?)),
            Some(m) => candle_core::bail!(
                "saved optimiser state for {name} has shape {:?}, the model {:?}",
                m.dims(),
                dims
            ),
            None => Ok(None),
        }
    }

    fn lora_tensor(
        &self,
        plan: &LoraPlan,
        name: &str,
        which: LoraName<'_>,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (rows, cols, zero) = match which {
            LoraName::Scaling => return Tensor::new(plan.scale, dev),
            LoraName::A(m) => (plan.rank, m.in_dim, false),
            LoraName::B(m) => (m.out_dim, plan.rank, true),
        };
        let master = match self.saved(name, &[rows, cols], dev)? {
            Some(m) => m,
            None => Tensor::from_vec(plan.init(name, rows, cols, zero), (rows, cols), dev)?,
        };
        self.variable(name, master, dtype)
    }
}

impl SimpleBackend for TrainProvider {
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
        let master = match self.saved(name, s.dims(), dev)? {
            Some(m) => m,
            None => self.inner.get(s, name, init, DType::F32, dev)?,
        };
        self.variable(name, master, dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Some(plan) = &self.lora {
            if let Some(which) = plan.lookup(name) {
                return self.lora_tensor(plan, name, which, dtype, dev);
            }
        }
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lora.as_ref().is_some_and(|p| p.lookup(name).is_some())
            || self.inner.contains_tensor(name)
    }
}
