#!/usr/bin/env python3
"""The PyTorch reference side of the CPU benchmark: the `janus bench` workload on
transformers' `JanusForConditionalGeneration`.

The model is built from the transformers-layout equivalent of the checkpoint's original
(deepseek) `config.json`, and the original-layout state dict is renamed to transformers'
names in memory (`original_to_hf` from scripts/fixtures/make_fixtures.py). Weights stay in
the checkpoint's bfloat16 (RoPE frequencies stay float32, as `from_pretrained` leaves
them), or with `--dtype f32` are converted to float32 once loaded (what a PyTorch user runs
on a CPU without native bf16 products, where PyTorch's bf16 matmul is emulated); attention uses transformers' default (sdpa); everything runs under
`torch.inference_mode()` with `torch.set_num_threads(--threads)` (default: all cores).

The workload (identical in `janus bench`, crates/janus/src/bench.rs; docs/benchmarks.md):
  * token ids `id_i = (1000 + 7*i) mod vocab_size`;
  * warm-up: the whole workload once, untimed, with 2 decode tokens and 2 t2i steps;
  * siglip_s: one (1, 3, 384, 384) pixel tensor, `sin` of the flat index (values in
    [-1, 1]), through SigLIP and the understanding aligner (`get_image_features`);
  * prefill_s / prefill_tokens: one LLM forward with a KV cache over the 576 image rows
    followed by the embeddings of 40 text ids (i = 0..39), 616 positions, then lm_head on
    the last position and its argmax;
  * decode_tok_s: greedy decoding of --decode-tokens N tokens after that prefill, one
    forward per token, lm_head on the new position, argmax, no EOS stop: N / seconds;
  * t2i_step_s: text-to-image with CFG on 2P rows (P = --parallel), interleaved
    [cond, uncond] per image: conditional rows hold ids i = 0..16, unconditional rows the
    same with positions 1..15 replaced by the pad id. The 17-token prefill and the first
    code (gen_head, CFG, argmax, embedding) are untimed; then --t2i-steps N steps are
    timed, each one LLM forward of 2P rows x 1 token with the KV cache, gen_head on the
    last hidden state, CFG combine (weight 5), argmax, gen_embed + gen_aligner of the
    codes as the next input. Value: mean seconds per step;
  * vq_decode_s: one grid of codes `code_i = (13*i) mod codebook_size` (576 codes) to a
    (1, 3, 384, 384) image tensor (no PNG encoding);
  * peak_rss_mb: the process's peak resident memory (`ru_maxrss`), MiB.

The last line of stdout is one JSON object with exactly the keys siglip_s, prefill_tokens,
prefill_s, decode_tok_s, t2i_step_s, vq_decode_s, peak_rss_mb (with --json it is the only
line); progress goes to stderr.

On a GPU (`--device cuda`, as `janus bench --device cuda`) the model and every input live
on the device and each timer is read after `torch.cuda.synchronize()`.

Usage:
  python scripts/bench/torch_bench.py --model /work/bench-models/janus-pro-1b --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "fixtures"))
from make_fixtures import original_to_hf  # noqa: E402
from weight_files import weight_files  # noqa: E402

PREFILL_TEXT_TOKENS = 40
T2I_PROMPT_TOKENS = 17
CFG_WEIGHT = 5.0
WARMUP_COUNT = 2
REPORT_KEYS = ["siglip_s", "prefill_tokens", "prefill_s", "decode_tok_s", "t2i_step_s", "vq_decode_s", "peak_rss_mb"]

# The original code's SigLIP presets (by `model_name`) and VQ-16's default arguments; the
# tiny test models override them with explicit fields in config.json (see
# crates/janus/src/config.rs).
SIGLIP_PRESETS = {
    "siglip_large_patch16_384": {"patch_size": 16, "width": 1024, "layers": 24, "heads": 16, "mlp_ratio": 4.0},
}
VQ16_DEFAULTS = {
    "codebook_size": 16384,
    "codebook_embed_dim": 8,
    "z_channels": 256,
    "ch": 128,
    "ch_mult": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------


def transformers_config(orig: dict):
    """transformers' JanusConfig equivalent to an original-layout config.json."""
    from transformers import JanusConfig

    vision = orig["vision_config"]["params"]
    siglip = {**SIGLIP_PRESETS[vision.get("model_name", "siglip_large_patch16_384")], **vision}
    vq = {**VQ16_DEFAULTS, **orig["gen_vision_config"].get("params", {})}
    aligner = orig["aligner_config"]["params"]
    gen_aligner = orig["gen_aligner_config"]["params"]
    gen_head = orig["gen_head_config"]["params"]
    image_size = vision.get("image_size", 384)
    text = {k: v for k, v in orig["language_config"].items() if k != "torch_dtype"}
    text.setdefault("model_type", "llama")
    text["tie_word_embeddings"] = False
    if vision.get("select_layer", -1) != -1:
        raise ValueError(f"select_layer {vision['select_layer']} is not supported (the published models use -1)")
    return JanusConfig(
        text_config=text,
        vision_config={
            "hidden_size": siglip["width"],
            "num_hidden_layers": siglip["layers"],
            "num_attention_heads": siglip["heads"],
            "mlp_ratio": siglip["mlp_ratio"],
            "patch_size": siglip["patch_size"],
            "image_size": image_size,
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu",
            "projection_dim": aligner["n_embed"],
            "depth": aligner["depth"],
            "num_image_tokens": (image_size // siglip["patch_size"]) ** 2,
        },
        vq_config={
            "embed_dim": vq["codebook_embed_dim"],
            "num_embeddings": vq["codebook_size"],
            "latent_channels": vq["z_channels"],
            "base_channels": vq["ch"],
            "channel_multiplier": list(vq["ch_mult"]),
            "num_res_blocks": vq["num_res_blocks"],
            # Side of the generated code grid: 384 / 16 = 24 for the published models.
            "num_patches": image_size // 2 ** (len(vq["ch_mult"]) - 1),
            "projection_dim": gen_aligner["n_embed"],
            "num_hidden_layers": gen_aligner["depth"],
            "hidden_act": "gelu",
            "image_token_embed_dim": gen_head["image_token_embed"],
        },
        tie_word_embeddings=False,
    )


def load_original_state_dict(model_dir: Path) -> tuple[dict, str]:
    """The checkpoint's tensors (original names) and the names of the files read."""
    from safetensors.torch import load_file

    files = weight_files(model_dir)
    sd = {}
    for f in files:
        if f.suffix == ".safetensors":
            sd.update(load_file(str(f)))
        else:
            sd.update(torch.load(str(f), map_location="cpu", weights_only=True, mmap=True))
    return sd, ", ".join(f.name for f in files)


def pad_token_id(model_dir: Path) -> int:
    """The id of the tokenizer's pad token (`pad_token` of tokenizer_config.json)."""
    from tokenizers import Tokenizer

    pad = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))["pad_token"]
    if isinstance(pad, dict):
        pad = pad["content"]
    pad_id = Tokenizer.from_file(str(model_dir / "tokenizer.json")).token_to_id(pad)
    if pad_id is None:
        raise ValueError(f"{model_dir}: pad token {pad!r} is not in tokenizer.json")
    return pad_id


