"""What keepalived's VRRP does to a pair of directors when the master goes away, for the
lab's two directors: the namespace lab's (`pyvs lab up --directors 2`, `pyvs lab failover`)
and the Vagrant VMs' (`sudo pyvs-vrrp master|backup`, which director.sh installs).

keepalived moves a VRRP instance's virtual_ipaddress: the director leaving MASTER state
deletes the addresses, the new master adds them and sends gratuitous ARPs for each
(vrrp_garp_master_repeat, 5 by default), so that the hosts on the segment point their
neighbour entries at the new master's MAC.  The lab's floating addresses are the VIP on
the client side and, for NAT, the realservers' default gateway on the inside: a real
LVS-NAT pair runs a second VRRP instance there for it (the LVS-HOWTO, keepalived's
LVS-NAT examples), or the realservers' replies would still go to the old director.

    python -m pyvs.lab.vrrp master DEV=ADDR...   (add each ADDR/32 to DEV, gratuitous ARPs)
    python -m pyvs.lab.vrrp backup DEV=ADDR...   (delete them)
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys
import time

GARP_REPEAT = 5             # keepalived's vrrp_garp_master_repeat default
ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
USAGE = "usage: python -m pyvs.lab.vrrp master|backup DEV=ADDR..."


class VrrpError(Exception):
    pass


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


def parse(specs: list[str]) -> list[tuple[str, str]]:
    """DEV=ADDR arguments as (device, address); VrrpError names a bad one."""
    out = []
    for spec in specs:
        dev, sep, addr = spec.partition("=")
        try:
            ipaddress.IPv4Address(addr)
        except ValueError:
            sep = ""
        if not (dev and sep):
            raise VrrpError(f"{spec!r} is not DEV=ADDR (an interface and an IPv4 address)")
        out.append((dev, addr))
    if not out:
        raise VrrpError("no floating address (DEV=ADDR...)")
    return out


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode:
        raise VrrpError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def master(floating: list[tuple[str, str]]) -> None:
    """Enter MASTER state: the floating addresses here, announced."""
    for dev, addr in floating:
        _ip("addr", "replace", f"{addr}/32", "dev", dev)
        gratuitous_arp(dev, addr)


def backup(floating: list[tuple[str, str]]) -> None:
    """Enter BACKUP state: the floating addresses gone from here (if they were here)."""
    for dev, addr in floating:
        if _ip("-4", "-o", "addr", "show", "dev", dev, "to", f"{addr}/32").strip():
            _ip("addr", "del", f"{addr}/32", "dev", dev)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] not in (["master"], ["backup"]):
            print(USAGE, file=sys.stderr)
            return 2
        (master if argv[0] == "master" else backup)(parse(argv[1:]))
    except VrrpError as exc:
        print(f"pyvs.lab.vrrp {argv[0]}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pyvs.lab.vrrp {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
