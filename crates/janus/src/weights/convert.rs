//! A safetensors copy of a checkpoint (`janus convert`): same tensor names and layout as
//! the source, so it loads exactly as before, optionally in another float dtype.
//!
//! Tensors are streamed one at a time: each output tensor is a [`View`] that reads its
//! source tensor only when the writer asks for its bytes, so memory stays at a few copies
//! of the largest tensor whatever the checkpoint's size. Checkpoints larger than
//! [`ConvertOptions::max_shard_bytes`] are split into `model-0000i-of-0000n.safetensors`
//! shards with a `model.safetensors.index.json`, as transformers writes them; smaller ones
//! become one `model.safetensors`.
//!
//! Everything is written into a hidden temporary directory next to the destination and
//! renamed into place at the end, so a failure leaves nothing half-written; an existing
//! non-empty destination is never overwritten.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use safetensors::tensor::{Dtype as StDtype, View};

use super::store::TensorStore;
use super::{load_model_dir, WEIGHT_FILES};
use crate::error::{Error, Result};

/// transformers' default shard limit is 5 GB; 4 GB keeps each shard addressable by
/// 32-bit tools and well under filesystem and upload limits.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 4_000_000_000;

/// Name of the single output file (checkpoints up to one shard).
pub const SINGLE_FILE: &str = "model.safetensors";

/// Name of the shard index (checkpoints over one shard).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// How to convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Float dtype to store floating-point tensors in (`None`: keep each tensor's dtype).
    /// Integer tensors always keep theirs.
    pub dtype: Option<DType>,
    /// Largest shard in bytes (a tensor larger than this gets a shard of its own).
    pub max_shard_bytes: u64,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            dtype: None,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        }
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// The output directory.
    pub out: PathBuf,
    /// Weight files written (one `model.safetensors`, or the shards), in order.
    pub weight_files: Vec<String>,
    /// Other files copied from the source (config, tokenizer, processor, ...).
    pub copied: Vec<String>,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
}

/// One tensor of the plan.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    shape: Vec<usize>,
    dtype: DType,
    st_dtype: StDtype,
    bytes: u64,
}

/// Converts the checkpoint in `src` (any layout and format [`TensorStore`] reads) into
/// safetensors in the new directory `dst`. `on_progress(done, total)` reports tensor bytes
/// written.
///
/// Fails, leaving nothing behind, when `dst` exists and is not an empty directory, when
/// `src` is not a readable model directory, or when any tensor cannot be read or written.
pub fn convert_checkpoint(
    src: &Path,
    dst: &Path,
    opts: &ConvertOptions,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<ConvertReport> {
    check_destination(dst)?;
    let (_cfg, store) = load_model_dir(src)?;
    let plan = plan_tensors(&store, opts.dtype)?;
    let total: u64 = plan.iter().map(|t| t.bytes).sum();
    let shards = split_shards(&plan, opts.max_shard_bytes);

    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let dst_name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::InvalidInput(format!("{}: not a usable output directory", dst.display()))
        })?;
    let tmp =
        TempDir::create(parent.join(format!(".{dst_name}.janus-convert-{}", std::process::id())))?;

    let copied = copy_side_files(src, tmp.path())?;

    let n = shards.len();
    let weight_files: Vec<String> = if n == 1 {
        vec![SINGLE_FILE.to_string()]
    } else {
        (1..=n)
            .map(|i| format!("model-{i:05}-of-{n:05}.safetensors"))
            .collect()
    };
    on_progress(0, total);
    let progress = Progress {
        done: RefCell::new(0),
        total,
        callback: RefCell::new(&mut on_progress),
        error: RefCell::new(None),
    };
    for (shard, file) in shards.iter().zip(&weight_files) {
        let path = tmp.path().join(file);
        let views = shard.iter().map(|t| {
            (
                t.name.clone(),
                LazyTensor {
                    store: &store,
                    tensor: t,
                    progress: &progress,
                },
            )
        });
        // transformers reads `format` to know the tensors are PyTorch's.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        let written = safetensors::serialize_to_file(views, Some(metadata), &path);
        if let Some(e) = progress.error.borrow_mut().take() {
            return Err(e);
        }
        written.map_err(|e| Error::Weights {
            path: path.clone(),
            msg: format!("cannot write: {e}"),
        })?;
    }
    if n > 1 {
        write_index(tmp.path(), &shards, &weight_files, total)?;
    }
    verify(tmp.path(), &plan)?;

    if dst.is_dir() {
        // Checked empty above; rename cannot replace a directory on every platform.
        std::fs::remove_dir(dst).map_err(|e| Error::io(dst, e))?;
    }
    std::fs::rename(tmp.path(), dst).map_err(|e| Error::io(dst, e))?;
    tmp.keep();
    Ok(ConvertReport {
        out: dst.to_path_buf(),
        weight_files,
        copied,
        tensors: plan.len(),
        bytes: total,
    })
}

