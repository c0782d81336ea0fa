#!/usr/bin/env bash
# sgpu-gateway bench: added latency to first byte and gateway CPU per request against calling
# the worker directly with a grant, in one run (real engine + worker + stub model on loopback).
#   SGPU_BENCH_N=2000 bash bench/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
exec /usr/bin/python3 bench/gateway_bench.py
