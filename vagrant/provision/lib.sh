# shellcheck shell=bash
# The steps the provision scripts share, sourced by server.sh, agent.sh, images.sh and deploy.sh
# from the synced repository (Vagrant runs uploaded copies of those, not this file).
# Every step is idempotent: run twice, the second run changes nothing and fails nothing.
#
# Read from the environment (the Vagrantfile sets them):
#   P2_REPO         the repository inside the VM (default /vagrant)
#   P2_NODE_NAME    this node's Kubernetes name, lower case (e.g. wils)
#   P2_NODE_IP      this node's address on the private network (192.168.56.110 for the server)
#   P2_SERVER_IP    the server's address, where agents join
#   P2_K3S_TOKEN    the join token every node shares
#   P2_K3S_VERSION  the k3s release to install (the Vagrantfile pins one); empty: the stable channel
#   P2_OFFLINE=1    stop before installing k3s (tests/k8s runs the steps up to there on a dev machine)
#   P2_TLS_DIR      where server.crt and server.key are (default $P2_REPO/vagrant/certs)
#   P2_WAIT_TRIES, P2_WAIT_INTERVAL  how long an agent waits for its portier pod, and the server for
#                   portier to serve the apps' Ingress: 150 tries, 2 s apart

P2_REPO=${P2_REPO:-/vagrant}
P2_SERVER_IP=${P2_SERVER_IP:-192.168.56.110}
P2_NODE_IP=${P2_NODE_IP:-$P2_SERVER_IP}
P2_NODE_NAME=${P2_NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
P2_K3S_VERSION=${P2_K3S_VERSION:-}
P2_OFFLINE=${P2_OFFLINE:-0}
# shellcheck disable=SC2034 # written by server.sh and agent.sh
K3S_CONFIG=/etc/rancher/k3s/config.yaml
IMAGES_DIR=$P2_REPO/build/images
# The HTTPS certificate and key of the apps' Ingress (app1.com, app2.com, app3.com). The host makes
# them once with scripts/certs.sh (make up and make deploy do) into vagrant/certs, kept there across
# `make down` and `make up`, or puts a certificate of its own there; rsync brings them here, without
# the CA's key.
P2_TLS_DIR=${P2_TLS_DIR:-$P2_REPO/vagrant/certs}
# The apps' Ingress (k8s/apps/ingress.yaml) and the kubernetes.io/tls Secret its tls names, which
# must be in the Ingress's namespace: portier serves the certificate it holds.
APPS_NAMESPACE=apps
APPS_INGRESS=p2
APPS_TLS_SECRET=apps-tls
# The Secret that held portier's certificate when the DaemonSet mounted it, before portier read the
# Ingresses' Secrets from the API: deleted once the rollout is done, if an earlier provision made it.
OLD_TLS_SECRET=portier-tls

# What `make images` needs inside the VM: the compiler, the static libraries (Debian ships the .a
# files in the -dev packages; jansson parses the API server's JSON), umoci and skopeo, setcap; curl
# fetches the k3s install script.
BUILD_PACKAGES=(ca-certificates curl gcc make pkg-config binutils libc6-dev libevent-dev libssl-dev
    libyaml-dev libjansson-dev libhttp-parser-dev umoci skopeo libcap2-bin)

log() {
    printf '==> %s\n' "$*"
}

die() {
    printf 'provision: %s\n' "$*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" = 0 ] || die "run as root (vagrant provisions as root)"
}

