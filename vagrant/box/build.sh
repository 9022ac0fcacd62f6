#!/usr/bin/env bash
# Build (once) a Vagrant box for the libvirt provider from Debian packages only, and add it
# to Vagrant as pyvs/bookworm: Debian 12 with its own kernel booted by GRUB from a qcow2
# disk, systemd, ifupdown (eth0 by DHCP; net.ifnames=0 keeps the names eth0, eth1, eth2 the
# lab's scripts use), openssh-server, the `vagrant` user with Vagrant's insecure public key
# and passwordless sudo, rsync (Vagrant's synced folder), every package the provisioning
# scripts install, and a wheelhouse of pyvs's live dependencies (netfilterqueue built here),
# so that provisioning needs no network inside the VMs.  Run as root.
#
#   vagrant/box/build.sh          build if stale, `vagrant box add` if not added yet;
#                                 prints the .box path
#
# PYVS_BOX_CACHE (default /var/cache/pyvs/vagrant-box) holds the .box and its recipe (this
# script, rootfs.sh, the package and wheel lists: a change rebuilds it).  PYVS_BOX_NAME
# (default pyvs/bookworm) is the name it is added under.  See vagrant/README.md for times.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rootfs=$here/../../scripts/kernel-lab/rootfs.sh
cache=${PYVS_BOX_CACHE:-/var/cache/pyvs/vagrant-box}
name=${PYVS_BOX_NAME:-pyvs/bookworm}
box=$cache/pyvs-bookworm.box
# the system, Vagrant's needs (sudo, rsync, procps for its `ps`, dbus for hostnamectl), and
# what pyvs/data/provision/*.sh install (tests/test_vagrant.py checks this list covers them)
packages=systemd-sysv,udev,dbus,procps,ifupdown,isc-dhcp-client,openssh-server,sudo,rsync
packages=$packages,grub-pc-bin,grub2-common,ca-certificates,iputils-ping
packages=$packages,python3,python3-venv,python3-dev,gcc,libc6-dev,iptables
packages=$packages,libnetfilter-queue-dev,iproute2,curl,netcat-openbsd
wheels="netfilterqueue pyyaml prometheus-client setuptools wheel"   # pyvs[live] + its build
size_gb=8

say() { echo "box: $*" >&2; }
die() { echo "box: $*" >&2; exit 1; }

recipe=$( { cat "$here/build.sh" "$rootfs" "$here/configure.sh" "$here/install-grub"
            echo "$packages $wheels $size_gb"; } | sha256sum | cut -d' ' -f1)
[ "$(id -u)" = 0 ] || die "building and adding the box needs root (debootstrap, chroot)"
command -v vagrant >/dev/null || die "vagrant is not installed (Debian: vagrant vagrant-libvirt)"

