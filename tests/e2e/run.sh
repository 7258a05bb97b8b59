#!/usr/bin/env bash
# End-to-end tests of `janus serve` on the tiny fixture model (see tests/e2e/README.md):
# builds the binary, sets up a Python venv and node_modules from the pinned files, installs
# Debian's chromium if it is missing, then runs pytest (official openai client), the
# Playwright browser test and the load test. Everything runs on loopback.
#
#   tests/e2e/run.sh [--quick]
#
#   --quick   the CI size: a smaller load test (12 mixed requests, K=2)
#
# Environment: E2E_VENV (default target/e2e-venv), JANUS_BIN (default target/debug/janus),
# CHROMIUM (default /usr/bin/chromium), LOAD_JSON (write the load test's numbers there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$ROOT/tests/e2e"
cd "$ROOT"

QUICK=()
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=(--quick) ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

export JANUS_BIN="${JANUS_BIN:-$ROOT/target/debug/janus}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
VENV="${E2E_VENV:-$ROOT/target/e2e-venv}"

T0=$SECONDS
step() { printf '\n=== %s (%ds)\n' "$1" "$((SECONDS - T0))"; }

step "cargo build -p janus-cli"
cargo build -p janus-cli --locked
T_BUILT=$SECONDS

step "python venv ($VENV)"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
# Reinstall only when requirements.txt changed since the last install.
if ! cmp -s "$E2E/requirements.txt" "$VENV/.e2e-requirements.txt"; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$E2E/requirements.txt"
  cp "$E2E/requirements.txt" "$VENV/.e2e-requirements.txt"
fi

step "node modules (npm ci)"
(cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error)

if [[ ! -x "$CHROMIUM" ]]; then
  step "install chromium (Debian package)"
  SUDO=()
  [[ $(id -u) -ne 0 ]] && SUDO=(sudo)
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium >/dev/null
fi

step "pytest: official openai client"
"$VENV/bin/python" -m pytest "$E2E" -q -p no:cacheprovider

step "browser test (playwright-core, chromium)"
# Screenshots go under target/ so a test run leaves docs/screenshots as committed (refresh
# those with a plain `node tests/e2e/browser.mjs`).
mkdir -p "$ROOT/target/e2e"
node "$E2E/browser.mjs" --screenshot "$ROOT/target/e2e/web.png"

step "load test ${QUICK[*]:-}"
LOAD_ARGS=("${QUICK[@]}")
[[ -n "${LOAD_JSON:-}" ]] && LOAD_ARGS+=(--json "$LOAD_JSON")
"$VENV/bin/python" "$E2E/load_test.py" "${LOAD_ARGS[@]}"

printf '\n=== e2e ok: %ds in all, %ds after the build\n' "$((SECONDS - T0))" "$((SECONDS - T_BUILT))"
