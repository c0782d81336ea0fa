#!/bin/sh
# Install the Debian packages sgpu needs to build, test and benchmark.
# Idempotent and quiet when everything is present: it asks dpkg first and
# only calls apt-get for what is missing.
set -eu

PKGS="build-essential pkg-config libevent-dev libssl-dev libjson-c-dev \
libsqlite3-dev libcmocka-dev python3 python3-pycryptodome python3-jinja2 openssl curl wrk"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done" >&2
