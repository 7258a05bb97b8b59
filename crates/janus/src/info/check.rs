//! Whether the model builds from the checkpoint's shapes, and whether its tokenizer and
//! preprocessor files load.

use super::*;

/// What building the model on shapes only found.
pub(super) struct BuildCheck {
    /// Canonical names the model asked for.
    pub(super) requested: Vec<String>,
    /// Missing or mis-shaped tensors, and a build that failed anyway.
    pub(super) problems: Vec<Problem>,
}

#[derive(Default)]
pub(super) struct CheckLog {
    pub(super) requested: Vec<String>,
    pub(super) problems: Vec<Problem>,
}

/// A [`PlaceholderProvider`] that records a failed check as a problem and serves a
/// placeholder of the requested shape, so the build goes on and every problem is found.
pub(super) struct LenientProvider {
    pub(super) inner: PlaceholderProvider,
    pub(super) log: Arc<Mutex<CheckLog>>,
    /// Element count of the checkpoint's largest tensor: a placeholder larger than that
    /// stops the build instead (a hostile config.json can ask for shapes whose reshape
    /// would allocate petabytes).
    pub(super) largest: usize,
}

impl LenientProvider {
    fn with<R>(&self, f: impl FnOnce(&mut CheckLog) -> R) -> R {
        let mut guard = self.log.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl SimpleBackend for LenientProvider {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.with(|l| l.requested.push(name.to_string()));
        match self.inner.get(s.clone(), name, h, dtype, dev) {
            Ok(t) => Ok(t),
            Err(e) => {
                let message = Error::from(e).to_string();
                self.with(|l| {
                    l.problems.push(Problem {
                        part: Some(Part::of_canonical(name)),
                        tensor: Some(name.to_string()),
                        message,
                    })
                });
                let elements = s.dims().iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                if elements.is_none_or(|n| n > self.largest) {
                    candle_core::bail!(
                        "tensor {name}: the config asks for shape {:?}, larger than any tensor \
                         in the checkpoint",
                        s.dims()
                    );
                }
                Tensor::zeros((), dtype, dev)?.broadcast_as(s)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.with(|l| l.requested.push(name.to_string()));
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Builds the full model on `shapes` (no data), collecting problems.
/// `largest` is the element count of the checkpoint's largest tensor.
pub(super) fn check_build(
    cfg: &JanusConfig,
    shapes: PlaceholderProvider,
    largest: usize,
) -> BuildCheck {
    let log = Arc::new(Mutex::new(CheckLog::default()));
    let backend = LenientProvider {
        inner: shapes,
        log: log.clone(),
        largest,
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    let built = Janus::new(cfg, vb).map(|_| ());
    let mut log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    if let Err(e) = built {
        log.problems.push(Problem {
            part: None,
            tensor: None,
            message: format!("the model does not build: {}", Error::from(e)),
        });
    }
    BuildCheck {
        requested: log.requested,
        problems: log.problems,
    }
}

/// Tokenizer and image-processor checks `Pipeline::load` would make.
pub(super) fn check_processor(dir: &Path, cfg: &JanusConfig, problems: &mut Vec<Problem>) {
    let mut push = |message: String| {
        problems.push(Problem {
            part: None,
            tensor: None,
            message,
        })
    };
    match JanusTokenizer::from_file(dir.join("tokenizer.json"))
        .and_then(|tok| tok.check_vocab(cfg.text.vocab_size))
    {
        Ok(()) => {}
        Err(e) => push(e.to_string()),
    }
    if let Err(e) = ImageProcessorConfig::from_model_dir(dir) {
        push(e.to_string());
    }
}
