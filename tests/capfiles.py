"""Capture files written byte by byte with struct, so a test can make exactly the file it
means, malformed ones included: pcap records, pcapng blocks, link-layer framings."""

from __future__ import annotations

import struct
from pathlib import Path

from pyvs.core.packet import ip_checksum

NS = 1_000_000_000
ETH, RAW, SLL, SLL2 = 1, 101, 113, 276
PACKET_HOST, PACKET_OUTGOING = 0, 4


def eth(pkt: bytes) -> bytes:
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + pkt


def vlan(pkt: bytes, tag: int = 10) -> bytes:
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + struct.pack("!HH", 0x8100, tag) + \
        b"\x08\x00" + pkt


def sll(pkt: bytes, pkttype: int = PACKET_HOST) -> bytes:
    return struct.pack("!HHH8sH", pkttype, 1, 6, b"\x02\0\0\0\0\x01", 0x0800) + pkt


def sll2(pkt: bytes, pkttype: int = PACKET_HOST) -> bytes:
    return struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, pkttype, 6, b"\x02\0\0\0\0\x01") + pkt


def pcap(path: Path, records: list[tuple[int, bytes]], linktype: int = RAW,
         nano: bool = False, snaplen: int = 262144, endian: str = "<") -> Path:
    """records: (ns, frame); a frame longer than snaplen is cut, as tcpdump -s does."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ns, frame in records:
        sec, frac = divmod(ns, NS)
        cut = frame[:snaplen]
        out.append(struct.pack(endian + "IIII", sec, frac if nano else frac // 1000, len(cut),
                               len(frame)) + cut)
    path.write_bytes(b"".join(out))
    return path


def block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(endian: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def idb(linktype: int, tsresol: int | None = None, tsoffset: int | None = None,
        endian: str = "<") -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(9, bytes((tsresol,)), endian)
    if tsoffset is not None:
        opts += option(14, struct.pack(endian + "q", tsoffset), endian)
    if opts:
        opts += option(0, b"", endian)
    return block(1, struct.pack(endian + "HHI", linktype, 0, 262144) + opts, endian)


def epb(iface: int, ticks: int, frame: bytes, endian: str = "<", snaplen: int = 262144
        ) -> bytes:
    cut = frame[:snaplen]
    return block(6, struct.pack(endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                                len(cut), len(frame)) + cut, endian)


def pcapng(path: Path, blocks: list[bytes]) -> Path:
    path.write_bytes(b"".join(blocks))
    return path


def forwarded(pkt: bytes, tcp_check: int | None = None) -> bytes:
    """The packet as a router sends it on: TTL one less, IP checksum redone; optionally a
    different TCP checksum (the received copy's partial one, or the full one)."""
    ihl = (pkt[0] & 15) << 2
    buf = bytearray(pkt)
    buf[8] -= 1
    buf[10:12] = b"\0\0"
    buf[10:12] = ip_checksum(bytes(buf[:ihl])).to_bytes(2, "big")
    if tcp_check is not None:
        buf[ihl + 16:ihl + 18] = tcp_check.to_bytes(2, "big")
    return bytes(buf)


def with_tcp_check(pkt: bytes, check: int) -> bytes:
    ihl = (pkt[0] & 15) << 2
    return pkt[:ihl + 16] + check.to_bytes(2, "big") + pkt[ihl + 18:]
