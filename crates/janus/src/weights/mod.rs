//! Checkpoint loading: weight files, the two naming layouts, and the `VarBuilder` the model
//! is built from.
//!
//! The model builds every module from a [`VarBuilder`] using CANONICAL names, which are the
//! original deepseek layout's names (`language_model.model.layers.0.self_attn.q_proj.weight`,
//! `vision_model.vision_tower.blocks.3.attn.qkv.weight`, `gen_head.vision_head.weight`, ...).
//! [`CheckpointProvider`] serves them from a checkpoint of either [`Layout`], through the explicit
//! name map in [`names`]; every shape is checked against the request and a mismatch names the
//! tensor in the checkpoint's own layout with both shapes.
//!
//! ```no_run
//! # fn main() -> janus::Result<()> {
//! use candle_core::{DType, Device};
//! let dir = std::path::Path::new("Janus-Pro-1B");
//! let (cfg, store) = janus::weights::load_model_dir(dir)?;
//! let vb = janus::weights::var_builder(&store, cfg.layout, DType::BF16, &Device::Cpu);
//! # let _ = vb; Ok(()) }
//! ```

pub mod convert;
pub mod lora;
pub mod names;
mod provider;
mod store;

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

pub use names::{is_ignored, to_transformers, Source};
pub use provider::{checkpoint_source, CheckpointProvider, PlaceholderProvider, Usage};
pub use store::{Format, TensorStore, WEIGHT_FILES};

use crate::config::{JanusConfig, Layout};
use crate::error::{Error, Result};

/// Name prefixes only the original layout uses.
const ORIGINAL_PREFIXES: [&str; 7] = [
    "language_model.",
    "vision_model.",
    "gen_vision_model.",
    "aligner.",
    "gen_aligner.",
    "gen_head.",
    "gen_embed.",
];

/// The first name of each layout found: (original, transformers).
fn layout_examples<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> (Option<&'a str>, Option<&'a str>) {
    let (mut original, mut transformers) = (None, None);
    for n in names {
        if n.starts_with("model.") || n == "lm_head.weight" {
            transformers = transformers.or(Some(n));
        } else if ORIGINAL_PREFIXES.iter().any(|p| n.starts_with(p)) {
            original = original.or(Some(n));
        }
        if original.is_some() && transformers.is_some() {
            break;
        }
    }
    (original, transformers)
}

/// Which layout a set of tensor names uses: `None` when no name is recognised or the two
/// layouts are mixed.
pub fn layout_of_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Layout> {
    match layout_examples(names) {
        (Some(_), None) => Some(Layout::Original),
        (None, Some(_)) => Some(Layout::Transformers),
        _ => None,
    }
}

/// The layout of a checkpoint: the tensor names decide (they are what the loader maps);
/// the config's layout is the fallback when no name is recognised. A config that disagrees
/// with its tensors is logged; names from both layouts in one checkpoint are an error.
pub fn detect_layout(cfg: &JanusConfig, store: &TensorStore) -> Result<Layout> {
    let layout = match layout_examples(store.names()) {
        (Some(o), Some(t)) => {
            return Err(Error::Config(format!(
                "{}: tensor names mix the original layout (e.g. {o}) and the transformers \
                 layout (e.g. {t})",
                store.location()
            )))
        }
        (Some(_), None) => Layout::Original,
        (None, Some(_)) => Layout::Transformers,
        (None, None) => return Ok(cfg.layout),
    };
    if layout != cfg.layout {
        tracing::warn!(
            "config.json is in the {} layout but the tensors in {} use {} names; loading by \
             tensor names",
            cfg.layout,
            store.location(),
            layout
        );
    }
    Ok(layout)
}

/// Reads a model directory's `config.json` and opens its weights; the returned config's
/// `layout` is the one the weights actually use (see [`detect_layout`]).
pub fn load_model_dir(dir: &Path) -> Result<(JanusConfig, TensorStore)> {
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{}: model directory not found",
            dir.display()
        )));
    }
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(Error::Config(format!(
            "{}: no config.json in the model directory",
            dir.display()
        )));
    }
    let mut cfg = JanusConfig::from_file(&config)?;
    let store = TensorStore::open(dir)?;
    cfg.layout = detect_layout(&cfg, &store)?;
    tracing::debug!(
        "{}: {} layout, {} tensors in {} {} file(s)",
        dir.display(),
        cfg.layout,
        store.len(),
        store.files().len(),
        store.format()
    );
    Ok((cfg, store))
}

/// A `VarBuilder` serving canonical names from `store` (named per `layout`), converting every
/// tensor to `dtype` on `device`. Use [`CheckpointProvider`] directly to also get the [`Usage`]
/// record (which tensors were read).
pub fn var_builder(
    store: &TensorStore,
    layout: Layout,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    CheckpointProvider::new(store.clone(), layout).into_var_builder(dtype, device)
}

/// Parses a tensor list in the `fixtures/checkpoints/*.tsv` format: a `name<TAB>shape` header,
/// then one `name<TAB>[d0, d1, ...]` line per tensor (`[]` for a scalar).
pub fn parse_shape_list(text: &str) -> Result<Vec<(String, Vec<usize>)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || (i == 0 && line.starts_with("name\t")) {
            continue;
        }
        let bad = || Error::InvalidInput(format!("shape list line {}: {line:?}", i + 1));
        let (name, shape) = line.split_once('\t').ok_or_else(bad)?;
        let dims = shape
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(bad)?;
        let dims = dims
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.parse::<usize>().map_err(|_| bad()))
            .collect::<Result<Vec<_>>>()?;
        out.push((name.to_string(), dims));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_lists_parse() {
        let l = parse_shape_list("name\tshape\na.b\t[1, 576, 1024]\nc\t[]\n").unwrap();
        assert_eq!(
            l,
            vec![("a.b".into(), vec![1, 576, 1024]), ("c".into(), vec![])]
        );
        assert!(parse_shape_list("a\t[1, x]").is_err());
        assert!(parse_shape_list("a [1]").is_err());
    }

    #[test]
    fn layouts_from_names() {
        assert_eq!(
            layout_of_names(["language_model.model.norm.weight", "gen_embed.weight"]),
            Some(Layout::Original)
        );
        assert_eq!(
            layout_of_names(["model.language_model.norm.weight", "lm_head.weight"]),
            Some(Layout::Transformers)
        );
        assert_eq!(layout_of_names(["foo"]), None);
        assert_eq!(
            layout_of_names(["model.vqmodel.quant_conv.weight", "gen_embed.weight"]),
            None
        );
    }
}
