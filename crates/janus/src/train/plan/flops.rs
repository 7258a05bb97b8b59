//! Training FLOPs of one batch row of each kind of data (docs/training.md, "What a run
//! costs", writes the formula out).
//!
//! A matrix product with `N` weights costs `2N` FLOPs per position forward, `2N` more for
//! the gradient of its input and `2N` for the gradient of its weights. So, per position a
//! part processes:
//! - `6N` when the part trains;
//! - `4N` when it is frozen but the gradient must cross it to reach a trained part
//!   upstream (the frozen LLM in stage 1 carries the gradient back to the aligners);
//! - `2N` when it is frozen with nothing trained upstream (SigLIP before stage 3).
//!
//! (A trained part with nothing trained upstream does not need its input gradient; the
//! `6N` counts it anyway, an excess of at most `2N` on small parts.) Attention adds
//! `4 x q_dim x context` per position and layer forward (scores and weighted sum), and
//! twice that backward when the gradient crosses it: causal over the whole row in the
//! LLM, over all patches in SigLIP. LoRA adapters cost `6 x r x (in + out)` per position
//! of the layer they sit on, and the frozen base they sit in becomes a part the gradient
//! crosses. Embedding tables are lookups (no FLOPs); the VQ encoder runs once per image
//! before training (codes cached, as `janus data encode` does) and is not counted.
//!
//! Which positions each part sees:
//! - understanding: SigLIP and the aligner at the image's patches, the LLM at every
//!   position, lm_head at the supervised answer positions;
//! - text: the LLM at every position, lm_head at every position;
//! - text-to-image: gen_aligner at the image's code positions, the LLM at every
//!   position, gen_head at the supervised codes.

use serde::Serialize;

use super::sizes::ModelParams;
use crate::train::data::Kind;
use crate::train::parts::Part;

/// Text positions of one understanding sample (prompt template, question and answer),
/// besides its image's patches.
pub const UNDERSTANDING_TEXT: u64 = 128;
/// Of those, the answer positions that are supervised (lm_head runs there).
pub const UNDERSTANDING_ANSWER: u64 = 64;
/// Caption positions of one text-to-image sample (prompt template, caption,
/// `<begin_of_image>`), besides its image's codes.
pub const T2I_CAPTION: u64 = 64;

/// What one batch row holds, per kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RowShape {
    /// Positions per row (understanding, text, text-to-image). A row longer than one
    /// sample packs several samples of its kind; a row of exactly one sample's length is
    /// an unpacked sample.
    pub tokens: [u64; 3],
}

impl RowShape {
    /// Every row `n` positions long.
    pub fn uniform(n: u64) -> Self {
        RowShape { tokens: [n; 3] }
    }

    /// One unpacked sample per row: an understanding sample of one image plus
    /// [`UNDERSTANDING_TEXT`], a text sample of 512 positions, a text-to-image sample of
    /// [`T2I_CAPTION`] plus one image's codes.
    pub fn natural(m: &ModelParams) -> Self {
        RowShape {
            tokens: [
                m.image_tokens + UNDERSTANDING_TEXT,
                512,
                T2I_CAPTION + m.gen_image_tokens,
            ],
        }
    }
}

/// What trains: whole parts, or LoRA adapters on the frozen model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trained {
    /// Parts whose every parameter trains.
    pub parts: Vec<Part>,
    /// LoRA adapter parameters per part they sit in (LLM layers, lm_head, gen_head).
    pub adapters: Vec<(Part, u64)>,
}

impl Trained {
    fn adapter_params(&self, part: Part) -> u64 {
        self.adapters
            .iter()
            .filter(|(p, _)| *p == part)
            .map(|(_, n)| n)
            .sum()
    }

    /// Whether anything of `part` trains (the part itself or adapters in it).
    fn touches(&self, part: Part) -> bool {
        self.parts.contains(&part) || self.adapter_params(part) > 0
    }

    /// Parameters that train.
    pub fn count(&self, m: &ModelParams) -> u64 {
        let parts: u64 = self.parts.iter().map(|&p| m.part(p).params).sum();
        parts + self.adapters.iter().map(|(_, n)| n).sum::<u64>()
    }
}

