//! The files of a model directory and what each one is.

use super::*;

pub(super) fn file_kind(name: &str, weight_files: &[String]) -> &'static str {
    if weight_files.iter().any(|w| w == name) {
        "weights"
    } else if name.ends_with(".index.json") {
        "weights index"
    } else if name == "config.json" || name == "generation_config.json" {
        "config"
    } else if name.starts_with("tokenizer")
        || name.starts_with("special_tokens_map")
        || name.starts_with("chat_template")
        || name.starts_with("vocab")
        || name.starts_with("merges")
        || name == "added_tokens.json"
    {
        "tokenizer"
    } else if name.starts_with("preprocessor_config") || name.starts_with("processor_config") {
        "processor"
    } else {
        "other"
    }
}

pub(super) fn list_files(dir: &Path, store: &TensorStore) -> Result<Vec<FileInfo>> {
    let weight_files: Vec<String> = store
        .files()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Follows symlinks (hub caches link every file into a blob store).
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        files.push(FileInfo {
            kind: file_kind(&name, &weight_files),
            name,
            bytes: meta.len(),
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}