/// The destination must not exist or be an empty directory, and its nearest existing
/// ancestor must be a directory.
fn check_destination(dst: &Path) -> Result<()> {
    if !dst.exists() {
        let ancestor = dst.ancestors().skip(1).find(|a| a.exists());
        if let Some(a) = ancestor.filter(|a| !a.as_os_str().is_empty() && !a.is_dir()) {
            return Err(Error::InvalidInput(format!(
                "cannot create output directory {}: {} is not a directory",
                dst.display(),
                a.display()
            )));
        }
        return Ok(());
    }
    if !dst.is_dir() {
        return Err(Error::InvalidInput(format!(
            "output {} exists and is not a directory",
            dst.display()
        )));
    }
    let mut entries = std::fs::read_dir(dst).map_err(|e| Error::io(dst, e))?;
    if entries.next().is_some() {
        return Err(Error::InvalidInput(format!(
            "output directory {} is not empty; refusing to overwrite it",
            dst.display()
        )));
    }
    Ok(())
}

/// The safetensors dtype of a candle dtype (`None`: safetensors cannot hold it).
fn st_dtype(d: DType) -> Option<StDtype> {
    Some(match d {
        DType::U8 => StDtype::U8,
        DType::U32 => StDtype::U32,
        DType::I16 => StDtype::I16,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::BF16 => StDtype::BF16,
        DType::F16 => StDtype::F16,
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::F8E4M3 => StDtype::F8_E4M3,
        _ => return None,
    })
}

fn plan_tensors(store: &TensorStore, target: Option<DType>) -> Result<Vec<Planned>> {
    store
        .names()
        .map(|name| {
            let fail = |msg: String| Error::Weights {
                path: store
                    .file_of(name)
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                msg: format!("tensor {name}: {msg}"),
            };
            let src = store
                .dtype(name)
                .ok_or_else(|| fail("its dtype cannot be read".into()))?;
            let dtype = match target {
                Some(t) if src.is_float() => t,
                _ => src,
            };
            let st_dtype = st_dtype(dtype)
                .ok_or_else(|| fail(format!("dtype {} cannot be stored", dtype.as_str())))?;
            let shape = store.shape(name).unwrap_or(&[]).to_vec();
            let elems: u64 = shape.iter().map(|&d| d as u64).product();
            Ok(Planned {
                name: name.to_string(),
                shape,
                dtype,
                st_dtype,
                bytes: elems * dtype.size_in_bytes() as u64,
            })
        })
        .collect()
}

/// Groups tensors (in name order) into shards of at most `max` bytes each.
fn split_shards(plan: &[Planned], max: u64) -> Vec<Vec<Planned>> {
    let mut shards: Vec<Vec<Planned>> = vec![Vec::new()];
    let mut size = 0;
    for t in plan {
        let last_nonempty = shards.last().is_some_and(|s| !s.is_empty());
        if last_nonempty && size + t.bytes > max {
            shards.push(Vec::new());
            size = 0;
        }
        size += t.bytes;
        if let Some(s) = shards.last_mut() {
            s.push(t.clone());
        }
    }
    shards
}

/// Whether a source file is a weight file or weight index (not copied: rewritten).
fn is_weight_file(name: &str) -> bool {
    const EXTS: [&str; 9] = [
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".h5",
        ".msgpack",
        ".onnx",
        ".gguf",
    ];
    WEIGHT_FILES.contains(&name)
        || name.ends_with(".index.json")
        || EXTS.iter().any(|e| name.ends_with(e))
}

/// Copies every regular, non-hidden file of `src` that is not a weight file (config.json,
/// tokenizer and processor files, chat template, ...).
pub(crate) fn copy_side_files(src: &Path, dst: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || is_weight_file(&name) || !path.is_file() {
            continue;
        }
        std::fs::copy(&path, dst.join(&name)).map_err(|e| Error::io(&path, e))?;
        copied.push(name);
    }
    copied.sort();
    Ok(copied)
}

fn write_index(dir: &Path, shards: &[Vec<Planned>], files: &[String], total: u64) -> Result<()> {
    let weight_map: BTreeMap<&str, &str> = shards
        .iter()
        .zip(files)
        .flat_map(|(shard, file)| shard.iter().map(move |t| (t.name.as_str(), file.as_str())))
        .collect();
    let index = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": weight_map,
    });
    let path = dir.join(INDEX_FILE);
    let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Weights {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
}

/// Re-opens the written files and checks every tensor is there with its shape and dtype.
fn verify(dir: &Path, plan: &[Planned]) -> Result<()> {
    let out = TensorStore::open(dir)?;
    for t in plan {
        if out.shape(&t.name) != Some(t.shape.as_slice()) || out.dtype(&t.name) != Some(t.dtype) {
            return Err(Error::Weights {
                path: dir.to_path_buf(),
                msg: format!(
                    "tensor {} was not written as {:?} {}",
                    t.name,
                    t.shape,
                    t.dtype.as_str()
                ),
            });
        }
    }
    if out.len() != plan.len() {
        return Err(Error::Weights {
            path: dir.to_path_buf(),
            msg: format!("wrote {} tensors, expected {}", out.len(), plan.len()),
        });
    }
    Ok(())
}

