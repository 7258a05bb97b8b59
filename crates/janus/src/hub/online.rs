//! Downloads through hf-hub and their size check against the repo listing, with hf-hub's
//! failures turned into [`HubError`]s.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use hf_hub::api::sync::{ApiError, ApiRepo};
use hf_hub::api::Progress;
use serde::Deserialize;

use super::cache::file_len;
use super::{FileProgress, HubError};

/// The hub's answer to `GET /api/models/{repo}/revision/{revision}?blobs=true` (the parts
/// used). hf-hub's `RepoInfo` lacks the file sizes.
#[derive(Debug, Deserialize)]
pub(super) struct RepoInfo {
    /// The commit the revision names.
    pub(super) sha: String,
    /// Every file of the repo at that commit.
    pub(super) siblings: Vec<Sibling>,
}

/// One file of the listing.
#[derive(Debug, Deserialize)]
pub(super) struct Sibling {
    /// The path in the repo.
    pub(super) rfilename: String,
    size: Option<u64>,
}

/// One online resolution: the repo, its revision and the hf-hub client.
pub(super) struct Online<'a> {
    pub(super) repo: &'a str,
    pub(super) revision: &'a str,
    pub(super) endpoint: &'a str,
    pub(super) token_sent: bool,
    pub(super) api: ApiRepo,
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

    pub(super) fn info(&self) -> Result<RepoInfo, HubError> {
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
    pub(super) fn fetch(
        &self,
        file: &str,
        info: &RepoInfo,
        snapshot: &Path,
        progress: &mut dyn FnMut(FileProgress<'_>),
    ) -> Result<(), HubError> {
        let target = snapshot.join(file);
        let listed = info.siblings.iter().find(|s| s.rfilename == file);
        let expected = listed.and_then(|s| s.size);
        match file_len(&target) {
            Some(len) if expected.is_none_or(|n| n == len) => return Ok(()),
            // A link to a blob of the wrong size (another tool's broken download) is
            // replaced: hf-hub keeps an existing link.
            Some(_) => std::fs::remove_file(&target).map_err(|e| HubError::io(&target, e))?,
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
            });
        }
        let found = file_len(&target).unwrap_or(0);
        if let Some(expected) = expected.filter(|&n| n != found) {
            remove_download(&target);
            return Err(HubError::SizeMismatch {
                repo: self.repo.to_string(),
                file: file.to_string(),
                expected,
                found,
            });
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

/// Removes a rejected download: the blob too, or the next run would link it again.
fn remove_download(link: &Path) {
    if let Ok(blob) = std::fs::canonicalize(link) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(link);
}
