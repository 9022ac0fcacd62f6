"""LVS-TUN realservers without the kernel's IPIP driver: decapsulation in userspace.

A TUN realserver takes the director's IPIP packets (outer header to its own address, the
client's packet to the VIP inside) and handles the inner packet as if it had arrived for
the VIP; its replies go straight to the client.  The kernel does that with the ipip module
and tunl0 (pyvs/data/provision/realserver.sh).  Where the kernel has no ipip driver (`ip link
add type ipip` says "Unknown device type"), this program does it instead:

  * a raw IPPROTO_IPIP socket receives every IPIP packet delivered to this host, outer
    header included (the kernel hands raw sockets a copy of each packet for their
    protocol and, having a listener, sends no "protocol unreachable");
  * the inner packet, if it is IPv4 to one of the VIPs, is written to a TUN device
    (IFF_TUN | IFF_NO_PI: whole IP packets, no extra header) that holds the VIPs, so the
    stack receives it on that device, as it would on tunl0;
  * rp_filter is off on the device (the client is reached through eth0, not through it).

The device lives as long as the program: it goes when the program does.

    python -m pyvs.lab.ipip --vip 203.0.113.100 [--vip ...] [--device pyvs-tun0]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

DEVICE = "pyvs-tun0"
TUNSETIFF = 0x400454CA          # _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4


def open_tun(name: str) -> int:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as exc:
        raise SystemExit(f"pyvs.lab.ipip: /dev/net/tun: {exc.strerror} (the kernel needs "
                         "CONFIG_TUN)") from None
    # struct ifreq: the name, then ifr_flags; 40 bytes on 64-bit Linux
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"pyvs.lab.ipip: ip {' '.join(args)}: {proc.stderr.strip()}")


def setup(name: str, vips: list[str]) -> int:
    """The TUN device, up, holding the VIPs, rp_filter off; its file descriptor."""
    fd = open_tun(name)
    for vip in vips:
        _ip("addr", "replace", f"{vip}/32", "dev", name)
    _ip("link", "set", name, "up")
    Path(f"/proc/sys/net/ipv4/conf/{name}/rp_filter").write_text("0")
    return fd


def decapsulate(raw: socket.socket, fd: int, vips: set[bytes]) -> None:
    """Forever: each IPIP packet's inner IPv4 packet to one of the VIPs, onto the device."""
    while True:
        packet = raw.recv(65535)
        inner = packet[(packet[0] & 15) << 2:]
        if len(inner) >= 20 and inner[0] >> 4 == 4 and inner[16:20] in vips:
            os.write(fd, inner)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vip", action="append", required=True, help="a VIP (repeatable)")
    ap.add_argument("--device", default=DEVICE)
    args = ap.parse_args(argv)
    try:
        vips = {socket.inet_pton(socket.AF_INET, v) for v in args.vip}
    except OSError:
        ap.error(f"--vip: not IPv4 addresses: {', '.join(args.vip)}")
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    fd = setup(args.device, args.vip)
    print(f"pyvs.lab.ipip: decapsulating IPIP for {', '.join(args.vip)} onto {args.device}",
          flush=True)
    try:
        decapsulate(raw, fd, vips)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
