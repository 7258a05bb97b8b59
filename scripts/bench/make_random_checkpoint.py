#!/usr/bin/env python3
"""Write a full-size Janus-Pro checkpoint with random weights, for benchmarks.

The published weights cannot be downloaded on the benchmark machine, and speed does not
depend on what the weights hold, so this writes a stand-in with exactly the published
tensor names, shapes and dtype (bfloat16), in the original deepseek layout:

  * tensor names and shapes: `../shared/checkpoints/janus-pro-{1b,7b}.original.tsv`
    (the real checkpoints' listings), in that order;
  * `--format bin`: `pytorch_model.bin` (torch.save of the state dict, as Janus-Pro-1B
    ships); above 10 GB, `pytorch_model-0000k-of-0000n.bin` shards plus
    `pytorch_model.bin.index.json` (as Janus-Pro-7B ships);
  * `--format safetensors`: `model.safetensors`, or, above 4 GB, shards of at most 4 GB
    (`model-0000k-of-0000n.safetensors`) plus `model.safetensors.index.json`, as
    transformers' `save_pretrained` writes them;
  * `config.json` in the original layout (`cls` + `params` per part, `language_config` in
    LlamaConfig terms) with the published models' values; like the published Janus-Pro-7B
    file, the 7B `language_config` leaves the keys whose LlamaConfig defaults are right
    (hidden 4096, intermediate 11008, 32 heads) out;
  * tokenizer and processor files copied from `fixtures/models/tiny-janus/` (the real
    tokenizer cannot be downloaded here either). That tokenizer is Janus-1.3B style (no
    `<|User|>`/`<|Assistant|>` tokens) and its ids are all below 512, so every id it
    produces is a valid row of the full 102400-row vocabulary; the script checks this.

Values: each tensor is drawn on its own from a generator seeded with (`--seed`, its row in
the listing), so the checkpoint is reproducible, the same in both formats, and never needs
more memory than one shard. Scales keep activations finite and of ordinary size through
the whole network (SigLIP, the LLM, both heads, the VQ decoder):
  * norm weights 1, biases 0, the VQ `codebook_used` counter 0;
  * gen_embed and the VQ codebook N(0, 1): their 8-wide rows feed a Linear(8, D), and the
    codebook rows are L2-normalised before use anyway;
  * every other matrix, convolution and embedding N(0, 0.02^2) (LLaMA's
    `initializer_range`).

Usage:
  python scripts/bench/make_random_checkpoint.py --shape janus-pro-1b \\
      --out /work/bench-models/janus-pro-1b --format both
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
LISTINGS = ROOT.parent / "shared" / "checkpoints"
TOKENIZER_SOURCE = ROOT / "fixtures" / "models" / "tiny-janus"
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
]

SAFETENSORS_SHARD_BYTES = 4 * 10**9  # transformers' max_shard_size="4GB"
BIN_SHARD_BYTES = 10 * 10**9  # the old "10GB" default Janus-Pro-7B's two .bin shards follow
MATRIX_STD = 0.02
UNIT_STD_TENSORS = {"gen_embed.weight", "gen_vision_model.quantize.embedding.weight"}
ZERO_TENSORS = {"gen_vision_model.quantize.codebook_used"}

# The published language_config of each model. Janus-Pro-7B's leaves hidden_size,
# intermediate_size and the head counts to LlamaConfig's defaults (4096, 11008, 32, 32).
LANGUAGE_CONFIGS = {
    "janus-pro-1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "max_position_embeddings": 16384,
        "model_type": "llama",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "num_key_value_heads": 16,
        "torch_dtype": "bfloat16",
        "vocab_size": 102400,
    },
    "janus-pro-7b": {
        "max_position_embeddings": 16384,
        "model_type": "llama",
        "num_hidden_layers": 30,
        "torch_dtype": "bfloat16",
        "vocab_size": 102400,
    },
}
LLAMA_DEFAULTS = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32}
HEAD_DIM = 128  # DeepSeek-LLM's, for both sizes
VISION_WIDTH = 1024  # SigLIP-L/16
CODEBOOK_SIZE, CODE_DIM = 16384, 8  # VQ-16


def read_listing(shape: str, listings: Path = LISTINGS) -> list[tuple[str, list[int]]]:
    """(name, shape) rows of the published checkpoint's listing, in file order."""
    path = listings / f"{shape}.original.tsv"
    rows = []
    for line in path.read_text().splitlines()[1:]:
        name, dims = line.split("\t")
        rows.append((name, list(ast.literal_eval(dims))))
    return rows


