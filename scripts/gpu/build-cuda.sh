#!/usr/bin/env bash
# Builds janus with candle's CUDA backend (and NCCL) on a machine without a system CUDA
# toolkit or GPU: NVIDIA's CUDA 13.0 toolkit wheels from PyPI, set up by
# ../shared/tools/cuda-toolkit.sh (13.0 matches the lent GPU machines' driver 580; a newer
# nvcc's PTX would not load there), plus the NCCL wheel, all under ~/.cache/cuda13; no
# system changes. On a machine with CUDA 13 and NCCL installed, plain cargo does the same:
#   cargo build --release -p janus-cli --features janus-cli/cuda,janus-cli/nccl
#
#   scripts/gpu/build-cuda.sh                 # that build, into target/cuda
#   scripts/gpu/build-cuda.sh test -p janus --features nccl --test nccl --no-run
#
# candle-kernels compiles its .cu files with nvcc for CUDA_COMPUTE_CAP (default 90, H100 /
# H200): about 10 minutes on 2 cores. At run time the binary needs libcuda (the driver),
# libcudart / libcublas / libcurand / libnccl (on the GPU machines: PyTorch's nvidia/*/lib
# folders, on LD_LIBRARY_PATH).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
toolkit=${CUDA_TOOLKIT_SCRIPT:-$root/../shared/tools/cuda-toolkit.sh}
if [ ! -f "$toolkit" ]; then
  echo "error: $toolkit not found: set CUDA_TOOLKIT_SCRIPT, or build with a system CUDA 13" \
    "toolkit and NCCL" >&2
  exit 1
fi
dir=${CUDA_WHEELS:-$HOME/.cache/cuda13}
eval "$(bash "$toolkit" "$dir")"
if [ ! -e "$dir/nccl/lib/libnccl.so.2" ]; then
  tmp=$(mktemp -d)
  python3 -m pip install -q --no-deps --target "$tmp" "nvidia-nccl-cu13==2.32.6" >&2
  mkdir -p "$dir/nccl"
  cp -r "$tmp/nvidia/nccl/." "$dir/nccl/"
  rm -rf "$tmp"
fi
# cudarc links NCCL by its unversioned name.
ln -sf "$dir/nccl/lib/libnccl.so.2" "$dir/link/libnccl.so"
export LIBRARY_PATH="$dir/link${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
cd "$root"
if [ $# -eq 0 ]; then
  set -- build --release -p janus-cli --features janus-cli/cuda,janus-cli/nccl
fi
exec cargo "$@"