# install_packages: the Debian packages above that are missing, and only those.
install_packages() {
    local missing=() pkg
    for pkg in "${BUILD_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "build packages: all installed"
        return
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# build_images: static binaries and image archives into $IMAGES_DIR (make only rebuilds what changed,
# and an unchanged binary gives a byte-identical archive).
build_images() {
    log "make images"
    make -C "$P2_REPO" --no-print-directory images
}

# private_iface: the interface that holds this node's private-network address (flannel's).
private_iface() {
    local iface
    iface=$(ip -o -4 addr show | awk -v ip="$P2_NODE_IP" '{split($4, a, "/")} a[1] == ip {print $2; exit}')
    [ -n "$iface" ] || die "no interface has $P2_NODE_IP; is the private network up?"
    echo "$iface"
}

# write_if_changed FILE MODE: stdin into FILE unless FILE already holds exactly that; returns 0 when
# it wrote, 1 when nothing changed.
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mkdir -p "$(dirname "$file")"
    install -m "$mode" "$tmp" "$file"
    rm -f "$tmp"
    return 0
}

# k3s_server_config IFACE: the server's $K3S_CONFIG, which k3s reads at every start: Traefik off
# (portier takes port 80), the node and flannel on the private network IFACE (the NAT interface has
# the same address on every VM), a kubeconfig the vagrant user can read, the shared token.
k3s_server_config() {
    cat <<EOF
# Written by vagrant/provision/server.sh.
node-name: "$P2_NODE_NAME"
node-ip: "$P2_NODE_IP"
advertise-address: "$P2_NODE_IP"
flannel-iface: "$1"
tls-san:
  - "$P2_NODE_IP"
disable:
  - traefik
write-kubeconfig-mode: "0644"
token: "$P2_K3S_TOKEN"
EOF
}

# k3s_agent_config IFACE SERVER_URL: an agent's $K3S_CONFIG: where to join, with which token, and
# the node and flannel on the private network IFACE.
k3s_agent_config() {
    cat <<EOF
# Written by vagrant/provision/agent.sh.
server: "$2"
token: "$P2_K3S_TOKEN"
node-name: "$P2_NODE_NAME"
node-ip: "$P2_NODE_IP"
flannel-iface: "$1"
EOF
}

# install_k3s ROLE SERVICE: runs k3s's install script for ROLE (server or agent) unless k3s is there;
# restarts SERVICE when $K3S_CONFIG changed since (the caller says so with K3S_CONFIG_CHANGED=1).
install_k3s() {
    local role=$1 service=$2
    if [ -x /usr/local/bin/k3s ] && systemctl is-enabled --quiet "$service" 2>/dev/null; then
        if [ "${K3S_CONFIG_CHANGED:-0}" = 1 ]; then
            log "k3s config changed: restarting $service"
            systemctl restart "$service"
        else
            log "k3s $role already installed"
        fi
        return
    fi
    log "installing k3s ($role${P2_K3S_VERSION:+ $P2_K3S_VERSION})"
    local script
    script=$(mktemp)
    curl -sfL --retry 3 -o "$script" https://get.k3s.io
    INSTALL_K3S_VERSION=$P2_K3S_VERSION INSTALL_K3S_EXEC=$role sh "$script"
    rm -f "$script"
}

# wait_for_containerd: until this node's containerd (inside k3s) answers.
wait_for_containerd() {
    local _
    for _ in $(seq 1 90); do
        k3s ctr version >/dev/null 2>&1 && return
        sleep 2
    done
    die "k3s's containerd did not come up (journalctl -u k3s or k3s-agent)"
}

# Where import_images lists the images whose content changed, for deploy_restart (one node's
# view: every node builds the same images from the same synced tree).
CHANGED_IMAGES=${P2_CHANGED_IMAGES:-/var/lib/p2/images-changed}

# image_digest REF: the digest the node's containerd has for REF, or nothing.
image_digest() {
    { k3s ctr --namespace k8s.io images ls "name==$1" 2>/dev/null || true; } | awk 'NR > 1 { print $3 }'
}

# The label by which containerd's CRI reports an image as pinned, which the kubelet's image garbage
# collection never removes. Our images are in no registry (imagePullPolicy: Never): one collected
# under disk pressure would leave its pods unable to start until the next make deploy.
PINNED_LABEL=io.cri-containerd.pinned=pinned

