#!/usr/bin/env bash
# make bench: runs every bench/*.sh in order (each prints its own table of
# ratios measured side by side in the same run).  SGPU_BENCH_FILTER picks one.
set -u
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
export SGPU_ROOT=$PWD
rc=0
for b in bench/*.sh; do
    [ -e "$b" ] || continue
    [ -n "${SGPU_BENCH_FILTER:-}" ] && [[ $b != *"$SGPU_BENCH_FILTER"* ]] && continue
    echo "=== $b"
    bash "$b" || rc=1
done
exit $rc
