#!/usr/bin/env bash
# Autobahn|Testsuite fuzzingclient against sluiceway serving bench/apps/ws_echo.py.
#
#   bench/autobahn.sh                 cases 1-7, 9, 10   (~25 s of cases, plus a one-time ~30 s install)
#   bench/autobahn.sh --compression   adds 12.* and 13.* (permessage-deflate: ~15 min more, CPU-heavy)
#   bench/autobahn.sh --only '["9.*"]'  any case list (JSON array)
#
# Needs pyenv's Python 2.7.18 and ../shared/autobahn/run.sh (or AUTOBAHN_RUN=/path/run.sh), which
# installs the suite under $AUTOBAHN_HOME (default /tmp/autobahn). The full report goes to
# $AUTOBAHN_OUT (default /tmp/sluiceway-autobahn: index.json, index.html); the summary is printed
# and saved as bench/results/autobahn.md.
# Exit status: 0 when no case FAILED, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CASES='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","9.*","10.*"]'
while [ $# -gt 0 ]; do
  case "$1" in
    --compression) CASES='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","9.*","10.*","12.*","13.*"]' ;;
    --only) shift; CASES="$1" ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

RUN="${AUTOBAHN_RUN:-$ROOT/../shared/autobahn/run.sh}"
[ -x "$RUN" ] || RUN=/work/shared/autobahn/run.sh
OUT="${AUTOBAHN_OUT:-/tmp/sluiceway-autobahn}"
SUMMARY="${AUTOBAHN_SUMMARY:-$ROOT/bench/results/autobahn.md}"
mkdir -p "$OUT"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The suite sends 16 MiB messages (9.x) and expects them echoed: raise the size limit to 64 MiB.
PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" \
  python3 -m sluiceway run bench.apps.ws_echo:app --host 127.0.0.1 --port "$PORT" --log-level warning \
  --ws-max-size 64MiB --ws-ping-interval 0 > "$OUT/server.log" 2>&1 &
SERVER=$!
stop_server() {
  kill -TERM "$SERVER" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$SERVER" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT

for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; then
    break
  fi
  kill -0 "$SERVER" 2>/dev/null || { echo "server died:"; cat "$OUT/server.log"; exit 1; }
  sleep 0.1
done

start=$(date +%s)
"$RUN" "ws://127.0.0.1:$PORT" sluiceway "$OUT" "$CASES" | grep -v '^WARNING: ' | tee "$SUMMARY"
echo "total wall time: $(( $(date +%s) - start )) s (cases $CASES)" | tee -a "$SUMMARY"
! grep -q '^FAILED' "$SUMMARY"