def build_model(model_dir: Path, dtype: torch.dtype = torch.bfloat16):
    """JanusForConditionalGeneration holding the checkpoint's bfloat16 tensors, converted to
    `dtype`."""
    from transformers import JanusForConditionalGeneration
    from transformers.modeling_utils import no_init_weights

    orig = json.loads((model_dir / "config.json").read_text())
    if orig.get("model_type") != "multi_modality":
        raise ValueError(f"{model_dir}: expected an original-layout config (model_type multi_modality)")
    cfg = transformers_config(orig)
    sd, files = load_original_state_dict(model_dir)
    # Parameters are created uninitialised and then replaced by the loaded tensors
    # (assign=True), so the weights are held in memory once.
    with no_init_weights():
        model = JanusForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    model.load_state_dict(original_to_hf(sd), strict=True, assign=True)
    model.eval()
    wrong = sorted({str(p.dtype) for p in model.parameters()} - {"torch.bfloat16"})
    if wrong:
        raise ValueError(f"{model_dir}: parameters of dtype {wrong}, expected the checkpoint's bfloat16 throughout")
    if dtype != torch.bfloat16:
        model = model.to(dtype)
    return model, files


# ----------------------------------------------------------------------------------------
# The workload
# ----------------------------------------------------------------------------------------


def token_ids(n: int, vocab: int) -> torch.Tensor:
    """`id_i = (1000 + 7 i) mod vocab`, i = 0..n."""
    return torch.tensor([(1000 + 7 * i) % vocab for i in range(n)], dtype=torch.long)


def vq_codes(n: int, codebook: int) -> torch.Tensor:
    """`code_i = 13 i mod codebook`, i = 0..n."""
    return torch.tensor([(13 * i) % codebook for i in range(n)], dtype=torch.long)


def pixels(size: int) -> torch.Tensor:
    """(1, 3, size, size): `sin` of the flat index, computed in float64, stored as float32."""
    return torch.arange(3 * size * size, dtype=torch.float64).sin().to(torch.float32).view(1, 3, size, size)


