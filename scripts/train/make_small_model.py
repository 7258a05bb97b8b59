#!/usr/bin/env python3
"""Write a small random Janus-Pro (transformers layout) to train from scratch on CPU.

    make_small_model.py [OUT_DIR] [--seed S] [--image-size 64] [--hidden 128] ...

The model is built the way `scripts/fixtures/make_fixtures.py` builds `tiny-pro` (its
`janus_config`, with the sizes below swapped in, and transformers' JanusForConditionalGeneration),
but larger where learning needs it and with a smaller image side:

  * understanding and generation share one grid (transformers sets
    `vq_config.num_patches = vision image_size // patch_size`), so `--image-size 64` with
    patch 16 gives 16 understanding tokens and 16 VQ codes per 64 px image (the VQ's
    5-level channel multiplier downsamples by 16);
  * the LLM, aligners and generation embedding/head keep transformers' own initialisation
    (normal(0, 0.02) for linear layers and embeddings), the usual start for training from
    scratch;
  * the two visual encoders, frozen in stages 1 and 2 (the VQ always), are filled with
    make_fixtures' `randomize_`. For the SigLIP tower this matters: its position embeddings
    get std 0.5 instead of transformers' 0.02, so the frozen random tower tells the LLM
    where each patch is, as a pretrained SigLIP does. With the 0.02 init the model learnt
    colour and shape but answered position questions at chance after all three stages
    (`--vision-init hf` to see it). The VQ decoder's kernels are smooth, so decoded codes
    look like blurry images rather than noise; the VQ's codes are a fixed random function
    of the image.

The tokenizer and processor files are copied from `fixtures/models/tiny-pro` (byte-level BPE,
640 ids); `preprocessor_config.json`'s size is set to the image side. Deterministic for a
given seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "fixtures"))
import make_fixtures as mf  # noqa: E402

TINY_PRO = ROOT / "fixtures" / "models" / "tiny-pro"
SIDE_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "processor_config.json",
    "preprocessor_config.json",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="/tmp/janus-small", type=Path)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--image-size", type=int, default=64, help="pixels; patch 16, VQ downsampling 16")
    ap.add_argument("--hidden", type=int, default=128, help="LLM width")
    ap.add_argument("--layers", type=int, default=4, help="LLM layers")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--vision-hidden", type=int, default=64)
    ap.add_argument("--vision-layers", type=int, default=2)
    ap.add_argument("--vision-heads", type=int, default=2)
    ap.add_argument("--codebook", type=int, default=128, help="VQ codebook size (gen head width)")
    ap.add_argument("--max-positions", type=int, default=512)
    ap.add_argument("--vision-init", choices=["hf", "fixtures"], default="fixtures",
                    help="SigLIP tower: make_fixtures' randomize_ (position embeddings std 0.5), or transformers' init")
    args = ap.parse_args()

    if args.image_size % 16:
        ap.error("--image-size must be a multiple of 16")
    grid = args.image_size // 16

    # make_fixtures' janus_config reads its module-level sizes: swap ours in.
    mf.TINY = dict(
        mf.TINY,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        kv_heads=args.heads,
        intermediate=args.intermediate,
        max_positions=args.max_positions,
        vision_hidden=args.vision_hidden,
        vision_layers=args.vision_layers,
        vision_heads=args.vision_heads,
        codebook=args.codebook,
    )
    mf.IMAGE_SIZE = args.image_size
    mf.NUM_IMAGE_TOKENS = grid * grid

    from tokenizers import Tokenizer
    from transformers import JanusForConditionalGeneration

    torch.set_num_threads(2)
    tok = Tokenizer.from_file(str(TINY_PRO / "tokenizer.json"))
    cfg = mf.janus_config(mf.hf_tokenizer(tok))
    assert cfg.vq_config.num_patches == grid, cfg.vq_config.num_patches
    torch.manual_seed(args.seed)
    model = JanusForConditionalGeneration(cfg)
    model.eval()
    # randomize_ keys its VQ rules on "vqmodel." names: hand it the VQ under that name.
    holder = torch.nn.Module()
    holder.vqmodel = model.model.vqmodel
    mf.randomize_(holder, args.seed)
    if args.vision_init == "fixtures":
        holder = torch.nn.Module()
        holder.vision_model = model.model.vision_model
        mf.randomize_(holder, args.seed + 1)

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True)
    for name in SIDE_FILES:
        shutil.copyfile(TINY_PRO / name, out / name)
    pp = json.loads((out / "preprocessor_config.json").read_text())
    pp["size"] = {"height": args.image_size, "width": args.image_size}
    (out / "preprocessor_config.json").write_text(json.dumps(pp, indent=2) + "\n")

    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    parts = {
        "llm": n(model.model.language_model),
        "lm_head": n(model.lm_head),
        "vision": n(model.model.vision_model),
        "aligner": n(model.model.aligner),
        "gen_embed": n(model.model.generation_embeddings),
        "gen_aligner": n(model.model.generation_aligner),
        "gen_head": n(model.model.generation_head),
        "vq": n(model.model.vqmodel),
    }
    summary = {
        "out": str(out),
        "seed": args.seed,
        "image_size": args.image_size,
        "image_tokens": grid * grid,
        "codebook": args.codebook,
        "llm": f"{args.layers} layers, width {args.hidden}, {args.heads} heads, FFN {args.intermediate}",
        "vision": f"{args.vision_layers} layers, width {args.vision_hidden}, patch 16",
        "parameters": parts,
        "total": sum(parts.values()),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
