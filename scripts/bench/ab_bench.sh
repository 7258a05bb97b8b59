#!/usr/bin/env bash
# Two janus binaries on the same checkpoint, alternating (AB, BA, ...), so that a drift of
# the machine's speed favours neither: one JSON line per run (round, binary, quant, load
# average, `janus bench --json`'s result).
#
#   scripts/bench/ab_bench.sh OUT.jsonl ROUNDS MODEL BIN_A BIN_B [QUANT...]
#
# QUANT: none (default), q8, q4; each binary runs once per QUANT in each round.
# Workload: --t2i-steps 16 --decode-tokens 16 (JANUS_BENCH_ARGS replaces it).
set -euo pipefail
if [[ $# -lt 5 ]]; then sed -n '2,9p' "$0"; exit 2; fi
out=$1 rounds=$2 model=$3 a=$4 b=$5
shift 5
quants=("${@:-none}")
read -r -a workload <<< "${JANUS_BENCH_ARGS:---t2i-steps 16 --decode-tokens 16}"
: > "$out"
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then order=("$a" "$b"); else order=("$b" "$a"); fi
  for bin in "${order[@]}"; do
    for q in "${quants[@]}"; do
      qa=()
      [[ $q != none ]] && qa=(--quant "$q")
      line=$("$bin" -q bench --model "$model" "${qa[@]}" "${workload[@]}" --json | tail -1)
      printf '{"round": %d, "bin": "%s", "quant": "%s", "load": %s, "result": %s}\n' \
        "$r" "$bin" "$q" "$(cut -d' ' -f1 /proc/loadavg)" "$line" >> "$out"
    done
  done
done
