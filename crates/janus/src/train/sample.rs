//! From a record to what the model sees: token ids, where images go, and which positions
//! are supervised with which target.
//!
//! - understanding: the conversation rendered as `janus understand` renders it (the
//!   reference system prompt, the deepseek template, each image expanded to
//!   `<begin_of_image>` + N placeholders + `<end_of_image>`); only the assistant answers and
//!   the end-of-sentence after each are supervised, through `lm_head`;
//! - pure text: BOS + text + EOS, every token after BOS supervised, through `lm_head`;
//! - text-to-image: exactly the prompt `janus generate` feeds (its unconditional row when
//!   the caption is dropped), then the image's codes; all of them are supervised through
//!   the generation head, the first predicted from the `<begin_of_image>` position.
//!
//! A target at position `i` is predicted from the hidden state at `i - 1`; targets here
//! are stored as (hidden position, id).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::data::Kind;
use crate::error::{Error, Result};
use crate::processor::{
    expand_image_tokens, prepare_generation, render_understanding, with_image_placeholders,
    JanusTokenizer, Message, Role, DEFAULT_SYSTEM_PROMPT, IMAGE_PLACEHOLDER,
};

/// One sample ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSample {
    /// Kind of data.
    pub kind: Kind,
    /// Token ids (understanding: expanded; text-to-image: the prompt only).
    pub input_ids: Vec<u32>,
    /// Understanding: first position of each image's placeholder run.
    pub image_spans: Vec<usize>,
    /// Understanding: preprocessed pixels `[3, S, S]` per image.
    pub pixels: Vec<Vec<f32>>,
    /// Text-to-image: the image's codes (all are targets; all but the last are inputs).
    pub codes: Vec<u32>,
    /// (hidden position, token id) through `lm_head`.
    pub text_targets: Vec<(usize, u32)>,
    /// (hidden position, code) through the generation head.
    pub image_targets: Vec<(usize, u32)>,
    /// Text-to-image: the caption was replaced by pads.
    pub dropped: bool,
}

impl TrainSample {
    /// Positions fed to the LLM.
    pub fn len(&self) -> usize {
        self.input_ids.len() + self.codes.len().saturating_sub(1)
    }

    /// Whether no position is fed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Supervised positions.
    pub fn num_targets(&self) -> usize {
        self.text_targets.len() + self.image_targets.len()
    }
}

/// What [`understanding_ids`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct UnderstandingIds {
    /// Token ids, images expanded.
    pub ids: Vec<u32>,
    /// First position of each image's placeholder run.
    pub spans: Vec<usize>,
    /// (hidden position, token id) of every answer token.
    pub targets: Vec<(usize, u32)>,
}

