#!/usr/bin/env python3
"""PyTorch and `janus bench` side by side on the same checkpoint and workload.

Runs scripts/bench/torch_bench.py, then `janus bench --json` once per `--quant` (one
process after the other, never two at once), reads the JSON object each prints as its
last stdout line, and prints a table: per stage the PyTorch number, the janus number and
their ratio, with the machine, the date and the exact commands. Ratios read "how many times
better janus is": torch/janus for times, janus/torch for decode tokens per second; for the
peak resident memory janus/torch (below 1 = janus uses less), and each side's peak divided
by the size of the checkpoint's weight files.

PyTorch runs in the dtype a PyTorch user would pick on this CPU: `--torch-dtype auto` (the
default) times a product in bf16 and in f32 first and takes the faster (on CPUs without
native bf16 products PyTorch emulates bf16, and f32 is many times faster). The machine's
CPU, janus's kernel level and the measured memory bandwidth come from `janus bench`.

The workload itself (token ids, stages, warm-up) is defined in torch_bench.py's docstring
and docs/benchmarks.md; both programs implement it identically.

With `--rounds N` the whole set runs N times, PyTorch first in odd rounds and last in even
ones, so a drift of the machine's speed (other tenants' load moves memory bandwidth by a
quarter within minutes on a shared host) favours neither side. Each ratio is then taken
within a round, and the table shows per stage the median of each side's numbers and the
median of the per-round ratios with their range.

With `--device cuda` both sides run on the GPU (PyTorch in bf16 unless `--torch-dtype`
says otherwise, janus in `--dtype`), and `--json-out FILE` also writes every round's
numbers and the ratios as one JSON object (what scripts/gpu/device-check.sh collects).

Usage:
  python scripts/bench/side_by_side.py --model /work/bench-models/janus-pro-1b --markdown
  python scripts/bench/side_by_side.py --model fixtures/models/tiny-janus --quant none --quant q8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import statistics
import time
from pathlib import Path

from weight_files import weight_files

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["siglip_s", "prefill_tokens", "prefill_s", "decode_tok_s", "t2i_step_s", "vq_decode_s", "peak_rss_mb"]
# CPU features that decide which kernels PyTorch and candle can use.
NOTABLE_FLAGS = "avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_int8".split()


LEGEND = (
    "ratio: how many times faster janus is (PyTorch time / janus time; janus tokens/s / PyTorch tokens/s); "
    "for peak RSS, janus / PyTorch (below 1: janus uses less memory)."
)


# `janus bench` also reports the machine it ran on (CPU, kernel level, bandwidth).
MACHINE: dict = {}

# Times one (256 x 2048) x (2048 x 2048) product per dtype; prints "dtype GFLOP/s" lines.
DTYPE_PROBE = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
for name, dt in (("bf16", torch.bfloat16), ("f32", torch.float32)):
    a, b = torch.randn(256, 2048, dtype=dt), torch.randn(2048, 2048, dtype=dt)
    a @ b
    best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3))
    print(name, 2 * 256 * 2048 * 2048 / best / 1e9)
"""


def torch_dtype(choice: str, python: str, threads: int | None, device: str) -> tuple[str, str]:
    """The dtype PyTorch runs in, and why: `choice` itself, or with `auto` the faster of
    bf16 and f32 on a product of the model's width (on a GPU: bf16, the checkpoint's)."""
    if choice != "auto":
        return choice, "chosen with --torch-dtype"
    if device != "cpu":
        return "bf16", f"auto: the checkpoint's dtype on {device}"
    n = str(threads or len(os.sched_getaffinity(0)))
    out = subprocess.run([python, "-c", DTYPE_PROBE, n], capture_output=True, text=True, check=True).stdout
    rates = {name: float(v) for name, v in (ln.split() for ln in out.splitlines())}
    best = max(rates, key=rates.get)
    why = ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items())
    return best, f"auto: the faster on a 256x2048x2048 product ({why})"


def run_json(cmd: list[str]) -> dict:
    """Runs `cmd` (stderr passes through) and parses the last line of its stdout."""
    print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"command failed with exit status {out.returncode}: {shlex.join(cmd)}")
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if not lines:
        raise SystemExit(f"no output from: {shlex.join(cmd)}")
    result = json.loads(lines[-1])
    if "machine" in result:
        MACHINE.update(result.pop("machine"))
    if sorted(result) != sorted(KEYS):
        raise SystemExit(f"unexpected keys {sorted(result)} from: {shlex.join(cmd)}")
    return result