def check_finite(stage: str, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise RuntimeError(f"{stage}: non-finite values in the output")


def run_workload(model, pad_id: int, decode_tokens: int, t2i_steps: int, parallel: int) -> dict:
    """One pass over the workload; returns the timings (all keys but peak_rss_mb)."""
    from transformers import DynamicCache

    device = model.lm_head.weight.device

    def now() -> float:
        # Kernels run asynchronously on a GPU: a timer covers them only after a sync.
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    cfg = model.config
    llm = model.model.language_model
    embed = model.get_input_embeddings()
    vocab = cfg.text_config.vocab_size
    dtype = model.lm_head.weight.dtype

    # SigLIP + aligner: (1, 3, S, S) -> (1, N, D).
    px = pixels(cfg.vision_config.image_size).to(device, dtype)
    t0 = now()
    image_rows = model.model.get_image_features(px)
    siglip_s = now() - t0
    check_finite("siglip", image_rows)

    # Prefill: image rows then 40 text embeddings, (1, N + 40, D); inputs and cache untimed.
    embeds = torch.cat([image_rows, embed(token_ids(PREFILL_TEXT_TOKENS, vocab)[None].to(device))], 1)
    cache = DynamicCache()
    t0 = now()
    hidden = llm(inputs_embeds=embeds, past_key_values=cache, use_cache=True).last_hidden_state
    logits = model.lm_head(hidden[:, -1:])  # (1, 1, V)
    next_id = logits.argmax(-1)  # (1, 1)
    prefill_s = now() - t0
    check_finite("prefill", logits)

    t0 = now()
    for _ in range(decode_tokens):
        hidden = llm(inputs_embeds=embed(next_id), past_key_values=cache, use_cache=True).last_hidden_state
        logits = model.lm_head(hidden[:, -1:])
        next_id = logits.argmax(-1)
        # Read on the host, as a generation loop's end-of-text check does (on a GPU, a
        # sync per token; the image loop of the reference has none and keeps none here).
        next_id.item()
    decode_tok_s = decode_tokens / (now() - t0)
    check_finite("decode", logits)

    # Text-to-image: rows [cond, uncond] per image, (2P, 17).
    cond = token_ids(T2I_PROMPT_TOKENS, vocab)
    uncond = cond.clone()
    uncond[1:-1] = pad_id
    ids = torch.stack([cond, uncond]).repeat(parallel, 1).to(device)
    cache = DynamicCache()
    hidden = llm(inputs_embeds=embed(ids), past_key_values=cache, use_cache=True).last_hidden_state

    def next_inputs(hidden: torch.Tensor) -> torch.Tensor:
        """gen_head on the last position, CFG, argmax, gen_embed + gen_aligner: (2P, 1, D)."""
        logits = model.model.generation_head(hidden[:, -1])  # (2P, codebook)
        c, u = logits[0::2], logits[1::2]
        codes = (u + CFG_WEIGHT * (c - u)).argmax(-1)  # (P,)
        return model.prepare_embeddings_for_image_generation(codes).repeat_interleave(2, 0)[:, None]

    inputs = next_inputs(hidden)
    t0 = now()
    for _ in range(t2i_steps):
        hidden = llm(inputs_embeds=inputs, past_key_values=cache, use_cache=True).last_hidden_state
        inputs = next_inputs(hidden)
    t2i_step_s = (now() - t0) / t2i_steps
    check_finite("t2i", inputs)

    vq = model.model.vqmodel
    codes = vq_codes(vq.quantize.quant_state_dims[0] * vq.quantize.quant_state_dims[1], vq.config.num_embeddings)
    codes = codes.to(device)
    t0 = now()
    image = vq.decode(codes[None])  # (1, 3, 384, 384)
    vq_decode_s = now() - t0
    check_finite("vq decode", image)

    return {
        "siglip_s": siglip_s,
        "prefill_tokens": embeds.shape[1],
        "prefill_s": prefill_s,
        "decode_tok_s": decode_tok_s,
        "t2i_step_s": t2i_step_s,
        "vq_decode_s": vq_decode_s,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="original-layout checkpoint directory")
    ap.add_argument("--t2i-steps", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=1, help="images P in the CFG batch (2P rows)")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: all cores")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16", help="compute dtype (default: the checkpoint's bf16)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = ap.parse_args()
    for name in ("t2i_steps", "parallel", "decode_tokens", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")

    import transformers

    torch.set_num_threads(args.threads)
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads")
    t0 = time.perf_counter()
    model, files = build_model(args.model, {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype])
    model = model.to(torch.device(args.device))
    pad_id = pad_token_id(args.model)
    attention = model.config._attn_implementation
    log(f"loaded {args.model} ({files}; {args.dtype}; {args.device}; attention {attention}) in {time.perf_counter() - t0:.1f} s")

    with torch.inference_mode():
        warm = min(WARMUP_COUNT, args.decode_tokens), min(WARMUP_COUNT, args.t2i_steps)
        log(f"warm-up: {warm[0]} decode tokens, {warm[1]} t2i steps")
        run_workload(model, pad_id, warm[0], warm[1], args.parallel)
        log(f"timed run: {args.decode_tokens} decode tokens, {args.t2i_steps} t2i steps, parallel {args.parallel}")
        report = run_workload(model, pad_id, args.decode_tokens, args.t2i_steps, args.parallel)
    report["peak_rss_mb"] = peak_rss_mb()
    report = {k: report[k] if isinstance(report[k], int) else float(f"{report[k]:.6g}") for k in REPORT_KEYS}
    if not args.json:
        for k in REPORT_KEYS:
            print(f"{k:15} {report[k]}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
