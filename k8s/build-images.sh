#!/usr/bin/env bash
# Packs the static binaries of portier and the apps into image archives that `k3s ctr images import`
# takes (docker-archive tars), without Docker: umoci assembles each image from a root that holds the
# binary, /etc/passwd and /etc/group with one unprivileged user and nothing else; skopeo converts it.
#
# Usage: k8s/build-images.sh BINDIR OUTDIR VERSION
#   BINDIR   where the statically linked portier, app1, app2 and app3 are (make BUILD=build/k8s STATIC=1)
#   OUTDIR   where NAME.tar goes, one per image (build/images); NAME.ref holds the image's reference
#   VERSION  the image tag, the project's version (never "latest")
# Images are named localhost/portier/NAME:VERSION: "localhost/" says no registry has them, and the
# manifests in k8s/ use the same names with imagePullPolicy: Never.
#
# Needs root: umoci keeps file owners, and portier's binary carries the file capability
# cap_net_bind_service so that it can bind port 80 while running as an unprivileged user.
set -euo pipefail

die() {
    echo "build-images: $*" >&2
    exit 1
}

[ $# -eq 3 ] || die "usage: $0 BINDIR OUTDIR VERSION"
bindir=$1 outdir=$2 version=$3
case $version in
    "" | latest) die "refusing the tag '$version': images are tagged with the project's version" ;;
esac
need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found (make deps installs it)"
    done
}
# The binaries first: what is wrong with them is wrong whoever runs this.
need readelf
for name in portier app1 app2 app3; do
    bin=$bindir/$name
    [ -x "$bin" ] || die "$bin not found (make BUILD=... STATIC=1 builds it)"
    # A dynamic binary would need a loader and libraries the image does not have.
    if readelf --program-headers "$bin" | grep -q INTERP; then
        die "$bin is dynamically linked; build it with STATIC=1"
    fi
done
[ "$(id -u)" = 0 ] || die "needs root (umoci keeps file owners; setcap needs CAP_SETFCAP)"
need umoci skopeo setcap strip

# The unprivileged user every image runs as; the manifests' runAsUser/runAsGroup say the same.
uid=10001
gid=10001
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)

# build_image NAME USER PORT ARGS...: one image whose entrypoint is /NAME running as USER, exposing
# PORT/tcp, with ARGS as its default command line.
build_image() {
    local name=$1 user=$2 port=$3
    shift 3
    local bin=$bindir/$name work=$outdir/work/$name
    local ref=localhost/portier/$name:$version

    # Reproducible: every date in the image is the binary's (or SOURCE_DATE_EPOCH), so the same
    # binary gives the same archive, and importing it again changes nothing on the node.
    local epoch created
    epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$bin")}
    created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

    rm -rf "$work"
    mkdir -p "$work"
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:$version"
    umoci unpack --image "$work/oci:$version" "$work/bundle" >/dev/null

    local root=$work/bundle/rootfs
    install -d -m 0755 -o 0 -g 0 "$root/etc"
    strip -o "$root/$name" "$bin"
    chown 0:0 "$root/$name"
    chmod 0755 "$root/$name"
    printf '%s:x:%d:%d:%s:/nonexistent:/nonexistent\n' "$user" "$uid" "$gid" "$user" >"$root/etc/passwd"
    printf '%s:x:%d:\n' "$user" "$gid" >"$root/etc/group"
    chmod 0644 "$root/etc/passwd" "$root/etc/group"
    if [ "$name" = portier ]; then
        # The only privilege portier needs: binding port 80 on the node. Kubernetes cannot give an
        # added capability to a non-root process (no ambient capabilities), a file capability can.
        setcap cap_net_bind_service=+ep "$root/$name"
    fi

    find "$root" -exec touch -h -d "@$epoch" {} +

    umoci repack --image "$work/oci:$version" --history.created "$created" \
        --history.created_by "k8s/build-images.sh" "$work/bundle"
    local cfg=(--config.user "$uid:$gid" --config.entrypoint "/$name" --config.workingdir /
        --config.exposedports "$port/tcp" --architecture "$arch" --os linux --created "$created"
        --author "portier" --config.label "org.opencontainers.image.title=$name"
        --config.label "org.opencontainers.image.version=$version"
        --no-history)
    local arg
    for arg in "$@"; do cfg+=(--config.cmd "$arg"); done
    umoci config --image "$work/oci:$version" "${cfg[@]}"
    umoci gc --layout "$work/oci"

    rm -f "$outdir/$name.tar"
    skopeo --insecure-policy copy --quiet "oci:$work/oci:$version" \
        "docker-archive:$outdir/$name.tar:$ref"
    echo "$ref" >"$outdir/$name.ref"
    rm -rf "$work"
    echo "  IMAGE   $outdir/$name.tar ($ref)"
}

mkdir -p "$outdir"
build_image portier portier 80 -c /etc/portier/portier.yaml
build_image app1 app 8080
build_image app2 app 8080
build_image app3 app 8080
rmdir "$outdir/work" 2>/dev/null || true
