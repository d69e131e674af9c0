#!/usr/bin/env bash
# Build the Vagrant box jobqueue/debian12 (provider libvirt) from a debootstrap of
# Debian 12 and add it to Vagrant. Skipped when the box is already installed;
# FORCE=1 rebuilds. Needs root (loop devices, mounts, chroot).
#
# Besides a minimal bootable system, the box already holds the Debian packages the
# Ansible roles install: dpkg in the chroot runs natively, while dpkg inside an
# emulated VM takes minutes. The roles still install them, so any Debian 12 box works.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD

BOX_NAME=${BOX_NAME:-jobqueue/debian12}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DISK_GB=8
WORK=${BOX_WORK_DIR:-$REPO/build/box}

# Base system: boots under libvirt, reachable by Vagrant over SSH, AppArmor on.
BASE_PACKAGES=systemd-sysv,udev,dbus,openssh-server,sudo,python3,ifupdown,isc-dhcp-client,initramfs-tools,apparmor,kmod,iproute2,procps,iputils-ping,ca-certificates,netbase,less
# Installed after debootstrap with apt (better dependency resolution).
KERNEL_PACKAGES=(linux-image-amd64 grub-pc)
# What the roles install (kept in step with roles/*): a no-op for them on this box.
ROLE_PACKAGES=(
    apache2 libapache2-mod-wsgi-py3 ssl-cert
    python3-venv python3-pip python3-psycopg2 python3-cryptography python3-apt
    postgresql
    acl apparmor-utils polkitd ca-certificates rsync curl
    munge slurm-client slurmctld slurmd slurmdbd mariadb-server python3-pymysql
)

if [ "$(id -u)" -ne 0 ]; then
    echo "build-box: must run as root (loop devices, mount, chroot)" >&2
    exit 1
fi

if [ "${FORCE:-0}" != 1 ] && vagrant box list 2>/dev/null | awk '{print $1}' | grep -qxF "$BOX_NAME"; then
    echo "build-box: box $BOX_NAME already installed (FORCE=1 rebuilds)"
    exit 0
fi

for tool in debootstrap sfdisk losetup mkfs.ext4 qemu-img vagrant fstrim; do
    command -v "$tool" >/dev/null || { echo "build-box: $tool missing; run scripts/setup-host.sh" >&2; exit 1; }
done

# The insecure public key Vagrant logs in with before it swaps in a per-machine key.
PUBKEY=${VAGRANT_INSECURE_PUBKEY:-}
if [ -z "$PUBKEY" ]; then
    for candidate in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
                     /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub \
                     /opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub; do
        if [ -f "$candidate" ]; then PUBKEY=$candidate; fi
    done
fi
if [ -z "$PUBKEY" ] || [ ! -f "$PUBKEY" ]; then
    echo "build-box: vagrant's keys/vagrant.pub not found (set VAGRANT_INSECURE_PUBKEY)" >&2
    exit 1
fi

T_START=$SECONDS
STEP=""
STEP_T=$SECONDS
step() {
    if [ -n "$STEP" ]; then
        printf 'build-box: %-28s %4ds\n' "$STEP" $((SECONDS - STEP_T))
    fi
    STEP=$1
    STEP_T=$SECONDS
}

RAW=$WORK/disk.raw
ROOT=$WORK/rootfs
DISK_DEV=""
PART_DEV=""

cleanup() {
    set +e
    if mountpoint -q "$ROOT"; then
        umount -R "$ROOT"
    fi
    [ -n "$PART_DEV" ] && losetup -d "$PART_DEV" 2>/dev/null
    [ -n "$DISK_DEV" ] && losetup -d "$DISK_DEV" 2>/dev/null
}
trap cleanup EXIT

in_root() {
    LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"
}

step "disk"
rm -rf "$WORK"
mkdir -p "$WORK" "$ROOT"
truncate -s "${DISK_GB}G" "$RAW"
# One bootable partition from 1 MiB; the gap before it holds GRUB's core image.
sfdisk -q "$RAW" <<<'label: dos
start=2048, type=83, bootable'
DISK_DEV=$(losetup -f --show "$RAW")
# Loop partition scanning may be off (max_part=0, no udev): map the partition by offset.
PART_OFFSET=$((2048 * 512))
PART_DEV=$(losetup -f --show -o "$PART_OFFSET" --sizelimit $((DISK_GB * 1024 * 1024 * 1024 - PART_OFFSET)) "$RAW")
ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)
mkfs.ext4 -q -L root -U "$ROOT_UUID" "$PART_DEV"
mount "$PART_DEV" "$ROOT"

step "debootstrap"
debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log" >&2; exit 1; }

mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# No daemons may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

cat >"$ROOT/etc/apt/sources.list" <<APT
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
APT
# Without recommends, as the roles install; no docs/man pages (smaller box, faster dpkg).
cat >"$ROOT/etc/apt/apt.conf.d/90box" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/90box" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
force-unsafe-io
DPKG
# man-db's trigger is slow under emulation and nobody reads man pages here.
in_root debconf-set-selections <<'DEBCONF'
man-db man-db/auto-update boolean false
grub-pc grub-pc/install_devices multiselect
grub-pc grub-pc/install_devices_empty boolean true
DEBCONF

