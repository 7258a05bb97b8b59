//! `VarBuilder` backends that serve canonical tensor names from either checkpoint layout.
//!
//! [`CheckpointProvider`] reads real weights from a [`TensorStore`]; [`PlaceholderProvider`] serves
//! zero-memory placeholders from a list of (name, shape) so a full-size model can be built
//! without weights. Both resolve names and check shapes with the same code, so they fail
//! with the same messages.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::names::{to_transformers, Source};
use super::store::TensorStore;
use crate::config::Layout;
use crate::error::{Error, Result};

/// Where a canonical tensor lives in a checkpoint of the given layout (`None`: the
/// transformers layout has no counterpart).
pub fn checkpoint_source(layout: Layout, canonical: &str) -> Option<Source> {
    match layout {
        Layout::Original => Some(Source::Name(canonical.to_string())),
        Layout::Transformers => to_transformers(canonical),
    }
}

/// Records which tensors a backend has served. Clones share the record.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    inner: Arc<Mutex<UsageInner>>,
}

#[derive(Debug, Default)]
struct UsageInner {
    requested: BTreeSet<String>,
    served: BTreeSet<String>,
}

impl Usage {
    fn with<R>(&self, f: impl FnOnce(&mut UsageInner) -> R) -> R {
        // A panic elsewhere while holding the lock leaves the sets usable.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn record(&self, canonical: &str, source: &Source) {
        self.with(|u| {
            u.requested.insert(canonical.to_string());
            u.served
                .extend(source.names().into_iter().map(str::to_string));
        });
    }

    /// Canonical names the model asked for (successfully or not).
    pub fn requested(&self) -> BTreeSet<String> {
        self.with(|u| u.requested.clone())
    }

    /// Checkpoint names (in the checkpoint's own layout) that were served.
    pub fn served(&self) -> BTreeSet<String> {
        self.with(|u| u.served.clone())
    }

    /// The given checkpoint names that were never served, in input order.
    pub fn unused<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        self.with(|u| {
            names
                .into_iter()
                .filter(|n| !u.served.contains(*n))
                .map(str::to_string)
                .collect()
        })
    }

    /// Logs, at debug level, the checkpoint tensors the model did not read.
    pub fn log_unused<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let unused = self.unused(names);
        if !unused.is_empty() {
            tracing::debug!(
                "{} checkpoint tensor(s) not used by the model: {}",
                unused.len(),
                unused.join(", ")
            );
        }
    }

    fn mark_requested(&self, canonical: &str) {
        self.with(|u| {
            u.requested.insert(canonical.to_string());
        });
    }
}

/// Turns our error into candle's so it passes through `VarBuilder` with its message intact
/// (no backtrace appended: the CLI prints it as one line).
fn to_candle(e: Error) -> candle_core::Error {
    candle_core::Error::Wrapped(Box::new(e))
}

/// Resolves a canonical name and checks the stored shapes against `expected`; returns the
/// source and the shape it assembles to.
///
/// `lookup` gives a checkpoint tensor's shape; `location` describes the checkpoint for
/// "missing" messages. Errors name tensors in the checkpoint's own layout.
fn resolve<'a>(
    layout: Layout,
    canonical: &str,
    expected: Option<&[usize]>,
    lookup: impl Fn(&str) -> Option<&'a [usize]>,
    location: impl Fn() -> String,
) -> Result<(Source, Vec<usize>)> {
    let source = checkpoint_source(layout, canonical).ok_or_else(|| Error::MissingTensor {
        name: canonical.to_string(),
        location: Some(format!("no {layout} counterpart; {}", location())),
    })?;
    let shape_of = |name: &str| {
        lookup(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            location: Some(location()),
        })
    };
    let mismatch = |name: &str, expected: &[usize], found: &[usize]| Error::ShapeMismatch {
        name: name.to_string(),
        expected: expected.to_vec(),
        found: found.to_vec(),
    };
    let shape = match &source {
        Source::Name(n) => {
            let found = shape_of(n)?;
            if let Some(exp) = expected.filter(|e| *e != found) {
                return Err(mismatch(n, exp, found));
            }
            found.to_vec()
        }
        Source::Unsqueeze(n) => {
            let found = shape_of(n)?;
            let shape = [&[1], found].concat();
            if let Some(exp) = expected.filter(|e| *e != shape.as_slice()) {
                // Report what the stored tensor should look like: the request without its
                // leading unit axis.
                let want = exp.strip_prefix(&[1]).unwrap_or(exp);
                return Err(mismatch(n, want, found));
            }
            shape
        }
        Source::Concat(parts) => {
            let found: Vec<&[usize]> = parts.iter().map(|p| shape_of(p)).collect::<Result<_>>()?;
            // Each part is an equal slice of the request along dim 0.
            let n = parts.len();
            let even = expected
                .and_then(|e| e.split_first())
                .filter(|(r, _)| *r % n == 0);
            if let Some((&rows, rest)) = even {
                let want = [&[rows / n], rest].concat();
                for (p, f) in parts.iter().zip(&found) {
                    if *f != want.as_slice() {
                        return Err(mismatch(p, &want, f));
                    }
                }
            }
            let first = found.first().copied().unwrap_or(&[]);
            let consistent =
                !first.is_empty() && found.iter().all(|f| f.get(1..) == first.get(1..));
            let rows = found.iter().map(|f| f.first().copied().unwrap_or(0)).sum();
            let shape = [&[rows], first.get(1..).unwrap_or(&[])].concat();
            if !consistent || expected.is_some_and(|e| e != shape.as_slice()) {
                let want = expected.unwrap_or(&shape);
                return Err(mismatch(&parts.join(" + "), want, &shape));
            }
            shape
        }
    };
    Ok((source, shape))
}

