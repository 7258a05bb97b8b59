//! The wire format: OpenAI's request and response objects, as far as Janus supports them.
//!
//! Unknown request fields are ignored, as OpenAI-compatible servers usually do, so
//! clients that send `user`, `frequency_penalty` and the like keep working.

use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The served model's id or one of its names ([`crate::models`]); answered with the
    /// served id.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Upper bound on generated tokens (older name).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Upper bound on generated tokens (newer name; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature; 0 (the default here, as the reference demo) is greedy.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<StopField>,
    /// Choices to return; only 1 is supported.
    #[serde(default)]
    pub n: Option<u64>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Log probabilities are not supported; `true` is refused.
    #[serde(default)]
    pub logprobs: Option<bool>,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    /// One stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

impl StopField {
    /// The stop sequences as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system` / `developer`, `user` or `assistant`.
    pub role: String,
    /// A string or a list of parts; may be null for an assistant turn.
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Text and image parts, in order.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, by URL.
    ImageUrl {
        /// The image's URL.
        image_url: ImageUrl,
    },
}

/// `image_url`: `{"url": ...}` as OpenAI sends it, or a bare string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    /// `{"url": "data:image/png;base64,...", "detail": "auto"}` (detail is ignored).
    Object {
        /// A `data:` URL, or an http(s) URL where remote images are allowed.
        url: String,
    },
    /// The URL alone.
    Bare(String),
}

impl ImageUrl {
    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            ImageUrl::Object { url } | ImageUrl::Bare(url) => url,
        }
    }
}

/// Token counts of a chat completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, each image's tokens included.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix time of the request.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// The one answer.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// A choice of a `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// Always 0.
    pub index: usize,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop` (end of answer or a stop sequence) or `length`.
    pub finish_reason: &'static str,
    /// Always null.
    pub logprobs: Option<()>,
}

/// The assistant's answer.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    /// The same id in every chunk of a stream.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix time of the request.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Null except in the last chunk when `stream_options.include_usage` is set; absent
    /// without that option.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// A choice of a chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: usize,
    /// What this chunk adds.
    pub delta: Delta,
    /// Set in the last content chunk.
    pub finish_reason: Option<&'static str>,
    /// Always null.
    pub logprobs: Option<()>,
}

/// The text a chunk adds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    /// `assistant` in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `POST /v1/images/generations` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageRequest {
    /// What to draw.
    pub prompt: String,
    /// The served model's id or one of its names ([`crate::models`]).
    #[serde(default)]
    pub model: Option<String>,
    /// Images to draw, 1 to 16 (default 1).
    #[serde(default)]
    pub n: Option<u64>,
    /// `384x384` (the only size) or absent.
    #[serde(default)]
    pub size: Option<String>,
    /// `b64_json` (default) or `url`.
    #[serde(default)]
    pub response_format: Option<String>,
    /// Extension: answer with server-sent progress events and then the result.
    #[serde(default)]
    pub stream: Option<bool>,
    /// With `stream`: partial images to send while sampling, 0 to 3 (default 0), as
    /// OpenAI's parameter of that name; fewer arrive when the finished images would come
    /// first.
    #[serde(default)]
    pub partial_images: Option<u64>,
    /// Extension: seed (default: a random one).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Extension: classifier-free guidance weight (default 5).
    #[serde(default)]
    pub cfg_weight: Option<f64>,
    /// Extension: sampling temperature (default 1; 0 picks the most likely code).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Extension: image codes per forward pass (speculative Jacobi decoding): 1 (plain),
    /// up to 64, or `"auto"`; default: the server's `--speculative`.
    #[serde(default)]
    pub speculative: Option<serde_json::Value>,
    /// Extension: how speculative drafts are checked: `"exact"` (the plain image, bit
    /// for bit) or `"sjd"` (the plain distribution); default: the server's `--accept`.
    #[serde(default)]
    pub accept: Option<String>,
}

/// An image in an images response.
#[derive(Debug, Clone, Serialize)]
pub struct ImageData {
    /// The PNG, base64-encoded (`response_format: b64_json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    /// Where the PNG can be fetched (`response_format: url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The images response.
#[derive(Debug, Clone, Serialize)]
pub struct ImagesResponse {
    /// Unix time of the request.
    pub created: u64,
    /// One entry per image.
    pub data: Vec<ImageData>,
    /// Extension: the seed the images were drawn with (the request's, or the random one
    /// chosen when it gave none), so a result can be drawn again.
    pub seed: u64,
}
