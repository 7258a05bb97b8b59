//! DeepSeek Janus / Janus-Pro in Rust.
//!
//! One autoregressive LLaMA decoder that understands images (SigLIP encoder + aligner)
//! and generates them (VQ-16 codes through gen_embed / gen_aligner / gen_head, decoded
//! by LlamaGen's VQ-16 tokenizer).
//!
//! Folder layout follows the architecture:
//! - [`config`]: both checkpoint layouts' `config.json` parsed into one [`config::JanusConfig`];
//! - [`weights`]: safetensors / PyTorch `.bin` / sharded loading, the transformers name map
//!   and conversion to safetensors;
//! - [`model_dir`]: the file names a model directory holds (shared by loaders and hub);
//! - [`model`]: the network parts (SigLIP, aligners, LLaMA with KV cache, gen head, VQ);
//! - [`processor`]: tokenizer, conversation template, image preprocessing;
//! - [`engine`]: sampling loops for understanding and text-to-image;
//! - [`hub`]: models by Hugging Face repo id, downloaded into the standard cache;
//! - [`info`]: what a model directory holds, read from file headers only;
//! - [`png`]: PNG encoding with the generation parameters in text chunks;
//! - [`bench`](mod@bench): the standard benchmark workloads behind `janus bench`;
//! - [`train`]: the three-stage training recipes behind `janus train`;
//! - [`dist`]: data-parallel training across processes (MPI, NCCL);
//! - [`device`]: the `--device` choice (CPU, CUDA) and device names.

pub mod bench;
pub mod config;
pub mod device;
pub mod dist;
pub mod engine;
pub mod error;
pub mod hub;
pub mod info;
pub mod kernels;
pub mod machine;
pub mod model;
pub mod model_dir;
pub mod pipeline;
pub mod png;
pub mod processor;
#[cfg(test)]
mod testing;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
