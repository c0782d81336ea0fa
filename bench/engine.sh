#!/usr/bin/env bash
# sgpu-engine benchmarks: /route/ throughput per signing scheme (routes per engine CPU-second,
# next to the RSA-2048 sign ceiling), a recorded bursty trace replayed through the
# autoscaler vs fixed pools sized for the peak and for the mean
# (docs/benchmarks.md#sgpu-engine-issue-4), and the policies with realistic instance start
# times: sgpu vs Knative's KPA vs peak- and mean-sized pools on the bursty and a diurnal trace
# (docs/benchmarks.md#autoscaling-policies-with-realistic-start-times-issue-14).
# Usage: bash bench/engine.sh [routes] [trace] [policies]   (~4 min + ~7 min)
set -eu
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
which=("$@")
[ ${#which[@]} -eq 0 ] && which=(routes trace policies)
rest=()
for w in "${which[@]}"; do [ "$w" != policies ] && rest+=("$w"); done
[ ${#rest[@]} -gt 0 ] && /usr/bin/python3 bench/engine_bench.py "${rest[@]}"
for w in "${which[@]}"; do
    [ "$w" = policies ] && /usr/bin/python3 bench/engine_policies.py
done
exit 0
