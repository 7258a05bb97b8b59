//! Model configuration: both checkpoint layouts' `config.json` parsed into one
//! [`JanusConfig`].
//!
//! * Original deepseek layout (`model_type: multi_modality`): each part is a `cls` plus
//!   `params`, and the LLM is a `language_config` in LlamaConfig terms. The SigLIP tower is
//!   named by preset (`siglip_large_patch16_384`) and the VQ model is built with default
//!   arguments, so their sizes come from presets here. Our extension: the optional fields
//!   `width`, `layers`, `heads`, `mlp_ratio`, `patch_size` in `vision_config.params` and
//!   `codebook_size`, `codebook_embed_dim`, `z_channels`, `ch`, `ch_mult`,
//!   `num_res_blocks` in `gen_vision_config.params` override the presets (used by the tiny
//!   test models; absent in the published checkpoints).
//! * transformers layout (`model_type: janus`): `text_config`, `vision_config`,
//!   `vq_config`.
//!
//! LLM keys a config leaves out take LlamaConfig's defaults (the Janus-Pro-7B config omits
//! most of them).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

mod original;
mod transformers;

use original::from_original;
use transformers::from_transformers;

/// Which tensor naming scheme a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// deepseek-ai's original `MultiModalityCausalLM` names (`language_model.model.*`, ...).
    Original,
    /// transformers' `JanusForConditionalGeneration` names (`model.language_model.*`, ...).
    Transformers,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Original => "original (deepseek)",
            Layout::Transformers => "transformers",
        })
    }
}

/// The LLaMA decoder (DeepSeek-LLM).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Model width D.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than the query heads).
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Text vocabulary size (rows of embed_tokens and lm_head).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest sequence the model supports (prompt plus generated tokens).
    pub max_position_embeddings: usize,
    /// Whether q/k/v/o projections carry biases.
    pub attention_bias: bool,
    /// Whether the MLP projections carry biases.
    pub mlp_bias: bool,
    /// Whether lm_head shares embed_tokens' weights.
    pub tie_word_embeddings: bool,
}

/// The SigLIP ViT used for understanding.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Input resolution (square).
    pub image_size: usize,
    /// Patch size of the stride-`patch_size` patch-embedding convolution.
    pub patch_size: usize,
    /// Token width.
    pub hidden_size: usize,
    /// Transformer blocks actually run (after `select_layer`).
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per side (0 for a zero patch size, which validation then refuses).
    pub fn grid(&self) -> usize {
        self.image_size.checked_div(self.patch_size).unwrap_or(0)
    }
    /// Image tokens per image (576 for the published models).
    pub fn num_image_tokens(&self) -> usize {
        self.grid() * self.grid()
    }
}

/// An `mlp_gelu` projector: Linear(in, out) then (depth - 1) x [GELU, Linear(out, out)].
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Input width.
    pub input_dim: usize,
    /// Output (and hidden) width.
    pub n_embed: usize,
    /// Number of Linear layers.
    pub depth: usize,
}

/// The generation head: Linear(D, embed) -> GELU -> Linear(embed, image vocab).
#[derive(Debug, Clone, PartialEq)]
pub struct GenHeadConfig {
    /// LLM width it reads.
    pub n_embed: usize,
    /// Hidden width.
    pub image_token_embed: usize,
    /// Image-code vocabulary.
    pub image_token_size: usize,
}

/// LlamaGen's VQ-16 image tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct VqConfig {
    /// Codebook entries (image vocabulary).
    pub codebook_size: usize,
    /// Codebook vector width.
    pub codebook_embed_dim: usize,
    /// Latent channels between encoder/decoder and the (post_)quant_conv.
    pub z_channels: usize,
    /// Base channel count.
    pub ch: usize,
    /// Channel multiplier per resolution level (encoder order; the decoder reverses it).
    pub ch_mult: Vec<usize>,
    /// ResnetBlocks per encoder level (the decoder uses one more).
    pub num_res_blocks: usize,
    /// Image channels in and out.
    pub in_channels: usize,
}

impl VqConfig {
    /// Spatial downsampling factor (16 for VQ-16).
    pub fn downsample(&self) -> usize {
        1 << (self.ch_mult.len().saturating_sub(1))
    }
}

