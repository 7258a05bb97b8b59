//! A read-only tensor store over a model directory's weight files.
//!
//! Supported files, in order of preference:
//! 1. `model.safetensors.index.json` + the shards it names;
//! 2. `model.safetensors`;
//! 3. `pytorch_model.bin.index.json` + the shards it names (Janus-Pro-7B);
//! 4. `pytorch_model.bin` (PyTorch zip pickle; Janus-Pro-1B).
//!
//! safetensors files are memory-mapped (only the requested tensor is copied out, and its
//! mapped pages are released right after, so loading never holds two copies); PyTorch
//! files are read lazily through candle's pickle reader, one tensor at a time. Opening a
//! store reads every file's header, so a corrupt or truncated file fails at open, naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

pub use crate::model_dir::WEIGHT_FILES;

/// On-disk format of a store's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// safetensors (memory-mapped).
    Safetensors,
    /// PyTorch zip pickle (`torch.save` of a state dict).
    PyTorch,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Safetensors => "safetensors",
            Format::PyTorch => "PyTorch pickle",
        })
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
struct Entry {
    /// Index into `files` / `readers`.
    file: usize,
    shape: Vec<usize>,
    /// `None` when the file's dtype has no candle equivalent (the tensor cannot be loaded).
    dtype: Option<DType>,
    /// The dtype as the file names it, for messages.
    dtype_name: String,
}

enum Reader {
    Safetensors(MmapedSafetensors),
    Pth(PthTensors),
}

struct Inner {
    format: Format,
    files: Vec<PathBuf>,
    readers: Vec<Reader>,
    entries: BTreeMap<String, Entry>,
}

/// Read-only access to the tensors of one checkpoint (one file or a set of shards).
///
/// Cloning is cheap (the files are shared).
#[derive(Clone)]
pub struct TensorStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore")
            .field("format", &self.inner.format)
            .field("files", &self.inner.files)
            .field("tensors", &self.inner.entries.len())
            .finish()
    }
}

impl TensorStore {
    /// Opens the weights of a model directory: the first of [`WEIGHT_FILES`] present
    /// (safetensors before PyTorch; an index before a single file).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "{}: not a directory (expected a model directory)",
                dir.display()
            )));
        }
        let [st_index, st_single, pt_index, pt_single] = WEIGHT_FILES.map(|f| dir.join(f));
        if st_index.is_file() {
            return Self::open_files(&read_index(&st_index)?);
        }
        if st_single.is_file() {
            return Self::open_files(&[st_single]);
        }
        if pt_index.is_file() {
            return Self::open_files(&read_index(&pt_index)?);
        }
        if pt_single.is_file() {
            return Self::open_files(&[pt_single]);
        }
        Err(Error::Config(format!(
            "{}: no weights found (looked for {})",
            dir.display(),
            WEIGHT_FILES.join(", ")
        )))
    }

    /// Opens explicit weight files, all of one format (chosen by extension: `.safetensors`,
    /// or `.bin` / `.pt` / `.pth` for PyTorch). A tensor present in several files is read
    /// from the first that holds it.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let Some(first) = paths.first() else {
            return Err(Error::Config("no weight files given".into()));
        };
        let format = format_of(first)?;
        let mut readers = Vec::with_capacity(paths.len());
        let mut entries = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            if format_of(path)? != format {
                return Err(Error::Weights {
                    path: path.clone(),
                    msg: format!("is not {format} like {}", first.display()),
                });
            }
            let (reader, file_entries) = match format {
                Format::Safetensors => open_safetensors(path, i)?,
                Format::PyTorch => open_pth(path, i)?,
            };
            for (name, entry) in file_entries {
                if let Some(prev) = entries.get(&name).map(|e: &Entry| e.file) {
                    tracing::warn!(
                        "tensor {name} is in both {} and {}; using the first",
                        paths[prev].display(),
                        path.display()
                    );
                    continue;
                }
                entries.insert(name, entry);
            }
            readers.push(reader);
        }
        tracing::debug!(
            "opened {} {format} file(s) with {} tensors",
            paths.len(),
            entries.len()
        );
        Ok(TensorStore {
            inner: Arc::new(Inner {
                format,
                files: paths.to_vec(),
                readers,
                entries,
            }),
        })
    }

    /// The files the store reads.
    pub fn files(&self) -> &[PathBuf] {
        &self.inner.files
    }

    /// The files' format.
    pub fn format(&self) -> Format {
        self.inner.format
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether the store holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.entries.contains_key(name)
    }

    /// A tensor's shape, from the file header.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.inner.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// A tensor's dtype on disk (`None` if absent or of a dtype candle cannot hold).
    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.inner.entries.get(name).and_then(|e| e.dtype)
    }

    /// The file holding a tensor.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        let e = self.inner.entries.get(name)?;
        Some(self.inner.files[e.file].as_path())
    }

    /// Where the store's tensors come from, for messages: the file, or the first shard's
    /// directory and the shard count.
    pub fn location(&self) -> String {
        match self.inner.files.as_slice() {
            [one] => one.display().to_string(),
            many => {
                let dir = many
                    .first()
                    .and_then(|p| p.parent())
                    .map(|d| d.display().to_string())
                    .unwrap_or_default();
                format!("{} shards in {dir}", many.len())
            }
        }
    }

    /// Reads one tensor in its on-disk dtype onto `device`.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        let entry = self
            .inner
            .entries
            .get(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                location: Some(self.location()),
            })?;
        let path = &self.inner.files[entry.file];
        let fail = |what: String| Error::Weights {
            path: path.clone(),
            msg: format!("tensor {name}: {what}"),
        };
        if entry.dtype.is_none() {
            return Err(fail(format!("unsupported dtype {}", entry.dtype_name)));
        }
        let tensor = match &self.inner.readers[entry.file] {
            Reader::Safetensors(st) => {
                let view = st.get(name).map_err(|e| fail(e.to_string()))?;
                let dtype = DType::try_from(view.dtype()).ok();
                let t = match copy_out(dtype, view.data(), view.shape(), device) {
                    Some(t) => t,
                    None => st.load(name, device).map_err(|e| fail(e.to_string()))?,
                };
                release_mapped(view.data());
                t
            }
            Reader::Pth(pth) => pth
                .get(name)
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail("listed in the header but not readable".into()))?
                .to_device(device)
                .map_err(|e| fail(e.to_string()))?,
        };
        if tensor.dims() != entry.shape.as_slice() {
            return Err(fail(format!(
                "read shape {:?} but the header says {:?}",
                tensor.dims(),
                entry.shape
            )));
        }
        Ok(tensor)
    }
}

