#!/usr/bin/env bash
# `make up`'s first step, before anything is made or booted: does this host fit the p2 VM? An x86-64
# host (the box is amd64 only), a Vagrant recent enough for the hypervisor (Vagrant refuses a
# VirtualBox newer than it knows: "The provider 'virtualbox' ... isn't usable"), the vagrant-libvirt
# plugin for libvirt, and room for the VMs. When something does not fit it says what to install and
# where from, and exits 1; room is only warned about.
#
# It reads the settings the VM has, or will have (vagrant/Vagrantfile): those fixed in
# vagrant/.p2-settings (P2_SETTINGS_FILE) when the file exists, else the environment's.
set -euo pipefail

# die LINE...: the lines on stderr, the first after "check-host: ", and exit 1.
die() {
    printf 'check-host: %s\n' "$1" >&2
    shift
    [ $# -eq 0 ] || printf '%s\n' "$@" >&2
    exit 1
}

warn() {
    printf 'check-host: warning: %s\n' "$*" >&2
}

here=$(cd "$(dirname "$0")" && pwd)
settings_file=${P2_SETTINGS_FILE:-$here/.p2-settings}

# setting NAME DEFAULT: NAME from the settings file when there is one (a missing key: DEFAULT), else
# from the environment.
setting() {
    local key value
    if [ -f "$settings_file" ]; then
        while IFS='=' read -r key value; do
            [ "$key" = "$1" ] && { echo "$value"; return; }
        done <"$settings_file"
        echo "$2"
    else
        value=${!1:-}
        echo "${value:-$2}"
    fi
}

# version_ge A B: A >= B, as version numbers.
version_ge() {
    [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

provider=$(setting VAGRANT_DEFAULT_PROVIDER virtualbox)
workers=$(setting P2_WORKERS 0)
cpus=$(setting P2_CPUS 2)
memory=$(setting P2_MEMORY 2048)
box=$(setting P2_BOX debian/bookworm64)

# What to tell when this Vagrant is too old: HashiCorp's own packages (Debian 12's vagrant is 2.3.4).
install_vagrant=(
    "Install HashiCorp's Vagrant (https://developer.hashicorp.com/vagrant/install), from its apt"
    "repository:"
    "  wget -O- https://apt.releases.hashicorp.com/gpg | sudo gpg --dearmor -o /usr/share/keyrings/hashicorp-archive-keyring.gpg"
    "  echo \"deb [signed-by=/usr/share/keyrings/hashicorp-archive-keyring.gpg] https://apt.releases.hashicorp.com \$(. /etc/os-release && echo \"\$VERSION_CODENAME\") main\" | sudo tee /etc/apt/sources.list.d/hashicorp.list"
    "  sudo apt-get update && sudo apt-get install vagrant"
    "or a package from https://releases.hashicorp.com/vagrant/ (the newest is best)."
)

# The host: the box (debian/bookworm64) is built for x86-64 only.
arch=$(uname -m)
if [ "$arch" != x86_64 ] && [ "$box" = debian/bookworm64 ]; then
    die "this host is $arch, and the box debian/bookworm64 is built for x86-64 (amd64) only:" \
        "the p2 VM needs an x86-64 host (P2_BOX may name a box built for $arch, untested)."
fi

# Vagrant.
command -v vagrant >/dev/null 2>&1 ||
    die "no vagrant. Debian 12: sudo apt-get install vagrant (2.3.4: VirtualBox up to 7.0, and" \
        "libvirt with the vagrant-libvirt package); for VirtualBox 7.1 or later:" \
        "${install_vagrant[@]}"
vagrant_version=$(vagrant --version 2>/dev/null | sed -n 's/^Vagrant \([0-9][0-9.]*\).*/\1/p' |
    head -n1)
[ -n "$vagrant_version" ] || die "vagrant --version says no version: is vagrant working?"
if ! version_ge "$vagrant_version" 2.3.4; then
    die "Vagrant $vagrant_version is older than 2.3.4, the oldest this VM is checked with." \
        "${install_vagrant[@]}"
fi

case $provider in
virtualbox)
    command -v VBoxManage >/dev/null 2>&1 ||
        die "VAGRANT_DEFAULT_PROVIDER is virtualbox, but VBoxManage is not here: install VirtualBox" \
            "(https://www.virtualbox.org/wiki/Linux_Downloads), or use libvirt:" \
            "VAGRANT_DEFAULT_PROVIDER=libvirt make up (after make down, if a VM was made)."
    vbox_out=$(VBoxManage --version 2>&1) || die "VBoxManage --version failed:" "$vbox_out"
    # Warnings (a kernel module not loaded, say) may come first; the version is the last line.
    vbox_version=$(printf '%s\n' "$vbox_out" | grep -E '^[0-9]+\.[0-9]+' | tail -n1 || true)
    [ -n "$vbox_version" ] || die "VBoxManage --version says no version:" "$vbox_out"
    vbox_minor=$(printf '%s\n' "$vbox_version" | grep -oE '^[0-9]+\.[0-9]+')
    # The first Vagrant that supports each VirtualBox (Vagrant's CHANGELOG: 7.0 in 2.3.2, 7.1 in
    # 2.4.2, 7.2 in 2.4.9); 6.1 since long before 2.3.4.
    case $vbox_minor in
    6.1 | 7.0) needs=2.3.4 ;;
    7.1) needs=2.4.2 ;;
    7.2) needs=2.4.9 ;;
    *)
        if version_ge "$vbox_minor" 7.3; then
            needs=
            warn "VirtualBox $vbox_version is newer than this check knows (7.2 needs Vagrant 2.4.9)." \
                "If vagrant up says \"The provider 'virtualbox' ... isn't usable\", install the" \
                "newest Vagrant: https://developer.hashicorp.com/vagrant/install"
        else
            die "VirtualBox $vbox_version is too old: install VirtualBox 7.0, 7.1 or 7.2" \
                "(https://www.virtualbox.org/wiki/Linux_Downloads)."
        fi
        ;;
    esac
    if [ -n "$needs" ] && ! version_ge "$vagrant_version" "$needs"; then
        die "VirtualBox $vbox_version needs Vagrant $needs or later, and this is Vagrant" \
            "$vagrant_version: it would refuse with \"The provider 'virtualbox' ... isn't usable\"." \
            "(Debian 12's vagrant, 2.3.4, supports VirtualBox up to 7.0.)" "${install_vagrant[@]}" \
            "Or use VirtualBox 7.0, or libvirt: VAGRANT_DEFAULT_PROVIDER=libvirt make up."
    fi
    hypervisor="VirtualBox $vbox_version"
    ;;