/// Everything the model needs, whatever the layout on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct JanusConfig {
    /// Tensor naming scheme of the checkpoint.
    pub layout: Layout,
    /// The LLM.
    pub text: TextConfig,
    /// The understanding encoder.
    pub vision: VisionConfig,
    /// Understanding aligner (vision width -> D).
    pub aligner: MlpConfig,
    /// Generation aligner (codebook embed width -> D).
    pub gen_aligner: MlpConfig,
    /// Generation head.
    pub gen_head: GenHeadConfig,
    /// Rows x width of gen_embed.
    pub gen_embed: (usize, usize),
    /// The VQ tokenizer.
    pub vq: VqConfig,
    /// Side of the generated code grid (24 for the published models: 576 codes).
    pub gen_grid: usize,
}

impl JanusConfig {
    /// Codes per generated image.
    pub fn gen_image_tokens(&self) -> usize {
        self.gen_grid * self.gen_grid
    }
    /// Side of a generated image in pixels.
    pub fn gen_image_size(&self) -> usize {
        self.gen_grid * self.vq.downsample()
    }

    /// Reads and parses `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: invalid JSON: {e}", path.display())))?;
        Self::from_value(&value)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), strip(e))))
    }

    /// Parses a config already read as JSON, detecting the layout from its keys.
    pub fn from_value(v: &Value) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let cfg = if model_type == "janus" || v.get("text_config").is_some() {
            from_transformers(v)?
        } else if model_type == "multi_modality" || v.get("language_config").is_some() {
            from_original(v)?
        } else {
            return Err(Error::Config(format!(
                "unrecognised config (model_type {model_type:?}): expected a Janus checkpoint \
                 (model_type \"multi_modality\" or \"janus\")"
            )));
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let t = &self.text;
        let bad = |m: String| Err(Error::Config(m));
        if t.num_attention_heads == 0 || t.num_key_value_heads == 0 {
            return bad("language model has zero attention heads".into());
        }
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if !t.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", t.head_dim));
        }
        let v = &self.vision;
        if v.num_heads == 0 || !v.hidden_size.is_multiple_of(v.num_heads) {
            return bad(format!(
                "vision width {} is not a multiple of its {} heads",
                v.hidden_size, v.num_heads
            ));
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        let grid = v.grid();
        if grid.checked_mul(grid).is_none() {
            return bad(format!("vision grid {grid} x {grid} overflows"));
        }
        // downsample() is 1 << (levels - 1); a dozen levels is already absurd.
        if self.vq.ch_mult.is_empty() || self.vq.ch_mult.len() > 16 {
            return bad(format!(
                "VQ ch_mult has {} levels (expected 1 to 16)",
                self.vq.ch_mult.len()
            ));
        }
        for m in &self.vq.ch_mult {
            let channels = self.vq.ch.checked_mul(*m);
            if !channels.is_some_and(|c| c.is_multiple_of(32)) {
                return bad(format!(
                    "VQ channels {} x {m} are not a multiple of the 32 GroupNorm groups",
                    self.vq.ch
                ));
            }
        }
        let g = self.gen_grid;
        if g.checked_mul(g).is_none() || g.checked_mul(self.vq.downsample()).is_none() {
            return bad(format!("generation grid {g} overflows"));
        }
        if self.gen_head.image_token_size != self.vq.codebook_size {
            return bad(format!(
                "gen_head predicts {} codes but the VQ codebook has {}",
                self.gen_head.image_token_size, self.vq.codebook_size
            ));
        }
        Ok(())
    }
}

fn strip(e: Error) -> String {
    match e {
        Error::Config(m) => m,
        other => other.to_string(),
    }
}

/// LlamaConfig as transformers reads it; absent keys take LlamaConfig's defaults.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawLlama {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    max_position_embeddings: usize,
    attention_bias: bool,
    mlp_bias: bool,
    tie_word_embeddings: bool,
    hidden_act: String,
    rope_scaling: Option<Value>,
    pretraining_tp: usize,
}

impl Default for RawLlama {
    // transformers.LlamaConfig.__init__ defaults.
    fn default() -> Self {
        RawLlama {
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            vocab_size: 32000,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: 2048,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            hidden_act: "silu".into(),
            rope_scaling: None,
            pretraining_tp: 1,
        }
    }
}

