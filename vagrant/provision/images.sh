#!/usr/bin/env bash
# `make deploy`'s first step on every node (Vagrant's "images" provisioner): rebuild the images from
# the synced repository and import them into this node's k3s.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "${P2_REPO:-/vagrant}/vagrant/provision/lib.sh"

need_root
install_packages
build_images
import_images
