//! The memory a run will need, estimated before it loads anything: `janus train` refuses
//! a run that will not fit, with the estimate and the settings that would.
//!
//! The activation term models what candle's autograd keeps per decoder layer and token
//! (every intermediate of the forward that depends on a trained tensor); its constants
//! were checked against measured peaks (docs/training.md: 1-22% over on Janus-Pro-1B).

use std::fmt;

use candle_core::DType;

use super::data::Kind;
use super::parts::Part;
use crate::config::{JanusConfig, Layout};
use crate::kernels::quant::QuantFormat;
use crate::weights::lora::{self, LoraSpec};
use crate::weights::TensorStore;

/// What a run trains, for the estimate.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// Compute dtype.
    pub dtype: DType,
    /// Quantisation of the frozen base (LoRA only).
    pub quant: Option<QuantFormat>,
    /// Parts trained (ignored with LoRA).
    pub parts: Vec<Part>,
    /// LoRA adapters instead of parts.
    pub lora: Option<LoraSpec>,
    /// Activation checkpointing.
    pub checkpoint_layers: bool,
    /// Samples per forward pass.
    pub micro_batch: usize,
    /// Samples per step by kind (understanding, text, text-to-image), for the lengths.
    pub ratio: [u64; 3],
}

impl PlanSettings {
    /// The settings of a run about to start.
    pub fn for_run(spec: &super::trainer::RunSpec) -> crate::error::Result<Self> {
        Ok(PlanSettings {
            dtype: spec.compute_dtype()?,
            quant: spec.quant_format()?,
            parts: spec.config.train.clone(),
            lora: spec.lora.clone(),
            checkpoint_layers: spec.checkpoint_layers,
            micro_batch: spec.config.micro_batch_size as usize,
            ratio: spec.config.kind_counts(),
        })
    }
}

/// Bytes by use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryPlan {
    /// The model in the compute dtype (trained tensors included).
    pub weights: u64,
    /// f32 masters of trained tensors (bf16 compute only).
    pub masters: u64,
    /// Gradients: autograd's in the compute dtype and the f32 accumulators.
    pub gradients: u64,
    /// AdamW's two f32 moments, and the update's temporaries.
    pub optimizer: u64,
    /// What the forward keeps for the backward, and the heads' logits.
    pub activations: u64,
    /// Trained scalars.
    pub trainable: u64,
    /// The longest sequence assumed.
    pub seq_len: usize,
}

impl MemoryPlan {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights + self.masters + self.gradients + self.optimizer + self.activations
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
        write!(
            f,
            "{} (weights {}, f32 masters {}, gradients {}, optimiser {}, activations {} for \
             {}-token samples; {} trained parameters)",
            g(self.total()),
            g(self.weights),
            g(self.masters),
            g(self.gradients),
            g(self.optimizer),
            g(self.activations),
            self.seq_len,
            self.trainable
        )
    }
}

/// The part a stored tensor (named in `layout`) belongs to; `None` for the VQ.
fn part_of_stored(layout: Layout, name: &str) -> Option<Part> {
    if layout == Layout::Original {
        return Part::of(name);
    }
    let p = |prefix: &str| name.starts_with(prefix);
    Some(if p("model.language_model.embed_tokens.") {
        Part::EmbedTokens
    } else if p("model.language_model.") {
        Part::Llm
    } else if p("lm_head.") {
        Part::LmHead
    } else if p("model.vision_model.") {
        Part::Vision
    } else if p("model.aligner.") {
        Part::Aligner
    } else if p("model.generation_embeddings.") {
        Part::GenEmbed
    } else if p("model.generation_aligner.") {
        Part::GenAligner
    } else if p("model.generation_head.") {
        Part::GenHead
    } else {
        return None;
    })
}

/// Longest sample the ratio's kinds produce, in positions: an image's codes or patches
/// plus room for the text around them; text samples up to 1024 positions.
fn seq_len(cfg: &JanusConfig, ratio: [u64; 3]) -> usize {
    let max = cfg.text.max_position_embeddings;
    let mut len = 0;
    for kind in Kind::ALL {
        if ratio[kind.index()] == 0 {
            continue;
        }
        len = len.max(match kind {
            Kind::Understanding => cfg.vision.num_image_tokens() + 256,
            Kind::Text => 1024,
            Kind::T2i => cfg.gen_image_tokens() + 64,
        });
    }
    len.min(max)
}

