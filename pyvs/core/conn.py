"""Connection entries (struct ip_vs_conn) and the expiry wheel.

An entry is small because a director holds millions: its addresses live once, in the
lookup key (``key``: the packet's own address and port bytes, see :func:`conn_key`), and
Masq rewrite material is shared by every connection with the same virtual and real
address:port (:class:`MasqRewrite`).

Expiry costs O(expired): entries are filed in one-second buckets.  A packet that pushes
expiry later only writes ``expires``; when the bucket comes due the entry re-files itself at
its new time.  A packet that brings expiry earlier files the entry again in an earlier
bucket, and the old filing goes stale (``heap_at`` no longer matches).  A bucket is sorted
once, when its second comes, so entries expire in time order, each at its own time.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from typing import TYPE_CHECKING, Final

from .packet import IPPROTO_TCP, IPPROTO_UDP, csum_delta

if TYPE_CHECKING:
    from .service import Dest

INF: Final = float("inf")
INVALID_PORT: Final = 0xFFFF        # the ports of an invalidated template
CONN_KEY: Final = struct.Struct("!IIHH")    # saddr, daddr, sport, dport


def conn_key(protocol: int, saddr: int, daddr: int, sport: int, dport: int) -> bytes:
    """Bytes 12-19 of the IPv4 header and 0-3 of the TCP/UDP header, as a packet carries
    them, so a lookup key is a slice of the packet; other protocols get a one-byte prefix
    (TCP, the common case, none)."""
    key = CONN_KEY.pack(saddr, daddr, sport, dport)
    return key if protocol == IPPROTO_TCP else bytes((protocol,)) + key


UDP_KEY_PREFIX: Final = bytes((IPPROTO_UDP,))   # what conn_key() puts before a UDP key


def reply_key(key: bytes) -> bytes:
    """The key of the packet going the other way: addresses and ports swapped."""
    return key[:-12] + key[-8:-4] + key[-12:-8] + key[-2:] + key[-4:-2]


class MasqRewrite:
    """Bytes and RFC 1624 checksum deltas for vaddr:vport <-> daddr:dport, computed once."""

    __slots__ = ("d_bytes", "dport_bytes", "v_bytes", "vport_bytes", "in_ip_delta",
                 "in_l4_delta", "out_ip_delta", "out_l4_delta")

    def __init__(self, vaddr: bytes, vport: bytes, daddr: bytes, dport: bytes) -> None:
        self.v_bytes, self.vport_bytes, self.d_bytes, self.dport_bytes = vaddr, vport, daddr, dport
        self.in_ip_delta = csum_delta(vaddr, daddr)
        self.in_l4_delta = csum_delta(vaddr + vport, daddr + dport)
        self.out_ip_delta = csum_delta(daddr, vaddr)
        self.out_l4_delta = csum_delta(daddr + dport, vaddr + vport)


class Conn:
    """One IPVS connection or persistence template.

    ``key`` is conn_key(protocol, caddr, vaddr, cport, vport), the client-side lookup key;
    for a template, conn_key(protocol, client net, vaddr or fwmark, 0, vport)."""

    # the flags side by side: the compiled build stores each in a byte, so together they
    # share one word instead of padding one each (16 B less per entry)
    __slots__ = (
        "inactive", "noout", "alive", "synced",
        "key", "protocol", "daddr", "dport", "dest", "fwd", "state", "timeout", "expires",
        "heap_at", "control", "out_key", "masq", "in_pkts", "old_state", "sync_endtime",
    )
    template = False
    n_control = 0                   # only a Template controls other entries

    def __init__(self, key: bytes, protocol: int, daddr: int, dport: int,
                 dest: Dest) -> None:
        self.inactive = True        # the dest's conn_flags always carry INACTIVE
        self.noout = dest.noout
        self.alive = True
        # IP_VS_CONN_F_SYNC (made by a backup from a master's message:
        # /proc/net/ip_vs_conn_sync's Origin SYNC)
        self.synced = False
        self.key = key
        self.protocol = protocol
        self.daddr = daddr
        self.dport = dport
        self.dest = dest
        self.fwd = dest.fwd
        self.state = 0
        self.timeout = 3.0          # ip_vs_conn_new(): 3*HZ until the first transition
        self.expires = 0.0
        self.heap_at = INF
        self.control: Template | None = None
        self.out_key: bytes | None = None
        self.masq: MasqRewrite | None = None
        self.in_pkts = 0            # inbound packets (drop_entry's rate, the sync rules)
        # connection sync (ip_vs_sync.c): the state last synced and the jiffy its sync
        # runs out (-1: not yet known)
        self.old_state = 0
        self.sync_endtime = -1

    @property
    def caddr(self) -> int:
        return int.from_bytes(self.key[-12:-8], "big")

    @property
    def vaddr(self) -> int:
        return int.from_bytes(self.key[-8:-4], "big")

    @property
    def cport(self) -> int:
        return int.from_bytes(self.key[-4:-2], "big")

    @property
    def vport(self) -> int:
        return int.from_bytes(self.key[-2:], "big")


class Template(Conn):
    """A persistence template: counts the connections it controls (expire_later)."""

    __slots__ = ("n_control",)
    template = True

    def __init__(self, key: bytes, protocol: int, daddr: int, dport: int,
                 dest: Dest) -> None:
        super().__init__(key, protocol, daddr, dport, dest)
        self.n_control = 0


class TimerWheel:
    """One-second buckets of entries; the due second is sorted once and consumed in order."""

    __slots__ = ("buckets", "seconds", "current", "pos", "current_second", "counter")

    def __init__(self) -> None:
        self.buckets: dict[int, list[Conn]] = {}
        self.seconds: list[int] = []                 # heap of bucket seconds
        self.current: list[tuple[float, int, Conn]] = []
        self.pos = 0
        self.current_second = -1
        self.counter = 1 << 62        # above any bucket index: tuples never compare entries

    def file(self, conn: Conn, at: float) -> None:
        conn.heap_at = at
        second = int(at)
        if second <= self.current_second and self.pos < len(self.current):
            self.counter += 1                         # lands in the second being consumed
            bisect.insort(self.current, (at, self.counter, conn), lo=self.pos)
            return
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = []
            heapq.heappush(self.seconds, second)
        bucket.append(conn)

    def arm(self, conn: Conn, expires: float) -> None:
        """Set the entry's expiry; file it again only if that is earlier than its filing."""
        conn.expires = expires
        if expires < conn.heap_at:
            self.file(conn, expires)

    def _open_next(self) -> bool:
        """Sort the earliest bucket into ``current``; False when the wheel is empty."""
        while self.seconds:
            second = heapq.heappop(self.seconds)
            bucket = self.buckets.pop(second)
            live = [(c.heap_at, i, c) for i, c in enumerate(bucket)
                    if c.alive and c.heap_at != INF and int(c.heap_at) == second]
            if live:
                live.sort(key=lambda e: (e[0], e[1]))    # filing order breaks ties
                self.current, self.pos, self.current_second = live, 0, second
                return True
        self.current, self.pos = [], 0
        return False

    def _front(self, open_buckets: bool) -> tuple[float, int, Conn] | None:
        """The earliest valid filing of the open second, skipping stale ones; when that is
        consumed, open the next second only if `open_buckets` (a bucket is sorted when its
        second is due, never earlier)."""
        while True:
            current = self.current
            while self.pos < len(current):
                entry = current[self.pos]
                conn = entry[2]
                if conn.alive and conn.heap_at == entry[0]:
                    return entry
                self.pos += 1
            if not open_buckets or not self._open_next():
                return None

    def next_time(self) -> float | None:
        """The next expiry, or the start of the next filed second (a lower bound)."""
        entry = self._front(False)
        if entry is not None:
            return entry[0]
        return float(self.seconds[0]) if self.seconds else None

    def pop_due(self, now: float) -> Conn | None:
        """Next entry whose expiry has truly come by ``now``, or None."""
        while True:
            entry = self._front(False)
            if entry is None:
                if not self.seconds or self.seconds[0] > now:
                    return None
                entry = self._front(True)
                if entry is None:
                    return None
            if entry[0] > now:
                return None
            self.pos += 1
            at, _, conn = entry
            if conn.expires > at:          # re-armed by later packets: re-file
                self.file(conn, conn.expires)
                continue
            conn.heap_at = INF
            return conn
