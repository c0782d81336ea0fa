#!/usr/bin/env bash
# Queueing latency after a cold start, through the real stack (engine + local provider +
# sgpu-launch + the embedded tiny model): `sgpu load` at R rps starts right after the endpoint
# and its workergroup are created (no worker yet), so the first requests queue while the worker
# loads.  With FIRST_CALL=1 it instead waits for the (parked) worker and times one `sgpu call`.
# Realistic start times (the local provider's injected delays, docs/engine.md "`local` launch
# spec"): CREATE_DELAY_S, RESUME_DELAY_S, MODEL_LOAD_DELAY_S (seconds; default 0).
# Usage: bash bench/engine_coldstart.sh [N] [RPS]     (SGPU_BIN: programs, default ./bin)
# Prints sgpu load's summary (waited, retried, latency and grant-time percentiles).
set -u
cd "$(dirname "$0")/.."
BIN=${SGPU_BIN:-$PWD/bin}
N=${1:-200}
RPS=${2:-20}
D=$(mktemp -d /tmp/sgpu-coldstart.XXXXXX)
"$BIN/sgpu-engine" --data-dir "$D/data" --listen 127.0.0.1:0 >"$D/engine.log" 2>&1 &
EP=$!
trap 'kill -TERM $EP; wait $EP; rm -rf "$D"' EXIT
for _ in $(seq 100); do [ -s "$D/data/engine.addr" ] && break; sleep 0.1; done
export SGPU_DATA_DIR=$D/data
DATA='{"inputs": "Hi", "parameters": {"max_new_tokens": 8}}'
if [ "${FIRST_CALL:-0}" = 1 ]; then
    "$BIN/sgpu" endpoint create demo cold_workers=1 max_workers=2 target_util=0.9 >/dev/null
else
    "$BIN/sgpu" endpoint create demo cold_workers=0 max_workers=2 target_util=0.9 >/dev/null
fi
CD=${CREATE_DELAY_S:-0} RD=${RESUME_DELAY_S:-0} MD=${MODEL_LOAD_DELAY_S:-0}
LAUNCH=$(printf '{"env": {"SGPU_BENCHMARK_RUNS": "1"}, "create_delay_s": %s, "resume_delay_s": %s, "model_load_delay_s": %s}' \
    "$CD" "$RD" "$MD")
"$BIN/sgpu" workergroup create --endpoint demo --launch "$LAUNCH" >/dev/null || exit 1
if [ "${FIRST_CALL:-0}" = 1 ]; then
    for _ in $(seq $((900 + 5 * ${CD%.*} + 5 * ${MD%.*}))); do
        s=$("$BIN/sgpu" worker list --json | /usr/bin/python3 -c \
            'import json,sys; print(" ".join(w["status"] for w in json.load(sys.stdin)))')
        case " $s " in *" idle "* | *" stopped "*) break ;; esac
        sleep 0.2
    done
    "$BIN/sgpu" call --endpoint demo --data "$DATA" --show-worker 2>&1 >/dev/null
    exit
fi
"$BIN/sgpu" load --endpoint demo -n "$N" --rps "$RPS" --json --data "$DATA" 2>/dev/null |
    /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print(" ".join("%s=%s" % (k, d[k]) for k in ("sent", "ok", "waited", "retried")),
      "latency_s", d["latency_s"], "grant_s", d["grant_s"])'