/// The estimate for a model of `cfg` stored in `store`.
pub fn estimate(cfg: &JanusConfig, store: &TensorStore, s: &PlanSettings) -> MemoryPlan {
    let elem = s.dtype.size_in_bytes() as u64;
    let mut weight_bytes = 0u64;
    let mut trained = 0u64;
    let mut largest = 0u64;
    let mut largest_quant = 0u64;
    for name in store.names() {
        let shape = store.shape(name).unwrap_or(&[]);
        let n = shape.iter().product::<usize>() as u64;
        let part = part_of_stored(cfg.layout, name);
        // What Janus::load quantises: the LLM's, generation head's and wide aligner
        // layers' matrices.
        let quantised = s.quant.is_some()
            && shape.len() == 2
            && shape[1] >= 512
            && part.is_some_and(|p| {
                matches!(
                    p,
                    Part::Llm | Part::LmHead | Part::GenHead | Part::GenAligner
                )
            });
        weight_bytes += match (quantised, s.quant) {
            // Bits per weight plus the block scales (kernels/quant/).
            (true, Some(QuantFormat::Q8)) => n * (8 * 32 + 10) / (8 * 32),
            (true, Some(QuantFormat::Q4)) => n * (4 * 32 + 10) / (8 * 32),
            _ => n * elem,
        };
        if quantised {
            largest_quant = largest_quant.max(n);
        }
        if s.lora.is_none() && part.is_some_and(|p| s.parts.contains(&p)) {
            trained += n;
            largest = largest.max(n);
        }
    }
    if let Some(spec) = &s.lora {
        for m in lora::modules(cfg, &spec.targets) {
            let n = m.params(spec.rank) as u64;
            trained += n;
            largest = largest.max(n);
        }
    }
    let t = &cfg.text;
    let (d, f, h, layers) = (
        t.hidden_size as u64,
        t.intermediate_size as u64,
        t.num_attention_heads as u64,
        t.num_hidden_layers as u64,
    );
    let len = seq_len(cfg, s.ratio) as u64;
    let rows = s.micro_batch.max(1) as u64 * len;
    // Per token and layer, the elements autograd keeps: the norms', projections', RoPE's
    // and MLP's inputs and outputs. Attention keeps no probabilities (model/ops/attention.rs);
    // its backward recomputes them, one layer at a time (`attention` below).
    let per_layer_token = 24 * d + 8 * f;
    let lora_extra = s.lora.as_ref().map_or(0, |l| 7 * l.rank as u64 * 2);
    let per_layer = rows * (per_layer_token + lora_extra) * elem;
    let kept = if s.checkpoint_layers {
        // Each layer's input, plus one layer recomputed at a time.
        layers * rows * d * elem + per_layer
    } else {
        layers * per_layer
    };
    // Logits of the targets in f32, with the cross-entropy's shifted and exp copies.
    let vocab = t.vocab_size.max(cfg.gen_head.image_token_size) as u64;
    let heads = rows * vocab * 4 * 4;
    // One layer's attention backward: probabilities, their gradient and the scores.
    let attention = s.micro_batch.max(1) as u64 * 4 * h * len * len * 4;
    // A quantised layer's backward product dequantises its weight for the moment.
    let dequantised = largest_quant * 4;
    let adapters = s.lora.is_some();
    MemoryPlan {
        weights: weight_bytes + if adapters { trained * elem } else { 0 },
        masters: if s.dtype == DType::F32 {
            0
        } else {
            trained * 4
        },
        gradients: trained * (elem + 4),
        optimizer: trained * 8 + largest * 4 * 3,
        activations: kept + heads + attention + dequantised,
        trainable: trained,
        seq_len: len as usize,
    }
}

