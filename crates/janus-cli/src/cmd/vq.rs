//! `janus vq encode|decode`: the generation tokenizer (VQ-16) on its own.
//!
//! `encode` writes an image's codes as JSON:
//! `{"grid": [24, 24], "codebook_size": N, "codes": [...], "model": id, ...}`.
//! `decode` reads that file, a bare list of codes, a list of code lists, or the output of
//! `janus generate --json` (its `image_tokens`), and writes one PNG per list.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::args::{DeviceArgs, ModelArgs};
use crate::output;
use crate::progress::Progress;

/// The VQ subcommands.
#[derive(Subcommand, Debug)]
pub enum VqCommand {
    /// Encode an image to its VQ codes (resized and padded to the generation resolution).
    Encode(EncodeArgs),
    /// Decode VQ codes to PNG images.
    Decode(DecodeArgs),
}

/// Arguments of `janus vq encode`.
#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// The image to encode.
    image: PathBuf,
    /// Where to write the codes as JSON (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

/// Arguments of `janus vq decode`.
#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Codes as JSON: a `janus vq encode` file, a list of codes, a list of code lists, or
    /// `janus generate --json` output.
    codes: PathBuf,
    /// The PNG to write. Several code lists give one PNG each, named with `-0`, `-1`, ...
    /// before the extension.
    #[arg(long)]
    out: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
}

/// Runs a `janus vq` subcommand.
pub fn run(c: VqCommand, progress: &Progress) -> Result<()> {
    match c {
        VqCommand::Encode(a) => encode(a, progress),
        VqCommand::Decode(a) => decode(a, progress),
    }
}