build_box() {
  local need="" pkg start build root
  for pkg in debootstrap qemu-system-x86 qemu-utils fdisk e2fsprogs; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    say "installing Debian packages:$need"
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086  # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
  start=$(date +%s)
  mkdir -p "$cache"
  build=$(mktemp -d "$cache/build.XXXXXX")
  root=$build/root
  # shellcheck disable=SC2064  # $build and $root are fixed from here on
  trap "cleanup '$build' '$root'" EXIT

  "$rootfs" --packages "$packages" "$root"
  say "downloading wheels: $wheels (+ cython, to build netfilterqueue)"
  python3 -m pip download -q --disable-pip-version-check -d "$root/tmp/dl" \
    --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
    --implementation cp --abi cp311 pyyaml prometheus-client setuptools wheel cython
  python3 -m pip download -q --disable-pip-version-check -d "$root/tmp/dl" \
    --no-deps --no-binary :all: netfilterqueue
  key=$(dpkg -L vagrant | grep '/keys/vagrant.pub$' | head -1)
  [ -f "$key" ] || die "Vagrant's insecure public key (keys/vagrant.pub) is not installed"
  install -m 0644 "$key" "$root/tmp/vagrant.pub"
  install -m 0755 "$here/configure.sh" "$root/tmp/configure.sh"

  say "configuring the root (user vagrant, network, sudo, ssh, wheels)"
  for m in dev proc sys; do mount --bind "/$m" "$root/$m"; done
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    chroot "$root" /tmp/configure.sh
  for m in sys proc dev; do umount "$root/$m"; done
  rm -f "$root/tmp/configure.sh"
  install -m 0755 "$here/install-grub" "$root/usr/local/sbin/pyvs-install-grub"
  cp "$root"/boot/vmlinuz-* "$build/vmlinuz"
  cp "$root"/boot/initrd.img-* "$build/initrd.img"

  say "disk: ${size_gb} GB, one ext4 partition from 1 MiB; GRUB installed under qemu"
  # mkfs writes the root straight into the partition's byte range of the image, and the
  # guest's own kernel (which sees /dev/vda1) installs GRUB: no loop partition devices
  truncate -s "${size_gb}G" "$build/disk.raw"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$build/disk.raw"
  mkfs.ext4 -q -L pyvs-root -E offset=1048576 -d "$root" "$build/disk.raw" \
    "$(( size_gb * 1024 - 1 ))M"
  rm -rf "$root"
  timeout 1200 qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 1024 \
    -display none -serial "file:$build/console.log" -monitor none -no-reboot \
    -kernel "$build/vmlinuz" -initrd "$build/initrd.img" \
    -append "root=/dev/vda1 rw console=ttyS0 init=/usr/local/sbin/pyvs-install-grub panic=-1" \
    -drive "file=$build/disk.raw,if=virtio,format=raw" -nic none \
    || die "qemu failed or timed out installing GRUB (console: $build/console.log)"
  if ! grep -q "pyvs-install-grub: done" "$build/console.log"; then
    cp "$build/console.log" "$cache/grub-console.log"
    die "GRUB was not installed (console: $cache/grub-console.log)"
  fi

  say "qcow2 and the box"
  mkdir -p "$build/box"
  qemu-img convert -c -O qcow2 "$build/disk.raw" "$build/box/box.img"   # compressed: smaller upload
  rm -f "$build/disk.raw"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$size_gb" \
    >"$build/box/metadata.json"
  install -m 0644 "$here/Vagrantfile.box" "$build/box/Vagrantfile"
  echo "$recipe" >"$build/box/recipe"
  tar -C "$build/box" -cf "$build/box.tar" metadata.json Vagrantfile recipe box.img
  mv -f "$build/box.tar" "$box"
  echo "$recipe" >"$cache/recipe"
  say "built $box ($(du -h "$box" | cut -f1)) in $(( $(date +%s) - start )) s"
}

cleanup() {
  local build=$1 root=$2 m
  set +e
  for m in sys proc dev; do mountpoint -q "$root/$m" && umount "$root/$m"; done
  # never remove a tree that still has the host's /dev, /proc or /sys mounted in it
  if grep -q " $build" /proc/mounts; then
    echo "box: $build is still mounted; left for inspection" >&2
  else
    rm -rf "$build"
  fi
}

if [ ! -f "$box" ] || [ "$(cat "$cache/recipe" 2>/dev/null)" != "$recipe" ]; then
  build_box
fi

# add it unless Vagrant holds this very build (the recipe travels inside the box)
added=$(find "${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/${name//\//-VAGRANTSLASH-}" \
          -path '*/libvirt/recipe' 2>/dev/null | head -1 || true)
if [ -z "$added" ] || [ "$(cat "$added")" != "$recipe" ]; then
  vagrant box add -f --name "$name" "$box" >&2
  # vagrant-libvirt copies a box into libvirt's pool at its first use (named after the box
  # file's mtime, since the box has no version): drop the copies of older builds
  prefix=${name//\//-VAGRANTSLASH-}_vagrant_box_image_0_
  for vol in $(virsh -q -c qemu:///system vol-list --pool default 2>/dev/null \
               | awk -v p="$prefix" 'index($1, p) == 1 {print $1}'); do
    virsh -q -c qemu:///system vol-delete --pool default "$vol" >&2
  done
  say "added as $name"
fi
echo "$box"
