"""The second-copy rule's memory (see pyvs.drivers.replay): which packets were seen in the
current and the previous 100 ms window, as 62-bit fingerprints of the fields two copies of
one packet share.

Why fingerprints in flat tables, not the packets in dicts: holding every packet for 200 ms
(and a boxed key for each in a dict rebuilt every window) kept megabytes of objects alive
that the next packets were then allocated into long after they had left the cache; on the
2M-packet benchmark that cost more time than the engine.  A fingerprint is one native
integer in a table of native integers (``librt.vecs``), nothing is allocated per packet,
and a window's table is a few hundred kilobytes at the most common rates.

A fingerprint covers exactly what the packet-by-packet comparison compared: all of the
IPv4 header's first 8 bytes and its protocol, the client's address and port, and the TCP
header but for its checksum and the server's port (its options included), or a UDP
datagram's length and first 16 payload bytes, as far as the capture holds them.  Two
different packets share a fingerprint with odds of about 2^-62 (two independent 31-bit
multiplicative hashes), so one in 10^18 comparisons might take a packet for a copy.
"""

from __future__ import annotations

from typing import Final

from librt.strings import read_i16_be, read_i32_be
from librt.vecs import append, vec
from mypy_extensions import i64

COPY_WINDOW_NS: Final = 100_000_000   # identical within 100 ms (up to 200): the same packet

_M31: Final = 0x7FFFFFFF
_K1: Final = 0x5BD1E995               # odd multipliers below 2^31: no product overflows
_K2: Final = 0x2F4A7C15
_SEED: Final = (0x1B873593 << 31) | 0x68E31DA4
_FIRST_BITS: Final = 12               # a window's table starts at 4,096 slots


def fingerprint(pkt: bytes, ihl: i64, toward_server: bool) -> i64:
    """The fields a copy shares with the packet first seen (all but the TTL, the
    checksums and the server side's address and port), hashed to 62 bits, never 0.
    `pkt` is a TCP packet of at least ihl + 20 bytes or a UDP one of ihl + 8."""
    n: i64 = len(pkt)
    if toward_server:                # (no tuples: the compiled build would box them)
        caddr = u32(pkt, 12)
        cport = u16(pkt, ihl)
    else:
        caddr = u32(pkt, 16)
        cport = u16(pkt, ihl + 2)
    proto = i64(pkt[9])
    h = _mix(_mix(_mix(_SEED, u32(pkt, 0)), u32(pkt, 4)), caddr)
    h = _mix(h, (proto << 17) | (i64(toward_server) << 16) | cport)
    if proto == 6:                   # sequence, acknowledgement, offset, flags, window
        h = _mix(_mix(_mix(h, u32(pkt, ihl + 4)), u32(pkt, ihl + 8)), u32(pkt, ihl + 12))
        start = ihl + 18             # the urgent pointer and the options
        end = ihl + ((i64(pkt[ihl + 12]) >> 4) << 2)
    else:                            # the UDP length, then the payload's start
        h = _mix(h, u16(pkt, ihl + 4))
        start = ihl + 8
        end = ihl + 24
    if end > n:                      # cut by the snaplen: what the capture holds
        end = n
    at = start
    while at + 4 <= end:
        h = _mix(h, u32(pkt, at))
        at += 4
    if at < end:                     # 1-3 bytes left, and how many
        w = end - at
        while at < end:
            w = (w << 8) | i64(pkt[at])
            at += 1
        h = _mix(h, w)
    if h == 0:                       # (a conditional expression would box it)
        return 1
    return h


class CopyRule:
    """Fingerprints of the current and the previous window, on a fixed grid of
    COPY_WINDOW_NS: a fingerprint recorded less than one window before is always found,
    one recorded two windows or more before never."""

    def __init__(self) -> None:
        self._recent = _Window()
        self._older = _Window()
        self._window: i64 = -(1 << 62)

    def seen(self, ns: int, fp: i64) -> bool:
        """Was `fp` recorded in this window or the one before (a copy)?  If not, it is
        recorded now.  A packet a little out of time order counts in the current
        window."""
        window: i64 = ns // COPY_WINDOW_NS
        if window > self._window:
            if window == self._window + 1:          # the recent table becomes the older
                self._older.clear()
                self._recent, self._older = self._older, self._recent
            else:
                self._recent.clear()
                self._older.clear()
            self._window = window
        if self._recent.has(fp) or self._older.has(fp):
            return True
        self._recent.add(fp)
        return False


class _Window:
    """One window's fingerprints: open addressing with linear probing and no deletion (a
    window only gains entries); cleared by the slots it filled, so a window costs what it
    holds, not what the table's size is; doubled when half full."""

    def __init__(self, bits: i64 = _FIRST_BITS) -> None:
        self.slots = vec[i64]([0] * (1 << bits))
        self.mask: i64 = (1 << bits) - 1
        self.used = vec[i64]()

    def has(self, fp: i64) -> bool:
        slots, mask = self.slots, self.mask
        i = fp & mask
        while True:
            v = slots[i]
            if v == fp:
                return True
            if v == 0:
                return False
            i = (i + 1) & mask

    def add(self, fp: i64) -> None:
        """Record `fp`, which has() has just not found."""
        if 2 * len(self.used) >= self.mask:
            self._grow()
        slots, mask = self.slots, self.mask
        i = fp & mask
        while slots[i] != 0:
            i = (i + 1) & mask
        slots[i] = fp
        self.used = append(self.used, i)

    def clear(self) -> None:
        slots = self.slots
        for i in self.used:
            slots[i] = 0
        self.used = vec[i64]()

    def _grow(self) -> None:
        old, used = self.slots, self.used
        size = 2 * (self.mask + 1)
        self.slots = vec[i64]([0] * size)
        self.mask = size - 1
        self.used = vec[i64]()
        for i in used:
            self.add(old[i])


def _mix(h: i64, w: i64) -> i64:
    """One step of both 31-bit multiplicative hashes, side by side in `h` (lane one in
    bits 31-61, lane two in 0-30), for a word w < 2^32: each product stays below 2^63,
    so the compiled build (native, wrapping) and Python agree."""
    a = ((h >> 31) ^ w) * _K1
    b = ((h & _M31) ^ w) * _K2
    return (((a ^ (a >> 31)) & _M31) << 31) | ((b ^ (b >> 31)) & _M31)


def u32(pkt: bytes, at: i64) -> i64:
    """Network order, native in the compiled build (librt's reads are single loads)."""
    return i64(read_i32_be(pkt, at)) & 0xFFFFFFFF


def u16(pkt: bytes, at: i64) -> i64:
    return i64(read_i16_be(pkt, at)) & 0xFFFF