/// The parts upstream of `part` on a row of `kind` (what feeds it, directly or not).
fn upstream(kind: Kind, part: Part) -> &'static [Part] {
    use Part::*;
    match (kind, part) {
        (Kind::Understanding, Aligner) => &[Vision],
        (Kind::Understanding, Llm) => &[Vision, Aligner, EmbedTokens],
        (Kind::Understanding, LmHead) => &[Vision, Aligner, EmbedTokens, Llm],
        (Kind::Text, Llm) => &[EmbedTokens],
        (Kind::Text, LmHead) => &[EmbedTokens, Llm],
        (Kind::T2i, GenAligner) => &[GenEmbed],
        (Kind::T2i, Llm) => &[GenEmbed, GenAligner, EmbedTokens],
        (Kind::T2i, GenHead) => &[GenEmbed, GenAligner, EmbedTokens, Llm],
        _ => &[],
    }
}

/// FLOPs per weight and position for `part` on a row of `kind`: 2 forward, 2 for the
/// weight gradient when it trains, 2 for the input gradient when the gradient crosses it.
fn multiplier(kind: Kind, part: Part, t: &Trained) -> u64 {
    let trains = t.parts.contains(&part);
    let crossed = t.touches(part) || upstream(kind, part).iter().any(|&p| t.touches(p));
    2 + if trains { 2 } else { 0 } + if crossed { 2 } else { 0 }
}

/// The positions each part processes in one row of `kind` that is `len` positions long.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RowUse {
    /// Samples packed in the row (fractional for a row that does not divide evenly).
    pub samples: f64,
    /// Understanding images (SigLIP passes).
    pub images: f64,
    /// Image positions fed through an aligner (patches or codes).
    pub image_inputs: f64,
    /// Supervised text positions (lm_head).
    pub text_targets: f64,
    /// Supervised image codes (gen_head).
    pub code_targets: f64,
}

impl RowUse {
    /// What a row of `kind`, `len` positions long, holds.
    pub fn of(kind: Kind, len: u64, m: &ModelParams) -> Self {
        let natural = RowShape::natural(m).tokens[kind.index()] as f64;
        let n = len as f64 / natural;
        let (img, codes) = (m.image_tokens as f64, m.gen_image_tokens as f64);
        match kind {
            Kind::Understanding => RowUse {
                samples: n,
                images: n,
                image_inputs: n * img,
                text_targets: n * UNDERSTANDING_ANSWER as f64,
                code_targets: 0.0,
            },
            Kind::Text => RowUse {
                samples: n,
                text_targets: len as f64,
                ..Default::default()
            },
            Kind::T2i => RowUse {
                samples: n,
                image_inputs: n * codes,
                code_targets: n * codes,
                ..Default::default()
            },
        }
    }
}