/// Settings that change what a run keeps, cheapest first, each with its estimate; for a
/// refusal's advice.
pub fn alternatives(
    cfg: &JanusConfig,
    store: &TensorStore,
    s: &PlanSettings,
) -> Vec<(String, MemoryPlan)> {
    let mut out = Vec::new();
    let mut push = |label: &str, settings: PlanSettings| {
        out.push((label.to_string(), estimate(cfg, store, &settings)));
    };
    if !s.checkpoint_layers {
        let mut c = s.clone();
        c.checkpoint_layers = true;
        push("--checkpoint-layers", c);
    }
    if s.micro_batch > 1 {
        let mut c = s.clone();
        c.micro_batch = 1;
        c.checkpoint_layers = true;
        push("--micro-batch-size 1 --checkpoint-layers", c);
    }
    if s.dtype == DType::F32 {
        let mut c = s.clone();
        c.dtype = DType::BF16;
        c.checkpoint_layers = true;
        c.micro_batch = 1;
        push("--dtype bf16 --checkpoint-layers --micro-batch-size 1", c);
    }
    if s.lora.is_none() {
        let mut c = s.clone();
        c.lora = Some(LoraSpec {
            rank: 16,
            alpha: 16.0,
            targets: lora::Target::DEFAULT.to_vec(),
        });
        c.micro_batch = 1;
        push("--lora 16 --micro-batch-size 1", c.clone());
        c.dtype = DType::BF16;
        c.checkpoint_layers = true;
        push(
            "--lora 16 --dtype bf16 --checkpoint-layers --micro-batch-size 1",
            c.clone(),
        );
        c.quant = Some(QuantFormat::Q4);
        push(
            "--lora 16 --quant q4 --dtype bf16 --checkpoint-layers --micro-batch-size 1",
            c,
        );
    }
    out
}

/// The estimate, or an error naming it, the limit and the alternatives that fit when the
/// run needs more than `limit` bytes.
pub fn check_fits(
    cfg: &JanusConfig,
    store: &TensorStore,
    s: &PlanSettings,
    limit: u64,
) -> crate::error::Result<MemoryPlan> {
    let plan = estimate(cfg, store, s);
    if plan.total() <= limit {
        return Ok(plan);
    }
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let fitting: Vec<String> = alternatives(cfg, store, s)
        .into_iter()
        .filter(|(_, p)| p.total() <= limit)
        .map(|(label, p)| format!("  {label}: {}", gib(p.total())))
        .collect();
    let advice = if fitting.is_empty() {
        "nothing the trainer offers fits; use a machine with more memory".to_string()
    } else {
        format!("adding these options would fit:\n{}", fitting.join("\n"))
    };
    Err(crate::error::Error::InvalidInput(format!(
        "this run needs about {plan}, more than the {} available (--memory-limit); {advice}",
        gib(limit)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PlanSettings {
        PlanSettings {
            dtype: DType::F32,
            quant: None,
            parts: Part::ALL.to_vec(),
            lora: None,
            checkpoint_layers: false,
            micro_batch: 2,
            ratio: [1, 1, 1],
        }
    }

    #[test]
    fn each_saving_option_lowers_the_estimate_and_refusals_name_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models/tiny-janus");
        let (cfg, store) = crate::weights::load_model_dir(&dir).unwrap();
        let base = estimate(&cfg, &store, &settings());
        assert!(base.trainable > 0 && base.optimizer >= base.trainable * 8);
        let with = |f: &dyn Fn(&mut PlanSettings)| {
            let mut s = settings();
            f(&mut s);
            estimate(&cfg, &store, &s)
        };
        let ckpt = with(&|s| s.checkpoint_layers = true);
        assert!(ckpt.activations < base.activations);
        let micro = with(&|s| s.micro_batch = 1);
        assert!(micro.activations < base.activations);
        let lora = with(&|s| {
            s.lora = Some(LoraSpec {
                rank: 2,
                alpha: 2.0,
                targets: lora::Target::DEFAULT.to_vec(),
            })
        });
        assert!(lora.trainable < base.trainable && lora.optimizer < base.optimizer);
        let bf16 = with(&|s| s.dtype = DType::BF16);
        assert!(bf16.weights < base.weights && bf16.masters > 0);
        assert!(check_fits(&cfg, &store, &settings(), u64::MAX).is_ok());
        let err = check_fits(&cfg, &store, &settings(), base.total() - 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs about") && err.contains("--checkpoint-layers"),
            "{err}"
        );
    }
}
