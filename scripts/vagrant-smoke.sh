#!/usr/bin/env bash
# The Vagrant lab booted for real (slow; not part of scripts/test.sh).  As root, on a host
# with libvirt: builds and adds the box (vagrant/box/build.sh), starts libvirtd if it is not
# running (and stops it at the end), then per mode: `vagrant up` a client, the director and
# one realserver, curls the VIP from the client, lists the director's table
# (`sudo pyvsadm -Ln`) and the ARP tables, runs `pyvs compare --ssh-config` on
# `vagrant ssh-config` for one scenario, destroys the VMs and checks that no domain,
# network, volume or bridge is left.  Prints what it measured and the wall times.
#
#   scripts/vagrant-smoke.sh [--modes nat,dr] [--scenario held]
#
# PYVS_SMOKE_DIR (default /var/tmp/pyvs-vagrant-smoke) keeps the logs, the VMs' serial
# consoles, the ssh configs and the comparisons' JSON.  PYVS_BOX (default pyvs/bookworm),
# PYVS_MEMORY and PYVS_LIBVIRT_DRIVER are passed to the Vagrantfile.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=nat,dr
scenario=held
while [ $# -gt 0 ]; do
  case $1 in
    --modes) modes=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    *) echo "usage: vagrant-smoke.sh [--modes nat,dr] [--scenario NAME]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "vagrant-smoke: needs root (libvirt, the box build)" >&2; exit 2; }
for tool in vagrant virsh libvirtd rsync ssh; do
  command -v "$tool" >/dev/null || {
    echo "vagrant-smoke: $tool is missing (Debian: vagrant vagrant-libvirt libvirt-daemon-system" \
         "libvirt-clients dnsmasq-base qemu-system-x86 qemu-utils rsync openssh-client)" >&2
    exit 2; }
done
[ -x .venv/bin/pyvs ] || scripts/setup.sh >&2

