"""IPv4 header work for the per-packet path: struct formats, RFC 1624 checksum updates, IPIP.

No scapy here: the director's hot path parses with :mod:`struct` and rewrites in place.
"""

from __future__ import annotations

import struct
from typing import Final

IP_FIXED: Final = struct.Struct("!BBHHHBBHII")  # ver/ihl tos len id frag ttl proto csum src dst
IP_HEAD: Final = struct.Struct("!2xH2xHxB")          # tot_len, frag, proto
IP_ADDRS: Final = struct.Struct("!2xH2xHxB2xII")    # tot_len, frag, proto, saddr, daddr
TCP_HEAD: Final = struct.Struct("!HH9xB")           # sport, dport, flags (offset 13)
PORTS: Final = struct.Struct("!HH")
U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")

IPPROTO_IPIP: Final = 4


def csum_delta(old: bytes, new: bytes) -> int:
    """One's-complement sum of ~old + new over 16-bit words (RFC 1624 eqn. 3): a
    connection's fixed address/port change, computed once and added to each packet's checksum."""
    total = 0
    for i in range(0, len(old), 2):
        total += (~((old[i] << 8) | old[i + 1])) & 0xFFFF
        total += (new[i] << 8) | new[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ip_checksum(header: bytes | bytearray) -> int:
    """Full Internet checksum of an IP header (used only for headers pyvs builds)."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ipip_encapsulate(inner: bytes | bytearray, src: int, dst: int, ident: int) -> bytes:
    """Wrap an IPv4 packet in an outer IPv4 header, protocol 4 (ip_vs_tunnel_xmit)."""
    tos = inner[1]
    df = inner[6] & 0x40
    ttl = inner[8]
    header = bytearray(IP_FIXED.pack(0x45, tos, 20 + len(inner), ident & 0xFFFF, df << 8,
                                     ttl, IPPROTO_IPIP, 0, src, dst))
    U16.pack_into(header, 10, ip_checksum(header))
    return bytes(header) + bytes(inner)


def addr_bytes(addr: int) -> bytes:
    return U32.pack(addr)


def port_bytes(port: int) -> bytes:
    return U16.pack(port)


def ip_to_int(text: str) -> int:
    """Dotted quad to int; ValueError on anything else (no hostnames, no shorthand)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise ValueError(f"{text!r} is not an IPv4 address")
    values = [int(p) for p in parts]
    if any(v > 255 for v in values):
        raise ValueError(f"{text!r} is not an IPv4 address")
    return (values[0] << 24) | (values[1] << 16) | (values[2] << 8) | values[3]


def int_to_ip(addr: int) -> str:
    return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"
