#!/usr/bin/env bash
# The GPU check, in one run of under ten minutes on a lent H100 / H200 (issue 20): the
# parity suites on the GPU, then janus against PyTorch bf16 on the same random full-size
# Janus-Pro-1B, side by side, and one JSON summary on stdout (and in $OUT).
#
# Built here first with scripts/gpu/bundle.sh; then, through the device tool:
#   run  command "scripts/gpu/device-check.sh"  carry ["gpu-bundle"]  timeout_s 600
#
# Steps (each one's log goes to $OUT; a failing step, or one past its time, is recorded and
# the next one runs; a step is skipped when the run's budget, BUDGET seconds from the
# start, 570 by default, would not leave it STEP_MIN seconds):
#   1. the GPU, driver and libraries: PyTorch's NVIDIA wheels provide libcudart, cuBLAS,
#      cuRAND, NVRTC and NCCL (put on LD_LIBRARY_PATH), the driver provides libcuda;
#   2. tests/parity and tests/train_parity with JANUS_TEST_DEVICE=cuda: float32 within
#      1e-4 of the PyTorch goldens, greedy tokens and image codes identical, bf16 and f16
#      within the CPU's tolerances; losses, gradients and AdamW steps as on the CPU;
#   3. tests/nccl: a one-GPU NCCL all-reduce (a skip counts as a failure here);
#   4. a random Janus-Pro-1B (scripts/bench/make_random_checkpoint.py, from the
#      published listing), `janus bench --device cuda` against torch_bench.py on cuda in
#      bf16 (scripts/bench/side_by_side.py, 2 alternating rounds) at P = 1 and P = 16;
#   5. `janus generate --parallel 16` of one whole image batch on that checkpoint: the
#      sampling time of 16 images.
# The summary is rewritten after every step, so a run cut short still leaves one.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle=${JANUS_GPU_BUNDLE:-$root/gpu-bundle}
out=${OUT:-/tmp/janus-gpu-out}
work=${JANUS_GPU_WORK:-/tmp/janus-gpu}
mkdir -p "$out" "$work"
cd "$root"
export PYTHONUNBUFFERED=1
started=$(date +%s)
deadline=$((started + ${BUDGET:-570}))
gpu="unknown"
commit="unknown"
declare -A status
order=()

summary() { # the JSON summary, from the steps so far
  python3 - "$out" "$gpu" "$commit" "$(($(date +%s) - started))" \
    "$(for k in "${order[@]}"; do printf '%s=%s;' "$k" "${status[$k]}"; done)" \
    >"$out/summary.json" <<'EOF'
import json, sys
from pathlib import Path
out, gpu, commit, seconds, steps = sys.argv[1:6]
summary = {"gpu": gpu, "commit": commit, "seconds": int(seconds)}
summary["steps"] = dict(kv.split("=", 1) for kv in steps.split(";") if kv)
for p in ("1", "16"):
    f = Path(out) / f"bench-p{p}.json"
    if f.exists():
        summary[f"bench_p{p}"] = json.loads(f.read_text())["table"]
gen = Path(out) / "generate-p16.log"
if gen.exists():
    lines = [ln for ln in gen.read_text().splitlines() if ln.startswith("{")]
    if lines:
        summary["generate_p16"] = json.loads(lines[-1]).get("timings")
print(json.dumps(summary, indent=1))
EOF
}

step() { # name command...: runs a step within the budget, its output into $out/name.log
  local name=$1
  shift
  local t0 left
  t0=$(date +%s)
  left=$((deadline - t0))
  order+=("$name")
  if [ "$left" -lt "${STEP_MIN:-20}" ]; then
    status[$name]="skipped (out of time)"
  elif timeout -k 10 "$left" "$@" >"$out/$name.log" 2>&1; then
    status[$name]="passed"
  else
    status[$name]="failed ($?)"
  fi
  echo "== $name: ${status[$name]} in $(($(date +%s) - t0)) s" >&2
  [ -f "$out/$name.log" ] && tail -n 5 "$out/$name.log" >&2
  summary
}

# 1. Libraries, the bundle, the GPU.
site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
for lib in "$site"/nvidia/*/lib; do
  [ -d "$lib" ] && LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH
if [ ! -f "$bundle/janus-gpu.tar.xz" ]; then
  echo "error: $bundle/janus-gpu.tar.xz is missing: run scripts/gpu/bundle.sh and carry gpu-bundle" >&2
  exit 1
fi
tar -C "$work" -xJf "$bundle/janus-gpu.tar.xz"
commit=$(tr '\n' ' ' <"$work/commit")
# The tests find fixtures/ under the checkout they were built in: point that path here.
built_in=$(cat "$work/built-in")
if [ "$built_in" != "$root" ]; then
  if [ -L "$built_in" ] || [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")" && ln -sfn "$root" "$built_in"
  else
    echo "warning: $built_in exists: the tests read the fixtures there" >&2
  fi
fi
janus=$work/bin/janus
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1)
# ldd -r: every library found and every symbol resolved (NCCL and cuBLAS versions).
step gpu-info sh -ec "nvidia-smi; ldd -r '$janus' '$work/tests/nccl' | tee /dev/stderr |
  (! grep -q 'not found\|undefined symbol'); '$janus' --version"

# 2 and 3. Parity on the GPU, and NCCL.
for t in parity train_parity; do
  step "$t" env JANUS_TEST_DEVICE=cuda "$work/tests/$t" --test-threads 1
done
step nccl sh -c "'$work/tests/nccl' --test-threads 1 --nocapture 2>&1 | tee /dev/stderr |
  (! grep -q SKIPPED)"

# 4. Side by side against PyTorch on a random full-size checkpoint, with the transformers
# the benchmark was written for.
python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$bundle"/whl/*.whl \
  >"$out/pip.log" 2>&1 || echo "warning: carried wheels did not install (see pip.log)" >&2
export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
step python python3 -c "import transformers; from transformers import JanusForConditionalGeneration;
print(transformers.__version__)"
model=$work/janus-pro-1b
step checkpoint python3 scripts/bench/make_random_checkpoint.py --shape janus-pro-1b \
  --out "$model" --format safetensors --listings fixtures/checkpoints
for p in 1 16; do
  step "bench-p$p" python3 scripts/bench/side_by_side.py --model "$model" --janus "$janus" \
    --device cuda --parallel "$p" --t2i-steps 32 --decode-tokens 32 --rounds 2 --markdown \
    --json-out "$out/bench-p$p.json"
done

# 5. A whole batch of 16 images.
step generate-p16 "$janus" generate --model "$model" --device cuda --prompt "a red fox in snow" \
  --parallel 16 --seed 1 --out "$work/images" --json

cat "$out/summary.json"
