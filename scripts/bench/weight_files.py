"""Which weight files of a checkpoint directory are loaded, in the Rust loader's order of
preference (crates/janus/src/weights/store.rs): a sharded safetensors index, one
safetensors file, a sharded .bin index, one pytorch_model.bin."""

from __future__ import annotations

import json
from pathlib import Path

PREFERENCE = ["model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin"]


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files the loader reads from `model_dir` (the shards an index names)."""
    found = next((f for f in PREFERENCE if (model_dir / f).exists()), None)
    if found is None:
        raise FileNotFoundError(f"{model_dir}: none of {', '.join(PREFERENCE)}")
    if not found.endswith(".index.json"):
        return [model_dir / found]
    shards = json.loads((model_dir / found).read_text())["weight_map"].values()
    return [model_dir / f for f in sorted(set(shards))]
