//! DeepSeek Janus / Janus-Pro in Rust.
//!
//! One autoregressive LLaMA decoder that understands images (SigLIP encoder + aligner)
//! and generates them (VQ-16 codes through gen_embed / gen_aligner / gen_head, decoded
//! by LlamaGen's VQ-16 tokenizer).
//!
//! Folder layout follows the architecture:
//! - [`config`]: both checkpoint layouts' `config.json` parsed into one [`config::JanusConfig`];
//! - [`weights`]: safetensors / PyTorch `.bin` / sharded loading and the transformers name map;
//! - [`model`]: the network parts (SigLIP, aligners, LLaMA with KV cache, gen head, VQ);
//! - [`processor`]: tokenizer, conversation template, image preprocessing;
//! - [`engine`]: sampling loops for understanding and text-to-image.

pub mod config;
pub mod engine;
pub mod error;
pub mod model;
pub mod pipeline;
pub mod processor;
pub mod weights;

pub use error::{Error, Result};
