#!/usr/bin/env bash
# Shared by every role.  Sourced, not run.  The same scripts provision the Vagrant VMs and,
# with PYVS_INIT=none, the namespaces of `pyvs lab up` (which start the processes themselves).
#
# Environment (all roles):
#   PYVS_MODE      nat | dr | tun                      (required)
#   PYVS_VIP       the virtual IP                      (required)
#   PYVS_DIP       the director's address on the realserver side (NAT gateway, DR/TUN peer)
#   PYVS_IFACE     the host's interface on the lab segment (default eth0)
#   PYVS_INIT      systemd (Vagrant: install and start services) | none (namespace lab)
#   PYVS_PROJECT   the pyvs source tree (default /vagrant)
set -euo pipefail

die() { echo "provision[$(basename "$0")]: $*" >&2; exit 1; }
say() { echo "provision[$(basename "$0")]: $*"; }

PYVS_MODE=${PYVS_MODE:-}
PYVS_VIP=${PYVS_VIP:-}
PYVS_DIP=${PYVS_DIP:-}
PYVS_IFACE=${PYVS_IFACE:-eth0}
PYVS_INIT=${PYVS_INIT:-systemd}
PYVS_PROJECT=${PYVS_PROJECT:-/vagrant}

case "$PYVS_MODE" in
  nat|dr|tun) ;;
  *) die "PYVS_MODE must be nat, dr or tun (got '${PYVS_MODE}')" ;;
esac
[ -n "$PYVS_VIP" ] || die "PYVS_VIP is not set"
[ "$(id -u)" = 0 ] || die "must run as root"
command -v ip >/dev/null || die "iproute2 (ip) is not installed"
# the lab segment must be configured first (Vagrant does it before provisioning; a VM that
# skipped it would otherwise fail later with an obscure "Nexthop has invalid gateway")
[ -n "$(ip -4 -o addr show dev "$PYVS_IFACE" 2>/dev/null)" ] \
  || die "the lab interface $PYVS_IFACE has no IPv4 address (PYVS_IFACE; ip -br addr)"

# set_sysctl NAME VALUE: idempotent, loud on failure
set_sysctl() {
  local path="/proc/sys/${1//.//}"
  [ -w "$path" ] || die "sysctl $1 does not exist here"
  if [ "$(cat "$path")" != "$2" ]; then
    echo "$2" > "$path" || die "cannot set $1=$2"
    say "sysctl $1=$2"
  fi
}

# install_packages PKG...: Debian packages, only when running under a real init
install_packages() {
  [ "$PYVS_INIT" = systemd ] || return 0
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" = 0 ] && return 0
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# install_pyvs: a virtualenv in /opt/pyvs with pyvs from the synced project folder, from
# the wheels in /var/cache/pyvs/wheels when the box has them (vagrant/box/build.sh: no
# network needed), else from the package index.  Reinstalls only when the source changed,
# and then sets PYVS_CHANGED=1 so that systemd_service restarts what runs it.
PYVS_CHANGED=0
install_pyvs() {
  [ "$PYVS_INIT" = systemd ] || return 0
  [ -f "$PYVS_PROJECT/pyproject.toml" ] || die "no pyvs source tree at $PYVS_PROJECT"
  install_packages python3-venv python3-dev gcc iptables libnetfilter-queue-dev iproute2 curl
  local wheels=/var/cache/pyvs/wheels index=() digest
  digest=$(cd "$PYVS_PROJECT" && find pyproject.toml pyvs -type f \
             \( -name '*.py' -o -name '*.toml' -o -path 'pyvs/data/*' \) -print0 \
           | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  [ "$(cat /opt/pyvs/.source 2>/dev/null)" = "$digest" ] && return 0
  [ -x /opt/pyvs/bin/python ] || python3 -m venv /opt/pyvs
  [ -d "$wheels" ] && index=(--no-index --find-links "$wheels")
  say "installing pyvs from $PYVS_PROJECT${index[*]:+ (wheels: $wheels)}"
  /opt/pyvs/bin/pip install -q --disable-pip-version-check "${index[@]}" \
    "${PYVS_PROJECT}[live]" || die "pip install ${PYVS_PROJECT}[live] failed"
  ln -sf /opt/pyvs/bin/pyvs /usr/local/bin/pyvs
  ln -sf /opt/pyvs/bin/pyvsadm /usr/local/bin/pyvsadm
  echo "$digest" >/opt/pyvs/.source
  PYVS_CHANGED=1
}

# wait_ready WHAT COMMAND...: until COMMAND succeeds (60 s at most), so that "ready" means
# ready: `systemctl restart` returns as soon as the process exists, and under software
# emulation `pyvs run` takes ten seconds and more to import, set up iptables and bind its
# queue (a VM's first curl then met the VIP unserved)
wait_ready() {
  [ "$PYVS_INIT" = systemd ] || return 0
  local what=$1; shift
  for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what is not ready after 60 s"
}

# systemd_service NAME EXECSTART: write, enable and (re)start a unit only if it or pyvs changed
systemd_service() {
  [ "$PYVS_INIT" = systemd ] || return 0
  local unit="/etc/systemd/system/$1.service" tmp
  tmp=$(mktemp)
  printf '[Unit]\nDescription=%s\nAfter=network-online.target\n\n[Service]\nExecStart=%s\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n' "$1" "$2" > "$tmp"
  if ! cmp -s "$tmp" "$unit" || [ "$PYVS_CHANGED" = 1 ]; then
    install -m 0644 "$tmp" "$unit"
    systemctl daemon-reload
    systemctl enable "$1" >/dev/null 2>&1
    systemctl restart "$1" || die "service $1 did not start: $(systemctl status "$1" | tail -3)"
    say "service $1 (re)started"
  fi
  rm -f "$tmp"
}
