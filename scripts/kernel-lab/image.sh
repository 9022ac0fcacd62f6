#!/usr/bin/env bash
# Build (once) the kernel-lab guest: a Debian 12 root with Debian's own kernel (every ip_vs
# module, ipip), ipvsadm, iproute2, iptables, python3, tcpdump, conntrack..., as a raw ext4
# image plus the kernel and initrd for a direct kernel boot.  Run as root.
#
#   scripts/kernel-lab/image.sh        prints the cache directory holding
#                                      disk.img, vmlinuz, initrd.img, recipe
#
# The image lives outside the repository, in $PYVS_KERNEL_LAB_CACHE (default
# /var/cache/pyvs/kernel-lab), and is rebuilt only when its recipe (this script, rootfs.sh,
# the guest's init, the package list) changes.  The scenarios and the in-guest runner are
# not part of it: they reach the guest through the 9p share at every boot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PYVS_KERNEL_LAB_CACHE:-/var/cache/pyvs/kernel-lab}
packages=ipvsadm,iproute2,iptables,python3,procps,curl,tcpdump,iputils-ping,conntrack
size=3G

recipe=$( { cat "$here/image.sh" "$here/rootfs.sh" "$here/init"; echo "$packages $size"; } \
          | sha256sum | cut -d' ' -f1)
if [ -f "$cache/recipe" ] && [ "$(cat "$cache/recipe")" = "$recipe" ] \
   && [ -f "$cache/disk.img" ]; then
  echo "$cache"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "image.sh: building the guest image needs root" >&2; exit 1; }
need=""
for pkg in qemu-system-x86 debootstrap e2fsprogs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
  echo "image.sh: installing Debian packages:$need" >&2
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086  # a list of package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

start=$(date +%s)
mkdir -p "$cache"
build=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$build"' EXIT
"$here/rootfs.sh" --packages "$packages" "$build/root"
install -m 755 "$here/init" "$build/root/sbin/pyvs-lab-init"
cp "$build"/root/boot/vmlinuz-* "$build/vmlinuz"
cp "$build"/root/boot/initrd.img-* "$build/initrd.img"
truncate -s "$size" "$build/disk.img"
mkfs.ext4 -q -L pyvs-lab -d "$build/root" "$build/disk.img"
rm -rf "$build/root"
echo "$recipe" >"$build/recipe"
for f in disk.img vmlinuz initrd.img recipe; do mv -f "$build/$f" "$cache/$f"; done
echo "image.sh: built $cache in $(( $(date +%s) - start )) s" >&2
echo "$cache"
