#!/usr/bin/env bash
# Runs every test: the cmocka unit binaries given as arguments, then each
# integration test (tests/**/*_test.py with Debian's /usr/bin/python3, and
# tests/**/*_test.sh with bash).  Counts test cases, prints each failing
# file's output, and ends with the plain "N passed, N failed" line.
#
# Environment: SGPU_BIN (programs), SGPU_TEST_FILTER (substring of the test
# file paths to run), SGPU_TEST_TIMEOUT (seconds per file, default 300).
set -u
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
export SGPU_ROOT=$PWD
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
filter=${SGPU_TEST_FILTER:-}
tmo=${SGPU_TEST_TIMEOUT:-300}
passed=0
failed=0
failed_files=()
logdir=$(mktemp -d /tmp/sgpu-tests.XXXXXX)
export SGPU_TEST_LOGDIR=$logdir # tests may leave artifacts here (e.g. ui_test.py's screenshot)

run_one() { # kind path
    local kind=$1 path=$2 log rc p f
    log="$logdir/$(echo "$path" | tr '/' '_').log"
    case $kind in
    unit) timeout "$tmo" "$path" >"$log" 2>&1 ;;
    py) timeout "$tmo" /usr/bin/python3 "$path" -v >"$log" 2>&1 ;;
    sh) timeout "$tmo" bash "$path" >"$log" 2>&1 ;;
    esac
    rc=$?
    p=0
    f=0
    case $kind in
    unit)
        p=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | awk '{s+=$4} END{print s+0}')
        f=$(grep -oE '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END{print s+0}')
        ;;
    py)
        local ran
        ran=$(grep -oE '^Ran [0-9]+ test' "$log" | awk '{s+=$2} END{print s+0}')
        f=$(grep -oE '^FAILED \((failures|errors)=[0-9]+(, (failures|errors)=[0-9]+)?' "$log" |
            grep -oE '[0-9]+' | awk '{s+=$1} END{print s+0}')
        p=$((ran - f))
        ;;
    sh)
        p=$(grep -cE '^ok ' "$log")
        f=$(grep -cE '^not ok ' "$log")
        ;;
    esac
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
        failed_files+=("$path")
        printf 'FAIL %-50s (%d passed, %d failed, exit %d)\n' "$path" "$p" "$f" "$rc"
        sed 's/^/    | /' "$log" | tail -n 80
    else
        printf 'ok   %-50s (%d passed)\n' "$path" "$p"
    fi
}

for b in "$@"; do
    [ -n "$filter" ] && [[ $b != *"$filter"* ]] && continue
    run_one unit "$b"
done
while IFS= read -r t; do
    [ -n "$filter" ] && [[ $t != *"$filter"* ]] && continue
    case $t in
    *.py) run_one py "$t" ;;
    *.sh) run_one sh "$t" ;;
    esac
done < <(find tests -type f \( -name '*_test.py' -o -name '*_test.sh' \) | sort)

rm -rf "$logdir"
echo
if [ ${#failed_files[@]} -gt 0 ]; then
    echo "failing: ${failed_files[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
