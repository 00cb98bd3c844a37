#!/usr/bin/env bash
# Installs the Debian packages that building and testing portier need, and only those missing.
# Usage: scripts/deps.sh          install what is missing (apt-get update first)
#        scripts/deps.sh --check  exit 0 when everything is there, 1 (naming what is missing) otherwise
#        --build (before the others) limits both to what building and `make run` need, leaving out
#        the test and lint tools (python3, the bench peers, dnsmasq, the image and VM tools, kubectl,
#        clang and its tools, the browser).
set -euo pipefail

# pkg-config module -> Debian package that provides it.
pkg_modules=(
    "libevent:libevent-dev"
    "libevent_openssl:libevent-dev"
    "libevent_pthreads:libevent-dev"
    "openssl:libssl-dev"
    "yaml-0.1:libyaml-dev"
    "jansson:libjansson-dev"
    "cmocka:libcmocka-dev"
)
# command -> Debian package: the build's first, then the tests'.
build_commands=(
    "cc:gcc"
    "make:make"
    "pkg-config:pkg-config"
    "curl:curl"
    # make run's local CA and HTTPS certificate (scripts/certs.sh).
    "openssl:openssl"
)
commands=(
    "/usr/bin/python3:python3"
    # The bench smoke in `make test` (bench/run.sh --smoke). nginx and haproxy live in /usr/sbin,
    # which a user's PATH may lack.
    "wrk:wrk"
    "/usr/sbin/nginx:nginx-light"
    "/usr/sbin/haproxy:haproxy"
    "taskset:util-linux"
    # The bench's own network namespace (bench/run.sh brings its loopback up with ip).
    "ip:iproute2"
    # tests/integration/test_discovery.py: a real DNS server on loopback (no service is started).
    "/usr/sbin/dnsmasq:dnsmasq-base"
    # tests/k8s and make images: image tools, shell lint, schema checks (Node.js), vagrant validate.
    "skopeo:skopeo"
    "umoci:umoci"
    "setcap:libcap2-bin"
    "readelf:binutils"
    "shellcheck:shellcheck"
    "node:nodejs"
    "npm:npm"
    "vagrant:vagrant"
    # make lint, make fmt-check (CI runs both) and the fuzz harnesses (libFuzzer is clang's).
    "clang-format:clang-format"
    "clang-tidy:clang-tidy"
    "cppcheck:cppcheck"
    "clang:clang"
    # tests/integration/test_browser.py: a real browser, driven through WebDriver.
    "chromium:chromium"
    "chromedriver:chromium-driver"
)
# header or file -> Debian package (for libraries without a pkg-config module). gcc only recommends
# libc6-dev, and --no-install-recommends leaves the C library's headers out.
build_files=(
    "/usr/include/arpa/inet.h:libc6-dev"
    "/usr/include/http_parser.h:libhttp-parser-dev"
)
files=(
    "/usr/share/vagrant-plugins/plugins.d/vagrant-libvirt.json:vagrant-libvirt"
)
# Debian packages looked for by name: clang only recommends its libFuzzer runtime, whose files
# are named after the machine's architecture.
packages=(
    "libclang-rt-14-dev"
)
# Packages unpacked into build/tools/PACKAGE rather than installed (PACKAGE:the file to find there):
# - Debian's kubectl (kubernetes-client, 1.20): a machine may already have another package's
#   /usr/bin/kubectl (a cloud SDK's), which dpkg will not overwrite. tests/k8s runs this one.
# - prometheus (prometheus and promtool, for tests/integration/test_admin.py, which starts its own
#   on loopback): installed, the package would enable and start a system-wide Prometheus on :9090.
repo=$(cd "$(dirname "$0")/.." && pwd)
unpacked=(
    "kubernetes-client:usr/bin/kubectl"
    "prometheus:usr/bin/promtool"
)

build_only=0
if [ "${1:-}" = "--build" ]; then
    build_only=1
    shift
    commands=() files=() packages=()
fi
commands=("${build_commands[@]}" "${commands[@]}")
files=("${build_files[@]}" "${files[@]}")

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
for pkg in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q ' installed$' || missing+=("$pkg")
done
to_unpack=()
if [ "$build_only" = 0 ]; then
    if ! /usr/bin/python3 -c 'import pytest' >/dev/null 2>&1; then missing+=("python3-pytest"); fi
    if ! /usr/bin/python3 -c 'import yaml' >/dev/null 2>&1; then missing+=("python3-yaml"); fi
    for entry in "${unpacked[@]}"; do
        [ -x "$repo/build/tools/${entry%%:*}/${entry#*:}" ] || to_unpack+=("${entry%%:*}")
    done
fi

# Unique, in order.
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
fi

if [ "${1:-}" = "--check" ]; then
    if [ ${#missing[@]} -gt 0 ] || [ ${#to_unpack[@]} -gt 0 ]; then
        [ ${#missing[@]} -eq 0 ] || echo "missing Debian packages: ${missing[*]} (run: make deps)" >&2
        [ ${#to_unpack[@]} -eq 0 ] ||
            echo "missing in build/tools: ${to_unpack[*]} (Debian's, unpacked; run: make deps)" >&2
        exit 1
    fi
    exit 0
fi

# unpack PACKAGE: downloaded by apt and unpacked into build/tools/PACKAGE.
unpack() {
    local tmp dir=$repo/build/tools/$1
    tmp=$(mktemp -d)
    chmod 0755 "$tmp"
    chown _apt "$tmp" 2>/dev/null || true # apt downloads as _apt where it can, else warns
    (cd "$tmp" && apt-get download -qq "$1")
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$tmp/$1"_*.deb "$dir"
    rm -rf "$tmp"
    echo "deps: Debian's $1 unpacked into build/tools/$1"
}

if [ ${#missing[@]} -eq 0 ] && [ ${#to_unpack[@]} -eq 0 ]; then
    echo "deps: everything is installed"
    exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "deps: need root to install: ${missing[*]:-${to_unpack[*]}}" >&2
        exit 1
    fi
fi
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for pkg in "${to_unpack[@]}"; do unpack "$pkg"; done
