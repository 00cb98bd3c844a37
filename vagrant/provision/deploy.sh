#!/usr/bin/env bash
# `make deploy`'s last step (Vagrant's "deploy" provisioner, after "images" rebuilt and imported the
# images on every node): updates the Secret portier-tls from vagrant/certs, applies k8s/ on the k3s
# server, restarts each workload whose image the import changed (portier also when its certificate
# did; a config change rolls it by itself), then waits until they serve and deletes the ConfigMaps
# of portier's earlier configs. On an agent it has nothing to do.
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
deploy_prune_configs
deploy_hints
