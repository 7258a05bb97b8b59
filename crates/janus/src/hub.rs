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
//! cache alone, checks every downloaded file's size against the repo listing, and turns
//! HTTP failures into [`HubError`]s that name the repo, file and URL.
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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::weights::WEIGHT_FILES;

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

/// Hub failures. Every message names the repo and, where one was involved, the file and URL.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// `--model` is neither a directory nor `owner/name`.
    #[error("{0:?} is neither a model directory nor a Hugging Face repo id: expected an existing directory or owner/name (e.g. {DEFAULT_MODEL})")]
    InvalidModel(String),
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
    pub fn parse(s: &str) -> Result<Self> {
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
        Err(HubError::InvalidModel(s.to_string()).into())
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
pub fn resolve(
    repo: &str,
    revision: &str,
    opts: &HubOptions,
    progress: &mut dyn FnMut(FileProgress<'_>),
) -> Result<PathBuf> {
    if !is_repo_id(repo) {
        return Err(HubError::InvalidModel(repo.to_string()).into());
    }
    if revision.is_empty() {
        return Err(Error::InvalidInput("the revision is empty".into()));
    }
    // hf-hub links snapshot files to blobs by relative paths it computes assuming an
    // absolute cache path.
    let cache_dir =
        std::path::absolute(&opts.cache_dir).map_err(|e| Error::io(&opts.cache_dir, e))?;
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
        return cached_snapshot(&repo_dir, revision).map_err(|why| not_cached(why).into());
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
                Err(_) => Err(e.into()),
            };
        }
        Err(e) => return Err(e.into()),
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
        return Err(missing(f, " (is it a Janus model repository?)").into());
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
                return Err(missing(&shard, &format!(" (named by {weights})")).into());
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
            .map_err(|e| Error::io(repo_dir.join("refs").join(revision), e))?;
    }
    Ok(snapshot)
}

/// The hub's answer to `GET /api/models/{repo}/revision/{revision}?blobs=true` (the parts
/// used). hf-hub's `RepoInfo` lacks the file sizes.
#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
}

/// One online resolution: the repo, its revision and the hf-hub client.
struct Online<'a> {
    repo: &'a str,
    revision: &'a str,
    endpoint: &'a str,
    token_sent: bool,
    api: ApiRepo,
}

impl Online<'_> {
    fn info_url(&self) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            self.repo,
            self.revision.replace('/', "%2F")
        )
    }

    fn info(&self) -> std::result::Result<RepoInfo, HubError> {
        let url = self.info_url();
        let response = self
            .api
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| self.http_error(e, &url, None))?;
        response.into_json().map_err(|e| HubError::Protocol {
            url,
            msg: format!("not a repo description: {e}"),
        })
    }

    /// Makes sure `snapshot/file` is in the cache with the listed size.
    fn fetch(
        &self,
        file: &str,
        info: &RepoInfo,
        snapshot: &Path,
        progress: &mut dyn FnMut(FileProgress<'_>),
    ) -> Result<()> {
        let target = snapshot.join(file);
        let expected = info
            .siblings
            .iter()
            .find(|s| s.rfilename == file)
            .and_then(|s| s.size);
        match file_len(&target) {
            Some(len) if expected.is_none_or(|n| n == len) => return Ok(()),
            // A link to a blob of the wrong size (another tool's broken download) is
            // replaced: hf-hub keeps an existing link.
            Some(_) => std::fs::remove_file(&target).map_err(|e| Error::io(&target, e))?,
            None => {}
        }
        let url = self.api.url(file);
        let reporter = Reporter {
            file,
            total: 0,
            done: 0,
            started: false,
            sink: progress,
        };
        // hf-hub asserts and unwraps on some server answers (a redirect without Location);
        // a malformed answer must be an error, not a crash.
        let downloaded = catch_unwind(AssertUnwindSafe(|| {
            self.api.download_with_progress(file, reporter)
        }))
        .map_err(|_| HubError::Protocol {
            url: url.clone(),
            msg: format!("malformed answer while downloading {file}"),
        })?
        .map_err(|e| self.api_error(e, &url, file))?;
        if downloaded != target {
            return Err(HubError::Protocol {
                url,
                msg: format!(
                    "{} moved to another commit during the download ({} instead of {}); run again",
                    self.revision,
                    downloaded.display(),
                    target.display()
                ),
            }
            .into());
        }
        let found = file_len(&target).unwrap_or(0);
        if let Some(expected) = expected.filter(|&n| n != found) {
            // Remove the blob too, or the next run would link it again.
            if let Ok(blob) = std::fs::canonicalize(&target) {
                let _ = std::fs::remove_file(blob);
            }
            let _ = std::fs::remove_file(&target);
            return Err(HubError::SizeMismatch {
                repo: self.repo.to_string(),
                file: file.to_string(),
                expected,
                found,
            }
            .into());
        }
        Ok(())
    }

    fn api_error(&self, e: ApiError, url: &str, file: &str) -> HubError {
        match e {
            ApiError::RequestError(e) => self.http_error(*e, url, Some(file)),
            ApiError::TooManyRetries(e) => match self.api_error(*e, url, file) {
                HubError::Download { msg, .. } => {
                    self.download_error(url, file, msg + " (retries exhausted)")
                }
                other => other,
            },
            ApiError::IoError(e) => self.download_error(url, file, e.to_string()),
            ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => HubError::Protocol {
                url: url.to_string(),
                msg: format!("no valid {h} header (is HF_ENDPOINT a Hugging Face hub?)"),
            },
            other => self.download_error(url, file, other.to_string()),
        }
    }

    fn download_error(&self, url: &str, file: &str, msg: String) -> HubError {
        HubError::Download {
            repo: self.repo.to_string(),
            file: file.to_string(),
            url: url.to_string(),
            msg,
        }
    }

    fn http_error(&self, e: ureq::Error, url: &str, file: Option<&str>) -> HubError {
        let url = url.to_string();
        let response = match e {
            ureq::Error::Status(_, response) => response,
            ureq::Error::Transport(t) => {
                let mut msg = t.kind().to_string();
                if let Some(m) = t.message() {
                    msg = format!("{msg}: {m}");
                }
                if let Some(source) = std::error::Error::source(&t) {
                    msg = format!("{msg}: {source}");
                }
                return HubError::Unreachable { url, msg };
            }
        };
        let repo = self.repo.to_string();
        let code = response.header("x-error-code").unwrap_or_default();
        match (response.status(), code, file) {
            (404, "RevisionNotFound", _) => HubError::RevisionNotFound {
                repo,
                revision: self.revision.to_string(),
                url,
            },
            (404, "RepoNotFound", _) | (404, _, None) => HubError::RepoNotFound {
                repo,
                endpoint: self.endpoint.to_string(),
                url,
            },
            (404, _, Some(file)) => HubError::FileNotFound {
                repo,
                revision: self.revision.to_string(),
                file: file.to_string(),
                url,
            },
            (401, _, _) => HubError::Unauthorized {
                repo,
                url,
                token_sent: self.token_sent,
            },
            (403, _, _) => HubError::Forbidden { repo, url },
            (status, _, _) => HubError::Http {
                url,
                status,
                msg: response
                    .header("x-error-message")
                    .unwrap_or(response.status_text())
                    .to_string(),
            },
        }
    }
}

