//! The library's error type. Every message names the thing that is wrong and the
//! numbers that disagree, so the CLI can print it as one line.

use std::path::PathBuf;

/// Errors raised by the janus library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A model directory or config is unusable (missing file, unknown layout, bad field).
    #[error("{0}")]
    Config(String),
    /// A tensor the model needs is absent from the checkpoint.
    #[error("tensor {name} is missing from the checkpoint{}", location.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    MissingTensor {
        /// Name in the checkpoint's own layout.
        name: String,
        /// Where it was looked for.
        location: Option<String>,
    },
    /// A tensor in the checkpoint has a different shape from what the config implies.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Name in the checkpoint's own layout.
        name: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape stored in the checkpoint.
        found: Vec<usize>,
    },
    /// A weights file is corrupt, truncated or in an unsupported format.
    #[error("{path}: {msg}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The tokenizer file is unusable or lacks a token the model needs.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An input image could not be decoded or is unsupported.
    #[error("image {path}: {msg}")]
    Image {
        /// The image's path or a description of its source.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A request is invalid: bad option value, wrong placeholder count, prompt too long.
    #[error("{0}")]
    InvalidInput(String),
    /// An error raised inside model construction or a forward pass that carries one of
    /// our own messages (candle keeps only its text).
    #[error("{0}")]
    Model(String),
    /// An error from the tensor library.
    #[error("tensor error: {0}")]
    Candle(candle_core::Error),
    /// Finding or downloading a model on the Hugging Face hub failed (the hub module has
    /// its own error type and does not depend on this one).
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
}

impl From<candle_core::Error> for Error {
    /// Drops candle's captured backtraces (the CLI prints one line, never a backtrace)
    /// and keeps wrapped messages verbatim.
    fn from(e: candle_core::Error) -> Self {
        let mut e = e;
        loop {
            match e {
                candle_core::Error::WithBacktrace { inner, .. } => e = *inner,
                candle_core::Error::Wrapped(d) => return Error::Model(d.to_string()),
                candle_core::Error::Msg(m) => return Error::Model(m),
                other => return Error::Candle(other),
            }
        }
    }
}

/// Result alias used throughout the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
