//! What a model directory holds, read from file headers only (no weights are loaded):
//! layout, files, architecture, parameters per part, dtypes on disk, the tasks the
//! checkpoint can serve and anything that would stop the model from building.
//!
//! Tensors are attributed to parts by building the full model on a shape-only backend
//! (the [`PlaceholderProvider`] the loader's checks share): every canonical name the model
//! asks for is mapped to the checkpoint's own names with [`checkpoint_source`], so both
//! layouts are counted the same way, and a missing or mis-shaped tensor becomes an entry
//! in [`ModelInfo::problems`] instead of an error.
//!
//! ```no_run
//! # fn main() -> janus::Result<()> {
//! let info = janus::info::ModelInfo::from_dir(std::path::Path::new("Janus-Pro-1B"))?;
//! assert!(info.tasks.generation);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use serde::Serialize;

use crate::config::{JanusConfig, Layout};
use crate::error::{Error, Result};
use crate::model::Janus;
use crate::processor::{ImageProcessorConfig, JanusTokenizer};
use crate::weights::{self, checkpoint_source, is_ignored, PlaceholderProvider, TensorStore};

mod check;
mod files;

use check::{check_build, check_processor};
use files::list_files;

/// A group of tensors with one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// SigLIP, the understanding encoder (`vision_model.vision_tower.*`).
    Vision,
    /// Understanding aligner (`aligner.*`).
    Aligner,
    /// The LLaMA decoder with its embeddings and lm_head (`language_model.*`).
    Llm,
    /// Image-code embeddings for generation (`gen_embed.*`).
    GenEmbed,
    /// Generation aligner (`gen_aligner.*`).
    GenAligner,
    /// Generation head (`gen_head.*`).
    GenHead,
    /// VQ encoder and quant_conv (`gen_vision_model.{encoder, quant_conv}.*`).
    VqEncoder,
    /// VQ codebook (`gen_vision_model.quantize.embedding`), used by both directions.
    VqCodebook,
    /// post_quant_conv and VQ decoder (`gen_vision_model.{post_quant_conv, decoder}.*`).
    VqDecoder,
    /// Present in published checkpoints but never read: SigLIP's `attn_pool`, the VQ
    /// `codebook_used` counter, rotary `inv_freq` buffers.
    Ignored,
    /// In the checkpoint but not part of the Janus name tree.
    Unused,
}

impl Part {
    /// Every part, in display order.
    pub const ALL: [Part; 11] = [
        Part::Vision,
        Part::Aligner,
        Part::Llm,
        Part::GenEmbed,
        Part::GenAligner,
        Part::GenHead,
        Part::VqEncoder,
        Part::VqCodebook,
        Part::VqDecoder,
        Part::Ignored,
        Part::Unused,
    ];

    /// A short human label.
    pub fn label(self) -> &'static str {
        match self {
            Part::Vision => "vision tower (SigLIP)",
            Part::Aligner => "aligner",
            Part::Llm => "LLM",
            Part::GenEmbed => "gen_embed",
            Part::GenAligner => "gen_aligner",
            Part::GenHead => "gen_head",
            Part::VqEncoder => "VQ encoder",
            Part::VqCodebook => "VQ codebook",
            Part::VqDecoder => "VQ decoder",
            Part::Ignored => "ignored (unused by the model)",
            Part::Unused => "unknown (not a Janus tensor)",
        }
    }

    /// The part a canonical (original-layout) tensor name belongs to.
    pub fn of_canonical(name: &str) -> Part {
        const PREFIXES: [(&str, Part); 11] = [
            ("vision_model.vision_tower.", Part::Vision),
            ("aligner.", Part::Aligner),
            ("language_model.", Part::Llm),
            ("gen_embed.", Part::GenEmbed),
            ("gen_aligner.", Part::GenAligner),
            ("gen_head.", Part::GenHead),
            ("gen_vision_model.encoder.", Part::VqEncoder),
            ("gen_vision_model.quant_conv.", Part::VqEncoder),
            ("gen_vision_model.quantize.", Part::VqCodebook),
            ("gen_vision_model.decoder.", Part::VqDecoder),
            ("gen_vision_model.post_quant_conv.", Part::VqDecoder),
        ];
        if is_ignored(name) {
            return Part::Ignored;
        }
        PREFIXES
            .iter()
            .find(|(p, _)| name.starts_with(p))
            .map_or(Part::Unused, |(_, part)| *part)
    }
}

