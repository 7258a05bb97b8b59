//! The explicit name map between the two checkpoint layouts.
//!
//! The model asks for every tensor by its CANONICAL name, which is the name in deepseek-ai's
//! original layout (`language_model.model.layers.0.self_attn.q_proj.weight`,
//! `vision_model.vision_tower.blocks.3.attn.qkv.weight`, ...). [`to_transformers`] says where
//! the same tensor lives in a transformers (`JanusForConditionalGeneration`) checkpoint.
//!
//! The rules follow transformers' `convert_janus_weights_to_hf.py` (its `MAPPINGS` table,
//! `split_tensor` for the fused qkv and the `pos_embed.squeeze(0)`), and are tested against
//! the full name lists of both layouts in `fixtures/checkpoints/`.

/// Where one canonical tensor lives in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The same tensor, under this name.
    Name(String),
    /// The same data stored without the canonical tensor's leading unit axis:
    /// canonical `[1, N, C]` <- stored `[N, C]` (transformers squeezes SigLIP's `pos_embed`).
    Unsqueeze(String),
    /// Concatenation of these tensors along dim 0, in order, each an equal slice of the
    /// canonical tensor (transformers splits the fused SigLIP `qkv` into q/k/v_proj).
    Concat(Vec<String>),
}

impl Source {
    /// The checkpoint names this source reads.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Source::Name(n) | Source::Unsqueeze(n) => vec![n.as_str()],
            Source::Concat(parts) => parts.iter().map(String::as_str).collect(),
        }
    }
}

/// Whether a tensor is present in the published checkpoints but never read by the model:
/// SigLIP's attention-pooling head (`select_layer=-1` keeps the token sequence), the VQ
/// codebook usage counter and rotary `inv_freq` buffers (recomputed in f32). Accepts names
/// of either layout.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with("vision_model.vision_tower.attn_pool.")
        || name.ends_with("quantize.codebook_used")
        || name.ends_with("rotary_emb.inv_freq")
}

/// Maps a canonical (original-layout) tensor name to its source in a transformers checkpoint.
///
/// Returns `None` for names with no transformers counterpart: the [ignored](is_ignored)
/// tensors and anything outside the Janus name tree.
pub fn to_transformers(canonical: &str) -> Option<Source> {
    if is_ignored(canonical) {
        return None;
    }
    let name = |s: String| Some(Source::Name(s));
    if canonical == "language_model.lm_head.weight" {
        return name("lm_head.weight".into());
    }
    if let Some(rest) = canonical.strip_prefix("language_model.model.") {
        return name(format!("model.language_model.{rest}"));
    }
    if let Some(rest) = canonical.strip_prefix("vision_model.vision_tower.") {
        return siglip(rest);
    }
    if let Some(rest) = canonical.strip_prefix("gen_vision_model.") {
        return vq(rest).and_then(|r| name(format!("model.vqmodel.{r}")));
    }
    if let Some(rest) = canonical.strip_prefix("gen_aligner.") {
        return mlp_projector(rest).and_then(|r| name(format!("model.generation_aligner.{r}")));
    }
    if let Some(rest) = canonical.strip_prefix("aligner.") {
        return mlp_projector(rest).and_then(|r| name(format!("model.aligner.{r}")));
    }
    if let Some(rest) = canonical.strip_prefix("gen_head.output_mlp_projector.") {
        return name(format!("model.generation_head.proj_out.{rest}"));
    }
    if let Some(rest) = canonical.strip_prefix("gen_head.vision_head.") {
        return name(format!("model.generation_head.vision_head.{rest}"));
    }
    if let Some(rest) = canonical.strip_prefix("gen_embed.") {
        return name(format!("model.generation_embeddings.{rest}"));
    }
    None
}

/// `vision_model.vision_tower.{rest}` (timm SigLIP) -> `JanusVisionModel`.
fn siglip(rest: &str) -> Option<Source> {
    const ROOT: &str = "model.vision_model";
    if rest == "pos_embed" {
        return Some(Source::Unsqueeze(format!(
            "{ROOT}.embeddings.position_embedding.weight"
        )));
    }
    if let Some(p) = rest.strip_prefix("patch_embed.proj.") {
        return Some(Source::Name(format!(
            "{ROOT}.embeddings.patch_embedding.{p}"
        )));
    }
    if let Some(p) = rest.strip_prefix("norm.") {
        return Some(Source::Name(format!("{ROOT}.post_layernorm.{p}")));
    }
    let rest = rest.strip_prefix("blocks.")?;
    let (n, tail) = split_index(rest)?;
    let layer = format!("{ROOT}.encoder.layers.{n}");
    let (module, param) = tail.rsplit_once('.')?;
    let renamed = match module {
        "norm1" => "layer_norm1",
        "norm2" => "layer_norm2",
        "attn.proj" => "self_attn.projection_layer",
        "mlp.fc1" | "mlp.fc2" => module,
        "attn.qkv" => {
            return Some(Source::Concat(
                ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .map(|p| format!("{layer}.self_attn.{p}.{param}"))
                    .collect(),
            ))
        }
        _ => return None,
    };
    Some(Source::Name(format!("{layer}.{renamed}.{param}")))
}

/// `{gen_,}aligner.{rest}` (`MlpProjector`, `mlp_gelu`): `layers.0` is the first Linear,
/// `layers.2k` (k >= 1, after a GELU at `2k - 1`) is `hidden_layers.(k - 1)`.
fn mlp_projector(rest: &str) -> Option<String> {
    let (i, param) = split_index(rest.strip_prefix("layers.")?)?;
    match i {
        0 => Some(format!("fc1.{param}")),
        i if i % 2 == 0 => Some(format!("hidden_layers.{}.{param}", i / 2 - 1)),
        _ => None,
    }
}

