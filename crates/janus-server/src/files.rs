//! Generated PNGs served by URL (`response_format: "url"`): a temporary directory the
//! server owns, removed on shutdown.
//!
//! Names are 128 random bits, so a URL is a capability: the file route needs no API key
//! (an `<img src>` cannot send one). Files older than [`FILE_TTL`] are deleted as new ones
//! are written.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::ServerError;

/// How long a generated PNG stays available.
pub const FILE_TTL: Duration = Duration::from_secs(3600);

/// The directory of generated PNGs.
#[derive(Debug)]
pub struct ImageFiles {
    dir: Mutex<Option<tempfile::TempDir>>,
    path: PathBuf,
}

impl ImageFiles {
    /// Creates a fresh directory under the system's temporary directory (`TMPDIR`).
    pub fn new() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("janus-serve-").tempdir()?;
        let path = dir.path().to_path_buf();
        Ok(Self {
            dir: Mutex::new(Some(dir)),
            path,
        })
    }

    /// Where the files are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a PNG; returns its file name (`<32 hex digits>.png`).
    pub fn save(&self, png: &[u8]) -> Result<String, ServerError> {
        self.prune();
        let name = format!("{:032x}.png", rand::random::<u128>());
        let tmp = self.path.join(format!(".{name}.tmp"));
        let write =
            std::fs::write(&tmp, png).and_then(|_| std::fs::rename(&tmp, self.path.join(&name)));
        if let Err(e) = write {
            let _ = std::fs::remove_file(&tmp);
            return Err(ServerError::Internal(format!(
                "cannot write {}: {e}",
                self.path.join(&name).display()
            )));
        }
        Ok(name)
    }

    /// The PNG called `name`, if there is one. Only names [`ImageFiles::save`] makes are
    /// looked up, so no other file can be reached.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        let stem = name.strip_suffix(".png")?;
        if stem.len() != 32 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        std::fs::read(self.path.join(name)).ok()
    }

    /// Deletes files older than [`FILE_TTL`].
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > FILE_TTL);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes the directory and everything in it.
    pub fn remove(&self) {
        let dir = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(dir) = dir {
            if let Err(e) = dir.close() {
                tracing::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_serves_and_removes() {
        let files = ImageFiles::new().unwrap();
        let name = files.save(b"png").unwrap();
        assert_eq!(files.get(&name).as_deref(), Some(&b"png"[..]));
        assert_eq!(files.get("../etc/passwd"), None);
        assert_eq!(files.get(&format!("../{name}")), None);
        let dir = files.path().to_path_buf();
        files.remove();
        assert!(!dir.exists());
        assert_eq!(files.get(&name), None);
    }
}
