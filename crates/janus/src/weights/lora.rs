//! LoRA adapters as peft stores them, and folding them into the base weights.
//!
//! An adapter directory holds `adapter_config.json` (peft's `LoraConfig`) and
//! `adapter_model.safetensors` with one `lora_A` `(r, in)` and one `lora_B` `(out, r)` per
//! adapted linear layer, named `base_model.model.<module>.lora_{A,B}.weight` where
//! `<module>` is the base checkpoint's own name for the layer: peft's
//! `PeftModel.from_pretrained` loads them onto the same model. A layer then computes
//! `x·Wᵀ + (alpha / r)·(x·Aᵀ)·Bᵀ`, and merging replaces `W` by `W + (alpha / r)·B·A`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use serde::{Deserialize, Serialize};

use super::names::Source;
use super::provider::{checkpoint_source, CheckpointProvider};
use crate::config::{JanusConfig, Layout};
use crate::error::{Error, Result};

/// peft's file names.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// peft's weights file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Name (under a layer's prefix) of the scalar `alpha / r` the model reads while training.
pub const SCALING: &str = "lora_scaling";
const PEFT_PREFIX: &str = "base_model.model.";

/// The linear layers an adapter can sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Attention query projection of every decoder layer.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// MLP gate projection.
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
    /// Both linear layers of the generation head.
    GenHead,
    /// The text head.
    LmHead,
}

impl Target {
    /// Every target, in command-line order.
    pub const ALL: [Target; 9] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
        Target::GenHead,
        Target::LmHead,
    ];

    /// The default: every projection of the decoder layers (as QLoRA adapts them all).
    pub const DEFAULT: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
            Target::GenHead => "gen_head",
            Target::LmHead => "lm_head",
        }
    }

    /// Parses a comma-separated list (`q,k,v,o,gate,up,down,gen_head,lm_head`).
    pub fn parse_list(text: &str) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let t = Target::ALL
                .into_iter()
                .find(|t| t.name() == item)
                .ok_or_else(|| {
                    let all: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
                    Error::InvalidInput(format!(
                        "unknown LoRA target {item:?}; choose from {}",
                        all.join(",")
                    ))
                })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(Error::InvalidInput("--lora-targets names no layer".into()));
        }
        out.sort();
        Ok(out)
    }
}

/// Rank, alpha and the adapted layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank `r` of every adapter.
    pub rank: usize,
    /// `alpha`: the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Adapted layers.
    pub targets: Vec<Target>,
}

