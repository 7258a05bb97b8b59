//! Output files and JSON helpers for the CLI.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use janus::engine::Timings;
use serde_json::{Map, Value};

/// Timings as a JSON object `{stage: seconds}`.
pub fn timings_json(t: &Timings) -> Value {
    let mut m = Map::new();
    for (k, v) in &t.0 {
        m.insert(k.clone(), Value::from(*v));
    }
    Value::Object(m)
}

/// A seed from the clock and process id, for runs that did not name one.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 of the clock mixed with the pid, kept below 2^53 so JSON readers keep it exact.
    let mut z = nanos ^ ((std::process::id() as u64) << 32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & ((1 << 53) - 1)
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

/// Writes each image as `<slug>-s<seed>-<i>.png`, never overwriting an existing file
/// (a `-N` suffix is added), each written to a temporary name and renamed into place so
/// no half-written PNG is left behind.
pub fn write_pngs(
    dir: &Path,
    prompt: &str,
    seed: u64,
    images: &[image::RgbImage],
) -> Result<Vec<PathBuf>> {
    let base = slug(prompt);
    let mut written = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let mut path = dir.join(format!("{base}-s{seed}-{i}.png"));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("{base}-s{seed}-{i}-{n}.png"));
            n += 1;
        }
        let tmp = dir.join(format!(".{}.tmp-{}", base, std::process::id()));
        let res = img
            .save_with_format(&tmp, image::ImageFormat::Png)
            .with_context(|| format!("cannot write {}", tmp.display()))
            .and_then(|_| {
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("cannot write {}", path.display()))
            });
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
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
        let a = write_pngs(dir.path(), "cat", 1, std::slice::from_ref(&img)).unwrap();
        let b = write_pngs(dir.path(), "cat", 1, std::slice::from_ref(&img)).unwrap();
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
