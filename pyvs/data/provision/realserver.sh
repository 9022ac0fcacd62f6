#!/usr/bin/env bash
# A realserver: NAT -> the clients routed via the director (PYVS_CLIENT_NET, default: the
# default route; a VM keeps its management default route and routes only the client
# network); DR -> the VIP on lo and
# arp_ignore=1 / arp_announce=2 so it never answers ARP for it; TUN -> the VIP on tunl0
# (IPIP decapsulation) with rp_filter off, or, on a kernel without the ipip driver, on the
# TUN device of python -m pyvs.lab.ipip, which decapsulates in userspace (`pyvs lab up`
# starts it itself).  Under systemd, the lab's backends (and that decapsulator) as services.
#   PYVS_NAME  this realserver's name, answered by its HTTP server (default: hostname)
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

name=${PYVS_NAME:-$(hostname)}
case "$PYVS_MODE" in
  nat)
    [ -n "$PYVS_DIP" ] || die "NAT needs PYVS_DIP (the director, as default gateway)"
    ip route replace "${PYVS_CLIENT_NET:-default}" via "$PYVS_DIP"
    say "${PYVS_CLIENT_NET:-default} via the director $PYVS_DIP"
    ;;
  dr)
    ip addr replace "$PYVS_VIP/32" dev lo
    for i in all "$PYVS_IFACE"; do
      set_sysctl "net.ipv4.conf.$i.arp_ignore" 1
      set_sysctl "net.ipv4.conf.$i.arp_announce" 2
    done
    say "VIP $PYVS_VIP on lo, ARP for it suppressed"
    ;;
  tun)
    ip link show tunl0 >/dev/null 2>&1 || modprobe ipip 2>/dev/null || true
    for i in all "$PYVS_IFACE"; do set_sysctl "net.ipv4.conf.$i.rp_filter" 0; done
    if ip link show tunl0 >/dev/null 2>&1; then
      ip link set tunl0 up
      ip addr replace "$PYVS_VIP/32" dev tunl0
      set_sysctl net.ipv4.conf.tunl0.rp_filter 0
      say "VIP $PYVS_VIP on tunl0"
    else
      [ -c /dev/net/tun ] \
        || die "this kernel has neither an IPIP driver (tunl0) nor /dev/net/tun: TUN cannot work here"
      userspace_ipip=1
      say "no IPIP driver (tunl0 missing): pyvs.lab.ipip decapsulates, the VIP on its TUN device"
    fi
    ;;
esac

if [ "$PYVS_INIT" = systemd ]; then
  install_pyvs
  systemd_service pyvs-backends "/opt/pyvs/bin/python -m pyvs.lab.backends --name $name"
  if [ -n "${userspace_ipip:-}" ]; then
    systemd_service pyvs-ipip "/opt/pyvs/bin/python -m pyvs.lab.ipip --vip $PYVS_VIP"
  fi
  wait_ready "the backends (HTTP on port 80)" curl -sf -o /dev/null --max-time 2 http://127.0.0.1/
fi
say "realserver $name ready ($PYVS_MODE)"