out=${PYVS_SMOKE_DIR:-/var/tmp/pyvs-vagrant-smoke}
mkdir -p "$out/console"
rm -f "$out"/console/*.log
export PYVS_BOX=${PYVS_BOX:-pyvs/bookworm} PYVS_REALSERVERS=1 PYVS_CONSOLE_DIR=$out/console
export VAGRANT_NO_COLOR=1
virsh="virsh -q -c qemu:///system"
t0=$(date +%s)
step_start=$t0
failed=0
started_libvirtd=0

say() { printf '%s\n' "$*"; }
step() {   # step NAME: the time since the last step
  local now; now=$(date +%s)
  say "  [$(( now - step_start )) s] $1"
  step_start=$now
}
fail() { say "  FAIL: $*"; failed=1; }
# the lab's libvirt objects: domains and disks are named vagrant_*, networks pyvs-* and
# vagrant-libvirt (the management network)
leftovers() {
  $virsh list --all --name | grep '^vagrant_' || true
  $virsh net-list --all --name | grep -E '^(pyvs-|vagrant-libvirt$)' || true
  $virsh vol-list --pool default 2>/dev/null | awk '$1 ~ /^vagrant_/ {print $1}' || true
}
vg() {   # vg TIMEOUT ARGS...: vagrant in vagrant/, its log in $out/vagrant.log
  local limit=$1; shift
  say "\$ vagrant $*" >>"$out/vagrant.log"
  (cd vagrant && timeout "$limit" vagrant "$@") 2>&1 | stdbuf -oL tr '\r' '\n' \
    | grep --line-buffered -v 'Progress:' \
    >>"$out/vagrant.log"
}
on() {   # on HOST COMMAND: its output, over ssh with `vagrant ssh-config`'s file ($ssh)
  timeout 120 ssh -F "$ssh" -o BatchMode=yes "$1" "$2" 2>>"$out/ssh.log" || true
}

finish() {
  local rc=$?
  set +e
  if [ -f vagrant/.vagrant/machines/director/libvirt/id ] || [ -n "$(leftovers)" ]; then
    vg 900 destroy -f
  fi
  if [ "$started_libvirtd" = 1 ]; then
    # the management network's dnsmasq outlives libvirtd: take the networks down first
    for net in $($virsh net-list --name 2>/dev/null | grep -E '^(pyvs-|vagrant-libvirt$)'); do
      $virsh net-destroy "$net" >/dev/null
    done
    for pidfile in /run/libvirtd.pid /run/virtlogd.pid; do
      [ -f "$pidfile" ] && kill "$(cat "$pidfile")"
    done
    say "libvirtd and virtlogd (started by this script) stopped"
  fi
  say "wall time: $(( $(date +%s) - t0 )) s; logs in $out"
  [ "$rc" = 0 ] && [ "$failed" = 1 ] && rc=1
  exit "$rc"
}
trap finish EXIT

if ! $virsh version >/dev/null 2>&1; then
  # no init here to start it (e.g. PID 1 is not systemd): the daemons by hand.  Without
  # udev, /dev/kvm may lack the root:kvm 0660 Debian's udev rules give it; libvirt then
  # finds KVM in its qemu probe but not for its user, throws its capability cache away at
  # every call, and `vagrant up` hangs ("KVM was enabled when probing ..., but it is not
  # available now" in libvirtd's debug log)
  if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  fi
  virtlogd -d
  libvirtd -d
  started_libvirtd=1
  for _ in $(seq 30); do $virsh version >/dev/null 2>&1 && break; sleep 1; done
  $virsh version >/dev/null 2>&1 || { say "libvirtd did not start"; exit 1; }
  say "started libvirtd -d and virtlogd -d (no init system to do it)"
fi
if [ -n "$(leftovers)" ]; then
  say "a Vagrant lab is already up here (libvirt: $(leftovers | tr '\n' ' ')):"
  say "destroy it first (cd vagrant && vagrant destroy -f)"
  exit 1
fi
: >"$out/vagrant.log"

say "== box $PYVS_BOX"
if [ "$PYVS_BOX" = pyvs/bookworm ]; then
  vagrant/box/build.sh >"$out/box.log" 2>&1 || { cat "$out/box.log"; exit 1; }
fi
step "box ready ($(vagrant box list | grep -c "^$PYVS_BOX ") added)"

for mode in ${modes//,/ }; do
  export PYVS_MODE=$mode
  say "== $mode: client, director, rs1 (PYVS_MODE=$mode PYVS_REALSERVERS=1)"
  if vg 3600 up --provider=libvirt; then
    step "vagrant up"
  else
    fail "vagrant up (see $out/vagrant.log)"; vg 900 destroy -f; continue
  fi
  ssh=$out/$mode.ssh
  (cd vagrant && vagrant ssh-config) >"$ssh" 2>>"$out/vagrant.log" \
    || fail "vagrant ssh-config"
  if [ "$mode" = nat ]; then vip=198.51.100.100; else vip=203.0.113.100; fi
  replies=$(on client "for i in 1 2 3 4; do curl -s -m 5 http://$vip/; echo; done" \
            | tr -s '\n' ' ')
  say "curl http://$vip/ x4 from the client: $replies"
  [ "$replies" = "rs1 rs1 rs1 rs1 " ] || fail "the client did not get rs1 four times"
  say "director: sudo pyvsadm -Ln"
  on director 'sudo pyvsadm -Ln' | sed 's/^/    /' | tee "$out/$mode-Ln.txt"
  grep -q "TCP  $vip:80" "$out/$mode-Ln.txt" || fail "the director lists no service on $vip:80"
  say "ARP: the client's and rs1's neighbours on the lab segment (ip -4 neigh show dev eth1)"
  say "    client: $(on client 'ip -4 neigh show dev eth1' | tr '\n' ';')"
  say "    rs1:    $(on rs1 'ip -4 neigh show dev eth1' | tr '\n' ';')"
  step "curl, -Ln, ARP"

  say "pyvs compare --ssh-config $mode.ssh $scenario"
  if timeout 900 .venv/bin/pyvs compare --ssh-config "$ssh" "$scenario" \
       --json "$out/$mode.json" >"$out/$mode-compare.txt" 2>&1; then
    sed 's/^/    /' "$out/$mode-compare.txt"
  else
    sed 's/^/    /' "$out/$mode-compare.txt"; fail "pyvs compare --ssh-config ($mode)"
  fi
  step "pyvs compare --ssh-config"

  vg 900 destroy -f || fail "vagrant destroy"
  left=$(leftovers)
  bridges=$(ip -o link show type bridge | awk -F': ' '$2 ~ /^virbr/ {print $2}')
  if [ -z "$left$bridges" ]; then
    say "destroyed: no domain, lab network, disk volume or virbr bridge left"
  else
    fail "left after destroy: $(echo "$left $bridges" | tr '\n' ' ')"
  fi
  step "vagrant destroy"
done
if [ -f "$out/nat.json" ] && [ -f "$out/dr.json" ]; then
  say "== both runs, one table: pyvs compare --from nat.json --from dr.json"
  .venv/bin/pyvs compare --from "$out/nat.json" --from "$out/dr.json" | sed 's/^/    /'
fi
if [ "$failed" = 0 ]; then say "vagrant smoke: OK"; else say "vagrant smoke: FAILED"; fi