/// Feeds hf-hub's progress calls to a [`FileProgress`] sink.
struct Reporter<'a> {
    file: &'a str,
    total: u64,
    done: u64,
    started: bool,
    sink: &'a mut dyn FnMut(FileProgress<'_>),
}

impl Progress for Reporter<'_> {
    // hf-hub calls `init` once before the transfer and again at each (re)start, followed
    // by `update(offset)` for the bytes a resumed transfer already has.
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
        if !self.started {
            self.started = true;
            (self.sink)(FileProgress::Started {
                file: self.file,
                total: self.total,
            });
        }
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        (self.sink)(FileProgress::Advanced {
            file: self.file,
            downloaded: self.done,
            total: self.total,
        });
    }

    fn finish(&mut self) {
        (self.sink)(FileProgress::Finished { file: self.file });
    }
}

/// The size of a regular file (through links), `None` when absent.
fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// The complete snapshot of `revision` in a repo's cache folder, or why there is none.
///
/// hf-hub's `CacheRepo::get` is not used: it looks only at `refs/<revision>`, while
/// huggingface_hub stores a download by commit hash without a ref.
fn cached_snapshot(repo_dir: &Path, revision: &str) -> std::result::Result<PathBuf, String> {
    let ref_file = repo_dir.join("refs").join(revision);
    let commit = match std::fs::read_to_string(&ref_file) {
        Ok(commit) => commit.trim().to_string(),
        Err(_) if is_commit_hash(revision) => revision.to_string(),
        Err(_) => return Err(String::new()),
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(if commit == revision {
            String::new()
        } else {
            format!("refs/{revision} names commit {commit}, whose snapshot is missing")
        });
    }
    let lacks = |file: &str| format!("snapshot {commit} lacks {file}");
    if let Some(f) = REQUIRED_FILES
        .iter()
        .find(|f| file_len(&snapshot.join(f)).is_none())
    {
        return Err(lacks(f));
    }
    let weights = WEIGHT_FILES
        .iter()
        .find(|f| file_len(&snapshot.join(f)).is_some())
        .ok_or_else(|| lacks("weights"))?;
    if weights.ends_with(".index.json") {
        let shards = shard_names(&snapshot.join(weights)).map_err(|e| e.to_string())?;
        if let Some(s) = shards
            .iter()
            .find(|s| file_len(&snapshot.join(s)).is_none())
        {
            return Err(lacks(s));
        }
    }
    Ok(snapshot)
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The shard files a `*.index.json` names, in first-mention order. Names must stay inside
/// the repo (no absolute paths or `..`): they become cache paths.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let bad = |msg: String| Error::Weights {
        path: index.to_path_buf(),
        msg,
    };
    #[derive(Deserialize)]
    struct Index {
        weight_map: serde_json::Map<String, serde_json::Value>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: Index =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a weight index: {e}")))?;
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in &parsed.weight_map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map entry {tensor} is not a file name")))?;
        let inside = Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(bad(format!(
                "weight_map entry {tensor} names {file:?}, outside the repository"
            )));
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    if shards.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok(shards)
}
