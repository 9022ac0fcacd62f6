"""Build valid IPv4 TCP/UDP packets quickly (for the simulator, benchmarks and tests).

Checksums are computed in full, so a packet built here is byte-identical to what a Linux
peer would send for the same header fields (scapy is used in tests to cross-check).
"""

from __future__ import annotations

import struct

from .packet import IP_FIXED, ip_checksum

_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _l4_checksum(src: int, dst: int, proto: int, segment: bytes) -> int:
    pseudo = struct.pack("!IIBBH", src, dst, 0, proto, len(segment))
    data = pseudo + segment + (b"\0" if len(segment) & 1 else b"")
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ipv4(src: int, dst: int, proto: int, segment: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    header = bytearray(IP_FIXED.pack(0x45, 0, 20 + len(segment), ident & 0xFFFF, 0x4000, ttl,
                                     proto, 0, src, dst))
    struct.pack_into("!H", header, 10, ip_checksum(header))
    return bytes(header) + segment


def tcp(src: int, sport: int, dst: int, dport: int, flags: int, seq: int = 0, ack: int = 0,
        payload: bytes = b"", window: int = 65535, ident: int = 0) -> bytes:
    segment = bytearray(_TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                                  flags, window, 0, 0) + payload)
    struct.pack_into("!H", segment, 16, _l4_checksum(src, dst, 6, bytes(segment)))
    return ipv4(src, dst, 6, bytes(segment), ident)


def udp(src: int, sport: int, dst: int, dport: int, payload: bytes = b"",
        ident: int = 0) -> bytes:
    segment = bytearray(_UDP.pack(sport, dport, 8 + len(payload), 0) + payload)
    check = _l4_checksum(src, dst, 17, bytes(segment)) or 0xFFFF
    struct.pack_into("!H", segment, 6, check)
    return ipv4(src, dst, 17, bytes(segment), ident)