def original_config(shape: str, listing: dict[str, list[int]]) -> dict:
    """The published config.json of `shape`, checked against the tensor shapes."""
    language = LANGUAGE_CONFIGS[shape]
    full = {**LLAMA_DEFAULTS, **language}
    d = full["hidden_size"]
    layers = {int(n.split(".")[3]) for n in listing if n.startswith("language_model.model.layers.")}
    expected = {
        "language_model.model.embed_tokens.weight": [full["vocab_size"], d],
        "language_model.model.layers.0.mlp.gate_proj.weight": [full["intermediate_size"], d],
        "aligner.layers.0.weight": [d, VISION_WIDTH],
        "gen_aligner.layers.0.weight": [d, CODE_DIM],
        "gen_head.vision_head.weight": [CODEBOOK_SIZE, d],
        "gen_vision_model.quantize.embedding.weight": [CODEBOOK_SIZE, CODE_DIM],
    }
    for name, dims in expected.items():
        if listing[name] != dims:
            raise ValueError(f"{shape}: {name} has shape {listing[name]} in the listing, the config implies {dims}")
    if len(layers) != full["num_hidden_layers"] or full["num_attention_heads"] * HEAD_DIM != d:
        raise ValueError(f"{shape}: {len(layers)} LLM layers in the listing, config {full}")

    def mlp(input_dim: int, model_type: str) -> dict:
        params = {"depth": 2, "input_dim": input_dim, "n_embed": d, "projector_type": "mlp_gelu"}
        return {"cls": "MlpProjector", "model_type": model_type, "params": params}

    return {
        "aligner_config": mlp(VISION_WIDTH, "aligner"),
        "architectures": ["MultiModalityCausalLM"],
        "gen_aligner_config": mlp(CODE_DIM, "gen_aligner"),
        "gen_head_config": {
            "cls": "vision_head",
            "model_type": "gen_head",
            "params": {"image_token_embed": d, "image_token_size": CODEBOOK_SIZE, "n_embed": d},
        },
        "gen_vision_config": {
            "cls": "VQ-16",
            "model_type": "gen_vision",
            "params": {"image_token_size": CODEBOOK_SIZE, "n_embed": CODE_DIM},
        },
        "language_config": language,
        "model_type": "multi_modality",
        "torch_dtype": "bfloat16",
        "vision_config": {
            "cls": "CLIPVisionTower",
            "model_type": "vision",
            "params": {
                "image_size": 384,
                "model_name": "siglip_large_patch16_384",
                "select_feature": "same",
                "select_layer": -1,
            },
        },
    }


def random_tensor(name: str, dims: list[int], generator: torch.Generator) -> torch.Tensor:
    """One bfloat16 tensor at the scale its role calls for (see the module docstring)."""
    module, _, kind = name.rpartition(".")
    if name in ZERO_TENSORS or kind == "bias":
        return torch.zeros(dims, dtype=torch.bfloat16)
    if len(dims) == 1:
        if kind != "weight" or "norm" not in module.rpartition(".")[2]:
            raise ValueError(f"unexpected 1-d tensor {name}: no rule for its values")
        return torch.ones(dims, dtype=torch.bfloat16)
    std = 1.0 if name in UNIT_STD_TENSORS else MATRIX_STD
    return (std * torch.randn(dims, generator=generator)).to(torch.bfloat16)


def plan_shards(listing: list[tuple[str, list[int]]], max_bytes: int) -> list[list[int]]:
    """Row indices per shard, in listing order, each shard at most `max_bytes` of bf16."""
    shards, current, size = [], [], 0
    for i, (_, dims) in enumerate(listing):
        nbytes = 2 * int(torch.Size(dims).numel())
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    shards.append(current)
    return shards


def write_weights(out: Path, fmt: str, listing: list[tuple[str, list[int]]], seed: int) -> None:
    """Writes the weight file(s) of one format, generating each shard's tensors in turn."""
    if fmt == "safetensors":
        single, stem, ext, max_bytes = "model.safetensors", "model", "safetensors", SAFETENSORS_SHARD_BYTES
    else:
        single, stem, ext, max_bytes = "pytorch_model.bin", "pytorch_model", "bin", BIN_SHARD_BYTES
    index_path = out / f"{single}.index.json"
    for stale in [out / single, index_path, *out.glob(f"{stem}-*-of-*.{ext}")]:
        stale.unlink(missing_ok=True)

    shards = plan_shards(listing, max_bytes)
    weight_map, total = {}, 0
    for k, rows in enumerate(shards):
        file = single if len(shards) == 1 else f"{stem}-{k + 1:05d}-of-{len(shards):05d}.{ext}"
        start = time.perf_counter()
        tensors = {}
        for i in rows:
            name, dims = listing[i]
            tensors[name] = random_tensor(name, dims, torch.Generator().manual_seed(seed * 1_000_003 + i))
            weight_map[name] = file
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        total += nbytes
        if fmt == "safetensors":
            save_file(tensors, str(out / file), metadata={"format": "pt"})
        else:
            torch.save(tensors, str(out / file))
        (out / file).chmod(0o644)  # safetensors creates its files owner-only
        del tensors
        print(
            f"  {file}: {len(rows)} tensors, {nbytes / 1e9:.2f} GB, {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        index_path.write_text(json.dumps(index, indent=2) + "\n")


def copy_tokenizer(out: Path, vocab_size: int) -> None:
    """Copies the tiny fixture's tokenizer and processor files, after checking that every id
    its tokenizer can produce is a row of the full vocabulary."""
    tok = json.loads((TOKENIZER_SOURCE / "tokenizer.json").read_text(encoding="utf-8"))
    ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok["added_tokens"]]
    if max(ids) >= vocab_size:
        raise ValueError(f"tokenizer id {max(ids)} does not fit the vocabulary of {vocab_size}")
    for name in TOKENIZER_FILES:
        shutil.copyfile(TOKENIZER_SOURCE / name, out / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(LANGUAGE_CONFIGS))
    ap.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    ap.add_argument("--format", choices=["bin", "safetensors", "both"], default="safetensors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--listings", type=Path, default=LISTINGS, help="folder of the *.original.tsv listings (default: %(default)s)"
    )
    args = ap.parse_args()

    listing = read_listing(args.shape, args.listings)
    config = original_config(args.shape, dict(listing))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    copy_tokenizer(args.out, config["language_config"]["vocab_size"])
    params = sum(int(torch.Size(dims).numel()) for _, dims in listing)
    print(
        f"{args.shape}: {len(listing)} tensors, {params / 1e9:.3f} B parameters, {2 * params / 1e9:.2f} GB bf16",
        file=sys.stderr,
    )
    for fmt in ["bin", "safetensors"] if args.format == "both" else [args.format]:
        write_weights(args.out, fmt, listing, args.seed)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
