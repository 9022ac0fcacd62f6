#!/usr/bin/env bash
# Boot the kernel-lab guest once (software emulation, no NIC) with DIR shared over 9p as
# /share; the guest runs `sh /share/run` (output in DIR/guest.log, exit status in DIR/rc),
# then powers off.  The disk is opened with -snapshot, so the cached image never changes.
#
#   scripts/kernel-lab/boot.sh DIR     exit status: the guest script's, or 1 if none came
#
# PYVS_KERNEL_LAB_TIMEOUT (default 1800 s) bounds the whole boot; the console goes to
# DIR/console.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# != 1 ] || [ ! -d "$1" ]; then
  echo "usage: boot.sh DIR (DIR/run is the guest's script)" >&2; exit 2
fi
share=$(cd "$1" && pwd)
cache=$("$here/image.sh")
rm -f "$share/rc"
timeout "${PYVS_KERNEL_LAB_TIMEOUT:-1800}" qemu-system-x86_64 \
  -machine q35,accel=tcg -cpu max -smp 2 -m 2048 \
  -display none -serial "file:$share/console.log" -monitor none -no-reboot \
  -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 init=/sbin/pyvs-lab-init panic=-1 quiet" \
  -drive "file=$cache/disk.img,if=virtio,format=raw,snapshot=on" -nic none \
  -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share" \
  || { echo "boot.sh: qemu failed or timed out (console: $share/console.log)" >&2; exit 1; }
[ -f "$share/rc" ] || { echo "boot.sh: the guest script did not finish (console: $share/console.log)" >&2; exit 1; }
exit "$(cat "$share/rc")"
