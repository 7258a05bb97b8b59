//! Parameter counts per trainable part, from a config alone: the published sizes
//! (`1b`, `1.3b`, `7b`) or a model directory's `config.json`.
//!
//! Each part has two counts: every parameter it stores (what an optimiser updates when it
//! trains), and the weights of its matrix products (what each position it processes costs,
//! 2 FLOPs per weight forward). Embedding tables are lookups: they store parameters but
//! cost no products. Counts follow the tensor shapes of the checkpoints
//! (`fixtures/checkpoints/*.tsv` pin them); the VQ model is left out, as it never trains
//! and the planner takes image codes as computed once, before training.

use serde::Serialize;
use serde_json::json;

use crate::config::JanusConfig;
use crate::error::{Error, Result};
use crate::train::parts::Part;

/// The published model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ModelSize {
    /// Janus-Pro-1B: the 2048-wide, 24-layer DeepSeek-LLM.
    #[serde(rename = "1b")]
    B1,
    /// Janus-1.3B: the same architecture as Janus-Pro-1B.
    #[serde(rename = "1.3b")]
    B1_3,
    /// Janus-Pro-7B: the 4096-wide, 30-layer DeepSeek-LLM.
    #[serde(rename = "7b")]
    B7,
}

impl ModelSize {
    /// Every size, in command-line order.
    pub const ALL: [ModelSize; 3] = [ModelSize::B1, ModelSize::B1_3, ModelSize::B7];

    /// Parses `1b`, `1.3b` or `7b` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        ModelSize::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown model size {s:?}; use 1b, 1.3b or 7b, or --model DIR"
                ))
            })
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            ModelSize::B1 => "1b",
            ModelSize::B1_3 => "1.3b",
            ModelSize::B7 => "7b",
        }
    }

    /// The published checkpoint of this size.
    pub fn label(self) -> &'static str {
        match self {
            ModelSize::B1 => "Janus-Pro-1B",
            ModelSize::B1_3 => "Janus-1.3B",
            ModelSize::B7 => "Janus-Pro-7B",
        }
    }

    /// The published `config.json` (original layout), parsed by the model's own config
    /// code; the 7B's omits most LLM keys, which then take LlamaConfig's defaults.
    pub fn config(self) -> Result<JanusConfig> {
        let d = match self {
            ModelSize::B1 | ModelSize::B1_3 => 2048,
            ModelSize::B7 => 4096,
        };
        let language = match self {
            ModelSize::B1 | ModelSize::B1_3 => json!({
                "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
                "num_attention_heads": 16, "num_key_value_heads": 16,
                "max_position_embeddings": 16384, "model_type": "llama", "vocab_size": 102400
            }),
            ModelSize::B7 => json!({
                "max_position_embeddings": 16384, "model_type": "llama",
                "num_hidden_layers": 30, "vocab_size": 102400
            }),
        };
        let mlp = |input: usize| {
            json!({"cls": "MlpProjector",
                   "params": {"depth": 2, "input_dim": input, "n_embed": d,
                              "projector_type": "mlp_gelu"}})
        };
        JanusConfig::from_value(&json!({
            "model_type": "multi_modality",
            "aligner_config": mlp(1024),
            "gen_aligner_config": mlp(8),
            "gen_head_config": {"cls": "vision_head",
                "params": {"image_token_embed": d, "image_token_size": 16384, "n_embed": d}},
            "gen_vision_config": {"cls": "VQ-16",
                "params": {"image_token_size": 16384, "n_embed": 8}},
            "language_config": language,
            "vision_config": {"cls": "CLIPVisionTower",
                "params": {"image_size": 384, "model_name": "siglip_large_patch16_384",
                           "select_feature": "same", "select_layer": -1}}
        }))
    }

    /// The size whose LLM has this width and depth, if any.
    pub fn of_config(cfg: &JanusConfig) -> Option<Self> {
        match (cfg.text.hidden_size, cfg.text.num_hidden_layers) {
            (2048, 24) => Some(ModelSize::B1),
            (4096, 30) => Some(ModelSize::B7),
            _ => None,
        }
    }
}

/// One part's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartParams {
    /// Which part.
    pub part: Part,
    /// Every parameter it stores (weights, biases, norms, position table).
    pub params: u64,
    /// Weights of the matrix products it runs once per position it processes (0 for the
    /// embedding tables, which are lookups).
    pub matmul: u64,
}

/// Parameter counts of a model, per part, and the sizes the attention cost needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelParams {
    /// Per part, in [`Part::ALL`] order.
    pub parts: Vec<PartParams>,
    /// LLM decoder layers.
    pub llm_layers: u64,
    /// LLM query width (heads x head_dim).
    pub llm_q_dim: u64,
    /// SigLIP blocks run.
    pub vision_layers: u64,
    /// SigLIP token width.
    pub vision_width: u64,
    /// Patches (and image positions) per understanding image.
    pub image_tokens: u64,
    /// Codes per generated image.
    pub gen_image_tokens: u64,
}

