#!/usr/bin/env bash
# Installs the Debian packages that building and testing portier need, and only those missing.
# Usage: scripts/deps.sh          install what is missing (apt-get update first)
#        scripts/deps.sh --check  exit 0 when everything is there, 1 (naming what is missing) otherwise
set -euo pipefail

# pkg-config module -> Debian package that provides it.
pkg_modules=(
    "libevent:libevent-dev"
    "libevent_openssl:libevent-dev"
    "libevent_pthreads:libevent-dev"
    "openssl:libssl-dev"
    "yaml-0.1:libyaml-dev"
    "cmocka:libcmocka-dev"
)
# command -> Debian package.
commands=(
    "cc:gcc"
    "make:make"
    "pkg-config:pkg-config"
    "curl:curl"
    "openssl:openssl"
    "/usr/bin/python3:python3"
)
# header or file -> Debian package (for libraries without a pkg-config module).
files=(
    "/usr/include/http_parser.h:libhttp-parser-dev"
)

missing=()
have_pkgconfig=0
command -v pkg-config >/dev/null 2>&1 && have_pkgconfig=1
for entry in "${pkg_modules[@]}"; do
    mod=${entry%%:*} pkg=${entry#*:}
    if [ "$have_pkgconfig" = 0 ] || ! pkg-config --exists "$mod"; then missing+=("$pkg"); fi
done
for entry in "${commands[@]}"; do
    cmd=${entry%%:*} pkg=${entry#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
for entry in "${files[@]}"; do
    f=${entry%%:*} pkg=${entry#*:}
    [ -e "$f" ] || missing+=("$pkg")
done
if ! /usr/bin/python3 -c 'import pytest' >/dev/null 2>&1; then missing+=("python3-pytest"); fi

# Unique, in order.
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
fi

if [ "${1:-}" = "--check" ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run: make deps)" >&2
        exit 1
    fi
    exit 0
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: everything is installed"
    exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
fi
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
