//! [`HubError`], the one error type of the hub module. It does not depend on
//! [`crate::Error`]: that type wraps it (`Error::Hub`), so the dependency points one way.

use std::path::PathBuf;

use super::DEFAULT_MODEL;

/// Hub failures. Every message names the repo and, where one was involved, the file and URL.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// `--model` is neither a directory nor `owner/name`.
    #[error("{0:?} is neither a model directory nor a Hugging Face repo id: expected an existing directory or owner/name (e.g. {DEFAULT_MODEL})")]
    InvalidModel(String),
    /// The revision is the empty string.
    #[error("the revision is empty")]
    EmptyRevision,
    /// A cache file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A downloaded `*.index.json` is not a usable weight index.
    #[error("{path}: {msg}")]
    BadIndex {
        /// The index file in the snapshot.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Offline, and the cache lacks the repo (or some of its files).
    #[error("{repo} is not in the Hugging Face cache at {} (offline mode{detail}): run once without HF_HUB_OFFLINE=1 or --offline to download it, or pass --model with a local directory", cache.display())]
    NotCached {
        /// `owner/name`, with `@revision` unless it is `main`.
        repo: String,
        /// The hub cache directory searched.
        cache: PathBuf,
        /// What was found missing (`"; snapshot 1a2b lacks tokenizer.json"`), or empty.
        detail: String,
    },
    /// HTTP 404 on the repo.
    #[error("{repo}: no such model repository on {endpoint} (HTTP 404 for {url}), and no local directory of that name exists")]
    RepoNotFound {
        /// `owner/name`.
        repo: String,
        /// The hub URL.
        endpoint: String,
        /// The URL that answered 404.
        url: String,
    },
    /// HTTP 404 on the revision.
    #[error("{repo} has no revision {revision:?} (HTTP 404 for {url})")]
    RevisionNotFound {
        /// `owner/name`.
        repo: String,
        /// The branch, tag or commit asked for.
        revision: String,
        /// The URL that answered 404.
        url: String,
    },
    /// HTTP 404 on a file the repo listing named.
    #[error("{repo}@{revision}: {file} not found (HTTP 404 for {url})")]
    FileNotFound {
        /// `owner/name`.
        repo: String,
        /// The revision.
        revision: String,
        /// The file in the repo.
        file: String,
        /// The URL that answered 404.
        url: String,
    },
    /// HTTP 401: no token, a rejected token, or (as the hub answers for those too) no such
    /// repo.
    #[error("{url} answered 401 Unauthorized: {}", unauthorized_hint(repo, *token_sent))]
    Unauthorized {
        /// `owner/name`.
        repo: String,
        /// The URL that answered 401.
        url: String,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// HTTP 403: a gated repo whose terms the token's user has not accepted.
    #[error("{url} answered 403 Forbidden: the token has no access to {repo} (for a gated repository, accept its terms on its hub page)")]
    Forbidden {
        /// `owner/name`.
        repo: String,
        /// The URL that answered 403.
        url: String,
    },
    /// Any other HTTP error status.
    #[error("{url} answered HTTP {status}: {msg}")]
    Http {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The hub's `x-error-message`, or the status text.
        msg: String,
    },
    /// No connection: DNS, refused, proxy, TLS.
    #[error("cannot reach {url}: {msg} (check the network and HF_ENDPOINT, or use --offline with a model already in the cache)")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What failed.
        msg: String,
    },
    /// A transfer broke off or could not be written.
    #[error("downloading {file} of {repo} from {url} failed: {msg} (the part already downloaded is kept and resumed by the next run)")]
    Download {
        /// `owner/name`.
        repo: String,
        /// The file in the repo.
        file: String,
        /// The file's URL.
        url: String,
        /// What failed.
        msg: String,
    },
    /// A downloaded file's size differs from the repo listing's (the file is removed).
    #[error("{repo}: the downloaded {file} has {found} bytes but the hub lists {expected}; it was removed from the cache, run again to download it afresh")]
    SizeMismatch {
        /// `owner/name`.
        repo: String,
        /// The file in the repo.
        file: String,
        /// Size in the repo listing.
        expected: u64,
        /// Size downloaded.
        found: u64,
    },
    /// A downloaded LFS file's SHA-256 differs from the repo listing's (the file is removed).
    #[error("{repo}: the downloaded {file} has SHA-256 {found} but the hub lists {expected}; it was removed from the cache, run again to download it afresh")]
    HashMismatch {
        /// `owner/name`.
        repo: String,
        /// The file in the repo.
        file: String,
        /// SHA-256 in the repo listing (the LFS pointer's oid), lowercase hex.
        expected: String,
        /// SHA-256 of the bytes downloaded, lowercase hex.
        found: String,
    },
    /// The repo lacks a file a Janus model needs.
    #[error("{repo}@{revision} has no {file}{why}")]
    MissingFile {
        /// `owner/name`.
        repo: String,
        /// The revision.
        revision: String,
        /// The missing file.
        file: String,
        /// Why it is needed (`" (is it a Janus model?)"`).
        why: String,
    },
    /// The hub's answer is not what a Hugging Face hub sends.
    #[error("{url}: unexpected answer: {msg}")]
    Protocol {
        /// The URL.
        url: String,
        /// What is wrong with it.
        msg: String,
    },
}

fn unauthorized_hint(repo: &str, token_sent: bool) -> String {
    if token_sent {
        format!("the token (HF_TOKEN or the token file) was rejected, or {repo} does not exist")
    } else {
        format!("{repo} does not exist, or it is private or gated and needs a token: set HF_TOKEN or run `huggingface-cli login`")
    }
}

impl HubError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}
