"""Read pcap and pcapng captures into (timestamp, IPv4 packet bytes), with struct only.

Timestamps are integer nanoseconds since the epoch: a double cannot hold today's epoch
seconds to the microsecond and beyond, and a listing asked for at a packet's own
timestamp (as tcpdump prints it) must include that packet.

Link types: Ethernet (with 802.1Q/802.1ad tags), raw IP, Linux cooked v1 and v2 (what
``tcpdump -i any`` writes).  Frames that carry no IPv4 packet are skipped and counted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = {101, 12, 14, 228}          # raw IP (12/14 are BSD/OpenBSD spellings)
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
ETH_P_IP = 0x0800
VLAN_TYPES = {0x8100, 0x88A8, 0x9100}


class CaptureError(Exception):
    """The file is not a capture pyvs can read; the text says why."""


@dataclass
class ReadStats:
    frames: int = 0
    skipped: int = 0


def _ip_payload(linktype: int, frame: bytes) -> bytes | None:
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        off = 12
        etype = struct.unpack_from("!H", frame, off)[0]
        while etype in VLAN_TYPES and len(frame) >= off + 6:
            off += 4
            etype = struct.unpack_from("!H", frame, off)[0]
        return frame[off + 2:] if etype == ETH_P_IP else None
    if linktype in LINKTYPE_RAW:
        return frame if frame[:1] and frame[0] >> 4 == 4 else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16 or struct.unpack_from("!H", frame, 14)[0] != ETH_P_IP:
            return None
        return frame[16:]
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20 or struct.unpack_from("!H", frame, 0)[0] != ETH_P_IP:
            return None
        return frame[20:]
    return None


def _pcap(data: bytes, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}[magic]
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    if len(data) < 24:
        raise CaptureError("truncated pcap header")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    off = 24
    scale = 1 if nano else 1000
    while off + 16 <= len(data):
        sec, frac, caplen, _ = rec.unpack_from(data, off)
        off += 16
        frame = data[off:off + caplen]
        off += caplen
        stats.frames += 1
        packet = _ip_payload(linktype, frame)
        if packet is None:
            stats.skipped += 1
            continue
        yield sec * 1_000_000_000 + frac * scale, packet


def _ticks_to_ns(resolution: int) -> Callable[[int], int]:
    """if_tsresol: 10^-v s per tick, or 2^-v with the top bit set."""
    v = resolution & 0x7F
    if resolution & 0x80:
        return lambda t: (t * 1_000_000_000) >> v
    if v <= 9:
        factor = 10 ** (9 - v)
        return lambda t: t * factor
    divisor = 10 ** (v - 9)
    return lambda t: t // divisor


def _pcapng(data: bytes, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    off = 0
    endian = "<"
    interfaces: list[tuple[int, Callable[[int], int]]] = []     # (linktype, ticks -> ns)
    while off + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, off)[0]
        if btype == 0x0A0D0D0A:                     # section header: byte order
            endian = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        blen = struct.unpack_from(endian + "I", data, off + 4)[0]
        if blen < 12 or off + blen > len(data):
            raise CaptureError(f"pcapng block at byte {off} has a bad length {blen}")
        body = data[off + 8:off + blen - 4]
        if btype == 1:                              # interface description
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            to_ns = _ticks_to_ns(6)
            opt = 8
            while opt + 4 <= len(body):
                code, olen = struct.unpack_from(endian + "HH", body, opt)
                if code == 0:
                    break
                if code == 9 and olen >= 1:         # if_tsresol
                    to_ns = _ticks_to_ns(body[opt + 4])
                opt += 4 + ((olen + 3) & ~3)
            interfaces.append((linktype, to_ns))
        elif btype == 6:                            # enhanced packet
            iface, hi, lo, caplen = struct.unpack_from(endian + "IIII", body, 0)
            stats.frames += 1
            if iface >= len(interfaces):
                raise CaptureError(f"packet for undeclared interface {iface}")
            linktype, to_ns = interfaces[iface]
            packet = _ip_payload(linktype, body[20:20 + caplen])
            if packet is None:
                stats.skipped += 1
            else:
                yield to_ns((hi << 32) | lo), packet
        elif btype == 3:                            # simple packet: no timestamp
            raise CaptureError("simple packet blocks have no timestamps; cannot replay")
        off += blen


def read_capture(path: str | Path, stats: ReadStats | None = None
                 ) -> Iterator[tuple[int, bytes]]:
    """Yield (timestamp in nanoseconds, IPv4 packet) in file order."""
    stats = stats if stats is not None else ReadStats()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CaptureError(f"cannot read: {exc.strerror}") from None
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        return _pcapng(data, stats)
    if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                    b"\xa1\xb2\x3c\x4d"):
        return _pcap(data, stats)
    raise CaptureError("not a pcap or pcapng file")


def write_pcap(path: str | Path, packets: list[tuple[float, bytes]]) -> None:
    """Write raw-IP (linktype 101) pcap with microsecond timestamps (seconds given as
    floats): the sample captures shipped with pyvs."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for ts, pkt in packets:
        usecs = round(ts * 1e6)
        out.append(struct.pack("<IIII", usecs // 1_000_000, usecs % 1_000_000, len(pkt),
                               len(pkt)) + pkt)
    Path(path).write_bytes(b"".join(out))