impl LoraSpec {
    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// [`Self::validate`], and the targets exist in a model of `cfg` (a tied `lm_head`
    /// is the embedding table, which adapters do not cover).
    pub fn validate_for(&self, cfg: &JanusConfig) -> Result<()> {
        self.validate()?;
        if cfg.text.tie_word_embeddings && self.targets.contains(&Target::LmHead) {
            return Err(Error::InvalidInput(
                "this model ties lm_head to the token embeddings: lm_head cannot take an \
                 adapter"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Rejects a zero rank, a non-finite alpha or no target.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::InvalidInput("--lora rank must be at least 1".into()));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::InvalidInput(format!(
                "--lora-alpha must be a positive number, not {}",
                self.alpha
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::InvalidInput("LoRA needs at least one target".into()));
        }
        Ok(())
    }
}

/// One adapted layer: its canonical module name (the weight is `<name>.weight`) and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical (original-layout) module name.
    pub name: String,
    /// Input features.
    pub in_dim: usize,
    /// Output features.
    pub out_dim: usize,
}

impl Module {
    /// Canonical name of `lora_A`.
    pub fn a(&self) -> String {
        format!("{}.lora_A.weight", self.name)
    }
    /// Canonical name of `lora_B`.
    pub fn b(&self) -> String {
        format!("{}.lora_B.weight", self.name)
    }
    /// Scalars an adapter pair adds: `r·(in + out)`.
    pub fn params(&self, rank: usize) -> usize {
        rank * (self.in_dim + self.out_dim)
    }
}

/// The layers `targets` adapt in a model of `cfg`, in name order.
pub fn modules(cfg: &JanusConfig, targets: &[Target]) -> Vec<Module> {
    let t = &cfg.text;
    let (d, q, kv, f) = (
        t.hidden_size,
        t.num_attention_heads * t.head_dim,
        t.num_key_value_heads * t.head_dim,
        t.intermediate_size,
    );
    let m = |name: String, in_dim, out_dim| Module {
        name,
        in_dim,
        out_dim,
    };
    let mut out = Vec::new();
    for &target in targets {
        let per_layer = match target {
            Target::Q => Some(("self_attn.q_proj", d, q)),
            Target::K => Some(("self_attn.k_proj", d, kv)),
            Target::V => Some(("self_attn.v_proj", d, kv)),
            Target::O => Some(("self_attn.o_proj", q, d)),
            Target::Gate => Some(("mlp.gate_proj", d, f)),
            Target::Up => Some(("mlp.up_proj", d, f)),
            Target::Down => Some(("mlp.down_proj", f, d)),
            Target::GenHead | Target::LmHead => None,
        };
        if let Some((suffix, i, o)) = per_layer {
            for l in 0..t.num_hidden_layers {
                out.push(m(format!("language_model.model.layers.{l}.{suffix}"), i, o));
            }
        }
        match target {
            Target::LmHead => out.push(m("language_model.lm_head".into(), d, t.vocab_size)),
            Target::GenHead => {
                let g = &cfg.gen_head;
                let (e, v) = (g.image_token_embed, g.image_token_size);
                out.push(m("gen_head.output_mlp_projector".into(), g.n_embed, e));
                out.push(m("gen_head.vision_head".into(), e, v));
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The checkpoint's name (in `layout`) of a canonical module.
fn module_in_layout(layout: Layout, canonical: &str) -> Result<String> {
    match checkpoint_source(layout, &format!("{canonical}.weight")) {
        Some(Source::Name(n)) => Ok(n.trim_end_matches(".weight").to_string()),
        _ => Err(Error::Model(format!(
            "{canonical} has no single weight in a {layout} checkpoint"
        ))),
    }
}

/// peft's name of a canonical adapter tensor (`<module>.lora_{A,B}.weight`).
pub fn peft_name(layout: Layout, canonical: &str) -> Result<String> {
    let (module, tail) = split_adapter_name(canonical)
        .ok_or_else(|| Error::Model(format!("{canonical} is not a LoRA tensor name")))?;
    Ok(format!(
        "{PEFT_PREFIX}{}.{tail}",
        module_in_layout(layout, module)?
    ))
}

/// `(module, "lora_A.weight" | "lora_B.weight")`.
fn split_adapter_name(name: &str) -> Option<(&str, &str)> {
    for tail in ["lora_A.weight", "lora_B.weight"] {
        if let Some(m) = name.strip_suffix(tail).and_then(|m| m.strip_suffix('.')) {
            return Some((m, tail));
        }
    }
    None
}

/// peft's `target_modules` for `modules`: a regular expression matching exactly their
/// names in `layout` (a list of suffixes would also catch SigLIP's `q_proj`s).
fn target_regex(layout: Layout, modules: &[Module]) -> Result<String> {
    // Decoder-layer modules collapse to one alternative per suffix over `\d+`.
    let mut alternatives: Vec<String> = Vec::new();
    for m in modules {
        let name = module_in_layout(layout, &m.name)?;
        let escaped = regex_escape_layers(&name);
        if !alternatives.contains(&escaped) {
            alternatives.push(escaped);
        }
    }
    Ok(format!("^(?:{})$", alternatives.join("|")))
}

/// Escapes dots and turns `layers.<n>.` into `layers\.\d+\.`.
fn regex_escape_layers(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let is_layer_index =
            i > 0 && parts[i - 1] == "layers" && p.chars().all(|c| c.is_ascii_digit());
        out.push(if is_layer_index {
            r"\d+".to_string()
        } else {
            p.to_string()
        });
    }
    out.join(r"\.")
}

/// A set of adapters: their settings and f32 `A`/`B` under canonical names.
#[derive(Debug, Clone)]
pub struct Adapters {
    /// Rank, alpha, targets.
    pub spec: LoraSpec,
    /// The model they were trained on (peft's `base_model_name_or_path`).
    pub base: Option<String>,
    /// `<module>.lora_{A,B}.weight` -> value.
    pub tensors: BTreeMap<String, Tensor>,
}

/// The parts of peft's `adapter_config.json` we read.
#[derive(Deserialize)]
struct PeftConfig {
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    rank_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: HashMap<String, serde_json::Value>,
    #[serde(default)]
    fan_in_fan_out: bool,
}

impl Adapters {
    /// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors`, names as a
    /// `layout` checkpoint of `cfg` names the layers (the directory must exist).
    pub fn save(&self, dir: &Path, cfg: &JanusConfig) -> Result<()> {
        let layout = cfg.layout;
        let mut named = HashMap::new();
        for (name, t) in &self.tensors {
            named.insert(peft_name(layout, name)?, t.to_device(&Device::Cpu)?);
        }
        candle_core::safetensors::save(&named, dir.join(WEIGHTS_FILE))?;
        let modules = modules(cfg, &self.spec.targets);
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": null,
            "base_model_name_or_path": self.base,
            "r": self.spec.rank,
            "lora_alpha": self.spec.alpha,
            "lora_dropout": 0.0,
            "target_modules": target_regex(layout, &modules)?,
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
            "use_rslora": false,
            "use_dora": false,
            "rank_pattern": {},
            "alpha_pattern": {},
        });
        let text = serde_json::to_string_pretty(&config).unwrap_or_default() + "\n";
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }

    /// Reads an adapter directory for a model of `cfg` (names of either layout).
    pub fn load(dir: &Path, cfg: &JanusConfig) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|_| {
            Error::InvalidInput(format!(
                "{} is not a LoRA adapter directory (no {CONFIG_FILE})",
                dir.display()
            ))
        })?;
        let pc: PeftConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
        if pc.peft_type.as_deref().is_some_and(|t| t != "LORA") {
            return Err(Error::InvalidInput(format!(
                "{}: peft type {:?} is not LORA",
                cfg_path.display(),
                pc.peft_type
            )));
        }
        if pc.use_rslora
            || pc.use_dora
            || pc.fan_in_fan_out
            || !pc.rank_pattern.is_empty()
            || !pc.alpha_pattern.is_empty()
        {
            return Err(Error::InvalidInput(format!(
                "{}: rsLoRA, DoRA, fan_in_fan_out and per-layer ranks or alphas are not \
                 supported",
                cfg_path.display()
            )));
        }
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} has no {WEIGHTS_FILE}",
                dir.display()
            )));
        }
        let raw = candle_core::safetensors::load(&weights, &Device::Cpu)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", weights.display())))?;
        // Every name an adapter of any target could have, in both layouts.
        let all: Vec<(Target, Module)> = Target::ALL
            .into_iter()
            .flat_map(|t| modules(cfg, &[t]).into_iter().map(move |m| (t, m)))
            .collect();
        let mut by_peft: HashMap<String, (Target, &Module, &str)> = HashMap::new();
        for (t, m) in &all {
            for layout in [Layout::Original, Layout::Transformers] {
                if let Ok(n) = module_in_layout(layout, &m.name) {
                    for tail in ["lora_A.weight", "lora_B.weight"] {
                        by_peft.insert(format!("{PEFT_PREFIX}{n}.{tail}"), (*t, m, tail));
                    }
                }
            }
        }
        let mut tensors = BTreeMap::new();
        let mut targets = Vec::new();
        for (name, t) in raw {
            let Some(&(target, m, tail)) = by_peft.get(&name) else {
                let all: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
                return Err(Error::InvalidInput(format!(
                    "{}: {name} is not a LoRA A/B matrix of a layer janus adapts ({}); \
                     adapters on other layers, saved base weights (modules_to_save) and \
                     LoRA biases are not supported",
                    weights.display(),
                    all.join(",")
                )));
            };
            let want = if tail.starts_with("lora_A") {
                [pc.r, m.in_dim]
            } else {
                [m.out_dim, pc.r]
            };
            if t.dims() != want {
                return Err(Error::InvalidInput(format!(
                    "{}: {name} has shape {:?}, expected {want:?} (rank {})",
                    weights.display(),
                    t.dims(),
                    pc.r
                )));
            }
            if !targets.contains(&target) {
                targets.push(target);
            }
            tensors.insert(format!("{}.{tail}", m.name), t.to_dtype(DType::F32)?);
        }
        for (_, m) in &all {
            if tensors.contains_key(&m.a()) != tensors.contains_key(&m.b()) {
                return Err(Error::InvalidInput(format!(
                    "{}: {} has only one of lora_A and lora_B",
                    weights.display(),
                    m.name
                )));
            }
        }
        if tensors.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} holds no adapter",
                weights.display()
            )));
        }
        targets.sort();
        let spec = LoraSpec {
            rank: pc.r,
            alpha: pc.lora_alpha,
            targets,
        };
        spec.validate_for(cfg)?;
        Ok(Self {
            spec,
            base: pc.base_model_name_or_path,
            tensors,
        })
    }

    /// `(alpha / r)·B·A` in f32 for each adapted module, by canonical weight name.
    pub fn deltas(&self) -> Result<HashMap<String, Tensor>> {
        let scale = self.spec.scale();
        let mut out = HashMap::new();
        for (name, a) in &self.tensors {
            let Some((module, "lora_A.weight")) = split_adapter_name(name) else {
                continue;
            };
            let b = &self.tensors[&format!("{module}.lora_B.weight")];
            let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * scale)?;
            out.insert(format!("{module}.weight"), delta);
        }
        Ok(out)
    }
}