/// `gen_vision_model.{rest}` (LlamaGen VQ-16) -> the part after `model.vqmodel.`.
fn vq(rest: &str) -> Option<String> {
    for (part, levels) in [("encoder", "down"), ("decoder", "up")] {
        let Some(r) = rest.strip_prefix(part).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        if let Some(r) = r.strip_prefix("conv_blocks.") {
            // conv_blocks.L.{res.J, attn.J, downsample, upsample}.*: the level index L is
            // kept (both layouts list decoder levels from the 24x24 end).
            let (level, tail) = split_index(r)?;
            let tail = match tail.strip_prefix("res.") {
                Some(t) => format!("block.{t}"),
                None => tail.to_string(),
            };
            return Some(format!("{part}.{levels}.{level}.{tail}"));
        }
        if let Some(r) = r.strip_prefix("mid.") {
            let (i, tail) = split_index(r)?;
            let block = ["block_1", "attn_1", "block_2"].get(i)?;
            return Some(format!("{part}.mid.{block}.{tail}"));
        }
        return Some(format!("{part}.{r}"));
    }
    Some(rest.to_string())
}

/// Splits `"12.rest"` into `(12, "rest")`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (i, tail) = s.split_once('.')?;
    Some((i.parse().ok()?, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(n: &str) -> String {
        match to_transformers(n) {
            Some(Source::Name(s)) => s,
            other => panic!("{n}: {other:?}"),
        }
    }

    #[test]
    fn examples_from_the_conversion_script() {
        assert_eq!(
            tf("language_model.model.layers.0.self_attn.q_proj.weight"),
            "model.language_model.layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(tf("language_model.lm_head.weight"), "lm_head.weight");
        assert_eq!(
            tf("vision_model.vision_tower.blocks.7.norm1.weight"),
            "model.vision_model.encoder.layers.7.layer_norm1.weight"
        );
        assert_eq!(
            tf("vision_model.vision_tower.blocks.7.attn.proj.bias"),
            "model.vision_model.encoder.layers.7.self_attn.projection_layer.bias"
        );
        assert_eq!(
            tf("vision_model.vision_tower.norm.weight"),
            "model.vision_model.post_layernorm.weight"
        );
        assert_eq!(
            tf("vision_model.vision_tower.patch_embed.proj.weight"),
            "model.vision_model.embeddings.patch_embedding.weight"
        );
        assert_eq!(tf("aligner.layers.0.weight"), "model.aligner.fc1.weight");
        assert_eq!(
            tf("aligner.layers.2.bias"),
            "model.aligner.hidden_layers.0.bias"
        );
        assert_eq!(
            tf("aligner.layers.4.bias"),
            "model.aligner.hidden_layers.1.bias"
        );
        assert_eq!(to_transformers("aligner.layers.1.weight"), None);
        assert_eq!(
            tf("gen_aligner.layers.2.bias"),
            "model.generation_aligner.hidden_layers.0.bias"
        );
        assert_eq!(
            tf("gen_head.output_mlp_projector.weight"),
            "model.generation_head.proj_out.weight"
        );
        assert_eq!(
            tf("gen_head.vision_head.weight"),
            "model.generation_head.vision_head.weight"
        );
        assert_eq!(tf("gen_embed.weight"), "model.generation_embeddings.weight");
        assert_eq!(
            tf("gen_vision_model.decoder.conv_blocks.0.res.1.conv2.bias"),
            "model.vqmodel.decoder.up.0.block.1.conv2.bias"
        );
        assert_eq!(
            tf("gen_vision_model.encoder.conv_blocks.4.attn.1.q.weight"),
            "model.vqmodel.encoder.down.4.attn.1.q.weight"
        );
        assert_eq!(
            tf("gen_vision_model.encoder.conv_blocks.2.downsample.conv.weight"),
            "model.vqmodel.encoder.down.2.downsample.conv.weight"
        );
        assert_eq!(
            tf("gen_vision_model.decoder.mid.1.q.weight"),
            "model.vqmodel.decoder.mid.attn_1.q.weight"
        );
        assert_eq!(
            tf("gen_vision_model.encoder.mid.2.norm1.weight"),
            "model.vqmodel.encoder.mid.block_2.norm1.weight"
        );
        assert_eq!(
            tf("gen_vision_model.quantize.embedding.weight"),
            "model.vqmodel.quantize.embedding.weight"
        );
        assert_eq!(
            tf("gen_vision_model.post_quant_conv.weight"),
            "model.vqmodel.post_quant_conv.weight"
        );
    }

    #[test]
    fn fused_and_reshaped_tensors() {
        assert_eq!(
            to_transformers("vision_model.vision_tower.pos_embed"),
            Some(Source::Unsqueeze(
                "model.vision_model.embeddings.position_embedding.weight".into()
            ))
        );
        assert_eq!(
            to_transformers("vision_model.vision_tower.blocks.3.attn.qkv.bias"),
            Some(Source::Concat(vec![
                "model.vision_model.encoder.layers.3.self_attn.q_proj.bias".into(),
                "model.vision_model.encoder.layers.3.self_attn.k_proj.bias".into(),
                "model.vision_model.encoder.layers.3.self_attn.v_proj.bias".into(),
            ]))
        );
    }

    #[test]
    fn ignored_and_unknown_names() {
        for n in [
            "vision_model.vision_tower.attn_pool.kv.weight",
            "gen_vision_model.quantize.codebook_used",
            "language_model.model.layers.0.self_attn.rotary_emb.inv_freq",
            "gen_vision_model.decoder.mid.3.q.weight",
            "vision_model.vision_tower.blocks.x.norm1.weight",
            "something.else",
        ] {
            assert_eq!(to_transformers(n), None, "{n}");
        }
    }
}