step "apt: kernel, grub, roles"
in_root apt-get update -q >"$WORK/apt.log" 2>&1
in_root apt-get install -y -q "${KERNEL_PACKAGES[@]}" "${ROLE_PACKAGES[@]}" >>"$WORK/apt.log" 2>&1 \
    || { tail -30 "$WORK/apt.log" >&2; exit 1; }

step "python deps"
# The service's dependencies, from the project's wheelhouse, in the virtualenv the
# roles install into (jobqueue_install_dir's default): pip compiles every module it
# installs, minutes under emulation and seconds here. The roles still install
# jobqueue itself and upgrade whatever the wheelhouse has newer.
WHEELHOUSE=$REPO/build/wheelhouse
if [ -d "$WHEELHOUSE" ]; then
    mkdir -p "$ROOT/opt/jobqueue"
    cp -a "$WHEELHOUSE" "$ROOT/tmp/wheelhouse"
    in_root python3 -m venv /opt/jobqueue/venv
    deps=$(cd "$ROOT/tmp/wheelhouse" && ls -- *.whl | grep -v '^jobqueue-' | sed 's|^|/tmp/wheelhouse/|')
    # shellcheck disable=SC2086 # one argument per wheel
    in_root /opt/jobqueue/venv/bin/pip install --quiet --no-index --disable-pip-version-check $deps
    rm -rf "$ROOT/tmp/wheelhouse"
else
    echo "build-box: no $WHEELHOUSE; the roles will install every dependency in the VMs" >&2
fi

step "configure"
echo debian12 >"$ROOT/etc/hostname"
cat >"$ROOT/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	debian12
::1	localhost ip6-localhost ip6-loopback
HOSTS
cat >"$ROOT/etc/fstab" <<FSTAB
UUID=$ROOT_UUID / ext4 errors=remount-ro,noatime 0 1
FSTAB
# eth0 is the libvirt management network (DHCP); Vagrant adds eth1.. for private networks.
cat >"$ROOT/etc/network/interfaces" <<'NET'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
NET

# User vagrant: Vagrant's insecure key, passwordless sudo, no password login.
in_root useradd --create-home --shell /bin/bash --user-group vagrant
in_root usermod -p '*' vagrant
install -d -m 0700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$PUBKEY" "$ROOT/home/vagrant/.ssh/authorized_keys"
[ "$(in_root id -u vagrant)" = 1000 ] || { echo "build-box: vagrant is not uid 1000" >&2; exit 1; }
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/vagrant"
chmod 0440 "$ROOT/etc/sudoers.d/vagrant"
in_root passwd -l root >/dev/null

# Ed25519 and ECDSA host keys only: an RSA key takes long to generate under
# emulation and would delay SSH on every new VM.
cat >"$ROOT/etc/ssh/sshd_config.d/box.conf" <<'SSHD'
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
UseDNS no
PasswordAuthentication no
SSHD

# Every VM gets its own SSH host keys and snakeoil certificate on first boot.
cat >"$ROOT/etc/systemd/system/box-ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate this machine's SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
RequiredBy=ssh.service
UNIT
# PostgreSQL's default configuration uses the snakeoil certificate; make it when
# PostgreSQL first starts, not at every first boot (an RSA key is slow here).
cat >"$ROOT/etc/systemd/system/box-snakeoil.service" <<'UNIT'
[Unit]
Description=Generate this machine's snakeoil certificate
Before=postgresql@15-main.service
ConditionPathExists=!/etc/ssl/private/ssl-cert-snakeoil.key

[Service]
Type=oneshot
ExecStart=/usr/sbin/make-ssl-cert generate-default-snakeoil

[Install]
RequiredBy=postgresql@15-main.service
UNIT
# munge's postinst made one key in the chroot, which every VM of the box would
# share; Debian makes a different key on each host, which the slurm role must
# replace with one shared key. Each VM makes its own on first boot, as Debian would.
rm -f "$ROOT/etc/munge/munge.key"
cat >"$ROOT/etc/systemd/system/box-munge-key.service" <<'UNIT'
[Unit]
Description=Generate this machine's munge key
Before=munge.service
ConditionPathExists=!/etc/munge/munge.key

[Service]
Type=oneshot
User=munge
ExecStart=/usr/sbin/mungekey --create

[Install]
RequiredBy=munge.service
UNIT
in_root systemctl enable box-ssh-host-keys.service box-snakeoil.service box-munge-key.service >/dev/null 2>&1

# Debian's sample profiles (dhclient, lsb_release, nvidia_modprobe) would be compiled
# at every first boot: about 40 s under emulation, on the path to SSH. The roles load
# the profiles the service needs.
for profile in sbin.dhclient lsb_release nvidia_modprobe; do
    if [ -e "$ROOT/etc/apparmor.d/$profile" ]; then
        ln -sf "../$profile" "$ROOT/etc/apparmor.d/disable/$profile"
    fi
done

