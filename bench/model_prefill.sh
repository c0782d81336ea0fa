#!/usr/bin/env bash
# sgpu-model prompt processing (issue 12): prefill tok/s and time to first
# token for 128/512/2048-token prompts against llama.cpp (npm
# node-llama-cpp@3.21.1, prebuilt linux-x64 libraries) on the same generated
# ~125M-parameter Llama GGUF files (Q8_0, F16, Q4_K_M; context 4096), same
# thread count, in one run; then the p50/p99 decode-step latency of 8 running
# streams while a 2048-token prompt arrives, for several --prefill-chunk
# values (0 = whole prompt in one step), each with and without the adaptive
# per-step prompt budget (--prefill-step-ratio 0 and R).  node-llama-cpp is installed into a
# scratch directory (SGPU_BENCH_DIR, default /tmp/sgpu-bench-model), never
# into the sgpu tree; without it sgpu's numbers are reported alone.
#   SGPU_BENCH_THREADS (2), SGPU_BENCH_REPS (2), SGPU_BENCH_TYPES (q8_0,f16,q4_k_m),
#   SGPU_BENCH_LENS (128,512,2048), SGPU_BENCH_CHUNKS (0,128,256,512),
#   SGPU_BENCH_RATIOS (0,1.8), SGPU_BENCH_STREAM_TOKENS (1200: the streams outlive the
#   budgeted prompt)
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
            echo "bench/model_prefill.sh: npm install node-llama-cpp@3.21.1 failed (see $dir/llamacpp/npm.log); sgpu only" >&2
    fi
    [ -d "$dir/llamacpp/node_modules/node-llama-cpp" ] && lcdir="$dir/llamacpp"
else
    echo "bench/model_prefill.sh: node/npm not found; reporting sgpu-model alone" >&2
fi
exec /usr/bin/python3 bench/model_prefill.py "$dir" --threads "${SGPU_BENCH_THREADS:-2}" \
    --reps "${SGPU_BENCH_REPS:-2}" --types "${SGPU_BENCH_TYPES:-q8_0,f16,q4_k_m}" \
    --lens "${SGPU_BENCH_LENS:-128,512,2048}" --chunks "${SGPU_BENCH_CHUNKS:-0,128,256,512}" \
    --ratios "${SGPU_BENCH_RATIOS:-0,1.8}" --stream-tokens "${SGPU_BENCH_STREAM_TOKENS:-1200}" \
    ${lcdir:+--llamacpp-dir "$lcdir"}