/// A CPU tensor of a float tensor's mapped bytes, copied out of the mapping by all of rayon's
/// threads (candle's own copy is one `memcpy` on one thread, page faults included: about
/// half of loading a bf16 checkpoint). `None` for other dtypes and devices, and where the
/// view's length does not match its shape (candle's loader then reports it).
fn copy_out(dtype: Option<DType>, data: &[u8], shape: &[usize], device: &Device) -> Option<Tensor> {
    if !device.is_cpu() || !cfg!(target_endian = "little") {
        return None;
    }
    let count: usize = shape.iter().product();
    let t = match dtype? {
        DType::BF16 => Tensor::from_vec(parallel_copy::<half::bf16>(data, count)?, shape, device),
        DType::F16 => Tensor::from_vec(parallel_copy::<half::f16>(data, count)?, shape, device),
        DType::F32 => Tensor::from_vec(parallel_copy::<f32>(data, count)?, shape, device),
        _ => return None,
    };
    t.ok()
}

/// The `count` little-endian values of `T` in `bytes` (any alignment), copied in parallel
/// chunks into a new vector (so its pages are first touched by several threads too).
fn parallel_copy<T: Copy + Send + Sync>(bytes: &[u8], count: usize) -> Option<Vec<T>> {
    use rayon::prelude::*;
    let size = std::mem::size_of::<T>();
    if bytes.len() != count.checked_mul(size)? {
        return None;
    }
    /// Values per task: 1 MiB of bytes or so.
    const CHUNK_BYTES: usize = 1 << 20;
    let per = (CHUNK_BYTES / size).max(1);
    let mut v: Vec<T> = Vec::with_capacity(count);
    v.spare_capacity_mut()[..count]
        .par_chunks_mut(per)
        .zip(bytes.par_chunks(per * size))
        .for_each(|(dst, src)| {
            // SAFETY: `dst` holds src.len() / size values of T (the chunks line up, lengths
            // checked above); plain old data of T is any bit pattern of its size here
            // (bf16, f16, f32), and the byte copy needs no alignment of `src`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    dst.as_mut_ptr().cast::<u8>(),
                    src.len(),
                )
            }
        });
    // SAFETY: every one of the `count` values was written above.
    unsafe { v.set_len(count) };
    Some(v)
}

/// Drops the mapped pages of `data` (a tensor just copied out of a memory-mapped file)
/// from this process's resident set. The copy is the one the model keeps; without this
/// the touched file pages stay mapped until the store is dropped, and peak memory during
/// loading is twice the checkpoint. The page cache keeps the file, so nothing is re-read
/// from disk if the tensor is loaded again.
fn release_mapped(data: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let start = (data.as_ptr() as usize).div_ceil(page) * page;
        let end = (data.as_ptr() as usize + data.len()) / page * page;
        if end > start {
            // SAFETY: the range lies inside a read-only file mapping that stays mapped;
            // MADV_DONTNEED only drops its pages from the page tables (they are reloaded
            // from the file if read again), so no data is lost and no pointer dangles.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

fn format_of(path: &Path) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(Format::Safetensors),
        Some("bin" | "pt" | "pth") => Ok(Format::PyTorch),
        _ => Err(Error::Weights {
            path: path.to_path_buf(),
            msg: "unknown weights format (expected .safetensors or a PyTorch .bin/.pt/.pth)".into(),
        }),
    }
}

