//! Models on the Hugging Face hub: a model given as a repo id (`deepseek-ai/Janus-Pro-1B`)
//! is downloaded into the standard Hugging Face cache and loaded from there.
//!
//! The cache is the one Python's `huggingface_hub` uses, so both share downloads:
//!
//! ```text
//! $HF_HUB_CACHE/models--owner--name/
//!   blobs/<etag>                          file contents (etag: sha256 for LFS files)
//!   snapshots/<commit>/<file> -> ../../blobs/<etag>
//!   refs/<revision>                       the commit a branch or tag pointed to
//! ```
//!
//! Downloads, the cache layout and resuming go through the `hf-hub` crate's blocking client
//! (ureq + rustls). On top of it this module decides which files a Janus checkpoint needs
//! (the repo's file list, then the weight index for shard names), resolves offline from the
//! cache alone, verifies downloads against the repo listing, and turns HTTP failures into
//! [`HubError`]s that name the repo, file and URL.
//!
//! Files: this one holds the public API and [`resolve`]; `online.rs` the downloads and their
//! verification; `cache.rs` the reading of a cached snapshot; `error.rs` [`HubError`].
//!
//! # Verification
//!
//! Every downloaded file's size must match the repo listing
//! (`/api/models/{repo}/revision/{rev}?blobs=true`). An LFS file (the weights) must also hash
//! to the listing's `siblings[].lfs.sha256`, the LFS pointer's oid; the bytes are streamed
//! through SHA-256 once the transfer is complete. hf-hub names the blob after the resolve
//! URL's `x-linked-etag` header (else `etag`), which the hub sets to that same sha256; the
//! listing is the reference because it states what the value is, where an etag's meaning
//! would be guessed from its shape. A file of the wrong size or hash loses its blob and its
//! snapshot link, so the next run downloads it afresh.
//!
//! Hashes are checked at download time only: a file already in the cache is trusted by its
//! size, as hashing the whole checkpoint on every load (offline ones included) would read
//! gigabytes each time. Small git files (`config.json`, `tokenizer.json`) are not hashed:
//! their etag is a git blob sha1, they come straight from the hub rather than a CDN, and
//! the loader parses them strictly.
//!
//! ```no_run
//! # fn main() -> janus::Result<()> {
//! use janus::hub::{self, HubOptions};
//! let opts = HubOptions::from_env();
//! let dir = hub::resolve("deepseek-ai/Janus-Pro-1B", "main", &opts, &mut |_| {})?;
//! let pipe = janus::pipeline::Pipeline::load(
//!     &dir,
//!     janus::pipeline::DTypeChoice::Auto,
//!     &candle_core::Device::Cpu,
//! )?;
//! # let _ = pipe; Ok(()) }
//! ```

mod cache;
mod error;
mod online;

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::model_dir::WEIGHT_FILES;
use cache::{cached_snapshot, shard_names};
pub use error::HubError;
use online::Online;

/// The model used when none is given.
pub const DEFAULT_MODEL: &str = "deepseek-ai/Janus-Pro-1B";
/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";
/// The hub used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// How many times an interrupted file download is resumed before giving up.
pub const DEFAULT_RETRIES: usize = 3;
/// Files every Janus repo must have.
pub const REQUIRED_FILES: [&str; 2] = ["config.json", "tokenizer.json"];
/// Files downloaded when the repo has them (the loader has defaults for what they hold).
pub const OPTIONAL_FILES: [&str; 4] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
];

/// Where a model comes from: `--model` parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A model directory on disk.
    Local(PathBuf),
    /// A repo on the hub, `owner/name`.
    Hub(String),
}