impl ModelParams {
    /// The counts of a model of `cfg`.
    pub fn of(cfg: &JanusConfig) -> Self {
        let t = &cfg.text;
        let v = &cfg.vision;
        let u = |x: usize| x as u64;
        let (d, f, vocab) = (u(t.hidden_size), u(t.intermediate_size), u(t.vocab_size));
        let (q, kv) = (
            u(t.num_attention_heads * t.head_dim),
            u(t.num_key_value_heads * t.head_dim),
        );
        let layers = u(t.num_hidden_layers);
        let attn_bias = if t.attention_bias { q + 2 * kv + d } else { 0 };
        let mlp_bias = if t.mlp_bias { 2 * f + d } else { 0 };
        // q, k, v, o projections and gate, up, down.
        let layer_matmul = d * q + 2 * d * kv + q * d + 3 * d * f;
        // Plus the two RMSNorm weights.
        let layer_params = layer_matmul + attn_bias + mlp_bias + 2 * d;

        let (w, m, p) = (u(v.hidden_size), u(v.intermediate_size), u(v.patch_size));
        let patches = u(v.num_image_tokens());
        let vl = u(v.num_layers);
        // The patch convolution is one product per patch: 3 x p x p inputs to w outputs.
        let patch_matmul = 3 * p * p * w;
        // Fused qkv, proj, fc1, fc2.
        let block_matmul = 3 * w * w + w * w + 2 * w * m;
        // Biases of those four, and two LayerNorms (weight and bias).
        let block_params = block_matmul + 3 * w + w + m + w + 4 * w;
        let vision_params = patch_matmul + w + patches * w + vl * block_params + 2 * w;

        let mlp = |c: &crate::config::MlpConfig| {
            let (i, n) = (u(c.input_dim), u(c.n_embed));
            let deeper = u(c.depth.saturating_sub(1));
            let matmul = i * n + deeper * n * n;
            (matmul + n + deeper * n, matmul)
        };
        let g = &cfg.gen_head;
        let (gd, ge, gv) = (u(g.n_embed), u(g.image_token_embed), u(g.image_token_size));
        let head_matmul = gd * ge + ge * gv;
        let lm_head = if t.tie_word_embeddings { 0 } else { vocab * d };
        let (aligner, aligner_mm) = mlp(&cfg.aligner);
        let (gen_aligner, gen_aligner_mm) = mlp(&cfg.gen_aligner);
        let counts = |part: Part| -> (u64, u64) {
            match part {
                Part::Vision => (vision_params, patch_matmul + vl * block_matmul),
                Part::Aligner => (aligner, aligner_mm),
                Part::GenEmbed => (u(cfg.gen_embed.0 * cfg.gen_embed.1), 0),
                Part::GenAligner => (gen_aligner, gen_aligner_mm),
                Part::GenHead => (head_matmul + ge + gv, head_matmul),
                Part::Llm => (layers * layer_params + d, layers * layer_matmul),
                Part::EmbedTokens => (vocab * d, 0),
                // A tied head stores nothing of its own but still runs its product.
                Part::LmHead => (lm_head, vocab * d),
            }
        };
        ModelParams {
            parts: Part::ALL
                .iter()
                .map(|&part| {
                    let (params, matmul) = counts(part);
                    PartParams {
                        part,
                        params,
                        matmul,
                    }
                })
                .collect(),
            llm_layers: layers,
            llm_q_dim: q,
            vision_layers: vl,
            vision_width: w,
            image_tokens: patches,
            gen_image_tokens: u(cfg.gen_image_tokens()),
        }
    }

    /// One part's counts.
    pub fn part(&self, part: Part) -> PartParams {
        self.parts
            .iter()
            .copied()
            .find(|p| p.part == part)
            .unwrap_or(PartParams {
                part,
                params: 0,
                matmul: 0,
            })
    }

    /// Every parameter but the VQ model's.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.params).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Parameters per part in a published name list (`name<TAB>[d0, d1, ...]`), the
    /// ignored tensors (attn_pool, codebook counter) and the VQ left out.
    fn tsv_counts(file: &str) -> HashMap<Part, u64> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/checkpoints")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = HashMap::new();
        for line in text.lines().skip(1) {
            let (name, shape) = line.split_once('\t').unwrap();
            if crate::weights::is_ignored(name) {
                continue;
            }
            let Some(part) = Part::of(name) else { continue };
            let n: u64 = shape
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|d| d.trim().parse::<u64>().unwrap())
                .product();
            *out.entry(part).or_default() += n;
        }
        out
    }

    #[test]
    fn published_counts_match_the_checkpoints_name_lists() {
        for (size, file) in [
            (ModelSize::B1, "janus-pro-1b.original.tsv"),
            (ModelSize::B7, "janus-pro-7b.original.tsv"),
        ] {
            let counts = ModelParams::of(&size.config().unwrap());
            let tsv = tsv_counts(file);
            for p in &counts.parts {
                assert_eq!(p.params, tsv[&p.part], "{} {}", size.name(), p.part);
            }
        }
        let seven = ModelParams::of(&ModelSize::B7.config().unwrap());
        // 30 layers x (4 x 4096^2 + 3 x 4096 x 11008).
        assert_eq!(
            seven.part(Part::Llm).matmul,
            30 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
        );
        assert_eq!(seven.total(), 7_335_889_920);
        let one = ModelParams::of(&ModelSize::B1_3.config().unwrap());
        assert_eq!(one.total(), 2_004_753_408);
        assert_eq!(
            ModelSize::of_config(&ModelSize::B7.config().unwrap()),
            Some(ModelSize::B7)
        );
    }

    #[test]
    fn sizes_parse_and_unknown_ones_are_named() {
        assert_eq!(ModelSize::parse("7B").unwrap(), ModelSize::B7);
        assert_eq!(ModelSize::parse("1.3b").unwrap(), ModelSize::B1_3);
        let e = ModelSize::parse("3b").unwrap_err().to_string();
        assert!(e.contains("\"3b\"") && e.contains("1.3b"), "{e}");
    }
}
