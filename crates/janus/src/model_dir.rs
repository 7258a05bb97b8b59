//! The files a model directory holds, for the loaders and the hub alike (a leaf: the
//! hub must not depend on the loaders, which report errors through the crate's error).

/// Weight file names, in order of preference: `TensorStore::open` opens the first one
/// present and the hub downloads the first one the repo lists.
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
];
