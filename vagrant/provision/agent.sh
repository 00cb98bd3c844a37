#!/usr/bin/env bash
# Provisions a k3s agent (P2_WORKERS=1 adds <login>SW at 192.168.56.111): build packages,
# `make images`, k3s joined to the server with the shared token, the images imported so that pods
# scheduled here find them (imagePullPolicy: Never) and pinned. portier, a DaemonSet, then serves
# here too: it waits until this node's portier pod runs and is ready. Idempotent, like server.sh.
set -euo pipefail
# Vagrant runs an uploaded copy of this file; its neighbours are in the synced repository.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "${P2_REPO:-/vagrant}/vagrant/provision/lib.sh"

need_root
install_packages
build_images
if [ "$P2_OFFLINE" = 1 ]; then
    log "P2_OFFLINE=1: stopping before k3s"
    exit 0
fi

[ -n "${P2_K3S_TOKEN:-}" ] || die "P2_K3S_TOKEN is empty (the Vagrantfile sets it)"
server_url=https://$P2_SERVER_IP:6443
log "waiting for the k3s server at $server_url"
for i in $(seq 1 90); do
    curl -sk -o /dev/null "$server_url/ping" && break
    [ "$i" -lt 90 ] || die "no k3s server answers at $server_url (is $P2_SERVER_IP up?)"
    sleep 2
done

iface=$(private_iface)
K3S_CONFIG_CHANGED=0
if k3s_agent_config "$iface" "$server_url" | write_if_changed "$K3S_CONFIG" 0600; then
    K3S_CONFIG_CHANGED=1
fi
# The install script picks agent mode and checks the token from these two.
K3S_URL=$server_url K3S_TOKEN=$P2_K3S_TOKEN install_k3s agent k3s-agent

import_images
wait_for_local_portier
log "$P2_NODE_NAME joined $P2_SERVER_IP; portier serves on http://$P2_NODE_IP too"
