#!/usr/bin/env bash
# Builds what scripts/gpu/device-check.sh runs on a lent GPU machine (which cannot build
# Rust and reaches no registry) into gpu-bundle/ (git-ignored; the device tool carries it):
#   janus-gpu.tar.xz  the `cuda,nccl` release binary and the parity, training-parity and
#                     NCCL test executables, stripped of debug info, with the checkout path
#                     they were built in (the tests find fixtures/ through it);
#   whl/              transformers 4.57 and the versions it pins, for the PyTorch side (the
#                     GPU image's transformers 5 lacks the API torch_bench.py uses).
#
#   scripts/gpu/bundle.sh            # then: device run, carry ["gpu-bundle"],
#                                    #   command "scripts/gpu/device-check.sh"
#
# The first build takes about half an hour on 2 cores (candle-kernels' nvcc step);
# CARGO_TARGET_DIR (default target/cuda) keeps it for the next time.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$root/gpu-bundle
build=scripts/gpu/build-cuda.sh
features=janus-cli/cuda,janus-cli/nccl
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}

"$build" build --release --locked -p janus-cli --features "$features" >&2
# The test executables' paths, from cargo's messages.
tests=$("$build" test --release --locked -p janus --features cuda,nccl \
  --test parity --test train_parity --test nccl --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])
')

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/tests"
objcopy --strip-debug "$CARGO_TARGET_DIR/release/janus" "$stage/bin/janus"
for t in $tests; do
  # parity-0123abcd -> parity
  name=$(basename "$t")
  objcopy --strip-debug "$t" "$stage/tests/${name%-*}"
done
for want in parity train_parity nccl; do
  if [ ! -x "$stage/tests/$want" ]; then
    echo "error: cargo built no $want test executable" >&2
    exit 1
  fi
done
echo "$root" > "$stage/built-in"
git rev-parse --short HEAD > "$stage/commit"
[ -z "$(git status --porcelain)" ] || echo "(with uncommitted changes)" >> "$stage/commit"

rm -rf "$out"
mkdir -p "$out/whl"
tar -C "$stage" -cJf "$out/janus-gpu.tar.xz" .
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$out/whl" "transformers==4.57.6" "huggingface-hub==0.36.0" "tokenizers==0.22.2" >&2
du -sh "$out" "$out"/* >&2
# The device tool carries the tracked tree and the bundle together, 64 MiB at most.
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
total=$(( ($(du -sb "$out" | cut -f1) + tree) >> 20 ))
echo "bundle and tree: $total MiB" >&2
if [ "$total" -ge 63 ]; then
  echo "error: the bundle and the tree come to $total MiB; the device tool carries 64 MiB" >&2
  exit 1
fi
