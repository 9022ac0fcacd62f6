"""Read pcap and pcapng captures as a stream of (timestamp, IPv4 packet bytes), with struct
only.

The file is read by blocks (BLOCK bytes at a time), so memory is bounded by one block and
the largest record, never by the file: a day of traffic replays in the memory of its
connection table.  Several files (tcpdump -C / -G rotations, or captures from several
points) are merged in time order; a file is opened only when its first packet is the next
one due, so a thousand rotated files cost one open file at a time.

Timestamps are integer nanoseconds since the epoch: a double cannot hold today's epoch
seconds to the microsecond and beyond, and a listing asked for at a packet's own
timestamp (as tcpdump prints it) must include that packet.

Link types: Ethernet (with 802.1Q/802.1ad tags), raw IP, Linux cooked v1 and v2 (what
``tcpdump -i any`` writes); in pcapng each interface has its own link type, time
resolution (if_tsresol) and offset (if_tsoffset), and a file may hold several sections.
Frames that carry no IPv4 packet are skipped and counted.  A snaplen-truncated packet is
yielded as captured (its IP total length says how long it was on the wire).

Anything malformed raises :class:`CaptureError` with one line naming the file, the byte
offset and what is wrong, at once for a file that is not a capture at all (``/dev/zero``).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from librt.strings import read_i32_be, read_i32_le
from mypy_extensions import i64

LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = frozenset((101, 12, 14, 228))   # raw IP (12, 14: BSD/OpenBSD numbers)
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_LINUX_SLL2: Final = 276
ETH_P_IP: Final = 0x0800
VLAN_TYPES: Final = frozenset((0x8100, 0x88A8, 0x9100))

BLOCK = 1 << 20
# A record or block longer than this is corruption, not a packet (Wireshark's pcapng limit).
MAX_RECORD: Final = 16 << 20
# Timestamps may step back this much (tcpdump -i any on several CPUs records packets a few
# microseconds out of order); the replay feeds such a packet at the time of the one before.
# A larger step is a clock jump or files joined out of order: an error.
REORDER_TOLERANCE_NS: Final = 1_000_000_000
NS: Final = 1_000_000_000

# the file's first 4 bytes -> (byte order, nanoseconds per tick, record header length)
PCAP_MAGIC: Final = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000, 16), b"\xa1\xb2\xc3\xd4": (">", 1000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1, 16), b"\xa1\xb2\x3c\x4d": (">", 1, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1000, 24), b"\xa1\xb2\xcd\x34": (">", 1000, 24),  # Kuznetsov
}
PCAPNG_SHB: Final = b"\x0a\x0d\x0d\x0a"
SHB: Final = 0x0A0D0D0A
IDB: Final = 1
OPB: Final = 2
SPB: Final = 3
EPB: Final = 6
OPT_ENDOFOPT: Final = 0
IF_TSRESOL: Final = 9
IF_TSOFFSET: Final = 14

SKIP_NOT_IPV4: Final = "frames without IPv4 (ARP, IPv6, ...)"
BEFORE_ANY: Final = -(1 << 62)     # earlier than any timestamp (pcapng's offset may be < 0)

# (nanoseconds, IPv4 packet), read as asked for; close() ends reading early
Packets = Generator[tuple[int, bytes], None, None]


class CaptureError(Exception):
    """The file is not a capture pyvs can read; the text names the file and says why."""


@dataclass
class ReadStats:
    """What the reader skipped (frames without IPv4), over every file, kept as it reads."""

    files: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


@dataclass(frozen=True)
class Link:
    """Where a link type's frames carry IPv4: the IP header at `ip_off` when the two bytes
    at `type_off` are 0x0800 (type_off -1: raw IP, the version nibble decides)."""

    linktype: int
    ip_off: int
    type_off: int


def link(linktype: int) -> Link | None:
    if linktype == LINKTYPE_ETHERNET:
        return Link(linktype, 14, 12)
    if linktype in LINKTYPE_RAW:
        return Link(linktype, 0, -1)
    if linktype == LINKTYPE_LINUX_SLL:
        return Link(linktype, 16, 14)
    if linktype == LINKTYPE_LINUX_SLL2:
        return Link(linktype, 20, 0)
    return None


def _tagged(frame: bytes) -> bytes | None:
    """An Ethernet frame with VLAN tags: the IPv4 packet inside, if any."""
    off = 12
    etype = (frame[12] << 8) | frame[13]
    while etype in VLAN_TYPES and len(frame) >= off + 8:
        off += 4
        etype = (frame[off] << 8) | frame[off + 1]
    return frame[off + 2:] if etype == ETH_P_IP else None


class _Reader:
    """One capture file: its header checked at construction, its packets by iteration."""

    def __init__(self, path: str, stats: ReadStats) -> None:
        self.path = path
        self.stats = stats
        try:
            self.f: BinaryIO = open(path, "rb")
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read: {exc.strerror}") from None
        self.buf = b""
        self.pos = 0
        self.base = 0                    # file offset of buf[0]
        # pcapng: the section's byte order, and per interface: Link or None, the text for
        # an unsupported link type, its time scale (mul, shift, div, offset ns)
        self._endian = "<"
        self._interfaces: list[tuple[Link | None, str, tuple[int, int, int, int]]] = []
        try:
            self._fill(4)
        except CaptureError:
            self.f.close()
            raise
        magic = self.buf[:4]
        if magic in PCAP_MAGIC:
            self.records = self._pcap_header(magic)
        elif magic == PCAPNG_SHB:
            self.records = self._pcapng()
        else:
            self.f.close()
            what = "an empty file" if not self.buf else "not a pcap or pcapng file"
            raise CaptureError(f"{path}: {what}")

    def error(self, offset: int, text: str) -> CaptureError:
        return CaptureError(f"{self.path}: byte {offset}: {text}")

    def close(self) -> None:
        self.f.close()

    def _fill(self, need: int) -> bool:
        """At least `need` bytes from pos buffered; False at the end of the file."""
        buf, pos = self.buf, self.pos
        if len(buf) - pos >= need:
            return True
        try:
            more = self.f.read(max(BLOCK, need - (len(buf) - pos)))
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot read: {exc.strerror}") from None
        self.buf = buf[pos:] + more
        self.base += pos
        self.pos = 0
        return len(self.buf) >= need

    # ------------------------------------------------------------------ pcap
    def _pcap_header(self, magic: bytes) -> Packets:
        endian, scale, rec_len = PCAP_MAGIC[magic]
        if not self._fill(24):
            raise self.error(len(self.buf), "cut short in the 24-byte pcap file header")
        major, _minor = struct.unpack_from(endian + "HH", self.buf, 4)
        if major != 2:
            raise self.error(4, f"pcap version {major} (only version 2 exists)")
        linktype = struct.unpack_from(endian + "I", self.buf, 20)[0] & 0xFFFF
        self.pos = 24
        return self._pcap_records(endian, scale, rec_len, linktype)

    def _pcap_records(self, endian: str, scale: int, rec_len: int, linktype: int
                      ) -> Packets:
        # record headers read by byte indexing: native in the compiled build, no tuples
        big = endian == ">"
        lk = link(linktype)
        unsupported = f"frames of link type {linktype} (not supported)"
        stats = self.stats
        frames = 0                       # numbered as Wireshark does, for messages
        last = BEFORE_ANY
        # sec * NS once per second of capture: the compiled build multiplies numbers this
        # large on its slow path
        sec_was = -1
        sec_ns = 0
        try:
            while True:
                if not self._fill(rec_len):
                    if len(self.buf) > self.pos:
                        raise self.error(self.base + self.pos, "cut short in a packet record "
                                         "header (a capture still being written?)")
                    return
                buf, pos, n = self.buf, self.pos, len(self.buf)
                # every record wholly in the buffer, without leaving this loop
                while pos + rec_len <= n:
                    sec = _u32(buf, pos, big)
                    frac = _u32(buf, pos + 4, big)
                    caplen = _u32(buf, pos + 8, big)
                    start = pos + rec_len
                    end = start + caplen
                    if end > n:
                        if caplen > MAX_RECORD:
                            raise self.error(self.base + pos, f"a packet record of {caplen} "
                                             "bytes: not a capture record (corrupt file)")
                        break
                    if sec != sec_was:
                        sec_was, sec_ns = sec, sec * NS
                    ns = sec_ns + frac * scale
                    if ns < last:
                        if last - ns > REORDER_TOLERANCE_NS:
                            raise self._backwards(frames + 1, self.base + pos, last - ns)
                    else:
                        last = ns
                    frames += 1
                    pos = end
                    if lk is None:
                        stats.skip(unsupported)
                        continue
                    pkt = _ip_packet(lk, buf, start, end)
                    if pkt is None:
                        stats.skip(SKIP_NOT_IPV4)
                        continue
                    yield ns, pkt
                self.pos = pos
                if pos + rec_len <= n and not self._fill(
                        rec_len + _u32(buf, pos + 8, big)):
                    raise self.error(self.base + self.pos, "cut short in the middle of a "
                                     "packet (a capture still being written?)")
        finally:
            self.close()

    def _backwards(self, number: int, offset: int, step: int) -> CaptureError:
        return self.error(offset, f"packet {number} is {step / NS:.6f} s earlier than the "
                          "packet before it: the timestamps go backwards (order the "
                          "capture by time, e.g. with reordercap)")

    # ------------------------------------------------------------------ pcapng
    def _pcapng(self) -> Packets:
        stats = self.stats
        frames = 0
        last = BEFORE_ANY
        self._endian = "<"
        self._interfaces = []
        try:
            while self._fill(12):
                off = self.base + self.pos
                btype, body, size = self._next_block(off)
                buf = self.buf
                if btype != EPB and btype != OPB:
                    self._control_block(btype, buf, body, size, off)
                    continue
                iface, ticks, caplen = self._packet_block(btype, buf, body, size, off)
                lk, unsupported, (mul, shift, div, base_ns) = self._interfaces[iface]
                ns = ((ticks * mul) >> shift) // div + base_ns
                if ns < last:
                    if last - ns > REORDER_TOLERANCE_NS:
                        raise self._backwards(frames + 1, off, last - ns)
                else:
                    last = ns
                frames += 1
                if lk is None:
                    stats.skip(unsupported)
                    continue
                pkt = _ip_packet(lk, buf, body + 20, body + 20 + caplen)
                if pkt is None:
                    stats.skip(SKIP_NOT_IPV4)
                    continue
                yield ns, pkt
            if self.pos < len(self.buf):
                raise self.error(self.base + self.pos, "cut short in a block header (a "
                                 "capture still being written?)")
        finally:
            self.close()

    def _next_block(self, off: int) -> tuple[int, int, int]:
        """The block at pos, checked and wholly buffered: (type, body offset in the buffer,
        body length); pos moves past it.  A section header sets the byte order."""
        buf, pos = self.buf, self.pos
        if buf[pos:pos + 4] == PCAPNG_SHB:
            bom = buf[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                self._endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                self._endian = ">"
            else:
                raise self.error(off, "section header block without the byte-order magic "
                                 "0x1A2B3C4D")
        endian = self._endian
        btype, blen = struct.unpack_from(endian + "II", buf, pos)
        if blen < 12 or blen % 4:
            raise self.error(off, f"block of type {btype:#x} has a bad length {blen} "
                             "(at least 12, a multiple of 4)")
        if blen > MAX_RECORD:
            raise self.error(off, f"block of type {btype:#x} claims {blen} bytes: not a "
                             "capture block (corrupt file)")
        if not self._fill(blen):
            raise self.error(off, f"cut short in a block of type {btype:#x} ({blen} bytes; "
                             "a capture still being written?)")
        buf, pos = self.buf, self.pos
        self.pos = pos + blen
        if struct.unpack_from(endian + "I", buf, pos + blen - 4)[0] != blen:
            raise self.error(off, f"block of type {btype:#x}: its trailing length differs "
                             "from its leading length (corrupt file)")
        return btype, pos + 8, blen - 12

    def _packet_block(self, btype: int, buf: bytes, body: int, size: int, off: int
                      ) -> tuple[int, int, int]:
        """An enhanced (or obsolete) packet block: (interface, ticks, captured length)."""
        if size < 20:
            raise self.error(off, f"{'enhanced' if btype == EPB else 'obsolete'} packet "
                             f"block of {size + 12} bytes: shorter than its 32-byte minimum")
        if btype == EPB:
            iface, hi, lo, caplen = struct.unpack_from(self._endian + "IIII", buf, body)
        else:
            iface, _, hi, lo, caplen = struct.unpack_from(self._endian + "HHIII", buf, body)
        if caplen > size - 20:
            raise self.error(off, f"packet block: {caplen} captured bytes do not fit in a "
                             f"block of {size + 12}")
        if iface >= len(self._interfaces):
            raise self.error(off, f"packet for interface {iface}, which no interface "
                             "description block declared")
        return iface, (hi << 32) | lo, caplen

    def _control_block(self, btype: int, buf: bytes, body: int, size: int, off: int) -> None:
        """A block that holds no packet: a section or interface declared, or refused."""
        if btype == SHB:
            if size < 16:
                raise self.error(off, f"section header block of {size + 12} bytes: shorter "
                                 "than its 28-byte minimum")
            major = struct.unpack_from(self._endian + "H", buf, body + 4)[0]
            if major != 1:
                raise self.error(off, f"pcapng version {major} (only version 1 exists)")
            self._interfaces = []
        elif btype == IDB:
            self._interfaces.append(self._interface(self._endian, buf, body, size, off))
        elif btype == SPB:
            raise self.error(off, "a simple packet block has no timestamp: a capture "
                             "without times cannot be replayed")

    def _interface(self, endian: str, buf: bytes, body: int, size: int, off: int
                   ) -> tuple[Link | None, str, tuple[int, int, int, int]]:
        """An interface description block: link type, if_tsresol, if_tsoffset."""
        if size < 8:
            raise self.error(off, f"interface description block of {size + 12} bytes: "
                             "shorter than its 20-byte minimum")
        linktype = struct.unpack_from(endian + "H", buf, body)[0]
        resolution, offset = 6, 0
        opt, end = body + 8, body + size
        while opt + 4 <= end:
            code, olen = struct.unpack_from(endian + "HH", buf, opt)
            if code == OPT_ENDOFOPT:
                break
            if opt + 4 + olen > end:
                raise self.error(off, f"interface description block: option {code} at byte "
                                 f"{self.base + opt} runs past the block's end")
            if code == IF_TSRESOL:
                if olen < 1:
                    raise self.error(off, "interface description block: if_tsresol "
                                     "without its value")
                resolution = buf[opt + 4]
            elif code == IF_TSOFFSET:
                if olen < 8:
                    raise self.error(off, "interface description block: if_tsoffset "
                                     f"of {olen} bytes (needs 8)")
                offset = struct.unpack_from(endian + "q", buf, opt + 4)[0]
            opt += 4 + ((olen + 3) & ~3)
        return (link(linktype), f"frames of link type {linktype} (not supported)",
                _ticks(resolution) + (offset * NS,))


def _ip_packet(lk: Link, buf: bytes, start: int, end: int) -> bytes | None:
    """The IPv4 packet the frame buf[start:end] carries, or None."""
    type_off = lk.type_off
    if type_off < 0:                                # raw IP
        return buf[start:end] if end > start and buf[start] >> 4 == 4 else None
    if end - start > lk.ip_off and buf[start + type_off] == 8 and \
            buf[start + type_off + 1] == 0:
        return buf[start + lk.ip_off:end]
    if lk.linktype == LINKTYPE_ETHERNET and end - start >= 14:
        return _tagged(buf[start:end])
    return None


def _ticks(resolution: int) -> tuple[int, int, int]:
    """if_tsresol -> (mul, shift, div): ns = ticks * mul >> shift // div.  The value is
    10^-v s per tick, or 2^-v with the top bit set."""
    v = resolution & 0x7F
    if resolution & 0x80:
        return NS, v, 1
    if v <= 9:
        return 10 ** (9 - v), 0, 1
    return 1, 0, 10 ** (v - 9)


def _u32(buf: bytes, at: i64, big: bool) -> i64:
    """Native in the compiled build (librt's reads are single loads)."""
    if big:
        return i64(read_i32_be(buf, at)) & 0xFFFFFFFF
    return i64(read_i32_le(buf, at)) & 0xFFFFFFFF


def read_capture(path: str | Path, stats: ReadStats | None = None
                 ) -> Packets:
    """Yield (timestamp in nanoseconds, IPv4 packet) in file order.  The header is read
    (and a file that is no capture refused) before the first packet is asked for."""
    stats = stats if stats is not None else ReadStats()
    stats.files.append(str(path))
    return _Reader(str(path), stats).records


def read_captures(paths: Sequence[str | Path], stats: ReadStats | None = None
                  ) -> Packets:
    """Several captures merged in time order (a packet of an earlier file first at equal
    times).  Each file is checked and its first timestamp read at once; it is then opened
    again only when its first packet is due."""
    stats = stats if stats is not None else ReadStats()
    if len(paths) == 1:
        return read_capture(paths[0], stats)
    firsts: list[tuple[int, int, str]] = []
    for i, path in enumerate(map(str, paths)):
        probe = ReadStats()
        first = next(read_capture(path, probe), None)
        if first is not None:
            firsts.append((first[0], i, path))
    stats.files.extend(map(str, paths))
    return _merge(sorted(firsts), stats)


def _merge(firsts: list[tuple[int, int, str]], stats: ReadStats
           ) -> Packets:
    waiting = firsts                     # (first ns, order, path), not yet opened
    heap: list[tuple[int, int, bytes, Packets]] = []
    w = 0
    while heap or w < len(waiting):
        if w < len(waiting) and (not heap or waiting[w][0] <= heap[0][0]):
            _, order, path = waiting[w]
            w += 1
            it = _Reader(path, stats).records
            first = next(it, None)
            if first is not None:
                heapq.heappush(heap, (first[0], order, first[1], it))
            continue
        ns, order, pkt, it = heap[0]
        yield ns, pkt
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (nxt[0], order, nxt[1], it))


class PcapWriter:
    """Raw-IP (linktype 101) pcap with microsecond timestamps (seconds given as floats),
    written as packets come; OSError if the file cannot be written."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._f: BinaryIO = open(path, "wb")
        self._f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        self.packets = 0

    def write(self, ts: float, pkt: bytes) -> None:
        usecs = round(ts * 1e6)
        self._f.write(struct.pack("<IIII", usecs // 1_000_000, usecs % 1_000_000, len(pkt),
                                  len(pkt)) + pkt)
        self.packets += 1

    def close(self) -> None:
        self._f.close()


def write_pcap(path: str | Path, packets: list[tuple[float, bytes]]) -> None:
    """A whole raw-IP pcap at once (the sample captures shipped with pyvs)."""
    w = PcapWriter(path)
    for ts, pkt in packets:
        w.write(ts, pkt)
    w.close()
