//! The trainable parts of Janus, named as the checkpoint names them, and which canonical
//! tensors belong to each.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::{Error, Result};

/// A group of tensors that trains or stays frozen as a whole.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The SigLIP understanding encoder (`vision_model.*`).
    Vision,
    /// The understanding aligner (`aligner.*`).
    Aligner,
    /// The image-code embedding table (`gen_embed.*`).
    GenEmbed,
    /// The generation aligner (`gen_aligner.*`).
    GenAligner,
    /// The image head (`gen_head.*`).
    GenHead,
    /// The decoder layers and the final norm (`language_model.model.{layers,norm}.*`).
    Llm,
    /// The text embedding table (`language_model.model.embed_tokens.*`).
    EmbedTokens,
    /// The text head (`language_model.lm_head.*`).
    LmHead,
}

impl Part {
    /// Every part, in checkpoint order.
    pub const ALL: [Part; 8] = [
        Part::Vision,
        Part::Aligner,
        Part::GenEmbed,
        Part::GenAligner,
        Part::GenHead,
        Part::Llm,
        Part::EmbedTokens,
        Part::LmHead,
    ];

    /// The name used on the command line and in recipes.
    pub fn name(self) -> &'static str {
        match self {
            Part::Vision => "vision",
            Part::Aligner => "aligner",
            Part::GenEmbed => "gen_embed",
            Part::GenAligner => "gen_aligner",
            Part::GenHead => "gen_head",
            Part::Llm => "llm",
            Part::EmbedTokens => "embed_tokens",
            Part::LmHead => "lm_head",
        }
    }

    /// Parses a part name; the VQ model gets its own message (it is never trained).
    pub fn parse(name: &str) -> Result<Self> {
        let name = name.trim();
        if let Some(p) = Part::ALL.iter().find(|p| p.name() == name) {
            return Ok(*p);
        }
        if ["vq", "gen_vision_model", "vqmodel"].contains(&name) {
            return Err(Error::InvalidInput(format!(
                "part {name:?} cannot be trained: the generation encoder (VQ) is always frozen"
            )));
        }
        let known: Vec<_> = Part::ALL.iter().map(|p| p.name()).collect();
        Err(Error::InvalidInput(format!(
            "unknown part {name:?}; parts are {}",
            known.join(", ")
        )))
    }

    /// The part a canonical tensor name belongs to; `None` for the VQ model (never trained).
    pub fn of(canonical: &str) -> Option<Part> {
        let p = |prefix: &str| canonical.starts_with(prefix);
        Some(if p("vision_model.") {
            Part::Vision
        } else if p("aligner.") {
            Part::Aligner
        } else if p("gen_embed.") {
            Part::GenEmbed
        } else if p("gen_aligner.") {
            Part::GenAligner
        } else if p("gen_head.") {
            Part::GenHead
        } else if p("language_model.model.embed_tokens.") {
            Part::EmbedTokens
        } else if p("language_model.model.") {
            Part::Llm
        } else if p("language_model.lm_head.") {
            Part::LmHead
        } else {
            return None;
        })
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a comma-separated list of parts (`llm,aligner`); duplicates are merged.
pub fn parse_parts(list: &str) -> Result<BTreeSet<Part>> {
    let parts = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Part::parse)
        .collect::<Result<BTreeSet<_>>>()?;
    if parts.is_empty() {
        return Err(Error::InvalidInput(
            "no part to train: --train needs at least one of the parts".into(),
        ));
    }
    Ok(parts)
}

/// Comma-separated names, in checkpoint order.
pub fn parts_to_string(parts: &BTreeSet<Part>) -> String {
    parts.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_map_to_parts() {
        let cases = [
            (
                "vision_model.vision_tower.blocks.0.attn.qkv.weight",
                Some(Part::Vision),
            ),
            ("aligner.layers.0.weight", Some(Part::Aligner)),
            ("gen_aligner.layers.2.bias", Some(Part::GenAligner)),
            ("gen_embed.weight", Some(Part::GenEmbed)),
            ("gen_head.vision_head.weight", Some(Part::GenHead)),
            (
                "language_model.model.layers.3.mlp.up_proj.weight",
                Some(Part::Llm),
            ),
            ("language_model.model.norm.weight", Some(Part::Llm)),
            (
                "language_model.model.embed_tokens.weight",
                Some(Part::EmbedTokens),
            ),
            ("language_model.lm_head.weight", Some(Part::LmHead)),
            ("gen_vision_model.decoder.conv_in.weight", None),
        ];
        for (name, part) in cases {
            assert_eq!(Part::of(name), part, "{name}");
        }
    }

    #[test]
    fn part_lists_parse_and_reject_the_vq_and_unknown_names() {
        let parts = parse_parts("llm, aligner,llm").unwrap();
        assert_eq!(parts_to_string(&parts), "aligner,llm");
        let e = parse_parts("llm,vq").unwrap_err().to_string();
        assert!(e.contains("always frozen"), "{e}");
        let e = parse_parts("llm,decoder").unwrap_err().to_string();
        assert!(
            e.contains("unknown part \"decoder\"") && e.contains("gen_head"),
            "{e}"
        );
        assert!(parse_parts(" , ").is_err());
    }
}