# pin_image REF: REF pinned (labelled $PINNED_LABEL) in the k8s.io namespace. Done after every import:
# an import that replaces an image need not keep its labels. Not k3s's own way, archives left in
# /var/lib/rancher/k3s/agent/images, which k3s imports and pins when it starts: that directory
# would have to follow every make deploy (a second copy of each image), and at each start k3s
# unpins what it pinned before, then pins what the directory holds. A pin without k3s's own label
# (io.cattle.k3s.pinned) is one k3s leaves alone (k3s-io/k3s#11363); containerd's CRI reports the
# image as pinned, and the kubelet skips it when it collects (containerd/containerd#6930).
pin_image() {
    k3s ctr --namespace k8s.io images label "$1" "$PINNED_LABEL" >/dev/null
}

# import_images: every archive in $IMAGES_DIR into the k8s.io namespace, where the kubelet looks,
# each image pinned (pin_image), noting in $CHANGED_IMAGES each reference whose digest the import
# changed (a rebuilt image under the same tag). Importing an image that is already there changes
# nothing.
import_images() {
    wait_for_containerd
    local tar ref before
    mkdir -p "$(dirname "$CHANGED_IMAGES")"
    : >"$CHANGED_IMAGES"
    for tar in "$IMAGES_DIR"/*.tar; do
        [ -e "$tar" ] || die "no image archives in $IMAGES_DIR (make images)"
        ref=$(cat "${tar%.tar}.ref")
        before=$(image_digest "$ref")
        log "importing $ref"
        k3s ctr --namespace k8s.io images import "$tar" >/dev/null
        pin_image "$ref"
        [ "$(image_digest "$ref")" = "$before" ] || echo "$ref" >>"$CHANGED_IMAGES"
    done
}

KUBECTL_K3S=(k3s kubectl)
DEPLOYMENTS=(app1 app2 app3)

# need_tls_files: fails at once, saying what to do, when the certificate or its key is missing.
need_tls_files() {
    local f
    for f in server.crt server.key; do
        [ -s "$P2_TLS_DIR/$f" ] && continue
        die "no $P2_TLS_DIR/$f. On the host, make up or make deploy makes it" \
            "(scripts/certs.sh vagrant/certs); or put a certificate and key of your own there," \
            "then make deploy"
    done
}

# deploy_tls_secret: the kubernetes.io/tls Secret $APPS_TLS_SECRET made or updated from $P2_TLS_DIR
# in the apps' namespace (made first), before the Ingress that names it is applied: portier finds
# the certificate there at once, not a 404 of the Secret first. A replaced certificate needs no
# restart: portier watches the Secret and serves the new one to the next TLS handshakes.
deploy_tls_secret() {
    local out
    need_tls_files
    "${KUBECTL_K3S[@]}" apply -f "$P2_REPO/k8s/namespaces.yaml"
    out=$("${KUBECTL_K3S[@]}" -n "$APPS_NAMESPACE" create secret tls "$APPS_TLS_SECRET" \
        --cert="$P2_TLS_DIR/server.crt" --key="$P2_TLS_DIR/server.key" --dry-run=client -o yaml |
        "${KUBECTL_K3S[@]}" apply -f -)
    printf '%s\n' "$out"
    case $out in
    *" configured"*) log "the certificate changed: portier, watching the Secret, serves the new one" ;;
    esac
}

# deploy_apply: k8s/ as kustomize renders it (kubectl apply says "unchanged" for what is).
deploy_apply() {
    log "kubectl apply -k $P2_REPO/k8s"
    "${KUBECTL_K3S[@]}" apply -k "$P2_REPO/k8s"
}

# deploy_restart: new pods for each workload whose image import_images found changed (rebuilt
# under the same tag), and for no other: a config change alone rolls portier by itself (its
# ConfigMap's name is a hash of it), and a restart on top would roll it twice. portier's roll
# loses nothing (the new pod takes the old one's sockets: portier -x).
deploy_restart() {
    local d
    for d in "${DEPLOYMENTS[@]}"; do
        if grep -q "/$d:" "$CHANGED_IMAGES" 2>/dev/null; then
            "${KUBECTL_K3S[@]}" -n apps rollout restart "deployment/$d"
        else
            log "$d: its image is unchanged: no restart"
        fi
    done
    if grep -q "/portier:" "$CHANGED_IMAGES" 2>/dev/null; then
        "${KUBECTL_K3S[@]}" -n portier rollout restart daemonset/portier
    else
        log "portier: its image is unchanged: no restart"
    fi
}

# deploy_wait: until every Deployment and the DaemonSet have rolled out and are ready.
deploy_wait() {
    local d
    for d in "${DEPLOYMENTS[@]}"; do
        "${KUBECTL_K3S[@]}" -n apps rollout status "deployment/$d" --timeout=300s
    done
    "${KUBECTL_K3S[@]}" -n portier rollout status daemonset/portier --timeout=300s
    "${KUBECTL_K3S[@]}" get pods -A -o wide
}

# deploy_wait_ingress: after deploy_wait, until portier serves the apps' Ingress: it writes the
# node's address into the Ingress's status.loadBalancer.ingress once it serves it. A portier that
# cannot read the API never gets ready, which deploy_wait already tells; one that reads it but does
# not take the Ingress as its own (another class) or may not write its status is ready all the
# same, answering 404 in the first case: this is where provisioning says so. P2_WAIT_TRIES tries
# (150), P2_WAIT_INTERVAL seconds apart (2).
deploy_wait_ingress() {
    local addr i tries=${P2_WAIT_TRIES:-150} ing="$APPS_NAMESPACE/$APPS_INGRESS"
    log "waiting for portier to serve the Ingress $ing (an address in its status)"
    for ((i = 1; ; i++)); do
        addr=$("${KUBECTL_K3S[@]}" -n "$APPS_NAMESPACE" get ingress "$APPS_INGRESS" \
            -o jsonpath='{.status.loadBalancer.ingress[*].ip}' 2>/dev/null) || addr=""
        if [ -n "$addr" ]; then
            log "portier serves the Ingress $ing at $addr"
            return 0
        fi
        [ "$i" -lt "$tries" ] || break
        sleep "${P2_WAIT_INTERVAL:-2}"
    done
    die "the Ingress $ing has no address in its status after $tries tries: portier has not" \
        "served it. See kubectl -n portier logs daemonset/portier, and whether portier may" \
        "read it: kubectl auth can-i list ingresses -A --as=system:serviceaccount:portier:portier"
}

# deploy_prune_configs: once the DaemonSet has rolled out (deploy_wait), deletes the ConfigMaps
# portier-config-<hash> that neither the DaemonSet nor any of its pods (one still draining, say)
# mounts: each config change makes a new one (kustomize names it after a hash of the content), and
# kubectl apply deletes none. The DaemonSet's older revisions name them, so `kubectl rollout undo`
# cannot go back to a config pruned here: apply the older k8s/ instead. Nothing is deleted when the
# DaemonSet cannot be read.
deploy_prune_configs() {
    local ds pods used cm stale=()
    ds=$("${KUBECTL_K3S[@]}" -n portier get daemonset/portier -o json) || return 0
    pods=$("${KUBECTL_K3S[@]}" -n portier get pods -o json) || return 0
    # A DaemonSet that names no config of ours is not one to judge by: leave everything alone.
    grep -q 'portier-config-[a-z0-9]' <<<"$ds" || return 0
    used=$(grep -o 'portier-config-[a-z0-9]*' <<<"$ds$pods" | sort -u)
    for cm in $("${KUBECTL_K3S[@]}" -n portier get configmaps -o name); do
        cm=${cm#configmap/}
        case $cm in portier-config-*) ;; *) continue ;; esac
        grep -qxF "$cm" <<<"$used" || stale+=("$cm")
    done
    if [ ${#stale[@]} -eq 0 ]; then
        log "portier's ConfigMaps: none unused"
        return 0
    fi
    log "deleting portier's unused ConfigMaps: ${stale[*]}"
    # Housekeeping: the rollout is done, so a failure here is told, not fatal.
    "${KUBECTL_K3S[@]}" -n portier delete configmap "${stale[@]}" ||
        log "warning: could not delete ${stale[*]} (the next make deploy tries again)"
}

# The admin listener's address in portier's cluster config: where its /readyz answers on each node.
portier_admin_addr() {
    sed -n 's/^admin: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$P2_REPO/k8s/portier/cluster.yaml"
}

# wait_for_local_portier: on an agent (no kubeconfig there), until this node's portier pod (the
# DaemonSet's, scheduled here once the node joined) runs and answers ready on its admin listener:
# it has read the Ingresses, Services, EndpointSlices and Secrets from the API server, reached from
# this node. P2_WAIT_TRIES tries (150), P2_WAIT_INTERVAL seconds apart (2).
wait_for_local_portier() {
    local addr i tries=${P2_WAIT_TRIES:-150}
    addr=$(portier_admin_addr)
    [ -n "$addr" ] || die "no admin: address in $P2_REPO/k8s/portier/cluster.yaml"
    log "waiting for portier's pod on $P2_NODE_NAME to run and be ready (http://$addr/readyz)"
    for ((i = 1; ; i++)); do
        if [ -n "$(k3s crictl ps --name '^portier$' --state running -q 2>/dev/null)" ] &&
            curl -fsS -o /dev/null --max-time 2 "http://$addr/readyz" 2>/dev/null; then
            log "portier runs on $P2_NODE_NAME and is ready"
            return 0
        fi
        [ "$i" -lt "$tries" ] || break
        sleep "${P2_WAIT_INTERVAL:-2}"
    done
    k3s crictl pods 2>/dev/null || true
    die "portier is not running and ready on $P2_NODE_NAME after $tries tries: on the server," \
        "kubectl -n portier get pods -o wide and kubectl -n portier describe pods"
}

# deploy_prune_old_secret: once the DaemonSet has rolled out (deploy_wait), deletes the Secret
# $OLD_TLS_SECRET in namespace portier, which an earlier provision made for the DaemonSet to mount
# and nothing uses now: no copy of the key is left where nothing needs it. Not there: nothing to do.
deploy_prune_old_secret() {
    local out
    # Housekeeping after the rollout: a failure here is told, not fatal.
    if ! out=$("${KUBECTL_K3S[@]}" -n portier delete secret "$OLD_TLS_SECRET" --ignore-not-found); then
        log "warning: could not delete the unused Secret portier/$OLD_TLS_SECRET" \
            "(the next make deploy tries again)"
        return 0
    fi
    [ -z "$out" ] || printf '%s\n' "$out"
}

# deploy_hints: what to type on the host.
deploy_hints() {
    cat <<EOF

portier answers on http://$P2_SERVER_IP and https://$P2_SERVER_IP (ports 80 and 443 of every node),
in front of app1, app2 (x3), app3. From the host, in the repository:
  curl -H 'Host: app1.com' http://$P2_SERVER_IP/
  curl -H 'Host: app2.com' http://$P2_SERVER_IP/api/info    # again and again: the 3 replicas in turn
  curl -H 'Host: anything' http://$P2_SERVER_IP/            # any other Host: app3
  curl --cacert vagrant/certs/ca.crt --resolve app2.com:443:$P2_SERVER_IP https://app2.com/api/info
For a browser, add this line to /etc/hosts, then open http://app2.com/ (https://app2.com/ once
vagrant/certs/ca.crt is imported as an authority; README.md says how):
  $P2_SERVER_IP app1.com app2.com app3.com
Pods: vagrant ssh -c 'kubectl get pods -A -o wide'
The Ingress portier serves: vagrant ssh -c 'kubectl -n $APPS_NAMESPACE get ingress $APPS_INGRESS'
EOF
}
