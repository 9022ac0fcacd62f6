#!/usr/bin/env bash
# The Vagrant lab booted for real (slow; not part of scripts/test.sh).  As root, on a host
# with libvirt: builds and adds the box (vagrant/box/build.sh), starts libvirtd if it is not
# running (and stops it at the end), then per mode: `vagrant up` a client, the director and
# one realserver, curls the VIP from the client, lists the director's table
# (`sudo pyvsadm -Ln`) and the ARP tables, runs `pyvs compare --ssh-config` on
# `vagrant ssh-config` for one scenario, destroys the VMs and checks that no domain,
# network, volume or bridge is left.  Prints what it measured and the wall times.
#
#   scripts/vagrant-smoke.sh [--modes nat,dr] [--scenario held] [--directors 1|2]
#
# --directors 2 (NAT, DR: PYVS_DIRECTORS=2) boots director2 beside them and, instead of the
# comparison, holds a telnet-like connection from the client through the VIP (the
# realserver's echo on port 23), fails over as keepalived's VRRP would (`sudo pyvs-vrrp
# backup` on director, `sudo pyvs-vrrp master` on director2), and checks that the held
# connection still echoes through director2, which knows it from the sync daemons; both
# directors' `pyvsadm -Lnc` before and after.
#
# PYVS_SMOKE_DIR (default /var/tmp/pyvs-vagrant-smoke) keeps the logs, the VMs' serial
# consoles, the ssh configs and the comparisons' JSON.  PYVS_BOX (default pyvs/bookworm),
# PYVS_MEMORY and PYVS_LIBVIRT_DRIVER are passed to the Vagrantfile.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=nat,dr
scenario=held
directors=1
usage="usage: vagrant-smoke.sh [--modes nat,dr] [--scenario NAME] [--directors 1|2]"
while [ $# -gt 0 ]; do
  case $1 in
    --modes) modes=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    --directors) directors=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
case $directors in
  1) ;;
  2) case ",$modes," in *,tun,*)
       echo "vagrant-smoke: --directors 2: the director pair runs NAT or DR, not TUN" >&2
       exit 2 ;;
     esac ;;
  *) echo "vagrant-smoke: --directors must be 1 or 2 (got '$directors')" >&2; exit 2 ;;