# Installed, not running: the roles enable what each host needs (workers need neither).
in_root systemctl disable apache2.service postgresql.service mariadb.service munge.service \
    slurmctld.service slurmd.service slurmdbd.service >/dev/null 2>&1
# apt's daily timers would take the dpkg lock in the middle of a play.
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
# No LVM snapshots to reap or scrub; these only cost CPU at boot.
in_root systemctl mask e2scrub_reap.service e2scrub_all.timer >/dev/null 2>&1

step "bootloader"
# The box boots on virtio only: an initramfs with just what finds the root disk is
# much smaller than Debian's default (most drivers), and under emulation loading
# and unpacking it is on the boot path.
cat >"$ROOT/etc/initramfs-tools/conf.d/box.conf" <<'INITRAMFS'
MODULES=list
INITRAMFS
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 crc32c_generic >"$ROOT/etc/initramfs-tools/modules"
cat >"$ROOT/etc/default/grub" <<'GRUB'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0 net.ifnames=0 apparmor=1 security=apparmor"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB
in_root update-initramfs -u -k all >>"$WORK/apt.log" 2>&1
# The partition is its own loop device here: add the modules GRUB needs to find it
# on the real disk; core.img locates /boot/grub by the filesystem UUID.
in_root grub-install --target=i386-pc --modules="part_msdos ext2" "$DISK_DEV" >>"$WORK/grub.log" 2>&1 \
    || { cat "$WORK/grub.log" >&2; exit 1; }
# grub-mkconfig skips a root on a file-backed loop device, and without udev it could
# not name it by UUID anyway: give it the root device for this one run.
mkdir -p "$ROOT/etc/default/grub.d"
echo "GRUB_DEVICE=\"UUID=$ROOT_UUID\"" >"$ROOT/etc/default/grub.d/zz-box-build.cfg"
in_root update-grub >>"$WORK/grub.log" 2>&1
rm -f "$ROOT/etc/default/grub.d/zz-box-build.cfg"
grep -q "root=UUID=$ROOT_UUID" "$ROOT/boot/grub/grub.cfg" || { echo "build-box: grub.cfg has no root=UUID" >&2; exit 1; }
# Upgrades inside the VM reinstall GRUB to the VM's disk (set only now: in the chroot
# /dev is the build machine's).
in_root debconf-set-selections <<'DEBCONF'
grub-pc grub-pc/install_devices multiselect /dev/vda
grub-pc grub-pc/install_devices_empty boolean false
DEBCONF

step "clean"
in_root apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/resolv.conf"
rm -f "$ROOT"/etc/ssh/ssh_host_* "$ROOT/etc/ssl/private/ssl-cert-snakeoil.key" "$ROOT/etc/ssl/certs/ssl-cert-snakeoil.pem"
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
rm -rf "$ROOT"/tmp/* "$ROOT"/var/tmp/* "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/*
umount "$ROOT/sys" "$ROOT/proc" "$ROOT/dev/pts" "$ROOT/dev"
# Hand freed blocks back so the qcow2 holds only live data.
fstrim "$ROOT" >/dev/null
umount "$ROOT"
losetup -d "$PART_DEV"; PART_DEV=""
losetup -d "$DISK_DEV"; DISK_DEV=""

step "qcow2"
qemu-img convert -O qcow2 -c -o compression_type=zstd "$RAW" "$WORK/box.img"
rm -f "$RAW"
cat >"$WORK/metadata.json" <<META
{"provider": "libvirt", "format": "qcow2", "virtual_size": $DISK_GB}
META
cp "$REPO/box/Vagrantfile" "$WORK/Vagrantfile"
# Uncompressed tar: the image is already compressed.
tar -C "$WORK" -cf "$WORK/debian12.box" metadata.json Vagrantfile box.img

step "vagrant box add"
vagrant box remove --force --all "$BOX_NAME" >/dev/null 2>&1 || true
vagrant box add --force --name "$BOX_NAME" "$WORK/debian12.box"
rm -f "$WORK/debian12.box"
# vagrant-libvirt copies the box into the storage pool under a name with the box's
# timestamp, so a rebuilt box gets a new volume. Remove older copies that no VM
# disk is based on (VMs of other projects may still use one).
POOL_VOLS=$(virsh -c qemu:///system vol-list default 2>/dev/null | awk 'NR > 2 && NF >= 2 {print $2}') || POOL_VOLS=""
BACKING=$(for v in $POOL_VOLS; do qemu-img info -U "$v" 2>/dev/null | sed -n 's/^backing file: //p'; done | sort -u)
for v in $POOL_VOLS; do
    case "$(basename "$v")" in
        "${BOX_NAME//\//-VAGRANTSLASH-}"_vagrant_box_image_*)
            if ! grep -qxF "$v" <<<"$BACKING"; then
                virsh -c qemu:///system vol-delete "$v" >/dev/null 2>&1 || true
            fi
            ;;
    esac
done

step ""
printf 'build-box: %-28s %4ds (box image %s)\n' "total" $((SECONDS - T_START)) "$(du -h "$WORK/box.img" | cut -f1)"