/// One file of the model directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// File name inside the directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// What it is: `weights`, `weights index`, `config`, `tokenizer`, `processor`, `other`.
    pub kind: &'static str,
}

/// The LLaMA decoder's dimensions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmInfo {
    /// Width D.
    pub hidden_size: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Text vocabulary (rows of embed_tokens and lm_head).
    pub vocab_size: usize,
    /// Longest sequence (max_position_embeddings).
    pub context: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
}

/// The SigLIP encoder's dimensions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisionInfo {
    /// Token width.
    pub width: usize,
    /// Blocks run.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP inner width.
    pub mlp: usize,
    /// Input resolution.
    pub image_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Tokens per image.
    pub image_tokens: usize,
}

/// An `mlp_gelu` projector's dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MlpInfo {
    /// Input width.
    pub input: usize,
    /// Output (and hidden) width.
    pub output: usize,
    /// Linear layers.
    pub depth: usize,
}

/// The generation head's dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenHeadInfo {
    /// LLM width it reads.
    pub input: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Image codes it predicts.
    pub codes: usize,
}

/// The VQ tokenizer's dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VqInfo {
    /// Codebook entries.
    pub codebook_size: usize,
    /// Codebook vector width.
    pub codebook_dim: usize,
    /// Latent channels.
    pub z_channels: usize,
    /// Base channels.
    pub ch: usize,
    /// Channel multiplier per level (encoder order).
    pub ch_mult: Vec<usize>,
    /// ResnetBlocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// Side of the code grid.
    pub grid: usize,
    /// Side of a generated image in pixels.
    pub image_size: usize,
}

/// Every dimension of the model, as the config (with presets and LlamaConfig defaults)
/// gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Architecture {
    /// The LLM.
    pub llm: LlmInfo,
    /// The understanding encoder.
    pub vision: VisionInfo,
    /// Understanding aligner.
    pub aligner: MlpInfo,
    /// gen_embed rows x width.
    pub gen_embed: [usize; 2],
    /// Generation aligner.
    pub gen_aligner: MlpInfo,
    /// Generation head.
    pub gen_head: GenHeadInfo,
    /// VQ tokenizer.
    pub vq: VqInfo,
}

impl Architecture {
    /// The dimensions of a parsed config.
    pub fn of(cfg: &JanusConfig) -> Self {
        let (t, v, q) = (&cfg.text, &cfg.vision, &cfg.vq);
        let mlp = |m: &crate::config::MlpConfig| MlpInfo {
            input: m.input_dim,
            output: m.n_embed,
            depth: m.depth,
        };
        Architecture {
            llm: LlmInfo {
                hidden_size: t.hidden_size,
                layers: t.num_hidden_layers,
                heads: t.num_attention_heads,
                kv_heads: t.num_key_value_heads,
                head_dim: t.head_dim,
                intermediate_size: t.intermediate_size,
                vocab_size: t.vocab_size,
                context: t.max_position_embeddings,
                rope_theta: t.rope_theta,
                rms_norm_eps: t.rms_norm_eps,
            },
            vision: VisionInfo {
                width: v.hidden_size,
                layers: v.num_layers,
                heads: v.num_heads,
                mlp: v.intermediate_size,
                image_size: v.image_size,
                patch_size: v.patch_size,
                image_tokens: v.num_image_tokens(),
            },
            aligner: mlp(&cfg.aligner),
            gen_embed: [cfg.gen_embed.0, cfg.gen_embed.1],
            gen_aligner: mlp(&cfg.gen_aligner),
            gen_head: GenHeadInfo {
                input: cfg.gen_head.n_embed,
                hidden: cfg.gen_head.image_token_embed,
                codes: cfg.gen_head.image_token_size,
            },
            vq: VqInfo {
                codebook_size: q.codebook_size,
                codebook_dim: q.codebook_embed_dim,
                z_channels: q.z_channels,
                ch: q.ch,
                ch_mult: q.ch_mult.clone(),
                num_res_blocks: q.num_res_blocks,
                grid: cfg.gen_grid,
                image_size: cfg.gen_image_size(),
            },
        }
    }
}