/// Serves the base checkpoint with each adapted weight replaced by `W + (alpha/r)·B·A`
/// (summed in f32, then converted to the requested dtype): adapters applied at load.
pub struct MergedLoraProvider {
    inner: CheckpointProvider,
    deltas: HashMap<String, Tensor>,
}

impl MergedLoraProvider {
    /// Wraps `inner` with `adapters` folded in.
    pub fn new(inner: CheckpointProvider, adapters: &Adapters) -> Result<Self> {
        Ok(Self {
            inner,
            deltas: adapters.deltas()?,
        })
    }
}

impl SimpleBackend for MergedLoraProvider {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(delta) = self.deltas.get(name) else {
            return self.inner.get(s, name, init, dtype, dev);
        };
        let w = self.inner.get(s, name, init, DType::F32, dev)?;
        (w + delta.to_device(dev)?)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Where an adapter directory's base model is: `base` if given, else the one its config
/// names, else an error saying to pass it.
pub fn base_of(dir: &Path, base: Option<&Path>) -> Result<PathBuf> {
    if let Some(b) = base {
        return Ok(b.to_path_buf());
    }
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let pc: PeftConfig = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    // A relative path is taken from the adapter directory.
    match pc.base_model_name_or_path.map(|b| dir.join(b)) {
        Some(b) if b.is_dir() => Ok(b),
        other => Err(Error::InvalidInput(format!(
            "{} names base model {:?}, which is not a local directory; pass the base model",
            dir.display(),
            other
        ))),
    }
}
