#!/usr/bin/env bash
# `make deploy`'s last step (Vagrant's "deploy" provisioner, after "images" rebuilt and imported the
# images on every node): updates the apps' Secret apps-tls from vagrant/certs (portier watches it: a
# new certificate needs no restart), applies k8s/ on the k3s server, restarts each workload whose
# image the import changed (a config change rolls portier by itself), then waits until they serve
# and portier serves the Ingress, and deletes the ConfigMaps of portier's earlier configs and the
# Secret it no longer mounts. On an agent it has nothing to do.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "${P2_REPO:-/vagrant}/vagrant/provision/lib.sh"

need_root
if [ ! -f /etc/rancher/k3s/k3s.yaml ]; then
    log "$(hostname): a k3s agent, nothing to roll out here (the server does it)"
    exit 0
fi
deploy_tls_secret
deploy_apply
deploy_restart
deploy_wait
deploy_wait_ingress
deploy_prune_configs
deploy_prune_old_secret
deploy_hints
