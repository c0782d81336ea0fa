#!/usr/bin/env bash
# sgpu-engine benchmarks: /route/ throughput per signing scheme (routes per engine CPU-second,
# next to the RSA-2048 sign ceiling) and a recorded bursty trace replayed through the
# autoscaler vs fixed pools sized for the peak and for the mean.  See docs/benchmarks.md#sgpu-engine-issue-4.
# Usage: bash bench/engine.sh [routes] [trace]      (~4 min for both)
set -eu
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
exec /usr/bin/python3 bench/engine_bench.py "$@"
