#!/usr/bin/env bash
# Install and start Vagrant, vagrant-libvirt, libvirt and qemu on this machine.
# Idempotent and non-interactive. Works with systemd as PID 1 (systemctl) and
# without it (daemons started by hand, as in containers and some CI runners).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

PACKAGES=(
    vagrant vagrant-libvirt
    libvirt-daemon-system libvirt-clients
    qemu-system-x86 qemu-utils
    debootstrap fdisk e2fsprogs
    dnsmasq-base ebtables iptables
    rsync curl
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg-query exits 0 even for removed-but-configured packages: check the status.
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done

# The cluster scenario's test OpenID provider (tests/controller/oidc) runs on
# Node.js: any node and npm will do, Debian's or another's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=(nodejs npm)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
else
    echo "setup-host: packages already installed"
fi

# Without udev, /dev/kvm stays root-only 0600. libvirt then probes qemu with KVM
# (as root) but finds KVM unusable for its qemu user at every later check, so it
# throws its capability cache away and re-probes on every call: each libvirt call
# takes seconds and starting a VM takes minutes. Give it udev's group and mode.
if [ -c /dev/kvm ] && getent group kvm >/dev/null \
        && [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
    echo "setup-host: /dev/kvm to group kvm, mode 0660 (as udev would)"
    as_root chgrp kvm /dev/kvm
    as_root chmod 0660 /dev/kvm
fi

is_systemd() {
    [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [ -d /run/systemd/system ]
}

if is_systemd; then
    as_root systemctl enable --now virtlogd.socket libvirtd.service >/dev/null 2>&1 \
        || as_root systemctl start libvirtd
else
    # No service manager: start the daemons by hand when they are not running.
    if ! pgrep -x virtlogd >/dev/null; then
        echo "setup-host: starting virtlogd"
        as_root virtlogd -d
    fi
    if ! pgrep -x libvirtd >/dev/null; then
        echo "setup-host: starting libvirtd"
        # A stale pid file from an earlier run makes libvirtd refuse to start.
        as_root rm -f /run/libvirtd.pid
        as_root libvirtd -d --pid-file /run/libvirtd.pid
    fi
fi

# Wait for libvirtd's socket before talking to it ('virsh version' is slow: it
# probes qemu, so ask for something cheap).
for _ in $(seq 1 30); do
    if as_root virsh -c qemu:///system uri >/dev/null 2>&1; then
        break
    fi
    sleep 1
done
as_root virsh -c qemu:///system uri >/dev/null

# The 'default' NAT network: vagrant-libvirt's management network needs a network
# with DHCP; Debian ships its definition but does not always define or start it.
virsh_sys() {
    as_root virsh -c qemu:///system "$@"
}
if ! virsh_sys net-info default >/dev/null 2>&1; then
    echo "setup-host: defining libvirt network 'default'"
    virsh_sys net-define /usr/share/libvirt/networks/default.xml >/dev/null
fi
# Capture first: grep -q closing the pipe early would fail the pipeline (pipefail).
net_info=$(virsh_sys net-info default)
if ! grep -Eq '^Active:[[:space:]]+yes' <<<"$net_info"; then
    echo "setup-host: starting libvirt network 'default'"
    virsh_sys net-start default >/dev/null
fi
virsh_sys net-autostart default >/dev/null 2>&1 || true

# The 'default' storage pool is where vagrant-libvirt puts box volumes and disks.
if ! virsh_sys pool-info default >/dev/null 2>&1; then
    echo "setup-host: defining libvirt storage pool 'default'"
    as_root mkdir -p /var/lib/libvirt/images
    virsh_sys pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
fi
pool_info=$(virsh_sys pool-info default)
if ! grep -Eq '^State:[[:space:]]+running' <<<"$pool_info"; then
    virsh_sys pool-start default >/dev/null
fi
virsh_sys pool-autostart default >/dev/null 2>&1 || true

# Non-root users need to be in the libvirt group to use qemu:///system.
if [ "$(id -u)" -ne 0 ] && ! id -nG | tr ' ' '\n' | grep -qx libvirt; then
    echo "setup-host: adding $(id -un) to group libvirt (log in again to use it)"
    as_root usermod -aG libvirt "$(id -un)"
fi

echo "setup-host: ready: $(vagrant --version), libvirt $(virsh --version), network and pool 'default' active"