/// Understanding ids, image spans and answer targets for a conversation; with
/// `answer_prefix_only`, the prompt `janus understand` would feed to get the last answer
/// (no targets).
///
/// Answers are found by byte ranges, not by tokenising pieces: the ids are exactly those
/// `janus understand` would feed for the same turns, and a token is supervised when its
/// range overlaps an answer (content plus the end-of-sentence separator after it).
pub fn understanding_ids(
    tok: &JanusTokenizer,
    messages: &[(Role, String)],
    num_images: usize,
    num_image_tokens: usize,
    answer_prefix_only: bool,
) -> Result<UnderstandingIds> {
    let mut msgs: Vec<Message> = messages
        .iter()
        .map(|(role, content)| Message {
            role: *role,
            content: content.clone(),
            images: Vec::new(),
        })
        .collect();
    // The images go with the first user turn unless the turns place them.
    let markers: usize = msgs
        .iter()
        .map(|m| m.content.matches(IMAGE_PLACEHOLDER).count())
        .sum();
    if markers == 0 && num_images > 0 {
        if let Some(first) = msgs.iter_mut().find(|m| m.role == Role::User) {
            first.content = with_image_placeholders(&first.content, num_images)?;
        }
    } else if markers != num_images {
        return Err(Error::InvalidInput(format!(
            "conversation has {markers} {IMAGE_PLACEHOLDER} markers but {num_images} images"
        )));
    }
    let system = Some(DEFAULT_SYSTEM_PROMPT);
    let roles = tok.roles();
    let text = render_understanding(&msgs, roles, system);
    if answer_prefix_only {
        // The prompt before the last answer, ending with the open assistant turn.
        let last = msgs.len() - 1;
        let prompt = render_understanding(&msgs[..last], roles, system);
        let ids = tok.encode(&prompt)?;
        let (expanded, spans) = expand_image_tokens(&ids, tok.special(), num_image_tokens);
        return Ok(UnderstandingIds {
            ids: expanded,
            spans: spans.iter().map(|s| s.start).collect(),
            targets: Vec::new(),
        });
    }
    // Byte range of each answer: from the end of the open "Assistant:" prompt before it to
    // the end of the conversation rendered up to and including it.
    let mut answers = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let start = render_understanding(&msgs[..i], roles, system).len();
        let end = render_understanding(&msgs[..=i], roles, system).len();
        if !text.starts_with(&render_understanding(&msgs[..=i], roles, system)) || end <= start {
            return Err(Error::InvalidInput(format!(
                "assistant turn {i} renders to nothing (an empty answer)"
            )));
        }
        answers.push(start..end);
    }
    let (ids, offsets) = tok.encode_with_offsets(&text)?;
    let supervised: Vec<bool> = offsets
        .iter()
        .map(|&(s, e)| e > s && answers.iter().any(|a| s < a.end && e > a.start))
        .collect();
    let (expanded, spans) = expand_image_tokens(&ids, tok.special(), num_image_tokens);
    // Walk the expansion to carry the flags over (placeholders become N + 2 tokens).
    let placeholder = tok.special().image_placeholder;
    let mut targets = Vec::new();
    let mut pos = 0;
    for (&id, &sup) in ids.iter().zip(&supervised) {
        if id == placeholder {
            pos += num_image_tokens + 2;
            continue;
        }
        if sup && pos > 0 {
            targets.push((pos - 1, id));
        }
        pos += 1;
    }
    debug_assert_eq!(pos, expanded.len());
    if targets.is_empty() {
        return Err(Error::InvalidInput(
            "the conversation has no answer tokens".into(),
        ));
    }
    Ok(UnderstandingIds {
        ids: expanded,
        spans: spans.iter().map(|s| s.start).collect(),
        targets,
    })
}

/// A pure-text sample: BOS + text + EOS, every token after BOS a target.
pub fn text_sample(tok: &JanusTokenizer, text: &str) -> Result<TrainSample> {
    let mut ids = tok.encode(text)?;
    ids.push(tok.special().eos);
    let text_targets = (1..ids.len()).map(|i| (i - 1, ids[i])).collect();
    Ok(TrainSample {
        kind: Kind::Text,
        input_ids: ids,
        image_spans: Vec::new(),
        pixels: Vec::new(),
        codes: Vec::new(),
        text_targets,
        image_targets: Vec::new(),
        dropped: false,
    })
}

/// A text-to-image sample: the generation prompt for `caption` (its unconditional row
/// when `dropped`) followed by `codes`, every code a target.
pub fn t2i_sample(
    tok: &JanusTokenizer,
    caption: &str,
    codes: Vec<u32>,
    dropped: bool,
) -> Result<TrainSample> {
    let (cond, uncond) = prepare_generation(tok, caption)?;
    let ids = if dropped { uncond } else { cond };
    let first = ids.len() - 1; // the <begin_of_image> position predicts code 0
    let image_targets = codes
        .iter()
        .enumerate()
        .map(|(j, &c)| (first + j, c))
        .collect();
    Ok(TrainSample {
        kind: Kind::T2i,
        input_ids: ids,
        image_spans: Vec::new(),
        pixels: Vec::new(),
        codes,
        text_targets: Vec::new(),
        image_targets,
        dropped,
    })
}

/// The first sentence of a caption: up to the first `.`, `!` or `?` followed by
/// whitespace or the end (the whole caption when there is none).
pub fn first_sentence(caption: &str) -> &str {
    let caption = caption.trim();
    let mut chars = caption.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?') {
            match chars.peek() {
                None => return caption,
                Some((_, n)) if n.is_whitespace() => return &caption[..i + c.len_utf8()],
                _ => {}
            }
        }
    }
    caption
}

/// The random choices of one sample: a pure function of the seed, the kind and the
/// sample's global position in its stream, so resuming replays them exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleDraws {
    /// Replace the caption with pads.
    pub drop_caption: bool,
    /// Cut the caption to its first sentence.
    pub first_sentence: bool,
}

impl SampleDraws {
    /// Draws for the sample at `position` of `kind`'s stream.
    pub fn new(seed: u64, kind: Kind, position: u64, cfg_drop: f64, first: f64) -> Self {
        let mut rng = sample_rng(seed, kind, position, 1);
        SampleDraws {
            drop_caption: rng.random::<f64>() < cfg_drop,
            first_sentence: rng.random::<f64>() < first,
        }
    }
}

