//! deepseek's original `config.json` (`language_config`, `vision_config.params`, ...).

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::error::Result;

/// The SigLIP presets the original code knows (`SigLIP_MODEL_CONFIG`).
pub(super) fn siglip_preset(name: &str) -> Option<(usize, usize, usize, usize, f64)> {
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
pub(super) struct RawOrigVision {
    #[serde(default = "default_siglip")]
    pub(super) model_name: String,
    #[serde(default = "default_image_size")]
    pub(super) image_size: usize,
    #[serde(default = "default_select_layer")]
    pub(super) select_layer: i64,
    pub(super) width: Option<usize>,
    pub(super) layers: Option<usize>,
    pub(super) heads: Option<usize>,
    pub(super) mlp_ratio: Option<f64>,
    pub(super) patch_size: Option<usize>,
}
pub(super) fn default_siglip() -> String {
    "siglip_large_patch16_384".into()
}
pub(super) fn default_image_size() -> usize {
    384
}
pub(super) fn default_select_layer() -> i64 {
    -1
}

#[derive(Debug, Deserialize)]
pub(super) struct RawOrigMlp {
    #[serde(default = "default_projector")]
    pub(super) projector_type: String,
    #[serde(default = "default_depth")]
    pub(super) depth: usize,
    pub(super) input_dim: usize,
    pub(super) n_embed: usize,
}
pub(super) fn default_projector() -> String {
    "mlp_gelu".into()
}
pub(super) fn default_depth() -> usize {
    2
}

#[derive(Debug, Deserialize)]
pub(super) struct RawOrigGenHead {
    pub(super) n_embed: usize,
    pub(super) image_token_embed: usize,
    pub(super) image_token_size: usize,
}

/// `gen_vision_config.params`. The reference builds VQ-16 with default arguments; the
/// size fields are our extension and default to VQ-16's values.
#[derive(Debug, Deserialize)]
pub(super) struct RawOrigVq {
    pub(super) image_token_size: Option<usize>,
    pub(super) n_embed: Option<usize>,
    pub(super) codebook_size: Option<usize>,
    pub(super) codebook_embed_dim: Option<usize>,
    #[serde(default = "default_z")]
    pub(super) z_channels: usize,
    #[serde(default = "default_ch")]
    pub(super) ch: usize,
    #[serde(default = "default_ch_mult")]
    pub(super) ch_mult: Vec<usize>,
    #[serde(default = "default_res")]
    pub(super) num_res_blocks: usize,
}
pub(super) fn default_z() -> usize {
    256
}
pub(super) fn default_ch() -> usize {
    128
}
pub(super) fn default_ch_mult() -> Vec<usize> {
    vec![1, 1, 2, 2, 4]
}
pub(super) fn default_res() -> usize {
    2
}

pub(super) fn mlp_from(raw: RawOrigMlp, what: &str) -> Result<MlpConfig> {
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

pub(super) fn from_original(v: &Value) -> Result<JanusConfig> {
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
