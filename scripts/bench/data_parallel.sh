#!/usr/bin/env bash
# Training throughput of one process against `mpirun -np 2` on this machine (docs/training.md,
# "Measured on this machine"): 1 process x 1 thread, 1 x 2 threads and 2 ranks x 1 thread,
# alternating, each ROUNDS times; prints tokens/s, seconds per step and the gradient-sum time
# over steps 2..STEPS (step 1 is left out: it warms caches).
#   scripts/bench/data_parallel.sh JANUS MODEL_DIR MANIFEST [ROUNDS] [STEPS]
# JANUS must be built with `--features janus-cli/mpi`. The measured run used the shapes
# model and data of scripts/train/learn_shapes.py (its stage-3 model).
set -euo pipefail
janus=$1 model=$2 data=$3 rounds=${4:-2} steps=${5:-8}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Containers forbid the cross-memory attach Open MPI's shared memory tries first.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
common=(train --recipe janus-pro/stage3 --model "$model" --data "$data" --vq-cache "$out/cache"
  --batch-size 16 --micro-batch-size 4 --save-every 0)
# Every step's VQ codes once, outside the timed runs (the first timed run would encode them).
"$janus" -q "${common[@]}" --steps "$steps" --out "$out/warm" >/dev/null
args=("${common[@]}" --steps "$steps")
for r in $(seq "$rounds"); do
  "$janus" -q --threads 1 "${args[@]}" --out "$out/r$r-1x1" >/dev/null
  "$janus" -q --threads 2 "${args[@]}" --out "$out/r$r-1x2" >/dev/null
  mpirun --bind-to core -np 2 "$janus" -q --threads 1 "${args[@]}" --out "$out/r$r-2x1" >/dev/null
done
for d in "$out"/r*; do
  python3 - "$d" <<'PY'
import json, sys, os
d = sys.argv[1]
m = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if '"eval"' not in l][1:]
t = sum(x["tokens"] for x in m); s = sum(x["seconds"] for x in m)
sync = sum(x.get("sync_seconds", 0) for x in m) / len(m)
print(f"{os.path.basename(d)}: {t / s:.0f} tok/s, {s / len(m):.2f} s/step, "
      f"sum {1000 * sync:.1f} ms/step, final loss {m[-1]['loss']:.8f}")
PY
done
