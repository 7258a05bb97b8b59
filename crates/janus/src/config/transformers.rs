//! transformers' `config.json` (`text_config`, `vision_config`, `vq_config`).

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::error::Result;

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(super) struct RawTfVision {
    pub(super) hidden_size: usize,
    pub(super) num_hidden_layers: usize,
    pub(super) num_attention_heads: usize,
    pub(super) num_channels: usize,
    pub(super) patch_size: usize,
    pub(super) image_size: usize,
    pub(super) layer_norm_eps: f64,
    pub(super) hidden_act: String,
    pub(super) mlp_ratio: f64,
    pub(super) attention_bias: bool,
    pub(super) projection_dim: usize,
    pub(super) use_qk_norm: bool,
    pub(super) depth: usize,
    pub(super) select_layer: i64,
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
pub(super) struct RawTfVq {
    pub(super) embed_dim: usize,
    pub(super) num_embeddings: usize,
    pub(super) double_latent: bool,
    pub(super) latent_channels: usize,
    pub(super) in_channels: usize,
    pub(super) out_channels: usize,
    pub(super) base_channels: usize,
    pub(super) channel_multiplier: Vec<usize>,
    pub(super) num_res_blocks: usize,
    pub(super) projection_dim: usize,
    pub(super) num_hidden_layers: usize,
    pub(super) hidden_act: String,
    pub(super) image_token_embed_dim: usize,
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

pub(super) fn from_transformers(v: &Value) -> Result<JanusConfig> {
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
