#!/usr/bin/env python3
"""Does the recipe learn? Stage 1 -> 2 -> 3 of Janus-Pro on a small random Janus and a
synthetic coloured-shapes dataset, on the CPU, end to end.

    /work/pyenv/bin/python scripts/train/learn_shapes.py [--work /tmp/learn-shapes]
        [--janus PATH] [--docs docs/training] [--stage2-steps N ...] [--skip-training]

1. `make_small_model.py WORK/model` (random small Janus-Pro, transformers layout);
2. `make_shapes_dataset.py WORK/data` and `janus data check` on both manifests;
3. `janus train` with `--recipe janus-pro/stage1`, then `janus-pro/stage2` from stage 1's
   final checkpoint, then `janus-pro/stage3` from stage 2's, each with the overrides in
   STAGES (or --stageN-*) and `--eval WORK/data/heldout/data.json`; `janus train plot` for
   each; WORK/train-results.json (settings, wall times, every eval line);
4. text-to-image check, for the random model and each stage's final checkpoint: every
   held-out caption through `janus generate --temperature 0 --json` (greedy codes) at each
   --cfg-weights (default 5, generate's default, and 1, no guidance) against `janus vq
   encode` of the true image; per-position code match rate against chance (1 / codebook
   size), the most frequent code and each position's most frequent code (both counted
   over the training images);
5. understanding check on the final model: every held-out question through `janus
   understand` (greedy), exact match per kind of question (the trainer's eval `accuracy`
   is the same measure over the same questions);
6. WORK/results.json, WORK/stage{1,2,3}-loss.png, WORK/generated-vs-true.png; with
   `--docs DIR`, the PNGs are copied there too.

`--skip-training` redoes 4-6 on an existing WORK. Everything runs in float32 (`--dtype
f32`): the trainer computes in f32, and this random VQ's codes change with the compute
dtype (bf16 flips ~1 code in 16). Each janus command runs on one thread (`--threads 1`):
on a 2-core machine shared with a compiler, two threads made training steps 3-4x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent

# Per-stage overrides of the Janus-Pro recipes for this tiny problem (see --help).
STAGES = {
    1: dict(recipe="janus-pro/stage1", steps=100, batch=32, micro=8, lr=1e-3, warmup=10, ratio=None, eval_every=50),
    2: dict(recipe="janus-pro/stage2", steps=800, batch=32, micro=8, lr=1e-3, warmup=50, ratio=None, eval_every=200),
    3: dict(recipe="janus-pro/stage3", steps=300, batch=32, micro=8, lr=4e-4, warmup=0, ratio=None, eval_every=100),
}


def log(msg: str) -> None:
    print(f"[learn_shapes {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def capture(cmd: list) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True).stdout


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def evals(run_dir: Path) -> list[dict]:
    return [m for m in read_jsonl(run_dir / "metrics.jsonl") if m.get("eval")]


def steps_of(run_dir: Path) -> list[dict]:
    return [m for m in read_jsonl(run_dir / "metrics.jsonl") if not m.get("eval")]


class Janus:
    def __init__(self, exe: str, threads: int | None):
        self.exe = exe
        self.common = ["-q"] + (["--threads", str(threads)] if threads else [])

    def __call__(self, *args) -> list:
        return [self.exe, *args]

    def vq_codes(self, model: Path, image: Path) -> list[int]:
        out = capture(self(*self.common, "vq", "encode", "--model", model, "--dtype", "f32", image))
        return json.loads(out)["codes"]

    def generate(self, model: Path, prompt: str, out_dir: Path, cfg_weight: float) -> dict:
        out = capture(
            self(*self.common, "generate", "--model", model, "--prompt", prompt, "--temperature", "0",
                 "--cfg-weight", str(cfg_weight), "--seed", "0", "--dtype", "f32", "--json", "--out", out_dir)
        )
        return json.loads(out)

    def understand(self, model: Path, prompt: str, image: Path, max_new: int) -> str:
        out = capture(
            self(*self.common, "understand", "--model", model, "--prompt", prompt, "--image", image,
                 "--dtype", "f32", "--max-new-tokens", str(max_new), "--json")
        )
        return json.loads(out)["text"]


def t2i_check(j: Janus, model: Path, records: list[tuple[str, Path]], true_codes: dict, baselines: dict,
              out_dir: Path, cfg_weight: float) -> dict:
    """Greedy generation for each (caption, image): per-position match with the true codes."""
    matches, exact, rows = [], 0, []
    for caption, image in records:
        g = j.generate(model, caption, out_dir, cfg_weight)
        got = g["image_tokens"][0]
        want = true_codes[image]
        m = [int(a == b) for a, b in zip(got, want)]
        matches.extend(m)
        exact += int(all(m))
        rows.append({"caption": caption, "image": str(image), "generated": got, "true": want,
                     "png": g["images"][0], "match": sum(m) / len(m)})
    rate = float(np.mean(matches))
    return {"match_rate": rate, "exact_images": exact, "images": len(records),
            "vs_chance": rate / baselines["chance"], "vs_per_position_mode": rate / baselines["per_position_mode"],
            "rows": rows}


def baselines_for(train_codes: list[list[int]], test_codes: list[list[int]], codebook: int) -> dict:
    tr = np.array(train_codes)
    te = np.array(test_codes)
    top = Counter(tr.ravel().tolist()).most_common(1)[0][0]
    mode = [Counter(tr[:, p].tolist()).most_common(1)[0][0] for p in range(tr.shape[1])]
    return {
        "chance": 1.0 / codebook,
        "most_frequent_code": float((te == top).mean()),
        "per_position_mode": float((te == np.array(mode)[None, :]).mean()),
    }


def grid_png(rows: list[dict], gens: dict[str, dict], recon: dict, path: Path, scale: int = 2) -> None:
    """Rows of: true image | VQ decode of its codes | decoded greedy generation per CFG weight.

    `rows` are (caption, image, unseen) dicts; `gens[column][image]` is that column's row
    from `t2i_check` for the image."""
    side = 64 * scale
    label_w, pad, head = 230, 6, 20
    cols = ["true image", "VQ(true codes)"] + list(gens)
    W = label_w + len(cols) * (side + pad) + pad
    H = head + len(rows) * (side + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for k, name in enumerate(cols):
        d.text((label_w + pad + k * (side + pad), 4), name, fill=(0, 0, 0))
    for i, r in enumerate(rows):
        y = head + pad + i * (side + pad)
        words = r["caption"].split()
        d.text((4, y + 4), " ".join(words[:5]), fill=(0, 0, 0))
        d.text((4, y + 18), " ".join(words[5:]), fill=(0, 0, 0))
        if r["unseen"]:
            d.text((4, y + 36), "(combination never captioned", fill=(160, 0, 0))
            d.text((4, y + 50), " in training)", fill=(160, 0, 0))
        ims = [Image.open(r["image"]), Image.open(recon[r["image"]])]
        ims += [Image.open(col[r["image"]]["png"]) for col in gens.values()]
        for k, im in enumerate(ims):
            im = im.convert("RGB").resize((side, side), Image.NEAREST)
            canvas.paste(im, (label_w + pad + k * (side + pad), y))
        # Matching codes, on a white strip at the bottom of each generated image.
        for k, col in enumerate(gens.values()):
            g = col[r["image"]]
            n = len(g["true"])
            x0 = label_w + pad + (2 + k) * (side + pad)
            d.rectangle([x0, y + side - 14, x0 + 70, y + side], fill=(255, 255, 255))
            d.text((x0 + 2, y + side - 13), f"{round(g['match'] * n)}/{n} codes", fill=(0, 0, 0))
    canvas.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/learn-shapes"))
    ap.add_argument("--janus", default=os.environ.get("JANUS", "/tmp/janus-bin/janus"))
    ap.add_argument("--python", default=sys.executable, help="Python with torch + transformers (model script)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per janus command (1: on a shared 2-core machine, 2 threads ran 3-4x slower)")
    ap.add_argument("--docs", type=Path, default=None, help="copy the PNGs here (e.g. docs/training)")
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--turns", type=int, default=3, help="questions per training image")
    ap.add_argument("--model-args", default="", help="extra make_small_model.py arguments")
    ap.add_argument("--cfg-weights", default="5,1",
                    help="CFG weights of the text-to-image check (5: janus generate's default; 1: no guidance)")
    ap.add_argument("--skip-training", action="store_true",
                    help="reuse WORK's model, data and stage runs; redo the checks (4-6) only")
    for s, cfg in STAGES.items():
        for k in ("steps", "batch", "micro", "lr", "warmup", "ratio", "eval_every"):
            ap.add_argument(f"--stage{s}-{k.replace('_', '-')}", default=cfg[k],
                            type=(float if k == "lr" else str if k == "ratio" else int))
    args = ap.parse_args()
    j = Janus(args.janus, args.threads)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    model, data = work / "model", work / "data"
    train_m, held_m = data / "train" / "data.json", data / "heldout" / "data.json"
    if args.skip_training:
        results = json.loads((work / "train-results.json").read_text())
        results["stages"] = {int(k): v for k, v in results["stages"].items()}
    else:
        results = train(args, j, work, model, data, train_m, held_m)
    check(args, j, work, model, data, results)


def train(args, j: Janus, work: Path, model: Path, data: Path, train_m: Path, held_m: Path) -> dict:
    """Steps 1-3: model, data, the three stages; WORK/train-results.json."""
    results: dict = {"work": str(work), "janus": args.janus, "stages": {}, "wall_s": {}}
    # 1-2. Model and data.
    t = time.time()
    info = capture([args.python, HERE / "make_small_model.py", model, *args.model_args.split()])
    results["model"] = json.loads(info)
    run([args.python, HERE / "make_shapes_dataset.py", data, "--train", args.train_images, "--turns", args.turns,
         "--size", results["model"]["image_size"]])
    results["data"] = json.loads((data / "summary.json").read_text())
    for m in (train_m, held_m):
        run(j("data", "check", "--model", model, m))
    results["wall_s"]["model_and_data"] = time.time() - t

    # 3. The three stages.
    start = model
    for s in (1, 2, 3):
        get = lambda k: getattr(args, f"stage{s}_{k}")  # noqa: E731
        run_dir = work / f"stage{s}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        cmd = j("train", "--recipe", STAGES[s]["recipe"], "--model", start, "--data", train_m,
                "--out", run_dir, "--eval", held_m, "--eval-every", get("eval_every"),
                "--steps", get("steps"), "--batch-size", get("batch"), "--micro-batch-size", get("micro"),
                "--lr", get("lr"), "--warmup-steps", get("warmup"), "--seed", s)
        if get("ratio"):
            cmd += ["--ratio", get("ratio")]
        if args.threads:
            cmd += ["--threads", args.threads]
        t = time.time()
        run(cmd + ["-q"])
        wall = time.time() - t
        start = run_dir / f"step-{get('steps')}"
        ev = evals(run_dir)
        st = steps_of(run_dir)
        first = [m["loss"] for m in st[:10]]
        last = [m["loss"] for m in st[-10:]]
        spec = json.loads((run_dir / "run.json").read_text())["config"]
        results["stages"][s] = {
            "config": spec, "wall_s": wall, "checkpoint": str(start),
            "loss_first10": float(np.mean(first)), "loss_last10": float(np.mean(last)),
            "evals": ev, "mean_step_s": float(np.mean([m["seconds"] for m in st])),
        }
        results["wall_s"][f"stage{s}"] = wall
        log(f"stage {s}: {wall:.0f} s, loss {np.mean(first):.3f} -> {np.mean(last):.3f}, last eval {ev[-1] if ev else None}")
        run(j("train", "plot", run_dir, "--out", work / f"stage{s}-loss.png", "-q"))
    results["wall_s"]["training_total"] = sum(results["wall_s"][f"stage{s}"] for s in (1, 2, 3))
    (work / "train-results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def check(args, j: Janus, work: Path, model: Path, data: Path, results: dict) -> None:
    """Steps 4-6: text-to-image and understanding checks, the grid, WORK/results.json."""
    # 4. Text-to-image: greedy codes vs the true image's codes.
    t = time.time()
    codebook = results["model"]["codebook"]
    held = [(r["caption"], (data / "heldout" / r["image"]).resolve()) for r in read_jsonl(data / "heldout" / "t2i.jsonl")]
    unseen = [(r["caption"], (data / "heldout" / r["image"]).resolve()) for r in read_jsonl(data / "heldout" / "t2i_unseen.jsonl")]
    train_imgs = sorted({(data / "train" / r["image"]).resolve() for r in read_jsonl(data / "train" / "t2i.jsonl")})
    true_codes = {p: j.vq_codes(model, p) for p in train_imgs + [p for _, p in held + unseen]}
    base = baselines_for([true_codes[p] for p in train_imgs], [true_codes[p] for _, p in held], codebook)
    base_u = baselines_for([true_codes[p] for p in train_imgs], [true_codes[p] for _, p in unseen], codebook)
    weights = [float(w) for w in args.cfg_weights.split(",")]
    results["t2i"] = {"baselines_heldout": base, "baselines_unseen": base_u, "cfg_weights": weights, "by_model": {}}
    for name, m in [("random init", model)] + [(f"stage {s}", Path(results["stages"][s]["checkpoint"])) for s in (1, 2, 3)]:
        for w in weights:
            out = work / "generated" / f"{name.replace(' ', '-')}-cfg{w:g}"
            r_h = t2i_check(j, m, held, true_codes, base, out, w)
            r_u = t2i_check(j, m, unseen, true_codes, base_u, out, w)
            results["t2i"]["by_model"][f"{name}, cfg {w:g}"] = {"heldout": r_h, "unseen": r_u}
            log(f"t2i {name}, cfg {w:g}: held-out captions {r_h['match_rate']:.3f} ({r_h['exact_images']}/"
                f"{r_h['images']} exact), unseen combinations {r_u['match_rate']:.3f}; chance {base['chance']:.4f}, "
                f"per-position mode {base['per_position_mode']:.3f}")
    results["wall_s"]["t2i_check"] = time.time() - t

    # VQ decodes of the true codes, and the grid (the final model, every CFG weight).
    recon = {}
    gens = {}
    for w in weights:
        by = results["t2i"]["by_model"][f"stage 3, cfg {w:g}"]
        gens[f"generated, cfg {w:g}"] = {r["image"]: r for r in by["heldout"]["rows"] + by["unseen"]["rows"]}
    first = results["t2i"]["by_model"][f"stage 3, cfg {weights[0]:g}"]
    h, u = first["heldout"]["rows"], first["unseen"]["rows"]
    rows = [dict(r, unseen=False) for r in (h[i] for i in np.linspace(0, len(h) - 1, 6).round().astype(int))]
    rows += [dict(r, unseen=True) for r in u[:2]]
    for r in rows:
        p = Path(r["image"])
        codes_json = work / "generated" / f"true-{p.stem}.json"
        codes_json.write_text(json.dumps(true_codes[p]))
        png = work / "generated" / f"true-{p.stem}-vq.png"
        run(j("-q", "vq", "decode", "--model", model, "--dtype", "f32", "--force", "--out", png, codes_json))
        recon[r["image"]] = png
    grid_png(rows, gens, recon, work / "generated-vs-true.png")

    # 5. Understanding, per kind of question, on the final model.
    t = time.time()
    final_model = Path(results["stages"][3]["checkpoint"])
    kinds = {"colour": ("Red.", "Green.", "Blue.", "Yellow."), "shape": ("Circle.", "Square.", "Triangle.")}
    per_kind: dict = {}
    wrong = []
    for r in read_jsonl(data / "heldout" / "understanding.jsonl"):
        q, a = r["conversation"][0]["content"], r["conversation"][1]["content"]
        kind = next((k for k, v in kinds.items() if a in v), "position")
        got = j.understand(final_model, q, data / "heldout" / r["images"][0], 24).strip()
        ok = got == a
        per_kind.setdefault(kind, [0, 0])
        per_kind[kind][0] += int(ok)
        per_kind[kind][1] += 1
        if not ok:
            wrong.append({"image": r["images"][0], "question": q, "answer": a, "got": got})
    results["understanding"] = {
        "per_kind": {k: {"right": v[0], "of": v[1], "accuracy": v[0] / v[1]} for k, v in per_kind.items()},
        "accuracy": sum(v[0] for v in per_kind.values()) / sum(v[1] for v in per_kind.values()),
        "wrong": wrong,
    }
    results["wall_s"]["understanding_check"] = time.time() - t

    (work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.docs:
        args.docs.mkdir(parents=True, exist_ok=True)
        for s in (1, 2, 3):
            shutil.copyfile(work / f"stage{s}-loss.png", args.docs / f"shapes-stage{s}-loss.png")
        shutil.copyfile(work / "generated-vs-true.png", args.docs / "shapes-generated-vs-true.png")

    # Summary.
    print()
    print(f"model: {results['model']['llm']}; vision {results['model']['vision']}; "
          f"{results['model']['image_tokens']} image tokens, codebook {codebook}")
    for s in (1, 2, 3):
        st = results["stages"][s]
        ev = st["evals"][-1] if st["evals"] else {}
        print(f"stage {s}: {st['config']['steps']} steps x {st['config']['batch_size']}, lr {st['config']['lr']}, "
              f"ratio {st['config']['ratio']}, {st['wall_s']:.0f} s; train loss {st['loss_first10']:.3f} -> "
              f"{st['loss_last10']:.3f}; held-out accuracy {ev.get('accuracy')}, code acc (teacher-forced) "
              f"{ev.get('t2i_code_accuracy')}")
    print(f"training wall time {results['wall_s']['training_total']:.0f} s")
    print(f"understanding (janus understand, final): {results['understanding']['accuracy']:.3f} "
          + ", ".join(f"{k} {v['right']}/{v['of']}" for k, v in results['understanding']['per_kind'].items()))
    for name, r in results["t2i"]["by_model"].items():
        print(f"t2i {name}: held-out {r['heldout']['match_rate']:.3f} ({r['heldout']['exact_images']}/"
              f"{r['heldout']['images']} images exact), unseen {r['unseen']['match_rate']:.3f}")
    print(f"baselines (held-out): {json.dumps(base)}")
    print(f"results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
