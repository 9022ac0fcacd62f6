#!/usr/bin/env bash
# A client: the VIP routed via the director (DR/TUN: the VIP is not local on the
# director; NAT: the client's default route already points there) and the tools to try it.
#   PYVS_GATEWAY      the director's address on the client side (default PYVS_DIP)
#   PYVS_VIP_ONLINK   1: two directors, the VIP is an address on the client's segment held
#                     by the active one (ARP finds it, gratuitous ARP moves it), no route
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

if [ "${PYVS_VIP_ONLINK:-}" = 1 ]; then
  if [ -n "$(ip -4 route show "$PYVS_VIP/32")" ]; then ip route del "$PYVS_VIP/32"; fi
  case $(ip -4 -o route get "$PYVS_VIP" 2>&1) in
    *" via "*|*nreachable*) die "the VIP $PYVS_VIP is not on a segment of this host" \
                              "(ip route get $PYVS_VIP)" ;;
  esac
  route="on the segment (held by the active director)"
else
  gateway=${PYVS_GATEWAY:-$PYVS_DIP}
  [ -n "$gateway" ] || die "needs PYVS_GATEWAY or PYVS_DIP (the director)"
  ip route replace "$PYVS_VIP/32" via "$gateway"
  route="via $gateway"
fi
install_packages curl netcat-openbsd python3   # python3: the live comparison's client scripts
say "client ready: VIP $PYVS_VIP $route"
