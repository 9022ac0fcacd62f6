"""What keepalived's VRRP does to a pair of directors when the master goes away, for the
namespace lab's two directors (`pyvs lab up --directors 2`, `pyvs lab failover`).

keepalived moves a VRRP instance's virtual_ipaddress: the director leaving MASTER state
deletes the addresses, the new master adds them and sends gratuitous ARPs for each
(vrrp_garp_master_repeat, 5 by default), so that the hosts on the segment point their
neighbour entries at the new master's MAC.  The lab's floating addresses are the VIP on
the client side and, for NAT, the realservers' default gateway on the inside: a real
LVS-NAT pair runs a second VRRP instance there for it (the LVS-HOWTO, keepalived's
LVS-NAT examples), or the realservers' replies would still go to the old director.

    python -m pyvs.lab.vrrp garp DEV ADDR     (inside a namespace: gratuitous ARPs)
"""

from __future__ import annotations

import socket
import struct
import sys
import time

GARP_REPEAT = 5             # keepalived's vrrp_garp_master_repeat default
ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def garp_frame(mac: bytes, addr: str) -> bytes:
    """An ARP request for `addr` from `addr` (sender and target the same: gratuitous), as
    keepalived's send_gratuitous_arp() builds it."""
    ip = socket.inet_aton(addr)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def gratuitous_arp(dev: str, addr: str, repeat: int = GARP_REPEAT) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((dev, ETH_P_ARP))
        frame = garp_frame(s.getsockname()[4], addr)
        for i in range(repeat):
            s.send(frame)
            if i + 1 < repeat:
                time.sleep(0.01)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "garp":
        print("usage: python -m pyvs.lab.vrrp garp DEV ADDR", file=sys.stderr)
        return 2
    gratuitous_arp(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