impl ModelRef {
    /// An existing directory, or anything path-like (starting with `/`, `.` or `~`, or
    /// containing `\`), is [`ModelRef::Local`] (a leading `~` is the home directory);
    /// `owner/name` is [`ModelRef::Hub`]; anything else is an error.
    pub fn parse(s: &str) -> Result<Self, HubError> {
        let path = Path::new(s);
        if path.is_dir() {
            return Ok(ModelRef::Local(path.to_path_buf()));
        }
        if s.starts_with(['/', '.', '~']) || s.contains('\\') {
            return Ok(ModelRef::Local(expand_home(s)));
        }
        if is_repo_id(s) {
            return Ok(ModelRef::Hub(s.to_string()));
        }
        Err(HubError::InvalidModel(s.to_string()))
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRef::Local(p) => write!(f, "{}", p.display()),
            ModelRef::Hub(id) => f.write_str(id),
        }
    }
}

fn expand_home(s: &str) -> PathBuf {
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"));
    match (s.strip_prefix('~'), home) {
        (Some(""), Some(home)) => PathBuf::from(home),
        (Some(rest), Some(home)) if rest.starts_with(['/', '\\']) => {
            PathBuf::from(home).join(&rest[1..])
        }
        _ => PathBuf::from(s),
    }
}

/// The hub's repo-name rule: `owner/name`, each of letters, digits, `-`, `_`, `.`, not
/// starting or ending with `-` or `.`, without `--` or `..`, at most 96 characters.
fn is_repo_id(s: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
            && !p.contains("--")
            && !p.contains("..")
    };
    matches!(s.split_once('/'), Some((owner, name)) if part_ok(owner) && part_ok(name))
}

/// Where and how to reach the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// The hub's URL, without a trailing `/` (`$HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` (`$HF_TOKEN`, else the token file).
    pub token: Option<String>,
    /// Resolve from the cache only, without any network access (`$HF_HUB_OFFLINE`).
    pub offline: bool,
    /// How many times an interrupted file download is resumed before giving up.
    pub retries: usize,
}

impl HubOptions {
    /// Online, against [`DEFAULT_ENDPOINT`], without a token, caching in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            offline: false,
            retries: DEFAULT_RETRIES,
        }
    }

    /// Reads the environment as Python's `huggingface_hub` does: `HF_HUB_CACHE`,
    /// `HF_HOME` (default `$XDG_CACHE_HOME/huggingface`, then `~/.cache/huggingface`),
    /// `HF_ENDPOINT`, `HF_TOKEN` (else the file `HF_TOKEN_PATH`, default `$HF_HOME/token`),
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to 1, true, yes or on.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`HubOptions::from_env`] over any variable lookup (empty values count as unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                let home = var("HOME").or_else(|| var("USERPROFILE"));
                home.map(PathBuf::from).unwrap_or_default().join(".cache")
            });
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = var("HF_TOKEN").map(|t| t.trim().to_string()).or_else(|| {
            let file = var("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_home.join("token"));
            let token = std::fs::read_to_string(file).ok()?;
            Some(token.trim().to_string()).filter(|t| !t.is_empty())
        });
        let is_true = |name: &str| {
            var(name).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
        };
        Self {
            cache_dir,
            endpoint,
            token,
            offline: is_true("HF_HUB_OFFLINE") || is_true("TRANSFORMERS_OFFLINE"),
            retries: DEFAULT_RETRIES,
        }
    }
}

/// Download progress, reported per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileProgress<'a> {
    /// A download of `total` bytes starts. Files already in the cache report nothing.
    Started {
        /// The file in the repo.
        file: &'a str,
        /// Its size in bytes.
        total: u64,
    },
    /// Bytes arrived (`downloaded` counts from the file's start, resumed bytes included).
    Advanced {
        /// The file in the repo.
        file: &'a str,
        /// Bytes on disk so far.
        downloaded: u64,
        /// The file's size.
        total: u64,
    },
    /// The file is complete.
    Finished {
        /// The file in the repo.
        file: &'a str,
    },
}

