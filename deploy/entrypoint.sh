#!/bin/sh
# The container's entrypoint: `janus serve` configured from the environment, exec'd so that
# the SIGTERM Kubernetes sends reaches janus itself (it then stops accepting connections and
# lets running requests finish within JANUS_SHUTDOWN_GRACE seconds).
#
#   JANUS_MODEL           model directory (a mounted volume) or hub repo id
#                         (default /models/Janus-Pro-1B; hub ids download into HF_HOME)
#   JANUS_DTYPE           auto | f32 | bf16 (default auto)
#   JANUS_QUANT           none | q8 | q4 (default none)
#   JANUS_PORT            port (default 8080); JANUS_HOST address (default 0.0.0.0)
#   JANUS_MAX_QUEUE       requests that may wait before 429s (default 16)
#   JANUS_SHUTDOWN_GRACE  seconds running requests get after SIGTERM (default 120: an image
#                         batch takes a minute or two on a few cores)
#   JANUS_API_KEY         require this bearer token (read by janus from the environment,
#                         so it never appears in the process list)
#   JANUS_BIN             the janus binary (default: janus on PATH)
# Arguments are passed on to `janus serve` after these.
set -eu

case "${JANUS_MODEL:=/models/Janus-Pro-1B}" in
  /*)
    if [ ! -d "$JANUS_MODEL" ]; then
      echo "error: JANUS_MODEL=$JANUS_MODEL is not a directory: mount the model volume there," \
        "or set JANUS_MODEL to a hub repo id" >&2
      exit 2
    fi
    ;;
esac

exec "${JANUS_BIN:-janus}" serve \
  --model "$JANUS_MODEL" \
  --dtype "${JANUS_DTYPE:-auto}" \
  --quant "${JANUS_QUANT:-none}" \
  --host "${JANUS_HOST:-0.0.0.0}" \
  --port "${JANUS_PORT:-8080}" \
  --max-queue "${JANUS_MAX_QUEUE:-16}" \
  --shutdown-grace "${JANUS_SHUTDOWN_GRACE:-120}" \
  "$@"
