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

# install_pyvs: a virtualenv in /opt/pyvs with pyvs from the synced project folder
install_pyvs() {
  [ "$PYVS_INIT" = systemd ] || return 0
  [ -f "$PYVS_PROJECT/pyproject.toml" ] || die "no pyvs source tree at $PYVS_PROJECT"
  install_packages python3-venv python3-dev gcc iptables libnetfilter-queue-dev iproute2 curl
  [ -x /opt/pyvs/bin/python ] || python3 -m venv /opt/pyvs
  /opt/pyvs/bin/pip install -q "${PYVS_PROJECT}[live]"
  ln -sf /opt/pyvs/bin/pyvs /usr/local/bin/pyvs
  ln -sf /opt/pyvs/bin/pyvsadm /usr/local/bin/pyvsadm
}

# systemd_service NAME EXECSTART: write, enable and (re)start a unit only if it changed
systemd_service() {
  [ "$PYVS_INIT" = systemd ] || return 0
  local unit="/etc/systemd/system/$1.service" tmp
  tmp=$(mktemp)
  printf '[Unit]\nDescription=%s\nAfter=network-online.target\n\n[Service]\nExecStart=%s\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n' "$1" "$2" > "$tmp"
  if ! cmp -s "$tmp" "$unit"; then
    install -m 0644 "$tmp" "$unit"
    systemctl daemon-reload
    systemctl enable "$1" >/dev/null
    systemctl restart "$1"
    say "service $1 (re)started"
  fi
  rm -f "$tmp"
}
