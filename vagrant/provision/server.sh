#!/usr/bin/env bash
# Provisions the k3s server: build packages, `make images`, k3s without Traefik on the private
# network, the images imported (and pinned), the apps' Ingress's Secret apps-tls made from
# vagrant/certs, k8s/ applied, every Deployment and the DaemonSet waited for, then portier serving the
# Ingress (its status names an address), portier's unused ConfigMaps and old Secret deleted, and the
# lines to try printed. Idempotent: `vagrant provision` again changes nothing and fails nothing (a
# changed certificate updates the Secret, which portier watches).
#
# With P2_OFFLINE=1 (and P2_REPO=<checkout>) it stops before installing k3s, after writing what it
# would apply to build/k8s-rendered.yaml: tests/k8s runs it that way, so the images and manifests it
# checks are the ones this script builds.
set -euo pipefail
# Vagrant runs an uploaded copy of this file; its neighbours are in the synced repository.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "${P2_REPO:-/vagrant}/vagrant/provision/lib.sh"

need_root
[ "$P2_OFFLINE" = 1 ] || need_tls_files # before minutes of work, not after
install_packages
build_images

if [ "$P2_OFFLINE" = 1 ]; then
    "${KUBECTL:-kubectl}" kustomize "$P2_REPO/k8s" >"$P2_REPO/build/k8s-rendered.yaml"
    log "P2_OFFLINE=1: manifests in $P2_REPO/build/k8s-rendered.yaml; stopping before k3s"
    exit 0
fi

[ -n "${P2_K3S_TOKEN:-}" ] || die "P2_K3S_TOKEN is empty (the Vagrantfile sets it)"
iface=$(private_iface)
K3S_CONFIG_CHANGED=0
if k3s_server_config "$iface" | write_if_changed "$K3S_CONFIG" 0600; then K3S_CONFIG_CHANGED=1; fi
install_k3s server k3s

log "waiting for node $P2_NODE_NAME"
for _ in $(seq 1 90); do
    k3s kubectl get node "$P2_NODE_NAME" >/dev/null 2>&1 && break
    sleep 2
done
k3s kubectl wait --for=condition=Ready "node/$P2_NODE_NAME" --timeout=180s

# `vagrant ssh -c kubectl ...` works as the vagrant user: k3s installs /usr/local/bin/kubectl, and
# KUBECONFIG points at the readable kubeconfig.
if ! grep -qs 'KUBECONFIG=/etc/rancher/k3s/k3s.yaml' /etc/profile.d/k3s-kubeconfig.sh; then
    echo 'export KUBECONFIG=/etc/rancher/k3s/k3s.yaml' >/etc/profile.d/k3s-kubeconfig.sh
fi
# `vagrant ssh -c` runs a non-login shell, which reads no profile.d: kubectl's own default,
# ~/.kube/config, must work too.
if id vagrant >/dev/null 2>&1; then
    install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.kube
    install -m 0600 -o vagrant -g vagrant /etc/rancher/k3s/k3s.yaml /home/vagrant/.kube/config
fi

# The apps' preStop pause is a `sleep` action: Kubernetes 1.30 or later (a pinned older k3s would
# have `kubectl apply` refuse the field).
k3s_minor=$(k3s --version | sed -n 's/^k3s version v1\.\([0-9]*\)\..*/\1/p')
[ "${k3s_minor:-0}" -ge 30 ] || die "k3s $(k3s --version | head -n1) is too old: k8s/ needs 1.30 or later"

import_images
deploy_tls_secret
deploy_apply
deploy_wait
deploy_wait_ingress
deploy_prune_configs
deploy_prune_old_secret
deploy_hints