def machine() -> dict:
    """CPU model, notable flags, cores and memory of this machine (Linux)."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    mem_kb = next(
        int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    return {
        "cpu": f"{model} ({platform.machine()})",
        "flags": " ".join(f for f in NOTABLE_FLAGS if f in flags) or "none of " + " ".join(NOTABLE_FLAGS),
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": f"{mem_kb / 2**20:.1f} GiB",
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews the timings."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def versions(python: str, janus: str) -> dict:
    """Versions of torch/transformers (as installed for `python`), janus and the checkout."""
    probe = "import importlib.metadata as m; print(m.version('torch'), m.version('transformers'))"
    torch_v, tf_v = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    janus_v = subprocess.run([janus, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {"pytorch": f"torch {torch_v}, transformers {tf_v}", "janus": janus_v, "commit": commit or "unknown"}


def fmt(value: float) -> str:
    """Three significant digits, no exponent for ordinary sizes."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def ratio_of(kind: str, torch_v: float, janus_v: float) -> float:
    """How many times better janus is on one measurement (see LEGEND)."""
    return {"time": torch_v / janus_v, "rate": janus_v / torch_v, "memory": janus_v / torch_v}[kind]


def table(
    torch_rs: list[dict],
    janus_rs: dict[str, list[dict]],
    checkpoint_mb: float,
    parallel: int,
    torch_dt: str,
    on_cpu: bool = True,
) -> list[list[str]]:
    """Rows of the comparison: a header, then one row per stage. With several rounds, each
    side's number is its median and the ratio the median of the rounds' own ratios, with
    their range. Off the CPU the host's peak RSS says nothing about the model's memory
    (PyTorch stages the weights on the host, janus does not) and is left out."""
    header = ["stage", f"PyTorch ({torch_dt})"]
    for q in janus_rs:
        header += [f"janus ({q})", "ratio"]
    stages = [
        ("siglip_s", "SigLIP + aligner, 1 image (s)", "time"),
        ("prefill_s", f"prefill, {torch_rs[0]['prefill_tokens']} tokens (s)", "time"),
        ("decode_tok_s", "decode (tokens/s)", "rate"),
        ("t2i_step_s", f"text-to-image step, {2 * parallel} rows (ms)", "time"),
        ("vq_decode_s", "VQ decode, 1 image (s)", "time"),
        ("peak_rss_mb", "peak RSS (MiB)", "memory"),
    ]
    if not on_cpu:
        stages = stages[:-1]
    rows = [header]
    for key, label, kind in stages:
        scale = 1000 if key == "t2i_step_s" else 1
        row = [label, fmt(statistics.median(r[key] for r in torch_rs) * scale)]
        for rounds in janus_rs.values():
            ratios = [ratio_of(kind, t[key], j[key]) for t, j in zip(torch_rs, rounds, strict=True)]
            ratio = f"{statistics.median(ratios):.2f}x"
            if len(ratios) > 1:
                ratio += f" ({min(ratios):.2f}-{max(ratios):.2f})"
            row += [fmt(statistics.median(r[key] for r in rounds) * scale), ratio]
        rows.append(row)
    if not on_cpu:
        return rows
    peak = statistics.median(r["peak_rss_mb"] for r in torch_rs)
    row = ["peak RSS / checkpoint size", f"{peak / checkpoint_mb:.2f}"]
    for rounds in janus_rs.values():
        row += [f"{statistics.median(r['peak_rss_mb'] for r in rounds) / checkpoint_mb:.2f}", ""]
    rows.append(row)
    return rows


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="original-layout checkpoint directory")
    ap.add_argument("--janus", default=str(ROOT / "target" / "release" / "janus"), help="the janus binary")
    ap.add_argument("--python", default=sys.executable, help="interpreter for torch_bench.py (default: this one)")
    ap.add_argument("--dtype", default="bf16", help="janus --dtype")
    ap.add_argument(
        "--torch-dtype",
        choices=["auto", "bf16", "f32"],
        default="auto",
        help="PyTorch's dtype; auto (default) takes the faster on this CPU",
    )
    ap.add_argument(
        "--quant",
        action="append",
        choices=["none", "q8", "q4"],
        help="janus quantisation; repeat to run janus once per value (default: none)",
    )
    ap.add_argument("--t2i-steps", type=int, default=32)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--threads", type=int, help="threads for both sides (default: all cores)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N], for both sides (default: cpu)")
    ap.add_argument("--json-out", type=Path, help="also write the rounds, ratios and machine as JSON here")
    ap.add_argument("--markdown", action="store_true", help="print a section ready for docs/benchmarks.md")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run everything this many times, alternating which side goes first; ratios are medians over rounds",
    )
    args = ap.parse_args()
    quants = list(dict.fromkeys(args.quant or ["none"]))
    model = str(args.model.resolve())
    workload = f"--t2i-steps {args.t2i_steps} --decode-tokens {args.decode_tokens} --parallel {args.parallel}".split()
    threads = ["--threads", str(args.threads)] if args.threads else []

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    info = {**machine(), **versions(args.python, args.janus)}
    torch_dt, torch_dt_why = torch_dtype(args.torch_dtype, args.python, args.threads, args.device)
    device = ["--device", args.device]
    torch_cmd = [
        args.python,
        str(ROOT / "scripts" / "bench" / "torch_bench.py"),
        "--model",
        model,
        *workload,
        *threads,
        "--dtype",
        torch_dt,
        *device,
        "--json",
    ]
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    commands = [torch_cmd]
    janus_cmds = {}
    for q in quants:
        quant = ["--quant", q] if q != "none" else []
        cmd = [args.janus, *threads, "bench", "--model", model, "--dtype", args.dtype, *quant, *device, *workload, "--json"]
        commands.append(cmd)
        janus_cmds[f"{args.dtype}{'' if q == 'none' else ' ' + q}"] = cmd
    torch_rs: list[dict] = []
    janus_rs: dict[str, list[dict]] = {name: [] for name in janus_cmds}
    for r in range(args.rounds):
        # Odd rounds (1st, 3rd, ...) start with PyTorch, even ones end with it.
        if r % 2 == 0:
            torch_rs.append(run_json(torch_cmd))
        for name, cmd in janus_cmds.items():
            janus_rs[name].append(run_json(cmd))
        if r % 2 == 1:
            torch_rs.append(run_json(torch_cmd))
    for rounds in janus_rs.values():
        for t, j in zip(torch_rs, rounds, strict=True):
            if j["prefill_tokens"] != t["prefill_tokens"]:
                raise SystemExit(
                    f"prefill lengths differ: PyTorch {t['prefill_tokens']}, janus {j['prefill_tokens']}"
                )
    files = weight_files(args.model)
    checkpoint_mb = sum(f.stat().st_size for f in files) / 2**20

    info = {
        "date": started,
        **info,
        "checkpoint": f"{model} ({', '.join(f.name for f in files)}, {checkpoint_mb:.0f} MiB)",
        "kernels": f"janus {MACHINE.get('kernels', '?')} ({MACHINE.get('threads', '?')} threads)",
        "memory read": f"{MACHINE['read_gb_s']:.1f} GB/s (measured by janus bench)" if "read_gb_s" in MACHINE else "?",
        "device": MACHINE.get("device", args.device),
        "PyTorch dtype": f"{torch_dt} ({torch_dt_why})",
        "threads": args.threads or f"all ({info['cores']})",
        "rounds": f"{args.rounds} (PyTorch first in odd rounds, last in even ones)" if args.rounds > 1 else "1",
        "load average": f"{load_before} before, {load_average()} after the runs (1, 5, 15 min)",
    }
    rows = table(torch_rs, janus_rs, checkpoint_mb, args.parallel, torch_dt, args.device == "cpu")
    if args.json_out:
        summary = {"info": info, "commands": [shlex.join(c) for c in commands], "torch": torch_rs, "janus": janus_rs}
        # Each "ratio" column named after the janus column before it, so that keys are unique.
        keys = [f"ratio, {rows[0][i - 1]}" if h == "ratio" else h for i, h in enumerate(rows[0])]
        summary["table"] = [dict(zip(keys, r, strict=True)) for r in rows[1:]]
        args.json_out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if args.markdown:
        print("| | |\n|---|---|")
        for k, v in info.items():
            print(f"| {k} | {v} |")
        runs = "one after the other" if args.rounds == 1 else f"one after the other, {args.rounds} rounds"
        print(f"\nCommands, run {runs}:\n\n```sh")
        for cmd in commands:
            print(shlex.join(cmd))
        print("```\n")
    else:
        for k, v in info.items():
            print(f"{k:13} {v}")
        for cmd in commands:
            print(f"$ {shlex.join(cmd)}")
        print()
    print(render(rows, args.markdown))
    print(f"\n{LEGEND}")


if __name__ == "__main__":
    main()