/// A generator for one (seed, kind, position, purpose).
pub fn sample_rng(seed: u64, kind: Kind, position: u64, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // ChaCha's stream id and word position address independent blocks: no seeds mixed.
    rng.set_stream((kind.index() as u64) << 32 | purpose);
    rng.set_word_pos(u128::from(position) * 16);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> JanusTokenizer {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny-pro");
        JanusTokenizer::from_file(dir.join("tokenizer.json")).unwrap()
    }

    #[test]
    fn t2i_samples_have_576_targets_the_first_from_begin_of_image() {
        let tok = tok();
        let codes: Vec<u32> = (0..576).map(|i| i % 100).collect();
        let s = t2i_sample(&tok, "A red apple.", codes.clone(), false).unwrap();
        assert_eq!(s.image_targets.len(), 576);
        assert!(s.text_targets.is_empty());
        let boi = tok.special().begin_of_image;
        assert_eq!(s.input_ids[s.image_targets[0].0], boi);
        assert_eq!(s.image_targets[0].1, codes[0]);
        assert_eq!(
            s.image_targets[575],
            (s.input_ids.len() - 1 + 575, codes[575])
        );
        assert_eq!(s.len(), s.input_ids.len() + 575);
        // The dropped row is inference's unconditional row, token for token.
        let d = t2i_sample(&tok, "A red apple.", codes, true).unwrap();
        let (_, uncond) = prepare_generation(&tok, "A red apple.").unwrap();
        assert_eq!(d.input_ids, uncond);
        assert_eq!(d.input_ids.len(), s.input_ids.len());
        assert_eq!(d.input_ids[0], tok.special().bos);
        assert!(d.input_ids[1..d.input_ids.len() - 1]
            .iter()
            .all(|&t| t == tok.special().pad));
    }

    #[test]
    fn understanding_supervises_only_answers_and_their_eos() {
        let tok = tok();
        let msgs = vec![
            (Role::User, "<image_placeholder>\nWhat is it?".to_string()),
            (Role::Assistant, "A cat.".to_string()),
            (Role::User, "And?".to_string()),
            (Role::Assistant, "Orange fur.".to_string()),
        ];
        let UnderstandingIds {
            ids,
            spans,
            targets,
        } = understanding_ids(&tok, &msgs, 1, 576, false).unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(ids[spans[0] - 1], tok.special().begin_of_image);
        assert_eq!(ids[spans[0] + 576], tok.special().end_of_image);
        // Each target id is the token after its hidden position.
        for &(p, id) in &targets {
            assert_eq!(ids[p + 1], id);
        }
        let text: Vec<u32> = targets.iter().map(|t| t.1).collect();
        let eos = tok.special().eos;
        assert_eq!(text.iter().filter(|&&t| t == eos).count(), 2);
        assert_eq!(*text.last().unwrap(), eos);
        let decoded = tok.decode(&text, false).unwrap();
        let eos_s = crate::processor::EOS_TOKEN;
        assert_eq!(
            decoded.trim_start(),
            format!("A cat.{eos_s} Orange fur.{eos_s}")
        );
    }

    #[test]
    fn text_samples_supervise_every_token_after_bos() {
        let tok = tok();
        let s = text_sample(&tok, "hello world").unwrap();
        assert_eq!(s.input_ids[0], tok.special().bos);
        assert_eq!(*s.input_ids.last().unwrap(), tok.special().eos);
        assert_eq!(s.text_targets.len(), s.input_ids.len() - 1);
    }

    #[test]
    fn cfg_drop_rate_is_within_three_sigma_and_replays() {
        let (n, p) = (20_000u64, 0.1);
        let drops = (0..n)
            .filter(|&i| SampleDraws::new(7, Kind::T2i, i, p, 0.0).drop_caption)
            .count() as f64;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (drops - n as f64 * p).abs() < 3.0 * sigma,
            "{drops} drops of {n}"
        );
        assert_eq!(
            SampleDraws::new(7, Kind::T2i, 123, 0.5, 0.5),
            SampleDraws::new(7, Kind::T2i, 123, 0.5, 0.5)
        );
    }

    #[test]
    fn first_sentences() {
        assert_eq!(first_sentence("A dog. It runs."), "A dog.");
        assert_eq!(
            first_sentence("Version 1.5 is out! Yes"),
            "Version 1.5 is out!"
        );
        assert_eq!(first_sentence("no stop"), "no stop");
    }
}
