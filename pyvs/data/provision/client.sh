#!/usr/bin/env bash
# A client: the VIP routed via the director (DR/TUN: the VIP is not local on the
# director; NAT: the client's default route already points there) and the tools to try it.
#   PYVS_GATEWAY  the director's address on the client side (default PYVS_DIP)
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

gateway=${PYVS_GATEWAY:-$PYVS_DIP}
[ -n "$gateway" ] || die "needs PYVS_GATEWAY or PYVS_DIP (the director)"
ip route replace "$PYVS_VIP/32" via "$gateway"
install_packages curl netcat-openbsd python3   # python3: the live comparison's client scripts
say "client ready: VIP $PYVS_VIP via $gateway"
