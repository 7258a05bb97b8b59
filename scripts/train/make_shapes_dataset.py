#!/usr/bin/env python3
"""A small synthetic multimodal dataset for `janus train`: coloured shapes on a plain background.

    make_shapes_dataset.py OUT_DIR [--train N] [--heldout M] [--seed S] [--size 64]

Every image shows one shape (4 colours x 3 shapes x 4 quadrants = 48 combinations) on a
light grey background, `--size` pixels square (the model's generation size, so `janus vq
encode`'s pad-to-square and training's centre crop see the same pixels). Writes

  OUT_DIR/train/data.json     manifest (crates/janus/src/train/data.rs format):
      understanding.jsonl     N images, each with a conversation of --turns questions (colour,
                              shape, position, in random order) with one- or two-word answers
                              ("Red.", "Circle.", "Top left."); every answer is supervised
      text.jsonl              short sentences describing scenes
      t2i.jsonl               captions in 4 phrasings x 44 combinations, each with the
                              combination's canonical image
  OUT_DIR/heldout/data.json   the held-out manifest (`janus train --eval`):
      understanding.jsonl     M fresh images (new random jitter), one question each; with
                              M = 144 every combination is asked all three kinds of question
      text.jsonl              sentences in a phrasing not used in training
      t2i.jsonl               the 44 trained combinations, caption in a fifth phrasing never
                              used in training, with the combination's canonical image
  OUT_DIR/heldout/t2i_unseen.jsonl  the 4 combinations never captioned in training (not in the
                              manifest: only the end-of-run generation check reads it)
  OUT_DIR/summary.json        counts and the lists above

Understanding images are jittered (shape size 18-26 px, centre moved up to 3 px), so the
held-out ones are new pixels. Text-to-image images are not: the generation encoder (VQ)
is random and frozen, so its codes are a chaotic function of the pixels (a one-pixel shift
changes ~90% of them), and a caption can only have a learnable code sequence if it always
comes with the same picture. The four unseen combinations therefore have codes no
training picture shows; they measure what cannot be learnt from this VQ, not the trainer.

PIL and numpy only; deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
SHAPES = ["circle", "square", "triangle"]
POSITIONS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
BACKGROUND = (235, 235, 235)
CANONICAL_SIZE = 24  # shape side, as a fraction of 64 px: scaled with --size

# One combination per colour, shape and position spread over them: never captioned in training.
UNSEEN = [
    ("red", "circle", "top left"),
    ("green", "square", "bottom right"),
    ("blue", "triangle", "top right"),
    ("yellow", "circle", "bottom left"),
]

QUESTIONS = {
    "colour": ["What colour is the shape?", "Which colour does the shape have?", "What is the colour of the shape?"],
    "shape": ["What shape is it?", "Which shape is in the picture?", "What kind of shape is shown?"],
    "position": ["Where is the shape?", "In which corner is the shape?", "Where is the shape placed?"],
}
CAPTIONS_TRAIN = [
    "A {c} {s} in the {p}.",
    "A {c} {s} in the {p} corner.",
    "There is a {c} {s} in the {p}.",
    "The {p} corner holds a {c} {s}.",
]
CAPTION_HELDOUT = "A picture of a {c} {s} at the {p}."
TEXT_TRAIN = [
    "The {c} {s} is in the {p}.",
    "A {s} in the {p} is {c}.",
    "In the {p} there is a {c} {s}.",
    "The shape in the {p} corner is a {c} {s}.",
]
TEXT_HELDOUT = "We see a {c} {s} in the {p} of the picture."


def answer(kind: str, c: str, s: str, p: str) -> str:
    word = {"colour": c, "shape": s, "position": p}[kind]
    return word[0].upper() + word[1:] + "."


def draw(c: str, s: str, p: str, side: int, size: float, dx: float = 0.0, dy: float = 0.0) -> Image.Image:
    """One shape of `size` pixels centred in quadrant `p` (moved by dx, dy)."""
    im = Image.new("RGB", (side, side), BACKGROUND)
    d = ImageDraw.Draw(im)
    q = side / 2
    cx = POSITIONS[p][0] * q + q / 2 + dx
    cy = POSITIONS[p][1] * q + q / 2 + dy
    h = size / 2
    if s == "circle":
        d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=COLOURS[c])
    elif s == "square":
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=COLOURS[c])
    else:
        d.polygon([(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)], fill=COLOURS[c])
    return im


def slug(c: str, s: str, p: str) -> str:
    return f"{c}-{s}-{p.replace(' ', '-')}"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=3000, help="training understanding images")
    ap.add_argument("--heldout", type=int, default=144, help="held-out understanding images")
    ap.add_argument("--turns", type=int, default=3, choices=[1, 2, 3],
                    help="questions per training image (one conversation, random order)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (the model's generation size)")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    side = args.size
    scale = side / 64
    combos = list(itertools.product(COLOURS, SHAPES, POSITIONS))
    seen = [k for k in combos if k not in UNSEEN]

    if args.out.exists():
        shutil.rmtree(args.out)
    train, held = args.out / "train", args.out / "heldout"
    for d in (train / "images", train / "canonical", held / "images", held / "canonical"):
        d.mkdir(parents=True)

    def jittered(k, directory: Path, i: int) -> str:
        size = rng.uniform(18, 26) * scale
        dx, dy = rng.uniform(-3, 3, size=2) * scale
        name = f"{i:05d}-{slug(*k)}.png"
        draw(*k, side, size, dx, dy).save(directory / "images" / name)
        return f"images/{name}"

    def understanding(directory: Path, n: int, heldout: bool) -> list[dict]:
        """Training: every question kind about each image, in random order (one
        conversation); held-out: one question per image, kinds and combinations in turn."""
        rows = []
        for i in range(n):
            if heldout:
                k = combos[i % len(combos)]
                kinds = [list(QUESTIONS)[(i + i // len(combos)) % 3]]
            else:
                k = combos[rng.integers(len(combos))]
                kinds = list(rng.permutation(list(QUESTIONS)))[: args.turns]
            conversation = []
            for kind in kinds:
                q = QUESTIONS[kind][rng.integers(len(QUESTIONS[kind]))]
                conversation.append({"role": "user", "content": q})
                conversation.append({"role": "assistant", "content": answer(kind, *k)})
            rows.append({"images": [jittered(k, directory, i)], "conversation": conversation})
        return rows

    def canonical(directory: Path, k) -> str:
        name = f"{slug(*k)}.png"
        path = directory / "canonical" / name
        if not path.exists():
            draw(*k, side, CANONICAL_SIZE * scale).save(path)
        return f"canonical/{name}"

    # Training set.
    und = understanding(train, args.train, heldout=False)
    t2i = [{"image": canonical(train, k), "caption": t.format(c=k[0], s=k[1], p=k[2])} for k in seen for t in CAPTIONS_TRAIN]
    text = [{"text": t.format(c=k[0], s=k[1], p=k[2])} for k in combos for t in TEXT_TRAIN]
    rng.shuffle(t2i)
    rng.shuffle(text)
    write_jsonl(train / "understanding.jsonl", und)
    write_jsonl(train / "t2i.jsonl", t2i)
    write_jsonl(train / "text.jsonl", text)
    manifest = {"understanding": ["understanding.jsonl"], "text": ["text.jsonl"], "t2i": ["t2i.jsonl"]}
    (train / "data.json").write_text(json.dumps(manifest, indent=2) + "\n")

    # Held-out set (images drawn after the training ones: new random jitter).
    und_h = understanding(held, args.heldout, heldout=True)
    fmt = lambda t, k: t.format(c=k[0], s=k[1], p=k[2])  # noqa: E731
    t2i_h = [{"image": canonical(held, k), "caption": fmt(CAPTION_HELDOUT, k)} for k in seen]
    t2i_u = [{"image": canonical(held, k), "caption": fmt(CAPTION_HELDOUT, k)} for k in UNSEEN]
    text_h = [{"text": fmt(TEXT_HELDOUT, k)} for k in combos[::4]]
    write_jsonl(held / "understanding.jsonl", und_h)
    write_jsonl(held / "t2i.jsonl", t2i_h)
    write_jsonl(held / "t2i_unseen.jsonl", t2i_u)
    write_jsonl(held / "text.jsonl", text_h)
    (held / "data.json").write_text(json.dumps(manifest, indent=2) + "\n")

    summary = {
        "image_side": side,
        "combinations": len(combos),
        "unseen_t2i_combinations": [" ".join(k) for k in UNSEEN],
        "train": {"understanding": len(und), "turns": args.turns, "text": len(text), "t2i": len(t2i), "t2i_images": len(seen)},
        "heldout": {"understanding": len(und_h), "text": len(text_h), "t2i": len(t2i_h), "t2i_unseen": len(t2i_u)},
        "caption_phrasings_train": CAPTIONS_TRAIN,
        "caption_phrasing_heldout": CAPTION_HELDOUT,
        "seed": args.seed,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["train"]), json.dumps(summary["heldout"]))


if __name__ == "__main__":
    main()