/// Tensors and parameters of one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartInfo {
    /// Which part.
    pub part: Part,
    /// Checkpoint tensors attributed to it.
    pub tensors: usize,
    /// Their element count.
    pub parameters: u64,
}

/// Tensors and parameters stored in one dtype.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtypeInfo {
    /// The dtype (`f32`, `bf16`, ...; `unsupported` for one candle cannot read).
    pub dtype: String,
    /// Tensors stored in it.
    pub tensors: usize,
    /// Their element count.
    pub parameters: u64,
    /// Their size in bytes.
    pub bytes: u64,
}

/// What the checkpoint can be used for. Each needs its parts' tensors present with the
/// right shapes and a usable tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tasks {
    /// Image + text in, text out: vision tower, aligner, LLM with lm_head.
    pub understanding: bool,
    /// Text in, image out: LLM body, gen_embed, gen_aligner, gen_head, VQ codebook and
    /// decoder.
    pub generation: bool,
    /// Image to VQ codes: VQ encoder and codebook.
    pub vq_encode: bool,
}

/// Something that stops (part of) the model from loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The part concerned (`None`: tokenizer, processor or the model as a whole).
    pub part: Option<Part>,
    /// The canonical tensor name concerned, if any.
    pub tensor: Option<String>,
    /// What is wrong, with the numbers that disagree.
    pub message: String,
}

/// Everything `janus info` reports about a model directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The directory.
    pub dir: String,
    /// Tensor naming scheme: `original` or `transformers`.
    pub layout: &'static str,
    /// Weight file format: `safetensors` or `pytorch` (empty when described from a list).
    pub format: &'static str,
    /// Files of the directory (hidden files left out), sorted by name.
    pub files: Vec<FileInfo>,
    /// Bytes of the weight files (and index).
    pub weight_bytes: u64,
    /// Dimensions.
    pub architecture: Architecture,
    /// Tensors and parameters per part, in [`Part::ALL`] order; empty parts left out.
    pub parts: Vec<PartInfo>,
    /// Tensors in the checkpoint.
    pub tensors: usize,
    /// Parameters in the checkpoint (every tensor, ignored ones included).
    pub parameters: u64,
    /// Tensors and parameters per on-disk dtype, largest first.
    pub dtypes: Vec<DtypeInfo>,
    /// What the checkpoint supports.
    pub tasks: Tasks,
    /// What would stop it from loading; empty when `janus` can load it.
    pub problems: Vec<Problem>,
}