/// Progress and the first error, shared by the views of one conversion (the writer gives
/// views only `&self`).
struct Progress<'a> {
    done: RefCell<u64>,
    total: u64,
    callback: RefCell<&'a mut dyn FnMut(u64, u64)>,
    error: RefCell<Option<Error>>,
}

/// A tensor whose bytes are read from the source store (and converted) only when the
/// safetensors writer asks for them, then dropped once written.
struct LazyTensor<'a> {
    store: &'a TensorStore,
    tensor: &'a Planned,
    progress: &'a Progress<'a>,
}

impl LazyTensor<'_> {
    fn read(&self) -> Result<Vec<u8>> {
        let t = self.tensor;
        let data = {
            let loaded = self.store.load(&t.name, &Device::Cpu)?;
            if loaded.dtype() == t.dtype {
                loaded
            } else {
                loaded.to_dtype(t.dtype)?
            }
        };
        let mut bytes = Vec::with_capacity(self.data_len());
        data.write_bytes(&mut bytes)?;
        if bytes.len() != self.data_len() {
            return Err(Error::Weights {
                path: self
                    .store
                    .file_of(&t.name)
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                msg: format!(
                    "tensor {} gave {} bytes, expected {}",
                    t.name,
                    bytes.len(),
                    self.data_len()
                ),
            });
        }
        Ok(bytes)
    }
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> StDtype {
        self.tensor.st_dtype
    }

    fn shape(&self) -> &[usize] {
        &self.tensor.shape
    }

    /// Reads the tensor now. On failure the error is kept for the caller and no bytes are
    /// returned (the file is discarded anyway); after a failure nothing more is read.
    fn data(&self) -> Cow<'_, [u8]> {
        let p = self.progress;
        if p.error.borrow().is_some() {
            return Cow::Owned(Vec::new());
        }
        match self.read() {
            Ok(bytes) => {
                let done = {
                    let mut d = p.done.borrow_mut();
                    *d += bytes.len() as u64;
                    *d
                };
                (p.callback.borrow_mut())(done, p.total);
                Cow::Owned(bytes)
            }
            Err(e) => {
                *p.error.borrow_mut() = Some(e);
                Cow::Owned(Vec::new())
            }
        }
    }

    fn data_len(&self) -> usize {
        self.tensor.bytes as usize
    }
}

/// A directory removed on drop unless [`TempDir::keep`] is called.
struct TempDir {
    path: Option<PathBuf>,
}

impl TempDir {
    fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            // Left by a crashed run of this process id; ours by name.
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self { path: Some(path) })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models")
            .join(name)
    }

    #[test]
    fn shards_respect_the_limit() {
        let t = |name: &str, bytes| Planned {
            name: name.into(),
            shape: vec![bytes as usize],
            dtype: DType::U8,
            st_dtype: StDtype::U8,
            bytes,
        };
        let plan = [t("a", 6), t("b", 4), t("c", 11), t("d", 1)];
        let sizes = |max| {
            split_shards(&plan, max)
                .iter()
                .map(|s| s.iter().map(|t| t.name.as_str()).collect::<String>())
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(10), ["ab", "c", "d"]);
        assert_eq!(sizes(100), ["abcd"]);
        assert_eq!(sizes(1), ["a", "b", "c", "d"]);
    }

    #[test]
    fn sharded_output_has_an_index_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dst = tmp.path().join("sharded");
        let opts = ConvertOptions {
            dtype: None,
            max_shard_bytes: 1_000_000,
        };
        let mut last = (0, 0);
        let report =
            convert_checkpoint(&fixture("tiny-pro"), &dst, &opts, |d, t| last = (d, t)).unwrap();
        assert!(report.weight_files.len() > 1, "{report:?}");
        assert_eq!(last, (report.bytes, report.bytes));
        assert!(dst.join(INDEX_FILE).is_file());
        for f in &report.weight_files {
            let len = std::fs::metadata(dst.join(f)).unwrap().len();
            // One shard may exceed the limit only by holding a single large tensor.
            assert!(len < 1_000_000 + 600_000, "{f}: {len}");
        }
        assert!(report.copied.contains(&"config.json".to_string()));
        assert!(report.copied.contains(&"tokenizer.json".to_string()));
        let src = TensorStore::open(&fixture("tiny-pro")).unwrap();
        let out = TensorStore::open(&dst).unwrap();
        assert_eq!(
            src.names().collect::<Vec<_>>(),
            out.names().collect::<Vec<_>>()
        );
        for n in src.names() {
            let a = src.load(n, &Device::Cpu).unwrap().flatten_all().unwrap();
            let b = out.load(n, &Device::Cpu).unwrap().flatten_all().unwrap();
            assert_eq!(
                a.to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
                "{n}"
            );
        }
        // Nothing but the output directory is left next to it.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["sharded"]);
    }

    #[test]
    fn refuses_a_non_empty_destination() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("x"), b"keep me").unwrap();
        let e = convert_checkpoint(
            &fixture("tiny-pro"),
            tmp.path(),
            &ConvertOptions::default(),
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not empty"), "{e}");
        assert_eq!(std::fs::read(tmp.path().join("x")).unwrap(), b"keep me");
    }
}
