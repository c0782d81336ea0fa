#!/bin/sh
# Install the Debian packages sgpu needs to build, test and benchmark.
# Idempotent and quiet when everything is present: it asks dpkg first and
# only calls apt-get for what is missing.
#
# --lint: only what `make lint` runs (clang-format, cppcheck).
#
# --no-sudo (plain `make`): install only when running as root; otherwise name
# the missing packages and how to install them, and fail, instead of asking
# for a sudo password in the middle of a build.
set -eu

PKGS="build-essential pkg-config libevent-dev libssl-dev libjson-c-dev \
libsqlite3-dev libcmocka-dev python3 python3-pycryptodome python3-jinja2 openssl curl wrk"

# unicode-data: the tokenizers' Unicode tables are generated from it at build time
PKGS="$PKGS unicode-data"
# Test-only: Debian's chromium (headless) for tests/engine/ui_test.py.  Installed by `make
# test`/`make deps` (not by a plain `make`); if it cannot be installed the browser test skips.
TEST_PKGS="chromium"
nosudo=0
[ "${1:-}" = "--no-sudo" ] && nosudo=1
# --lint (`make lint`): the formatter and the static checker, nothing else.
if [ "${1:-}" = "--lint" ]; then
    PKGS="clang-format cppcheck git"
    TEST_PKGS=""
fi

if [ "$nosudo" -eq 0 ]; then
    tmissing=""
    for p in $TEST_PKGS; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            tmissing="$tmissing $p"
        fi
    done
    if [ -n "$tmissing" ]; then
        TSUDO=""
        [ "$(id -u)" -ne 0 ] && TSUDO="sudo"
        echo "deps: installing test-only packages:$tmissing" >&2
        # shellcheck disable=SC2086
        if ! (export DEBIAN_FRONTEND=noninteractive; $TSUDO apt-get update -qq >/dev/null &&
            $TSUDO apt-get install -y -qq --no-install-recommends $tmissing >/dev/null); then
            echo "deps: could not install$tmissing: the browser test will be skipped" >&2
        fi
    fi
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if [ "$nosudo" -eq 1 ]; then
        echo "deps: missing Debian packages:$missing" >&2
        echo "deps: install them with 'make deps' (uses sudo) or" >&2
        echo "      sudo apt-get install -y --no-install-recommends$missing" >&2
        exit 1
    fi
    SUDO="sudo"
fi
echo "deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done" >&2
