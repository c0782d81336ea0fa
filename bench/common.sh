#!/usr/bin/env bash
# bench/common.sh: µs/op of the common library hot paths (RSA verify, base64,
# pyjson parse/dump of a ~1 KB request envelope), via bin/fixtures/common_bench.
# 3 runs pinned to CPU 0 (if taskset exists); each run reports the median of
# 5 batches of CPU time; the table shows the median of the 3 runs and all 3.
# Takes about 13 s.  Usage: bash bench/common.sh   (SGPU_BIN=dir of programs)
set -u
cd "$(dirname "$0")/.."
BIN=${SGPU_BIN:-$PWD/bin}
tool=$BIN/fixtures/common_bench
[ -x "$tool" ] || { echo "missing $tool (run make)"; exit 1; }
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
runs=()
for i in 1 2 3; do
    runs[$i]=$("${pin[@]}" "$tool" 0.1) || exit 1
done
printf '%-20s %12s   %s\n' metric median "runs"
for key in $(echo "${runs[1]}" | awk '{print $1}'); do
    vals=$(for i in 1 2 3; do echo "${runs[$i]}" | awk -v k="$key" '$1==k{print $2}'; done)
    med=$(echo "$vals" | sort -g | sed -n 2p)
    printf '%-20s %12s   %s\n' "$key" "$med" "$(echo $vals | tr ' ' ',')"
done
# Cross-check: OpenSSL's own RSA-2048 verify rate on the same CPU.
if command -v openssl >/dev/null; then
    "${pin[@]}" openssl speed -seconds 1 rsa2048 2>/dev/null |
        awk '/^rsa 2048/ {printf "openssl_speed_rsa2048_verify_us %.2f\n", $5 * 1e6}'
fi
