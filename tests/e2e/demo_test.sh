#!/usr/bin/env bash
# `make run` path: scripts/run-demo.sh up to its first streamed call, then a clean shutdown.
set -u
cd "$(dirname "$0")/../.."
dir=$(mktemp -d /tmp/sgpu-demo-test.XXXXXX)
out=$dir/out.txt
SGPU_DEMO_EXIT_AFTER_CALL=1 SGPU_DEMO_DIR=$dir/demo SGPU_DEMO_LISTEN=127.0.0.1:0 \
    timeout 150 bash scripts/run-demo.sh >"$out" 2>&1
rc=$?
if [ $rc -eq 0 ]; then echo "ok 1 run-demo.sh exits 0 after the first call"; else
    echo "not ok 1 run-demo.sh exits 0 after the first call (exit $rc)"; sed 's/^/# /' "$out"; fi
if grep -q 'status=200' "$out" && grep -q '^  > ' "$out"; then echo "ok 2 streamed call served"; else
    echo "not ok 2 streamed call served"; fi
if grep -q 'Stopped.' "$out"; then echo "ok 3 clean shutdown"; else echo "not ok 3 clean shutdown"; fi
if grep -q 'gateway chat: ok' "$out"; then echo "ok 5 OpenAI chat through sgpu-gateway"; else
    echo "not ok 5 OpenAI chat through sgpu-gateway"; fi
# nothing of the demo may survive it
sleep 0.5
left=$(ps -eo pid,args | grep -F "$dir/demo" | grep -v grep | awk '{print $1}')
if [ -z "$left" ]; then echo "ok 4 no process left"; else
    echo "not ok 4 processes left: $left"; for p in $left; do kill -9 "$p" 2>/dev/null; done; fi
rm -rf "$dir"
