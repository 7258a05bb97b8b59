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
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
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
        if self.vq.ch_mult.is_empty() {
            return bad("VQ ch_mult is empty".into());
        }
        for m in &self.vq.ch_mult {
            if !(self.vq.ch * m).is_multiple_of(32) {
                return bad(format!(
                    "VQ channels {} are not a multiple of the 32 GroupNorm groups",
                    self.vq.ch * m
                ));
            }
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

/// The SigLIP presets the original code knows (`SigLIP_MODEL_CONFIG`).
fn siglip_preset(name: &str) -> Option<(usize, usize, usize, usize, f64)> {
    // (patch_size, width, layers, heads, mlp_ratio)
    match name {
        "siglip_large_patch16_384" => Some((16, 1024, 24, 16, 4.0)),
        "siglip_so400m_patch14_384" | "siglip_so400m_patch14_224" => {
            Some((14, 1152, 27, 16, 3.7362))
        }
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
struct RawOrigVision {
    #[serde(default = "default_siglip")]
    model_name: String,
    #[serde(default = "default_image_size")]
    image_size: usize,
    #[serde(default = "default_select_layer")]
    select_layer: i64,
    width: Option<usize>,
    layers: Option<usize>,
    heads: Option<usize>,
    mlp_ratio: Option<f64>,
    patch_size: Option<usize>,
}
fn default_siglip() -> String {
    "siglip_large_patch16_384".into()
}
fn default_image_size() -> usize {
    384
}
fn default_select_layer() -> i64 {
    -1
}

#[derive(Debug, Deserialize)]
struct RawOrigMlp {
    #[serde(default = "default_projector")]
    projector_type: String,
    #[serde(default = "default_depth")]
    depth: usize,
    input_dim: usize,
    n_embed: usize,
}
fn default_projector() -> String {
    "mlp_gelu".into()
}
fn default_depth() -> usize {
    2
}

#[derive(Debug, Deserialize)]
struct RawOrigGenHead {
    n_embed: usize,
    image_token_embed: usize,
    image_token_size: usize,
}

/// `gen_vision_config.params`. The reference builds VQ-16 with default arguments; the
/// size fields are our extension and default to VQ-16's values.
#[derive(Debug, Deserialize)]
struct RawOrigVq {
    image_token_size: Option<usize>,
    n_embed: Option<usize>,
    codebook_size: Option<usize>,
    codebook_embed_dim: Option<usize>,
    #[serde(default = "default_z")]
    z_channels: usize,
    #[serde(default = "default_ch")]
    ch: usize,
    #[serde(default = "default_ch_mult")]
    ch_mult: Vec<usize>,
    #[serde(default = "default_res")]
    num_res_blocks: usize,
}
fn default_z() -> usize {
    256
}
fn default_ch() -> usize {
    128
}
fn default_ch_mult() -> Vec<usize> {
    vec![1, 1, 2, 2, 4]
}
fn default_res() -> usize {
    2
}

fn mlp_from(raw: RawOrigMlp, what: &str) -> Result<MlpConfig> {
    if raw.projector_type != "mlp_gelu" {
        return Err(Error::Config(format!(
            "{what}: projector_type {:?} is not supported (only \"mlp_gelu\")",
            raw.projector_type
        )));
    }
    if raw.depth == 0 {
        return Err(Error::Config(format!("{what}: depth must be at least 1")));
    }
    Ok(MlpConfig {
        input_dim: raw.input_dim,
        n_embed: raw.n_embed,
        depth: raw.depth,
    })
}

fn from_original(v: &Value) -> Result<JanusConfig> {
    let llama: RawLlama = parse(v.get("language_config"), "language_config")?;
    let text = llama.into_text()?;

    if !cls(v, "vision_config").contains("CLIPVisionTower") {
        return Err(Error::Config(format!(
            "vision_config.cls {:?} is not supported (only CLIPVisionTower with SigLIP)",
            cls(v, "vision_config")
        )));
    }
    let rv: RawOrigVision = parse(Some(params(v, "vision_config")?), "vision_config.params")?;
    let preset = siglip_preset(&rv.model_name);
    if preset.is_none() && (rv.width.is_none() || rv.layers.is_none() || rv.heads.is_none()) {
        return Err(Error::Config(format!(
            "vision_config.params.model_name {:?} is not a known SigLIP preset",
            rv.model_name
        )));
    }
    let (pp, pw, pl, ph, pr) = preset.unwrap_or((16, 0, 0, 0, 4.0));
    let width = rv.width.unwrap_or(pw);
    let depth = rv.layers.unwrap_or(pl);
    let mlp_ratio = rv.mlp_ratio.unwrap_or(pr);
    let vision = VisionConfig {
        image_size: rv.image_size,
        patch_size: rv.patch_size.unwrap_or(pp),
        hidden_size: width,
        num_layers: select_layers(depth, rv.select_layer),
        num_heads: rv.heads.unwrap_or(ph),
        // timm: int(dim * mlp_ratio)
        intermediate_size: (width as f64 * mlp_ratio) as usize,
        layer_norm_eps: 1e-6,
    };

    let aligner = mlp_from(
        parse(Some(params(v, "aligner_config")?), "aligner_config.params")?,
        "aligner_config",
    )?;
    let gen_aligner = mlp_from(
        parse(
            Some(params(v, "gen_aligner_config")?),
            "gen_aligner_config.params",
        )?,
        "gen_aligner_config",
    )?;
    let gh: RawOrigGenHead = parse(
        Some(params(v, "gen_head_config")?),
        "gen_head_config.params",
    )?;
    let vq_cls = cls(v, "gen_vision_config");
    if vq_cls != "VQ-16" {
        return Err(Error::Config(format!(
            "gen_vision_config.cls {vq_cls:?} is not supported (only \"VQ-16\")"
        )));
    }
    let rq: RawOrigVq = parse(
        Some(params(v, "gen_vision_config")?),
        "gen_vision_config.params",
    )?;
    let codebook_size = rq.codebook_size.unwrap_or(16384);
    let codebook_embed_dim = rq.codebook_embed_dim.unwrap_or(8);
    let gen_embed = (
        rq.image_token_size.unwrap_or(codebook_size),
        rq.n_embed.unwrap_or(codebook_embed_dim),
    );
    let vq = VqConfig {
        codebook_size,
        codebook_embed_dim,
        z_channels: rq.z_channels,
        ch: rq.ch,
        ch_mult: rq.ch_mult,
        num_res_blocks: rq.num_res_blocks,
        in_channels: 3,
    };
    Ok(JanusConfig {
        layout: Layout::Original,
        gen_grid: vision.grid(),
        text,
        vision,
        aligner,
        gen_aligner,
        gen_head: GenHeadConfig {
            n_embed: gh.n_embed,
            image_token_embed: gh.image_token_embed,
            image_token_size: gh.image_token_size,
        },
        gen_embed,
        vq,
    })
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

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawTfVision {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    patch_size: usize,
    image_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
    mlp_ratio: f64,
    attention_bias: bool,
    projection_dim: usize,
    use_qk_norm: bool,
    depth: usize,
    select_layer: i64,
}

impl Default for RawTfVision {
    // transformers.JanusVisionConfig defaults.
    fn default() -> Self {
        RawTfVision {
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            patch_size: 16,
            image_size: 384,
            layer_norm_eps: 1e-6,
            hidden_act: "gelu".into(),
            mlp_ratio: 4.0,
            attention_bias: true,
            projection_dim: 2048,
            use_qk_norm: false,
            depth: 2,
            select_layer: -1,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawTfVq {
    embed_dim: usize,
    num_embeddings: usize,
    double_latent: bool,
    latent_channels: usize,
    in_channels: usize,
    out_channels: usize,
    base_channels: usize,
    channel_multiplier: Vec<usize>,
    num_res_blocks: usize,
    projection_dim: usize,
    num_hidden_layers: usize,
    hidden_act: String,
    image_token_embed_dim: usize,
}

impl Default for RawTfVq {
    // transformers.JanusVQVAEConfig defaults.
    fn default() -> Self {
        RawTfVq {
            embed_dim: 8,
            num_embeddings: 16384,
            double_latent: false,
            latent_channels: 256,
            in_channels: 3,
            out_channels: 3,
            base_channels: 128,
            channel_multiplier: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            projection_dim: 2048,
            num_hidden_layers: 2,
            hidden_act: "gelu".into(),
            image_token_embed_dim: 2048,
        }
    }
}

fn from_transformers(v: &Value) -> Result<JanusConfig> {
    let mut text_v = v.get("text_config").cloned().unwrap_or(Value::Null);
    if let Some(m) = text_v.get("model_type").and_then(Value::as_str) {
        if m != "llama" {
            return Err(Error::Config(format!(
                "text_config.model_type {m:?} is not supported (only \"llama\")"
            )));
        }
    }
    if text_v.is_null() {
        text_v = Value::Object(Default::default());
    }
    let text = parse::<RawLlama>(Some(&text_v), "text_config")?.into_text()?;
    let rv: RawTfVision = parse(v.get("vision_config"), "vision_config")?;
    if rv.hidden_act != "gelu" || rv.use_qk_norm || !rv.attention_bias || rv.num_channels != 3 {
        return Err(Error::Config(format!(
            "vision_config variant not supported (hidden_act {:?}, use_qk_norm {}, \
             attention_bias {}, num_channels {})",
            rv.hidden_act, rv.use_qk_norm, rv.attention_bias, rv.num_channels
        )));
    }
    let rq: RawTfVq = parse(v.get("vq_config"), "vq_config")?;
    if rq.double_latent || rq.hidden_act != "gelu" || rq.in_channels != 3 || rq.out_channels != 3 {
        return Err(Error::Config(format!(
            "vq_config variant not supported (double_latent {}, hidden_act {:?}, channels {}/{})",
            rq.double_latent, rq.hidden_act, rq.in_channels, rq.out_channels
        )));
    }
    let vision = VisionConfig {
        image_size: rv.image_size,
        patch_size: rv.patch_size,
        hidden_size: rv.hidden_size,
        num_layers: select_layers(rv.num_hidden_layers, rv.select_layer),
        num_heads: rv.num_attention_heads,
        intermediate_size: (rv.hidden_size as f64 * rv.mlp_ratio) as usize,
        layer_norm_eps: rv.layer_norm_eps,
    };
    Ok(JanusConfig {
        layout: Layout::Transformers,
        // transformers sets vq_config.num_patches = image_size // patch_size.
        gen_grid: vision.grid(),
        aligner: MlpConfig {
            input_dim: rv.hidden_size,
            n_embed: rv.projection_dim,
            depth: rv.depth.max(1),
        },
        gen_aligner: MlpConfig {
            input_dim: rq.embed_dim,
            n_embed: rq.projection_dim,
            depth: rq.num_hidden_layers.max(1),
        },
        gen_head: GenHeadConfig {
            n_embed: rq.image_token_embed_dim,
            image_token_embed: rq.projection_dim,
            image_token_size: rq.num_embeddings,
        },
        gen_embed: (rq.num_embeddings, rq.embed_dim),
        vq: VqConfig {
            codebook_size: rq.num_embeddings,
            codebook_embed_dim: rq.embed_dim,
            z_channels: rq.latent_channels,
            ch: rq.base_channels,
            ch_mult: rq.channel_multiplier,
            num_res_blocks: rq.num_res_blocks,
            in_channels: 3,
        },
        text,
        vision,
    })
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