libvirt)
    if ! vagrant plugin list 2>/dev/null | grep -q '^vagrant-libvirt '; then
        die "VAGRANT_DEFAULT_PROVIDER is libvirt, but Vagrant has no vagrant-libvirt plugin. With" \
            "Debian's vagrant: sudo apt-get install vagrant-libvirt libvirt-daemon-system (and add" \
            "yourself to the libvirt group); with HashiCorp's: vagrant plugin install vagrant-libvirt" \
            "(https://vagrant-libvirt.github.io/vagrant-libvirt/installation.html)."
    fi
    hypervisor="libvirt (vagrant-libvirt)"
    ;;
*)
    die "VAGRANT_DEFAULT_PROVIDER must be virtualbox or libvirt, not '$provider'."
    ;;
esac

# Room: each VM gets P2_CPUS CPUs and P2_MEMORY MiB; the host needs some memory of its own.
vms=$((1 + workers))
host_cpus=$(nproc)
host_mib=$(free -m | awk '/^Mem:/ { print $2 }')
if [ "$host_cpus" -lt "$cpus" ]; then
    warn "each VM gets $cpus CPUs (P2_CPUS) and this host has $host_cpus: the hypervisor may refuse."
elif [ "$host_cpus" -lt $((vms * cpus)) ]; then
    warn "$vms VMs of $cpus CPUs on $host_cpus CPUs: they will share them (slower, but it works)."
fi
if [ "${host_mib:-0}" -lt $((vms * memory + 1024)) ]; then
    warn "$vms VM(s) of $memory MiB (P2_MEMORY) and about 1 GiB for the host need" \
        "$((vms * memory + 1024)) MiB; this host has ${host_mib:-?} MiB."
fi

echo "check-host: Vagrant $vagrant_version, $hypervisor, $arch: fine for $vms VM(s)"
