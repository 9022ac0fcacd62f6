#!/usr/bin/env bash
# Build a Debian root file system (a directory) with a kernel, from Debian packages only.
# Shared by the kernel lab (scripts/kernel-lab/image.sh) and anything else that needs a plain
# Debian root with a bootable kernel (a VM box, say).  Run as root.
#
#   scripts/kernel-lab/rootfs.sh [--suite S] [--mirror URL] [--packages a,b,...] DIR
#
# --packages   extra packages, comma-separated, on top of linux-image-amd64,
#              initramfs-tools and kmod
# --suite      Debian suite (default bookworm)
# --mirror     default: the host's own apt source for that suite (apt-get indextargets),
#              else http://deb.debian.org/debian
# DIR must not exist or be empty; on failure it is left for inspection.
set -euo pipefail

suite=bookworm
mirror=
extra=
while [ $# -gt 1 ]; do
  case $1 in
    --suite) suite=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --packages) extra=$2; shift 2 ;;
    *) echo "rootfs.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# = 1 ] || { echo "usage: rootfs.sh [--suite S] [--mirror URL] [--packages a,b] DIR" >&2; exit 2; }
dir=$1
[ "$(id -u)" = 0 ] || { echo "rootfs.sh: needs root (debootstrap)" >&2; exit 1; }
if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
  echo "rootfs.sh: $dir exists and is not empty" >&2; exit 1
fi

host_mirror() {
  # The URI the host's apt uses for the suite's main Packages index.
  # shellcheck disable=SC2016  # $(...) are apt's format fields
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' 2>/dev/null \
    | awk -v s="$1" '$2 == s && $3 == "Packages" {print $1; exit}'
}
[ -n "$mirror" ] || mirror=$(host_mirror "$suite")
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

if ! command -v debootstrap >/dev/null; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

packages=linux-image-amd64,initramfs-tools,kmod${extra:+,$extra}
echo "rootfs.sh: debootstrap $suite from $mirror into $dir (+$packages)" >&2
mkdir -p "$dir"
debootstrap --variant=minbase --include="$packages" "$suite" "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 \
  || { echo "rootfs.sh: debootstrap failed, see $dir.debootstrap.log" >&2; exit 1; }
rm -f "$dir.debootstrap.log"
echo debian >"$dir/etc/hostname"
chroot "$dir" apt-get clean
ls "$dir"/boot/vmlinuz-* "$dir"/boot/initrd.img-* >/dev/null \
  || { echo "rootfs.sh: no kernel or initrd in $dir/boot" >&2; exit 1; }
