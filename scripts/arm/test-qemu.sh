#!/usr/bin/env bash
# Cross-builds the janus library's tests for aarch64 and runs the kernel tests
# (`kernels::`) under qemu-user once per ARM kernel level, each on an emulated CPU that has
# that level and nothing above it, with the level forced through JANUS_KERNELS and its
# detection checked. TESTS names integration tests of the janus crate to run at each level
# as well: `parity` (the tiny models against the PyTorch goldens) and `quant` (q8/q4 models
# against bf16) pass, but emulation makes them slow (over an hour each a level on the
# 2-core build machine), so none runs by default.
#
#   scripts/arm/test-qemu.sh                        # kernel tests at every level
#   LEVELS="neon" scripts/arm/test-qemu.sh          # some levels only
#   FILTER=kernels::quant scripts/arm/test-qemu.sh  # some tests only
#   LEVELS=neon-bf16 TESTS="parity quant" scripts/arm/test-qemu.sh
#
# Installs what it lacks (Debian's qemu-user, gcc-aarch64-linux-gnu and the arm64 libc;
# the rustup target), builds into its own target directory (target/aarch64-qemu, or
# $ARM_TARGET_DIR) and sets the linker and runner in its own environment only. Safe to
# run again: nothing is installed or rebuilt twice. Exits non-zero if any run fails.
# Timings under emulation say nothing about speed on ARM hardware.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
TARGET_DIR=${ARM_TARGET_DIR:-target/aarch64-qemu}
LEVELS=${LEVELS:-plain neon neon-dotprod neon-bf16}
FILTER=${FILTER:-kernels::}
TESTS=${TESTS:-}

# Emulated CPU per level: the lowest qemu model with the level's features (cortex-a72:
# NEON only; neoverse-n1: + dotprod; max: + bf16, i8mm), and the level detection must
# find on it. `plain` runs on the NEON CPU: the level is only forced there.
cpu_of() {
    case "$1" in
    plain | neon) echo cortex-a72 ;;
    neon-dotprod) echo neoverse-n1 ;;
    neon-bf16) echo max ;;
    *) echo "unknown level $1 (plain, neon, neon-dotprod, neon-bf16)" >&2; exit 2 ;;
    esac
}
detected_on() {
    case "$1" in
    cortex-a72) echo neon ;;
    neoverse-n1) echo neon-dotprod ;;
    max) echo neon-bf16 ;;
    esac
}

# --- Tools -------------------------------------------------------------------------
missing=()
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || missing+=(libc6-dev-arm64-cross)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "== rustup target add $TARGET"
    rustup target add "$TARGET"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TERM_COLOR=never

# --- Build -------------------------------------------------------------------------
tests=(--lib)
for t in $TESTS; do tests+=(--test "$t"); done
echo "== building ${tests[*]} for $TARGET into $TARGET_DIR"
start=$(date +%s)
cargo test -p janus "${tests[@]}" --target "$TARGET" --target-dir "$TARGET_DIR" --locked --no-run
echo "   built in $(($(date +%s) - start)) s"

# --- Runs --------------------------------------------------------------------------
summary=()
failed=0
log_dir="$TARGET_DIR/qemu-logs"
mkdir -p "$log_dir"
run() { # level, what, cargo test selection and filter...
    local level=$1 what=$2
    shift 2
    local cpu
    cpu=$(cpu_of "$level")
    local log="$log_dir/$level-$what.log"
    echo "== $what at $level (qemu -cpu $cpu)"
    local t0 status=ok
    t0=$(date +%s)
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu -L $SYSROOT" \
        JANUS_KERNELS=$level JANUS_EXPECT_DETECTED=$(detected_on "$cpu") \
        cargo test -p janus --target "$TARGET" --target-dir "$TARGET_DIR" --locked "$@" \
        >"$log" 2>&1 || status=FAILED
    local secs=$(($(date +%s) - t0))
    local result
    result=$(grep -E '^test result:' "$log" | tail -1 | sed -E 's/^test result: [A-Za-z]+\. //; s/; finished in.*//' || true)
    [ -n "$result" ] || result="no test result (see $log)"
    if [ "$status" != ok ]; then
        failed=1
        grep -E '^(---- |thread .* panicked|failures:$)' "$log" | head -20 || true
    fi
    summary+=("$(printf '%-13s %-14s %-12s %-7s %5d s  %s' "$level" "$what" "$cpu" "$status" "$secs" "$result")")
}
for level in $LEVELS; do
    run "$level" kernels --lib -- "$FILTER"
done
for level in $LEVELS; do
    for t in $TESTS; do
        run "$level" "$t" --test "$t"
    done
done

echo
echo "== summary (logs in $log_dir; emulated: times say nothing about ARM speed)"
printf '%-13s %-14s %-12s %-7s %7s  %s\n' level tests qemu-cpu status time result
printf '%s\n' "${summary[@]}"
exit $failed
