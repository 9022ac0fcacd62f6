#!/usr/bin/env bash
# Create .venv and install pyvs into it.  Idempotent.  As root on Debian it also installs the
# packages the live NFQUEUE path needs (iptables, libnetfilter-queue-dev, iproute2).
#   scripts/setup.sh          runtime + plotting (matplotlib, for pyvs compare --plot)
#   scripts/setup.sh test     + test tools (pytest, hypothesis, scapy, ruff); as root also
#                             the live path (netfilterqueue, curl) and what the tests check
#                             against: tshark, tcpdump, node_exporter, shellcheck, vagrant (+ libvirt plugin);
#                             and the compiled engine (mypyc, scripts/compile.py, ~45 s once)
#   scripts/setup.sh compile  runtime + plotting + the compiled engine
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=""
  pkgs="iptables libnetfilter-queue-dev iproute2"
  [ "$extra" = test ] && pkgs="$pkgs curl tshark tcpdump openssh-client openssh-server prometheus-node-exporter shellcheck vagrant vagrant-libvirt"
  for pkg in $pkgs; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    echo "setup: installing Debian packages:$need" >&2
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086  # $need is a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
spec=".[plot]"
if [ "$extra" = test ]; then
  spec=".[test,plot,compile]"
  [ "$(id -u)" = 0 ] && spec=".[test,plot,compile,live]"
elif [ "$extra" = compile ]; then
  spec=".[plot,compile]"
fi
.venv/bin/pip install -q --disable-pip-version-check -e "$spec"
if [ "$extra" = test ] || [ "$extra" = compile ]; then
  .venv/bin/python scripts/compile.py
fi
