//! Downloads through hf-hub and their verification against the repo listing (size, and
//! SHA-256 for LFS files), with hf-hub's failures turned into [`HubError`]s.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use hf_hub::api::sync::{ApiError, ApiRepo};
use hf_hub::api::Progress;
use serde::Deserialize;

use super::cache::file_len;
use super::{FileProgress, HubError};

/// The hub's answer to `GET /api/models/{repo}/revision/{revision}?blobs=true` (the parts
/// used). hf-hub's `RepoInfo` lacks the file sizes and LFS hashes.
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
    /// Present for LFS files only.
    lfs: Option<LfsPointer>,
}

/// The LFS pointer of a file stored with LFS.
#[derive(Debug, Deserialize)]
struct LfsPointer {
    /// The pointer's oid: the SHA-256 of the contents, lowercase hex.
    sha256: String,
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

    /// Makes sure `snapshot/file` is in the cache with the listed size, and, when it is
    /// downloaded now and stored with LFS, the listed SHA-256.
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
        if let Some(lfs) = listed.and_then(|s| s.lfs.as_ref()) {
            tracing::debug!("verifying the SHA-256 of {}", target.display());
            let found = sha256_hex(&target).map_err(|e| HubError::io(&target, e))?;
            if !found.eq_ignore_ascii_case(&lfs.sha256) {
                remove_download(&target);
                return Err(HubError::HashMismatch {
                    repo: self.repo.to_string(),
                    file: file.to_string(),
                    expected: lfs.sha256.to_ascii_lowercase(),
                    found,
                });
            }
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

/// The SHA-256 of a file, lowercase hex, read in chunks: weight files can be larger than
/// the memory free.
fn sha256_hex(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex(ctx.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_matches_the_standard_vectors_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            sha256_hex(&path).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_hex(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // FIPS 180-2's long vector (a million 'a's), then a file longer than one read.
        let mut bytes = vec![b'a'; 1_000_000];
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            sha256_hex(&path).unwrap(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        bytes.resize((1 << 20) + 7, b'b');
        std::fs::write(&path, &bytes).unwrap();
        let one_shot = ring::digest::digest(&ring::digest::SHA256, &bytes);
        assert_eq!(sha256_hex(&path).unwrap(), hex(one_shot.as_ref()));
    }
}
