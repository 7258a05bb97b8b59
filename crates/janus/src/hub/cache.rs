//! Reading the cache: the snapshot a revision names and whether it holds a whole model,
//! without any network access.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::{HubError, REQUIRED_FILES};
use crate::model_dir::WEIGHT_FILES;

/// The size of a regular file (through links), `None` when absent.
pub(super) fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// The complete snapshot of `revision` in a repo's cache folder, or why there is none.
///
/// hf-hub's `CacheRepo::get` is not used: it looks only at `refs/<revision>`, while
/// huggingface_hub stores a download by commit hash without a ref.
pub(super) fn cached_snapshot(repo_dir: &Path, revision: &str) -> Result<PathBuf, String> {
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
pub(super) fn shard_names(index: &Path) -> Result<Vec<String>, HubError> {
    let bad = |msg: String| HubError::BadIndex {
        path: index.to_path_buf(),
        msg,
    };
    #[derive(Deserialize)]
    struct Index {
        weight_map: serde_json::Map<String, serde_json::Value>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| HubError::io(index, e))?;
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
