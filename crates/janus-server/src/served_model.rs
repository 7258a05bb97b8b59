//! What the model thread needs from a model: the small trait the worker calls, implemented
//! for [`Pipeline`].
//!
//! The trait keeps the worker independent of how the model runs, so tests can wrap the
//! real pipeline (to hold a job back, for instance) without a second code path.

use std::ops::ControlFlow;
use std::sync::Arc;

use janus::engine::{self, BatchItem, BatchProgress, GenerateOutput};
use janus::pipeline::{Pipeline, UnderstandOptions, UnderstandResult};
use janus::processor::{JanusTokenizer, Message};

/// Facts about the model that requests are checked against before they are queued.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// The tokenizer, to count and check prompt tokens on the request's own task.
    pub tokenizer: JanusTokenizer,
    /// The LLM's context in tokens.
    pub max_positions: usize,
    /// Placeholder tokens one understanding image expands to.
    pub image_tokens: usize,
    /// Codes per generated image (576).
    pub gen_image_tokens: usize,
    /// Side of a generated image in pixels (384).
    pub gen_image_size: usize,
}

/// The model operations the model and decode threads run (both at once: the decode
/// thread decodes one batch's codes while the model thread samples the next).
pub trait ServedModel: Send + Sync + 'static {
    /// Facts the request handlers check requests against.
    fn facts(&self) -> ModelFacts;

    /// Answers a conversation, streaming the answer through `on_text`, which may stop it.
    fn understand(
        &self,
        messages: &[Message],
        opts: &UnderstandOptions,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> janus::Result<UnderstandResult>;

    /// Samples the codes of every item. `on_step` runs after each step with the progress
    /// and the codes so far, and says, per item, whether to keep going; each output equals
    /// what the item alone gives.
    fn generate_codes(
        &self,
        items: &[BatchItem],
        on_step: &mut dyn FnMut(&BatchProgress) -> Vec<bool>,
    ) -> janus::Result<Vec<GenerateOutput>>;

    /// Refuses a batch of `images` images whose longest prompt is `prompt_len` tokens when
    /// it would not fit in memory.
    fn check_generate_memory(&self, prompt_len: usize, images: usize) -> janus::Result<()>;

    /// Decodes code grids to 8-bit RGB images.
    fn decode_images(&self, codes: &[Vec<u32>]) -> janus::Result<Vec<image::RgbImage>>;
}

impl ServedModel for Pipeline {
    fn facts(&self) -> ModelFacts {
        let cfg = self.config();
        ModelFacts {
            tokenizer: self.tokenizer.clone(),
            max_positions: cfg.text.max_position_embeddings,
            image_tokens: cfg.vision.num_image_tokens(),
            gen_image_tokens: cfg.gen_image_tokens(),
            gen_image_size: cfg.gen_image_size(),
        }
    }

    fn understand(
        &self,
        messages: &[Message],
        opts: &UnderstandOptions,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> janus::Result<UnderstandResult> {
        Pipeline::understand(self, messages, opts, on_text)
    }

    fn generate_codes(
        &self,
        items: &[BatchItem],
        on_step: &mut dyn FnMut(&BatchProgress) -> Vec<bool>,
    ) -> janus::Result<Vec<GenerateOutput>> {
        engine::generate_codes_batch_with(&self.model, items, on_step)
    }

    fn check_generate_memory(&self, prompt_len: usize, images: usize) -> janus::Result<()> {
        Pipeline::check_generate_memory(self, prompt_len, images)
    }

    fn decode_images(&self, codes: &[Vec<u32>]) -> janus::Result<Vec<image::RgbImage>> {
        Pipeline::decode_images(self, codes)
    }
}

/// A model shared with other owners (tests load the fixture model once).
impl<B: ServedModel> ServedModel for Arc<B> {
    fn facts(&self) -> ModelFacts {
        (**self).facts()
    }
    fn understand(
        &self,
        messages: &[Message],
        opts: &UnderstandOptions,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> janus::Result<UnderstandResult> {
        (**self).understand(messages, opts, on_text)
    }
    fn generate_codes(
        &self,
        items: &[BatchItem],
        on_step: &mut dyn FnMut(&BatchProgress) -> Vec<bool>,
    ) -> janus::Result<Vec<GenerateOutput>> {
        (**self).generate_codes(items, on_step)
    }
    fn check_generate_memory(&self, prompt_len: usize, images: usize) -> janus::Result<()> {
        (**self).check_generate_memory(prompt_len, images)
    }
    fn decode_images(&self, codes: &[Vec<u32>]) -> janus::Result<Vec<image::RgbImage>> {
        (**self).decode_images(codes)
    }
}