/// Serves a [`VarBuilder`] from a checkpoint of either layout by canonical (original) names:
/// checks every shape against the request, loads and converts to the requested dtype and
/// device.
pub struct CheckpointProvider {
    store: TensorStore,
    layout: Layout,
    usage: Usage,
}

impl CheckpointProvider {
    /// A backend reading `store`, whose tensors are named per `layout`.
    pub fn new(store: TensorStore, layout: Layout) -> Self {
        CheckpointProvider {
            store,
            layout,
            usage: Usage::default(),
        }
    }

    /// The record of served tensors (shared with this backend, also once boxed).
    pub fn usage(&self) -> Usage {
        self.usage.clone()
    }

    /// Boxes the backend into a `VarBuilder` with the given default dtype and device.
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn fetch(
        &self,
        canonical: &str,
        expected: Option<&[usize]>,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.usage.mark_requested(canonical);
        let (source, _) = resolve(
            self.layout,
            canonical,
            expected,
            |n| self.store.shape(n),
            || self.store.location(),
        )?;
        let load = |n: &str| -> Result<Tensor> { Ok(self.store.load(n, dev)?.to_dtype(dtype)?) };
        let tensor = match &source {
            Source::Name(n) => load(n)?,
            Source::Unsqueeze(n) => load(n)?.unsqueeze(0)?,
            Source::Concat(parts) => {
                let parts = parts.iter().map(|p| load(p)).collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?
            }
        };
        self.usage.record(canonical, &source);
        Ok(tensor)
    }
}

impl Drop for CheckpointProvider {
    /// The backend is dropped with the last `VarBuilder` clone, i.e. once the model is
    /// built: say which checkpoint tensors it never read (attn_pool, codebook_used, ...).
    fn drop(&mut self) {
        if tracing::enabled!(tracing::Level::DEBUG) && !self.usage.served().is_empty() {
            self.usage.log_unused(self.store.names());
        }
    }
}

impl SimpleBackend for CheckpointProvider {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(name, Some(s.dims()), dtype, dev)
            .map_err(to_candle)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, None, dtype, dev).map_err(to_candle)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        checkpoint_source(self.layout, name)
            .is_some_and(|s| s.names().iter().all(|n| self.store.contains(n)))
    }
}

/// A weightless backend: serves every requested tensor as a stride-0 broadcast of one zero
/// (no memory) after checking it against a list of (name, shape) in a given layout, exactly
/// as [`CheckpointProvider`] checks a real checkpoint. Builds full-size models in tests and lets
/// `janus info` validate a checkpoint's shapes without reading its data.
pub struct PlaceholderProvider {
    layout: Layout,
    shapes: HashMap<String, Vec<usize>>,
    label: String,
    usage: Usage,
}

impl PlaceholderProvider {
    /// A backend over `(name, shape)` pairs named per `layout`; `label` says where the list
    /// comes from in "missing" messages.
    pub fn new(
        layout: Layout,
        entries: impl IntoIterator<Item = (String, Vec<usize>)>,
        label: impl Into<String>,
    ) -> Self {
        PlaceholderProvider {
            layout,
            shapes: entries.into_iter().collect(),
            label: label.into(),
            usage: Usage::default(),
        }
    }

    /// A backend over the shapes in a real checkpoint's headers (no data is read).
    pub fn from_store(store: &TensorStore, layout: Layout) -> Self {
        let entries = store
            .names()
            .filter_map(|n| Some((n.to_string(), store.shape(n)?.to_vec())))
            .collect::<Vec<_>>();
        Self::new(layout, entries, store.location())
    }

    /// The record of served tensors (shared with this backend, also once boxed).
    pub fn usage(&self) -> Usage {
        self.usage.clone()
    }

    /// Boxes the backend into a `VarBuilder` with the given default dtype and device.
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn fetch(
        &self,
        canonical: &str,
        expected: Option<&[usize]>,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.usage.mark_requested(canonical);
        let (source, shape) = resolve(
            self.layout,
            canonical,
            expected,
            |n| self.shapes.get(n).map(Vec::as_slice),
            || self.label.clone(),
        )?;
        self.usage.record(canonical, &source);
        Ok(Tensor::zeros((), dtype, dev)?.broadcast_as(shape)?)
    }
}

impl SimpleBackend for PlaceholderProvider {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(name, Some(s.dims()), dtype, dev)
            .map_err(to_candle)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, None, dtype, dev).map_err(to_candle)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        checkpoint_source(self.layout, name)
            .is_some_and(|s| s.names().iter().all(|n| self.shapes.contains_key(*n)))
    }
}