/// The snapshot directory (`<cache>/models--owner--name/snapshots/<commit>/`) holding
/// every file the model needs at `revision` (a branch, tag or commit), downloading what
/// the cache lacks.
///
/// Online, the repo's file list decides which weights are needed: the first present of
/// `model.safetensors.index.json` (then its shards), `model.safetensors`,
/// `pytorch_model.bin.index.json` (then its shards), `pytorch_model.bin`. When the hub
/// cannot be reached, a complete cached snapshot is used instead (with a warning).
/// Offline ([`HubOptions::offline`]), only the cache is read: `refs/<revision>` names the
/// snapshot (a commit revision may name it directly), and no network is touched.
///
/// Each file downloaded now is checked against the repo listing (size, and SHA-256 for
/// LFS files; see the module docs) and removed from the cache when it fails.
pub fn resolve(
    repo: &str,
    revision: &str,
    opts: &HubOptions,
    progress: &mut dyn FnMut(FileProgress<'_>),
) -> Result<PathBuf, HubError> {
    if !is_repo_id(repo) {
        return Err(HubError::InvalidModel(repo.to_string()));
    }
    if revision.is_empty() {
        return Err(HubError::EmptyRevision);
    }
    // hf-hub links snapshot files to blobs by relative paths it computes assuming an
    // absolute cache path.
    let cache_dir =
        std::path::absolute(&opts.cache_dir).map_err(|e| HubError::io(&opts.cache_dir, e))?;
    let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let repo_dir = cache_dir.join(hf_repo.folder_name());
    let not_cached = |why: String| HubError::NotCached {
        repo: if revision == DEFAULT_REVISION {
            repo.to_string()
        } else {
            format!("{repo}@{revision}")
        },
        cache: cache_dir.clone(),
        detail: if why.is_empty() {
            why
        } else {
            format!("; {why}")
        },
    };
    if opts.offline {
        return cached_snapshot(&repo_dir, revision).map_err(not_cached);
    }

    let api = ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(false)
        .with_retries(opts.retries)
        .build()
        .map_err(|e| HubError::Unreachable {
            url: opts.endpoint.clone(),
            msg: e.to_string(),
        })?;
    let online = Online {
        repo,
        revision,
        endpoint: &opts.endpoint,
        token_sent: opts.token.is_some(),
        api: api.repo(hf_repo.clone()),
    };
    let info = match online.info() {
        Ok(info) => info,
        Err(e @ HubError::Unreachable { .. }) => {
            // Like huggingface_hub: without a connection a complete cached copy will do.
            return match cached_snapshot(&repo_dir, revision) {
                Ok(dir) => {
                    tracing::warn!("{e}; using the cached {}", dir.display());
                    Ok(dir)
                }
                Err(_) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let snapshot = repo_dir.join("snapshots").join(&info.sha);
    let has = |f: &str| info.siblings.iter().any(|s| s.rfilename == f);
    let missing = |file: &str, why: &str| HubError::MissingFile {
        repo: repo.to_string(),
        revision: revision.to_string(),
        file: file.to_string(),
        why: why.to_string(),
    };
    if let Some(f) = REQUIRED_FILES.iter().find(|f| !has(f)) {
        return Err(missing(f, " (is it a Janus model repository?)"));
    }
    let weights = WEIGHT_FILES.iter().find(|f| has(f)).ok_or_else(|| {
        missing(
            "weights",
            &format!(" (looked for {})", WEIGHT_FILES.join(", ")),
        )
    })?;
    let files = REQUIRED_FILES
        .iter()
        .chain(OPTIONAL_FILES.iter().filter(|f| has(f)))
        .chain([weights]);
    for file in files {
        online.fetch(file, &info, &snapshot, progress)?;
    }
    if weights.ends_with(".index.json") {
        for shard in shard_names(&snapshot.join(weights))? {
            if !has(&shard) {
                return Err(missing(&shard, &format!(" (named by {weights})")));
            }
            online.fetch(&shard, &info, &snapshot, progress)?;
        }
    }
    if revision != info.sha {
        // Offline runs find the snapshot through this ref; hf-hub writes it only when it
        // downloads something, and the branch may have moved since.
        Cache::new(cache_dir.clone())
            .repo(hf_repo)
            .create_ref(&info.sha)
            .map_err(|e| HubError::io(repo_dir.join("refs").join(revision), e))?;
    }
    Ok(snapshot)
}