/// Training FLOPs of one row of `kind` that is `len` positions long.
pub fn row_flops(kind: Kind, len: u64, m: &ModelParams, t: &Trained) -> f64 {
    let u = RowUse::of(kind, len, m);
    let len_f = len as f64;
    let part = |p: Part, uses: f64| {
        let mm = m.part(p).matmul as f64;
        let adapters = t.adapter_params(p) as f64;
        uses * (multiplier(kind, p, t) as f64 * mm + 6.0 * adapters)
    };
    // Attention: forward 1x, backward 2x when the gradient crosses.
    let attn_factor = |p: Part| if multiplier(kind, p, t) > 2 { 3.0 } else { 1.0 };
    // Causal: position i attends to i + 1 positions, (len + 1) / 2 on average.
    let llm_attention = m.llm_layers as f64 * 4.0 * m.llm_q_dim as f64 * len_f * (len_f + 1.0)
        / 2.0
        * attn_factor(Part::Llm);
    let mut flops = part(Part::Llm, len_f) + llm_attention;
    match kind {
        Kind::Understanding => {
            let patches = m.image_tokens as f64;
            let vision_attention = m.vision_layers as f64
                * 4.0
                * m.vision_width as f64
                * patches
                * patches
                * attn_factor(Part::Vision);
            flops += part(Part::Vision, u.images * patches)
                + u.images * vision_attention
                + part(Part::Aligner, u.image_inputs)
                + part(Part::LmHead, u.text_targets);
        }
        Kind::Text => flops += part(Part::LmHead, u.text_targets),
        Kind::T2i => {
            flops += part(Part::GenAligner, u.image_inputs) + part(Part::GenHead, u.code_targets)
        }
    }
    flops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JanusConfig;

    /// The tiny test model: LLM D 64, 2 layers, 4 heads of 16, FFN 128, vocab 640;
    /// SigLIP width 32, 2 blocks, MLP 64, patch 16 at 384 px (576 patches); aligner
    /// 32 -> 64; gen_aligner 8 -> 64; gen_head 64 -> 64 -> 128 codes; 24 x 24 codes.
    fn tiny() -> ModelParams {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models/tiny-janus/config.json");
        ModelParams::of(&JanusConfig::from_file(&dir).unwrap())
    }

    #[test]
    fn tiny_counts_match_a_count_by_hand() {
        let m = tiny();
        // 2 x (4 x 64 x 64 + 3 x 64 x 128) = 2 x (16,384 + 24,576).
        assert_eq!(m.part(Part::Llm).matmul, 81_920);
        // Patch 3 x 16 x 16 x 32 = 24,576; 2 blocks of (4 x 32 x 32 + 2 x 32 x 64).
        assert_eq!(m.part(Part::Vision).matmul, 24_576 + 2 * (4_096 + 4_096));
        assert_eq!(m.part(Part::Aligner).matmul, 32 * 64 + 64 * 64);
        assert_eq!(m.part(Part::GenAligner).matmul, 8 * 64 + 64 * 64);
        assert_eq!(m.part(Part::GenHead).matmul, 64 * 64 + 64 * 128);
        assert_eq!(m.part(Part::LmHead).matmul, 640 * 64);
        assert_eq!(m.part(Part::EmbedTokens).matmul, 0);
        assert_eq!((m.image_tokens, m.gen_image_tokens), (576, 576));
    }

    #[test]
    fn stage_one_rows_match_a_count_by_hand() {
        let m = tiny();
        let t = Trained {
            parts: vec![Part::Aligner, Part::GenAligner, Part::GenHead],
            adapters: vec![],
        };
        // One unpacked understanding row: 576 patches + 128 text = 704 positions.
        // SigLIP frozen, nothing upstream: 2 x 40,960 x 576, attention 2 x 4 x 32 x 576^2.
        let vision = 2.0 * 40_960.0 * 576.0 + 2.0 * 4.0 * 32.0 * 576.0 * 576.0;
        // Aligner trains: 6 x 6,144 x 576.
        let aligner = 6.0 * 6_144.0 * 576.0;
        // LLM frozen, crossed by the gradient: 4 x 81,920 x 704, attention
        // 3 x 2 layers x 4 x 64 x 704 x 705 / 2.
        let llm = 4.0 * 81_920.0 * 704.0 + 3.0 * 2.0 * 4.0 * 64.0 * 704.0 * 705.0 / 2.0;
        // lm_head frozen, crossed: 4 x 40,960 at 64 answer positions.
        let head = 4.0 * 40_960.0 * 64.0;
        let want = vision + aligner + llm + head;
        let got = row_flops(Kind::Understanding, 704, &m, &t);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");

        // A text-to-image row packed to 1,280 positions: two samples of 64 + 576.
        // gen_aligner trains at 1,152 codes, gen_head trains at 1,152 targets.
        let want = 6.0 * 4_608.0 * 1_152.0
            + 6.0 * 12_288.0 * 1_152.0
            + 4.0 * 81_920.0 * 1_280.0
            + 3.0 * 2.0 * 4.0 * 64.0 * 1_280.0 * 1_281.0 / 2.0;
        let got = row_flops(Kind::T2i, 1_280, &m, &t);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");

        // A text row with nothing trained on its path: forward only.
        let want = 2.0 * 81_920.0 * 512.0
            + 2.0 * 4.0 * 64.0 * 512.0 * 513.0 / 2.0
            + 2.0 * 40_960.0 * 512.0;
        let got = row_flops(Kind::Text, 512, &m, &t);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
    }

    #[test]
    fn lora_makes_the_base_a_crossed_part_and_adds_the_adapters() {
        let m = tiny();
        let t = Trained {
            parts: vec![],
            adapters: vec![(Part::Llm, 1_000)],
        };
        // Text row of 512: LLM base 4N, adapters 6 x 1,000, attention 3x, lm_head
        // downstream of the adapters so crossed: 4N.
        let want = (4.0 * 81_920.0 + 6_000.0) * 512.0
            + 3.0 * 2.0 * 4.0 * 64.0 * 512.0 * 513.0 / 2.0
            + 4.0 * 40_960.0 * 512.0;
        let got = row_flops(Kind::Text, 512, &m, &t);
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        assert_eq!(t.count(&m), 1_000);
    }
}
