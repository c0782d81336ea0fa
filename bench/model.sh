#!/usr/bin/env bash
# sgpu-model benchmark: sgpu-model vs llama.cpp (npm node-llama-cpp@3.21.1,
# prebuilt linux-x64 libraries) on the same generated ~125M-parameter Llama
# GGUF files (Q8_0, Q4_K_M and F32), same thread count, measured in one run.
# node-llama-cpp is installed into a scratch directory (SGPU_BENCH_DIR, default
# /tmp/sgpu-bench-model), never into the sgpu tree.  If it cannot be installed,
# sgpu's numbers are reported alone.
#   SGPU_BENCH_THREADS (2), SGPU_BENCH_TOKENS (128), SGPU_BENCH_REPS (2), SGPU_BENCH_TYPES (q8_0,q4_k_m,f32)
set -u
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
dir=${SGPU_BENCH_DIR:-/tmp/sgpu-bench-model}
mkdir -p "$dir"
lcdir=""
if command -v node >/dev/null && command -v npm >/dev/null; then
    if [ ! -d "$dir/llamacpp/node_modules/node-llama-cpp" ]; then
        mkdir -p "$dir/llamacpp"
        (cd "$dir/llamacpp" && echo '{"name":"sgpu-bench-llamacpp","private":true,"type":"module"}' >package.json &&
            npm install --no-audit --no-fund node-llama-cpp@3.21.1 >npm.log 2>&1) ||
            echo "bench/model.sh: npm install node-llama-cpp@3.21.1 failed (see $dir/llamacpp/npm.log); sgpu only" >&2
    fi
    [ -d "$dir/llamacpp/node_modules/node-llama-cpp" ] && lcdir="$dir/llamacpp"
else
    echo "bench/model.sh: node/npm not found; reporting sgpu-model alone" >&2
fi
exec /usr/bin/python3 bench/model_bench.py "$dir" --threads "${SGPU_BENCH_THREADS:-2}" \
    --tokens "${SGPU_BENCH_TOKENS:-128}" --reps "${SGPU_BENCH_REPS:-2}" \
    --types "${SGPU_BENCH_TYPES:-q8_0,q4_k_m,f32}" ${lcdir:+--llamacpp-dir "$lcdir"}