fn encode(a: EncodeArgs, progress: &Progress) -> Result<()> {
    if let Some(out) = &a.out {
        if !a.force && out.exists() {
            bail!(
                "{} already exists (not overwritten; use --force to replace it)",
                out.display()
            );
        }
    }
    // Decode the image before loading the model: a bad image fails fast.
    let img = janus::processor::load_image(&a.image)?;
    let pipe = a.model.load(progress, &a.device)?;
    let codes = pipe.vq_encode(&img)?;
    let g = pipe.config().gen_grid;
    let obj = json!({
        "grid": [g, g],
        "codebook_size": pipe.config().vq.codebook_size,
        "codes": codes,
        "model": a.model.model_id(),
        "image": a.image.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let text = format!("{obj}\n");
    match &a.out {
        Some(out) => output::write_atomic(out, text.as_bytes(), a.force)?,
        None => print!("{text}"),
    }
    Ok(())
}

fn decode(a: DecodeArgs, progress: &Progress) -> Result<()> {
    let text = std::fs::read_to_string(&a.codes)
        .with_context(|| format!("cannot read {}", a.codes.display()))?;
    let file = CodesFile::parse(&text).with_context(|| format!("{}", a.codes.display()))?;
    let outs = output_paths(&a.out, file.lists.len(), file.nested);
    if !a.force {
        if let Some(p) = outs.iter().find(|p| p.exists()) {
            bail!(
                "{} already exists (not overwritten; use --force to replace it)",
                p.display()
            );
        }
    }
    let pipe = a.model.load(progress, &a.device)?;
    let cfg = pipe.config();
    file.check(cfg.gen_grid, cfg.vq.codebook_size)
        .with_context(|| format!("{}", a.codes.display()))?;
    let images = pipe.decode_images(&file.lists)?;
    let text = [
        ("Software".to_string(), output::software()),
        ("janus:model".to_string(), a.model.model_id()),
        ("janus:codes".to_string(), a.codes.display().to_string()),
    ];
    let mut written = Vec::new();
    for (img, path) in images.iter().zip(&outs) {
        let res = output::encode_png(img, &text)
            .map_err(anyhow::Error::from)
            .and_then(|b| output::write_atomic(path, &b, a.force));
        if let Err(e) = res {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        written.push(path.clone());
    }
    for p in &written {
        println!("{}", p.display());
    }
    Ok(())
}

/// `out` itself for a single list; `stem-i.ext` per list for a list of lists.
fn output_paths(out: &Path, n: usize, nested: bool) -> Vec<PathBuf> {
    if !nested {
        return vec![out.to_path_buf()];
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    (0..n)
        .map(|i| out.with_file_name(format!("{stem}-{i}.{ext}")))
        .collect()
}

/// Codes read from JSON, before they are checked against a model.
#[derive(Debug, Clone, PartialEq)]
struct CodesFile {
    /// `grid` as the file states it.
    grid: Option<(usize, usize)>,
    /// `codebook_size` as the file states it.
    codebook_size: Option<usize>,
    /// One code list per image.
    lists: Vec<Vec<u32>>,
    /// Whether the file held a list of lists (one output per list, suffixed).
    nested: bool,
}

impl CodesFile {
    fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("invalid JSON")?;
        let (codes, grid, codebook_size) = match &v {
            Value::Object(m) => {
                let codes = m.get("codes").or_else(|| m.get("image_tokens")).context(
                    "expected a \"codes\" (janus vq encode) or \"image_tokens\" (janus generate \
                     --json) entry",
                )?;
                let grid = match m.get("grid") {
                    None => None,
                    Some(g) => Some(parse_grid(g)?),
                };
                let codebook_size = match m.get("codebook_size") {
                    None => None,
                    Some(k) => Some(
                        k.as_u64()
                            .context("\"codebook_size\" is not a non-negative integer")?
                            as usize,
                    ),
                };
                (codes, grid, codebook_size)
            }
            other => (other, None, None),
        };
        let items = codes
            .as_array()
            .context("the codes are not a list of integers or a list of lists")?;
        if items.is_empty() {
            bail!("the list of codes is empty");
        }
        let nested = items.iter().all(Value::is_array);
        let lists = if nested {
            items
                .iter()
                .enumerate()
                .map(|(j, l)| parse_codes(l).with_context(|| format!("list {j}")))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![parse_codes(codes)?]
        };
        Ok(Self {
            grid,
            codebook_size,
            lists,
            nested,
        })
    }

    /// Every list must fill the model's `grid` x `grid` and index its codebook.
    fn check(&self, grid: usize, codebook_size: usize) -> Result<()> {
        if let Some((h, w)) = self.grid {
            if (h, w) != (grid, grid) {
                bail!("the codes are for a {h}x{w} grid, but the model generates {grid}x{grid}");
            }
        }
        if let Some(k) = self.codebook_size {
            if k != codebook_size {
                bail!(
                    "the codes are for a codebook of {k} entries, but the model's has {codebook_size}"
                );
            }
        }
        let n = grid * grid;
        for (j, list) in self.lists.iter().enumerate() {
            let which = if self.nested {
                format!("list {j}: ")
            } else {
                String::new()
            };
            if list.len() != n {
                bail!(
                    "{which}{} codes, but an image needs {n} ({grid}x{grid})",
                    list.len()
                );
            }
            if let Some((i, c)) = list
                .iter()
                .enumerate()
                .find(|(_, &c)| c as usize >= codebook_size)
            {
                bail!(
                    "{which}code {c} at position {i} is outside the codebook of {codebook_size} entries"
                );
            }
        }
        Ok(())
    }
}

fn parse_grid(g: &Value) -> Result<(usize, usize)> {
    let dims: Option<Vec<u64>> = g
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect());
    match dims.as_deref() {
        Some(&[h, w]) => Ok((h as usize, w as usize)),
        _ => bail!("\"grid\" is not a pair of integers: {g}"),
    }
}

fn parse_codes(v: &Value) -> Result<Vec<u32>> {
    let items = v.as_array().context("expected a list of codes")?;
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .with_context(|| format!("entry {i} ({c}) is not a valid code"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_shape() {
        let f = CodesFile::parse(r#"{"grid": [2, 2], "codebook_size": 8, "codes": [1, 2, 3, 4]}"#)
            .unwrap();
        assert_eq!(f.grid, Some((2, 2)));
        assert_eq!(f.lists, vec![vec![1, 2, 3, 4]]);
        assert!(!f.nested);
        f.check(2, 8).unwrap();
        let f = CodesFile::parse("[1, 2, 3, 4]").unwrap();
        assert_eq!(f.lists.len(), 1);
        let f = CodesFile::parse(r#"{"image_tokens": [[1, 2, 3, 4], [5, 6, 7, 0]]}"#).unwrap();
        assert!(f.nested);
        assert_eq!(f.lists.len(), 2);
        let f = CodesFile::parse("[[1, 2, 3, 4]]").unwrap();
        assert!(f.nested);
    }

    #[test]
    fn bad_codes_are_named() {
        let err = |text: &str| format!("{:#}", CodesFile::parse(text).unwrap_err());
        assert!(err("{").contains("invalid JSON"));
        assert!(err("[]").contains("empty"));
        assert!(err("[1, -2]").contains("entry 1 (-2)"));
        assert!(err("[1, 2.5]").contains("entry 1 (2.5)"));
        assert!(err("[[1], [2, \"x\"]]").contains("list 1"));
        assert!(err(r#"{"codez": []}"#).contains("\"codes\""));
        let check = |text: &str| {
            format!(
                "{:#}",
                CodesFile::parse(text).unwrap().check(2, 8).unwrap_err()
            )
        };
        assert!(check("[1, 2, 3]").contains("3 codes, but an image needs 4 (2x2)"));
        assert!(check("[1, 2, 3, 8]").contains("code 8 at position 3 is outside the codebook of 8"));
        assert!(check("[[1, 2, 3, 4], [1, 2, 3, 9]]").starts_with("list 1: code 9"));
        assert!(check(r#"{"grid": [3, 3], "codes": [1, 2, 3, 4]}"#).contains("3x3"));
        assert!(check(r#"{"codebook_size": 16, "codes": [1, 2, 3, 4]}"#).contains("16"));
    }

    #[test]
    fn nested_outputs_are_suffixed() {
        assert_eq!(
            output_paths(Path::new("out/img.png"), 2, true),
            [
                PathBuf::from("out/img-0.png"),
                PathBuf::from("out/img-1.png")
            ]
        );
        assert_eq!(
            output_paths(Path::new("img.png"), 1, false),
            [PathBuf::from("img.png")]
        );
    }
}
