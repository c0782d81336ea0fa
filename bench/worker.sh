#!/usr/bin/env bash
# sgpu-worker bench: direct vs through the worker (wrk, loopback), CPU/request,
# added latency, RSS, start-up times, streamed-chunk delay.  About 60-70 s.
#   SGPU_BENCH_SECONDS=5 bash bench/worker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
command -v wrk >/dev/null || { echo "wrk missing (scripts/deps.sh)"; exit 1; }
exec /usr/bin/python3 bench/worker_bench.py
