//! Everything between user input and model input: the tokenizer, the "deepseek"
//! conversation template, image preprocessing, and the token sequences for both tasks
//! (`janus/models/processing_vlm.py`, `generation_inference.py`).

pub mod conversation;
pub mod image;
mod jpeg;
mod resample;
pub mod special_tokens;
pub mod tokenizer;

use std::ops::Range;

pub use conversation::{
    images_in_order, render_generation, render_understanding, with_image_placeholders, ImageInput,
    Message, Role, Roles, DEFAULT_SYSTEM_PROMPT,
};
pub use image::{load_image, load_image_from_memory, preprocess, to_tensor, ImageProcessorConfig};
pub use tokenizer::{
    JanusTokenizer, SpecialTokens, TokenStream, BEGIN_OF_IMAGE, BOS_TOKEN, END_OF_IMAGE, EOS_TOKEN,
    IMAGE_PLACEHOLDER, PAD_TOKEN,
};

use crate::error::{Error, Result};

/// An understanding prompt ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPrompt {
    /// The rendered template (the reference's `sft_format`).
    pub prompt: String,
    /// Token ids, one BOS first, each image expanded to
    /// `<begin_of_image>` + N × `<image_placeholder>` + `<end_of_image>`.
    pub input_ids: Vec<u32>,
    /// `input_ids[i] == <image_placeholder>`: where image embeddings overwrite token
    /// embeddings (the reference's `images_seq_mask`).
    pub image_token_mask: Vec<bool>,
    /// Per image, in order, the positions of its N placeholder tokens.
    pub image_spans: Vec<Range<usize>>,
}

impl PreparedPrompt {
    /// Number of images the prompt expects embeddings for.
    pub fn num_images(&self) -> usize {
        self.image_spans.len()
    }
}

/// Builds the understanding input for a conversation.
///
/// Each message first gets the CLI placeholder rule ([`with_image_placeholders`]); the
/// conversation is rendered with the tokenizer's roles and `system` (pass
/// `Some(DEFAULT_SYSTEM_PROMPT)` for the reference behaviour), tokenised with one BOS, and
/// every `<image_placeholder>` token expanded by [`expand_image_tokens`]. The number of
/// placeholder tokens must equal the number of attached images.
pub fn prepare_understanding(
    tokenizer: &JanusTokenizer,
    messages: &[Message],
    system: Option<&str>,
    num_image_tokens: usize,
) -> Result<PreparedPrompt> {
    let texts = messages
        .iter()
        .map(|m| {
            Ok(Message {
                role: m.role,
                content: with_image_placeholders(&m.content, m.images.len())?,
                images: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let prompt = render_understanding(&texts, tokenizer.roles(), system);
    let ids = tokenizer.encode(&prompt)?;
    let (input_ids, image_spans) = expand_image_tokens(&ids, tokenizer.special(), num_image_tokens);

    let num_images = images_in_order(messages).count();
    if image_spans.len() != num_images {
        return Err(Error::InvalidInput(format!(
            "prompt has {} {IMAGE_PLACEHOLDER} tokens but {num_images} images were given",
            image_spans.len()
        )));
    }
    let placeholder = tokenizer.special().image_placeholder;
    let image_token_mask = input_ids.iter().map(|&id| id == placeholder).collect();
    Ok(PreparedPrompt {
        prompt,
        input_ids,
        image_token_mask,
        image_spans,
    })
}

/// Replaces every `<image_placeholder>` id with `<begin_of_image>` +
/// `num_image_tokens` × `<image_placeholder>` + `<end_of_image>`, as
/// `VLChatProcessor.add_image_token` (with `add_special_token=False`: the original
/// placeholder is dropped). Returns the ids and, per image, its placeholder positions.
pub fn expand_image_tokens(
    ids: &[u32],
    special: &SpecialTokens,
    num_image_tokens: usize,
) -> (Vec<u32>, Vec<Range<usize>>) {
    let placeholder = special.image_placeholder;
    let images = ids.iter().filter(|&&id| id == placeholder).count();
    let mut out = Vec::with_capacity(ids.len() + images * (num_image_tokens + 1));
    let mut spans = Vec::with_capacity(images);
    for &id in ids {
        if id == placeholder {
            out.push(special.begin_of_image);
            let start = out.len();
            out.extend(std::iter::repeat_n(placeholder, num_image_tokens));
            spans.push(start..out.len());
            out.push(special.end_of_image);
        } else {
            out.push(id);
        }
    }
    (out, spans)
}

/// The conditional and unconditional rows for text-to-image.
///
/// The conditional row tokenises [`render_generation`] (no system prompt, one BOS, ends
/// with `<begin_of_image>`). The unconditional row is the same with every token but the
/// first (BOS) and the last (`<begin_of_image>`) replaced by pad, as
/// `generation_inference.py` (`tokens[i, 1:-1] = pad_id`).
pub fn prepare_generation(
    tokenizer: &JanusTokenizer,
    prompt: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let text = render_generation(prompt, tokenizer.roles());
    let cond = tokenizer.encode(&text)?;
    let special = tokenizer.special();
    if cond.last() != Some(&special.begin_of_image) {
        return Err(Error::Tokenizer(format!(
            "generation prompt does not end with {BEGIN_OF_IMAGE} once tokenised"
        )));
    }
    let mut uncond = cond.clone();
    let last = uncond.len() - 1;
    for id in &mut uncond[1..last] {
        *id = special.pad;
    }
    Ok((cond, uncond))
}

/// Checks that a prompt of `prompt_len` tokens plus `new_tokens` generated ones fits in
/// the model's `max_positions`; the error names all three numbers.
pub fn check_prompt_length(
    prompt_len: usize,
    new_tokens: usize,
    max_positions: usize,
) -> Result<()> {
    if prompt_len + new_tokens > max_positions {
        return Err(Error::InvalidInput(format!(
            "prompt is {prompt_len} tokens and {new_tokens} more are to be generated, \
             but the model supports at most {max_positions} positions"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special() -> SpecialTokens {
        SpecialTokens {
            bos: 0,
            eos: 1,
            pad: 2,
            image_placeholder: 3,
            begin_of_image: 4,
            end_of_image: 5,
        }
    }

    #[test]
    fn expands_each_placeholder() {
        let (ids, spans) = expand_image_tokens(&[0, 9, 3, 8, 3], &special(), 2);
        assert_eq!(ids, [0, 9, 4, 3, 3, 5, 8, 4, 3, 3, 5]);
        assert_eq!(spans, [3..5, 8..10]);
    }

    #[test]
    fn prompt_length_error_names_numbers() {
        assert!(check_prompt_length(10, 20, 30).is_ok());
        let msg = check_prompt_length(10, 21, 30).unwrap_err().to_string();
        assert!(
            msg.contains("10") && msg.contains("21") && msg.contains("30"),
            "{msg}"
        );
    }
}
