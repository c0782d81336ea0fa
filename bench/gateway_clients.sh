#!/usr/bin/env bash
# Standard clients against sgpu-gateway (not a dependency of sgpu): the official `openai` npm
# client and Hugging Face's `@huggingface/inference`, installed into a scratch directory, drive a
# real stack (engine + local provider + embedded tiny model + gateway): models list/retrieve,
# chat and completions streamed and not, errors as API errors, 16 concurrent streams, an aborted
# stream freeing the worker, HF textGeneration(+Stream) and chatCompletion(+Stream).
# Skipped (exit 0) when node/npm or the npm registry is not available.  About 30 s.
#   SGPU_NPM_DIR=/tmp/x bash bench/gateway_clients.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node/npm missing: skipped"
    exit 0
fi
dir=${SGPU_NPM_DIR:-$PWD/.run/npm-gateway}
mkdir -p "$dir"
if [ ! -d "$dir/node_modules/openai" ] || [ ! -d "$dir/node_modules/@huggingface/inference" ]; then
    (cd "$dir" && [ -f package.json ] || echo '{"private": true, "type": "module"}' >package.json)
    if ! (cd "$dir" && npm install --no-audit --no-fund --silent openai@6.49.0 \
        @huggingface/inference@4.13.30 >/dev/null 2>&1); then
        echo "npm install failed (no registry?): skipped"
        exit 0
    fi
fi
cp bench/gateway_clients.mjs "$dir/"
exec /usr/bin/python3 bench/gateway_clients.py "$dir"