/// Reads a HuggingFace `*.index.json` and returns its shard paths in first-mention order.
fn read_index(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let bad = |msg: String| Error::Weights {
        path: index.to_path_buf(),
        msg,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map entry {tensor} is not a file name")))?;
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    if shards.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    let mut paths = Vec::with_capacity(shards.len());
    for shard in shards {
        let path = dir.join(&shard);
        if !path.is_file() {
            return Err(bad(format!(
                "names shard {shard}, which is missing from {}",
                dir.display()
            )));
        }
        paths.push(path);
    }
    Ok(paths)
}

type Opened = (Reader, Vec<(String, Entry)>);

fn open_safetensors(path: &Path, file: usize) -> Result<Opened> {
    // SAFETY: the file is mapped read-only; like every mmap-based loader we rely on it not
    // being modified while the store is alive. The safetensors header (offsets against the
    // file length) is validated by `MmapedSafetensors::new`.
    let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        msg: format!("not a readable safetensors file: {}", root_message(&e)),
    })?;
    let entries = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = DType::try_from(view.dtype()).ok();
            let entry = Entry {
                file,
                shape: view.shape().to_vec(),
                dtype,
                dtype_name: format!("{:?}", view.dtype()),
            };
            (name, entry)
        })
        .collect();
    Ok((Reader::Safetensors(st), entries))
}

fn open_pth(path: &Path, file: usize) -> Result<Opened> {
    let fail = |msg: String| Error::Weights {
        path: path.to_path_buf(),
        msg,
    };
    // candle's pickle reader indexes into pickle arguments without bounds checks, so a
    // corrupt pickle can panic inside it: turn that into an error naming the file.
    let opened = std::panic::catch_unwind(|| PthTensors::new(path, None))
        .map_err(|_| fail("not a readable PyTorch checkpoint (malformed pickle)".into()))?
        .map_err(|e| {
            fail(format!(
                "not a readable PyTorch checkpoint: {}",
                root_message(&e)
            ))
        })?;
    // candle allocates a tensor's bytes before reading them, so a pickle claiming a huge
    // shape would allocate it: refuse any tensor larger than the file (torch.save stores
    // its zip entries uncompressed, so no real tensor is).
    let file_len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for (name, info) in opened.tensor_infos() {
        let dims = info.layout.dims();
        let bytes = dims
            .iter()
            .try_fold(info.dtype.size_in_bytes(), |n, &d| n.checked_mul(d))
            .and_then(|n| {
                let skip = info.layout.start_offset();
                n.checked_add(skip.checked_mul(info.dtype.size_in_bytes())?)
            });
        if bytes.is_none_or(|n| n as u64 > file_len) {
            return Err(fail(format!(
                "tensor {name} claims shape {dims:?} of {:?}, more than the file's {file_len} bytes",
                info.dtype
            )));
        }
        let entry = Entry {
            file,
            shape: dims.to_vec(),
            dtype: Some(info.dtype),
            dtype_name: format!("{:?}", info.dtype),
        };
        entries.push((name.clone(), entry));
    }
    if entries.is_empty() {
        return Err(fail(
            "holds no tensors (expected a torch.save'd state dict)".into(),
        ));
    }
    Ok((Reader::Pth(opened), entries))
}

/// candle's message without the backtrace it may carry.
fn root_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => root_message(inner),
        candle_core::Error::WithPath { inner, .. } => root_message(inner),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    #[test]
    fn parallel_copies_read_unaligned_little_endian_values_and_check_lengths() {
        // Past one task's 1 MiB, from an odd address.
        let n = 700_001;
        let want: Vec<bf16> = (0..n)
            .map(|i| bf16::from_f32(i as f32 * 0.25 - 7.0))
            .collect();
        let mut bytes = vec![0u8; 1];
        bytes.extend(want.iter().flat_map(|v| v.to_le_bytes()));
        let got = super::parallel_copy::<bf16>(&bytes[1..], n).unwrap();
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(got.len(), n);
        assert!(super::parallel_copy::<bf16>(&bytes[1..], n + 1).is_none());
        assert!(super::parallel_copy::<f32>(&bytes[..5], 1).is_none());
        let t = super::copy_out(
            Some(candle_core::DType::BF16),
            &bytes[1..],
            &[n],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(t.to_vec1::<bf16>().unwrap(), want);
        // Other dtypes are left to candle's loader.
        let none = super::copy_out(
            Some(candle_core::DType::U8),
            &bytes,
            &[bytes.len()],
            &candle_core::Device::Cpu,
        );
        assert!(none.is_none());
    }
}