esac
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
rm -f "$out"/console/*.log "$out"/*.json "$out"/*.txt "$out"/*.ssh   # nothing of an earlier run
export PYVS_BOX=${PYVS_BOX:-pyvs/bookworm} PYVS_REALSERVERS=1 PYVS_CONSOLE_DIR=$out/console
export PYVS_DIRECTORS=$directors
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
tables() {   # tables TITLE: both directors' connection tables
  local d
  for d in director director2; do
    say "$d: sudo pyvsadm -Lnc ($1)"
    on "$d" 'sudo pyvsadm -Lnc' | sed 's/^/    /' | tee -a "$out/$mode-Lnc.txt"
  done
}

# the client's side of a telnet-like session on the VIP's port 23 (the realservers' echo):
# a line on stdin is sent, its echo (or the error) printed
HOLD='import socket, sys
s = socket.create_connection((sys.argv[1], 23), 10)
s.settimeout(10)
banner = s.recv(200).decode().strip()
print("port", s.getsockname()[1], banner, flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        print("reply", s.recv(200).decode().strip(), flush=True)
    except OSError as exc:
        print("error", type(exc).__name__, exc, flush=True)'

send() {   # send WORD [ECHO]: a line on the held connection; its answer must be ECHO
  local line
  [ -n "${HELD[1]:-}" ] || { fail "the held connection's ssh is gone before '$1'"; return; }
  echo "$1" >&"${HELD[1]}"
  read -r -t 30 -u "${HELD[0]}" line || line="(no answer in 30 s)"
  say "    sent '$1': $line"
  [ "$line" = "reply ${2:-$1}" ] || fail "the held connection did not answer '$1' ($line)"
}

failover_check() {   # the director pair: a held connection across a failover
  local line cport='' pid synced=0 f0
  say "sync daemons: sudo pyvsadm -L --daemon"
  for d in director director2; do
    say "    $d: $(on "$d" 'sudo pyvsadm -L --daemon' | tr '\n' ';')"
  done
  on client 'cat >/tmp/pyvs-hold.py' <<<"$HOLD"
  coproc HELD { ssh -F "$ssh" -o BatchMode=yes client "python3 /tmp/pyvs-hold.py $vip" \
                  2>>"$out/ssh.log"; }
  pid=$HELD_PID
  if read -r -t 60 -u "${HELD[0]}" line; then
    say "held connection: $line"
    cport=$(awk '{print $2}' <<<"$line")
  fi
  if [ -z "$cport" ]; then
    fail "no held connection to $vip:23 from the client"
  else
    send before
    say "    client's neighbour for $vip: $(on client "ip -4 neigh show $vip" | tr '\n' ';')"
    # director2's backup daemon applies the entry a few seconds after it is established
    for _ in $(seq 60); do
      if on director2 'sudo pyvsadm -Lnc' | grep ":$cport " >/dev/null; then synced=1; break; fi
      sleep 1
    done
    [ "$synced" = 1 ] || fail "director2 never listed the held connection (client port $cport)"
    step "held connection, synced to director2"
    tables "before the failover"
    f0=$(date +%s%N)
    say "failover: director $(on director 'sudo pyvs-vrrp backup && sudo cat /run/pyvs/vrrp-state')," \
        "director2 $(on director2 'sudo pyvs-vrrp master && sudo cat /run/pyvs/vrrp-state')" \
        "($(( ($(date +%s%N) - f0) / 1000000 )) ms, two ssh logins)"
    say "    client's neighbour for $vip: $(on client "ip -4 neigh show $vip" | tr '\n' ';')"
    for d in director director2; do
      say "    $d: /32 addresses: $(on "$d" 'ip -4 -o addr show' \
          | awk '$4 ~ /\/32$/ {print $2, $4}' | tr '\n' ';'), eth1's MAC:" \
          "$(on "$d" 'cat /sys/class/net/eth1/address')"
    done
    send after
    tables "after the failover"
    say "director2: sudo pyvsadm -Ln"
    on director2 'sudo pyvsadm -Ln' | sed 's/^/    /'
    send exit logout
  fi
  if [ -n "${HELD[1]:-}" ]; then eval "exec ${HELD[1]}>&-"; fi
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill "$pid" 2>/dev/null || true
  step "failover, the held connection through director2"
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
  vms="client, director, rs1"
  [ "$directors" = 2 ] && vms="client, director, director2, rs1"
  say "== $mode: $vms (PYVS_MODE=$mode PYVS_REALSERVERS=1 PYVS_DIRECTORS=$directors)"
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
  : >"$out/$mode-Lnc.txt"
  grep -q "TCP  $vip:80" "$out/$mode-Ln.txt" || fail "the director lists no service on $vip:80"
  say "ARP: the client's and rs1's neighbours on the lab segment (ip -4 neigh show dev eth1)"
  say "    client: $(on client 'ip -4 neigh show dev eth1' | tr '\n' ';')"
  say "    rs1:    $(on rs1 'ip -4 neigh show dev eth1' | tr '\n' ';')"
  step "curl, -Ln, ARP"

  if [ "$directors" = 2 ]; then
    failover_check
  else
    say "pyvs compare --ssh-config $mode.ssh $scenario"
    if timeout 900 .venv/bin/pyvs compare --ssh-config "$ssh" "$scenario" \
         --json "$out/$mode.json" >"$out/$mode-compare.txt" 2>&1; then
      sed 's/^/    /' "$out/$mode-compare.txt"
    else
      sed 's/^/    /' "$out/$mode-compare.txt"; fail "pyvs compare --ssh-config ($mode)"
    fi
    step "pyvs compare --ssh-config"
  fi

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
