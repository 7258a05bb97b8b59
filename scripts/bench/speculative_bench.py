#!/usr/bin/env python3
"""Plain vs speculative decoding per image, through `janus generate --json`.

For every prompt x seed pair and window (alternating: each pair runs all windows in turn,
so drift in the machine's speed hits every window alike) it records the passes, codes per
pass, acceptance by slot and the sampling loop's wall time that `--json` reports, checks
that `--accept exact` drew the plain codes, and prints a markdown table of medians.

Meant for a trained model (acceptance on random weights says nothing), e.g. the shapes
model of docs/training-results.md:

    python3 scripts/bench/speculative_bench.py --janus target/release/janus \\
        --model /tmp/learn-shapes/stage3/step-300 \\
        --prompts /tmp/learn-shapes/data/heldout/t2i.jsonl --pairs 24 --windows 1,2,4,8,16
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def generate(args, prompt: str, seed: int, window: int, accept: str, out: Path) -> dict:
    cmd = [args.janus, "-q", "--threads", str(args.threads), "generate", "--model", args.model,
           "--prompt", prompt, "--seed", str(seed), "--temperature", str(args.temperature),
           "--cfg-weight", str(args.cfg_weight), "--dtype", args.dtype,
           "--speculative", str(window), "--accept", accept,
           "--out", str(out), "--json"]
    if args.quant != "none":
        cmd += ["--quant", args.quant]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"janus generate failed ({' '.join(cmd)}):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--janus", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSONL with a caption (or prompt) per line")
    ap.add_argument("--pairs", type=int, default=24, help="prompt x seed pairs (at least 20)")
    ap.add_argument("--windows", default="1,2,4,8,16")
    ap.add_argument("--accept", default="exact", choices=["exact", "sjd"])
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--cfg-weight", type=float, default=5.0)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--quant", default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", help="write every run's numbers here")
    args = ap.parse_args()

    prompts = []
    for line in Path(args.prompts).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            prompts.append(rec.get("caption") or rec.get("prompt"))
    windows = [int(w) for w in args.windows.split(",")]
    if 1 not in windows:
        windows = [1] + windows
    pairs = [(prompts[i % len(prompts)], 1000 + i) for i in range(args.pairs)]

    runs = {w: [] for w in windows}
    mismatches = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n, (prompt, seed) in enumerate(pairs):
            plain_codes = None
            for w in windows:
                accept = "exact" if w == 1 else args.accept
                r = generate(args, prompt, seed, w, accept, Path(tmp) / f"{n}-{w}")
                s = r["sampling"]
                runs[w].append({"prompt": prompt, "seed": seed, "passes": s["passes"],
                                "codes": s["codes"], "sample_s": s["sample_s"],
                                "acceptance_by_slot": s["acceptance_by_slot"],
                                "slot_checked": s["slot_checked"], "slot_accepted": s["slot_accepted"]})
                if w == 1:
                    plain_codes = r["image_tokens"]
                elif args.accept == "exact" and r["image_tokens"] != plain_codes:
                    mismatches += 1
            print(f"pair {n + 1}/{len(pairs)} done", file=sys.stderr)

    base = statistics.median(r["sample_s"] for r in runs[1])
    print(f"| W | passes / image | codes / pass | acceptance slot 0 | sampling s / image (median) | speedup |")
    print("|---|---|---|---|---|---|")
    for w in windows:
        rs = runs[w]
        passes = statistics.mean(r["passes"] for r in rs)
        codes = rs[0]["codes"]
        checked = sum(r["slot_checked"][0] for r in rs if r["slot_checked"])
        accepted = sum(r["slot_accepted"][0] for r in rs if r["slot_accepted"])
        acc = f"{accepted / checked:.2f}" if checked else "-"
        t = statistics.median(r["sample_s"] for r in rs)
        print(f"| {w} | {passes:.2f} | {codes / passes:.2f} | {acc} | {t * 1e3:.2f} ms | {base / t:.2f}x |")
    if args.accept == "exact":
        print(f"\nexact: {mismatches} of {len(pairs) * (len(windows) - 1)} speculative runs differ from plain")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(runs, indent=1))
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
