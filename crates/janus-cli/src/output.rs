//! Output files and JSON helpers for the CLI.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use janus::engine::{DecodeStats, Timings};
pub use janus::png::{encode_png, software, GenerationMeta};
use serde_json::{Map, Value};

/// Timings as a JSON object `{stage: seconds}`.
pub fn timings_json(t: &Timings) -> Value {
    let mut m = Map::new();
    for (k, v) in &t.0 {
        m.insert(k.clone(), Value::from(*v));
    }
    Value::Object(m)
}

/// Creates the output directory and checks it is writable before any work starts.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "output path {} exists and is not a directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let probe = dir.join(format!(".janus-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A file-name-safe short form of the prompt.
fn slug(prompt: &str) -> String {
    let mut s = String::new();
    for c in prompt.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
        if s.len() >= 48 {
            break;
        }
    }
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        "image".into()
    } else {
        s
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so `path` is either absent or complete. Fails, writing nothing, if `path` exists and
/// `overwrite` is false.
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    if !overwrite && path.exists() {
        bail!(
            "{} already exists (not overwritten; use --force to replace it)",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // Errors name the file asked for, not the temporary one.
    let res = std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Writes each image as `<slug>-s<seed>-<i>.png` with the run's parameters in its text
/// chunks, never overwriting an existing file (a `-N` suffix is added), each written to a
/// temporary name and renamed into place so no half-written PNG is left behind. On
/// failure the PNGs already written by this call are removed.
pub fn write_pngs(
    dir: &Path,
    meta: &GenerationMeta<'_>,
    images: &[image::RgbImage],
) -> Result<Vec<PathBuf>> {
    let base = slug(meta.prompt);
    let seed = meta.seed;
    let mut written = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let mut path = dir.join(format!("{base}-s{seed}-{i}.png"));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("{base}-s{seed}-{i}-{n}.png"));
            n += 1;
        }
        let res = encode_png(img, &meta.png_text(i))
            .map_err(anyhow::Error::from)
            .and_then(|b| write_atomic(&path, &b, false));
        if let Err(e) = res {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
}

/// The sampling loop's passes and draft acceptance, for `--json`.
pub fn decode_stats_json(s: &DecodeStats) -> Value {
    let by_slot: Vec<Value> = s
        .acceptance_by_slot()
        .into_iter()
        .map(|a| {
            if a.is_finite() {
                Value::from(a)
            } else {
                Value::Null
            }
        })
        .collect();
    serde_json::json!({
        "window": s.window,
        "accept": s.accept.name(),
        "passes": s.passes,
        "codes": s.codes,
        "codes_per_pass": s.codes_per_pass(),
        "acceptance_by_slot": by_slot,
        "slot_checked": s.slot_checked,
        "slot_accepted": s.slot_accepted,
        "sample_s": s.sample_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_file_safe() {
        assert_eq!(slug("A red fox, in the snow!"), "a-red-fox-in-the-snow");
        assert_eq!(slug("!!!"), "image");
        assert!(slug(&"x".repeat(200)).len() <= 48);
    }

    #[test]
    fn pngs_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::new(2, 2);
        let meta = GenerationMeta {
            prompt: "cat",
            seed: 1,
            cfg_weight: 5.0,
            temperature: 1.0,
            parallel: 1,
            model: "m",
            speculative: None,
        };
        let a = write_pngs(dir.path(), &meta, std::slice::from_ref(&img)).unwrap();
        let b = write_pngs(dir.path(), &meta, std::slice::from_ref(&img)).unwrap();
        assert_ne!(a[0], b[0]);
        assert!(a[0].exists() && b[0].exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }
}