impl ModelInfo {
    /// Describes a model directory from its config and weight-file headers (no tensor
    /// data is read).
    ///
    /// Fails only when the directory cannot be described at all (no config.json, an
    /// unparsable config, an unreadable weight file); missing or mis-shaped tensors and a
    /// broken tokenizer are listed in [`ModelInfo::problems`].
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let (cfg, store) = weights::load_model_dir(dir)?;
        let files = list_files(dir, &store)?;
        let weight_bytes = files
            .iter()
            .filter(|f| f.kind.starts_with("weights"))
            .map(|f| f.bytes)
            .sum();
        let tensors = store
            .names()
            .filter_map(|n| Some((n.to_string(), store.shape(n)?.to_vec(), store.dtype(n))));
        let mut info = Self::from_tensors(&cfg, tensors, &store.location());
        check_processor(dir, &cfg, &mut info.problems);
        info.tasks = tasks(&info.problems);
        info.dir = dir.display().to_string();
        info.format = match store.format() {
            weights::Format::Safetensors => "safetensors",
            weights::Format::PyTorch => "pytorch",
        };
        info.files = files;
        info.weight_bytes = weight_bytes;
        Ok(info)
    }

    /// Describes a checkpoint given as a list of `(name, shape, dtype)` in `cfg.layout`
    /// (e.g. a published model's name list); `label` names the list in messages. Files,
    /// format and the tokenizer are not known, so they are left empty and unchecked.
    pub fn from_tensors(
        cfg: &JanusConfig,
        tensors: impl IntoIterator<Item = (String, Vec<usize>, Option<DType>)>,
        label: &str,
    ) -> Self {
        let tensors: Vec<(String, Vec<usize>, Option<DType>)> = tensors.into_iter().collect();
        let shapes = tensors.iter().map(|(n, s, _)| (n.clone(), s.clone()));
        let largest = tensors
            .iter()
            .map(|(_, s, _)| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d)))
            .map(|n| n.unwrap_or(usize::MAX))
            .max()
            .unwrap_or(0);
        let check = check_build(
            cfg,
            PlaceholderProvider::new(cfg.layout, shapes, label),
            largest,
        );

        // Checkpoint name -> part, through the names the model asked for.
        let mut part_of: HashMap<String, Part> = HashMap::new();
        for canonical in &check.requested {
            let part = Part::of_canonical(canonical);
            if let Some(source) = checkpoint_source(cfg.layout, canonical) {
                for n in source.names() {
                    part_of.entry(n.to_string()).or_insert(part);
                }
            }
        }
        let mut per_part: BTreeMap<Part, (usize, u64)> = BTreeMap::new();
        let mut per_dtype: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
        let mut parameters = 0u64;
        for (name, shape, dtype) in &tensors {
            let elems = shape.iter().map(|&d| d as u64).product::<u64>();
            let part = part_of.get(name).copied().unwrap_or(if is_ignored(name) {
                Part::Ignored
            } else {
                Part::Unused
            });
            let e = per_part.entry(part).or_default();
            e.0 += 1;
            e.1 += elems;
            let (dtype, size) = match dtype {
                Some(d) => (d.as_str().to_string(), d.size_in_bytes() as u64),
                None => ("unsupported".to_string(), 0),
            };
            let e = per_dtype.entry(dtype).or_default();
            e.0 += 1;
            e.1 += elems;
            e.2 += elems * size;
            parameters += elems;
        }
        let parts = Part::ALL
            .iter()
            .filter_map(|p| {
                per_part.get(p).map(|&(tensors, parameters)| PartInfo {
                    part: *p,
                    tensors,
                    parameters,
                })
            })
            .collect();
        let mut dtypes: Vec<DtypeInfo> = per_dtype
            .into_iter()
            .map(|(dtype, (tensors, parameters, bytes))| DtypeInfo {
                dtype,
                tensors,
                parameters,
                bytes,
            })
            .collect();
        dtypes.sort_by_key(|d| std::cmp::Reverse(d.parameters));

        ModelInfo {
            dir: String::new(),
            layout: match cfg.layout {
                Layout::Original => "original",
                Layout::Transformers => "transformers",
            },
            format: "",
            files: Vec::new(),
            weight_bytes: 0,
            architecture: Architecture::of(cfg),
            parts,
            tensors: tensors.len(),
            parameters,
            dtypes,
            tasks: tasks(&check.problems),
            problems: check.problems,
        }
    }

    /// Parameters of one part (0 when absent).
    pub fn part_parameters(&self, part: Part) -> u64 {
        self.parts
            .iter()
            .find(|p| p.part == part)
            .map_or(0, |p| p.parameters)
    }
}

/// Which tasks survive the problems found.
fn tasks(problems: &[Problem]) -> Tasks {
    let broken = |part: Part| problems.iter().any(|p| p.part == Some(part));
    let lm_head_only = |p: &Problem| p.tensor.as_deref() == Some("language_model.lm_head.weight");
    let llm_body_broken = problems
        .iter()
        .any(|p| p.part == Some(Part::Llm) && !lm_head_only(p));
    // Problems outside any part (tokenizer, model build) affect every text task.
    let global = problems.iter().any(|p| p.part.is_none());
    Tasks {
        understanding: !global
            && !broken(Part::Vision)
            && !broken(Part::Aligner)
            && !broken(Part::Llm),
        generation: !global
            && !llm_body_broken
            && !broken(Part::GenEmbed)
            && !broken(Part::GenAligner)
            && !broken(Part::GenHead)
            && !broken(Part::VqCodebook)
            && !broken(Part::VqDecoder),
        vq_encode: !broken(Part::VqEncoder) && !broken(Part::VqCodebook),
    }
}

#[cfg(test)]
mod tests;
