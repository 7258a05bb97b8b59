//! Files written whole or not at all: checkpoints' side files, metrics, plots, code caches.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes `bytes` to a hidden temporary file beside `path`, syncs it and renames it over
/// `path`: a reader (or a crash) sees the old file or the new one, never part of one.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    let id = COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".{}-{id}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write`] with the library's error, naming the file.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write(path, bytes).map_err(|e| Error::io(path, e))
}