impl RawLlama {
    fn into_text(self) -> Result<TextConfig> {
        if self.hidden_act != "silu" {
            return Err(Error::Config(format!(
                "language model hidden_act {:?} is not supported (only \"silu\")",
                self.hidden_act
            )));
        }
        if let Some(s) = self.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            return Err(Error::Config(format!(
                "language model rope_scaling {s} is not supported"
            )));
        }
        if self.pretraining_tp != 1 {
            return Err(Error::Config(format!(
                "pretraining_tp {} is not supported",
                self.pretraining_tp
            )));
        }
        let heads = self.num_attention_heads.max(1);
        Ok(TextConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.head_dim.unwrap_or(self.hidden_size / heads),
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_position_embeddings: self.max_position_embeddings,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            tie_word_embeddings: self.tie_word_embeddings,
        })
    }
}

fn parse<T: for<'de> Deserialize<'de>>(v: Option<&Value>, what: &str) -> Result<T> {
    let v = v.cloned().unwrap_or(Value::Object(Default::default()));
    serde_json::from_value(v).map_err(|e| Error::Config(format!("{what}: {e}")))
}

fn params<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    let part = v
        .get(key)
        .ok_or_else(|| Error::Config(format!("missing {key}")))?;
    Ok(part.get("params").unwrap_or(&Value::Null))
}

fn cls<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(|p| p.get("cls"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Number of blocks kept for a `select_layer` (original `create_siglip_vit`).
fn select_layers(depth: usize, select_layer: i64) -> usize {
    let d = depth as i64;
    let n = if select_layer <= 0 {
        d.min(d + select_layer + 1)
    } else {
        d.min(select_layer)
    };
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn janus_pro_7b_original() -> Value {
        // The published Janus-Pro-7B config: language_config omits most LlamaConfig keys.
        json!({
            "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
                "params": {"depth": 2, "input_dim": 1024, "n_embed": 4096, "projector_type": "mlp_gelu"}},
            "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
                "params": {"depth": 2, "input_dim": 8, "n_embed": 4096, "projector_type": "mlp_gelu"}},
            "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                "params": {"image_token_embed": 4096, "image_token_size": 16384, "n_embed": 4096}},
            "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
                "params": {"image_token_size": 16384, "n_embed": 8}},
            "language_config": {"max_position_embeddings": 16384, "model_type": "llama",
                "num_hidden_layers": 30, "torch_dtype": "bfloat16", "vocab_size": 102400},
            "model_type": "multi_modality",
            "torch_dtype": "bfloat16",
            "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision",
                "params": {"image_size": 384, "model_name": "siglip_large_patch16_384",
                           "select_feature": "same", "select_layer": -1}}
        })
    }

    #[test]
    fn seven_b_takes_llama_defaults() {
        let c = JanusConfig::from_value(&janus_pro_7b_original()).unwrap();
        assert_eq!(c.layout, Layout::Original);
        assert_eq!(c.text.hidden_size, 4096);
        assert_eq!(c.text.intermediate_size, 11008);
        assert_eq!(c.text.num_attention_heads, 32);
        assert_eq!(c.text.num_key_value_heads, 32);
        assert_eq!(c.text.head_dim, 128);
        assert_eq!(c.text.num_hidden_layers, 30);
        assert_eq!(c.text.max_position_embeddings, 16384);
        assert_eq!(c.vision.hidden_size, 1024);
        assert_eq!(c.vision.num_layers, 24);
        assert_eq!(c.vision.intermediate_size, 4096);
        assert_eq!(c.vision.num_image_tokens(), 576);
        assert_eq!(c.gen_image_tokens(), 576);
        assert_eq!(c.gen_image_size(), 384);
        assert_eq!(c.vq.ch_mult, vec![1, 1, 2, 2, 4]);
    }

    #[test]
    fn select_layer_drops_blocks() {
        assert_eq!(select_layers(24, -1), 24);
        assert_eq!(select_layers(24, -2), 23);
        assert_eq!(select_layers(24, 0), 24);
        assert_eq!(select_layers(24, 5), 5);
        let mut v = janus_pro_7b_original();
        v["vision_config"]["params"]["select_layer"] = json!(-2);
        assert_eq!(JanusConfig::from_value(&v).unwrap().vision.num_layers, 23);
    }

    #[test]
    fn unknown_layout_is_an_error() {
        let e = JanusConfig::from_value(&json!({"model_type": "bert"})).unwrap_err();
        assert!(e.to_string().contains("bert"), "{e}");
    }

    #[test]
    fn unsupported_projector_is_named() {
        let mut v = janus_pro_7b_original();
        v["aligner_config"]["params"]["projector_type"] = json!("linear");
        let e = JanusConfig::from_value(&v).unwrap_err().to_string();
        assert!(e.contains("linear"), "{e}");
    }
}
