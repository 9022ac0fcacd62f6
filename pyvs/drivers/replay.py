"""Capture replay: feed a stream of captured packets through the engine at their own
timestamps, as the director at that point of the network would have seen them.

Each packet is first classified by what the capture shows, whatever the director's
forwarding mode (:class:`Classifier`):

* **request**: to a virtual address (client -> VIP);
* **reply from a VIP**: what a client sees (a client-side capture, a span port, a DR
  realserver), or a NAT director's own rewritten copy of a realserver's reply;
* **reply from a realserver**: what a NAT director receives (``tcpdump -i any`` on it);
* **second copy**: a packet identical to one seen 100 ms before or less (and never one 200 ms
  or more before: the rule keeps two windows of 100 ms), but for its TTL,
  its checksums and the server side's address and port (the one thing a director rewrites)
  -- the same packet seen again as the director forwards it: DR sends client -> VIP packets
  on unchanged, NAT rewrites VIP <-> realserver, and ``tcpdump -i any`` records both the
  received and the sent copy.  The first copy is the received one (a director sends after
  it receives), which is what the director's table saw.  Checksums are left out because
  the received copy may hold a partial one (checksum offload, CHECKSUM_PARTIAL) where the
  forwarded copy holds the full one.  A real retransmission is not a copy: Linux gives
  every segment of a connected socket a new IP ID, TCP timestamps change with it, and it
  comes an RTO (at least 200 ms) later; a UDP datagram's first payload bytes are part of
  the comparison, since connectionless senders repeat IP IDs.  100 ms covers a director's
  forwarding delay with room to spare: microseconds in the kernel, but a userspace
  director on a busy machine (pyvs run) may wait tens of milliseconds for a CPU, while
  200 ms is the smallest RTO any common stack uses (Linux's 200 ms).  Packets are
  compared by a fingerprint of those fields (:mod:`pyvs.drivers.copies`).
* **sync datagram**: UDP to the sync daemons' group and ports (224.0.0.81:8848 unless a
  backup daemon says otherwise), handed to the director's backup daemon if one runs;
* anything else (ARP, ICMP, the director's packets to realservers, IPIP) is ignored and
  counted by reason.

:class:`Replayer` then hands a director what it would have received: requests inbound;
a realserver's reply outbound when a NAT entry expects it; a VIP's reply, for a NAT entry,
outbound as the realserver sent it (its source put back to the realserver), and for a
DR/TUN entry not at all -- replies bypass such a director -- unless
``replies_via_director`` (realservers whose gateway is the director).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from librt.vecs import vec
from mypy_extensions import i64

from ..core.commands import Event
from ..core.conn import Conn
from ..core.engine import IN, OUT, Director
from ..core.forwarding import MASQ
from ..core.sync import PORTS_MAX, SYNC_GROUP_ADDR
from ..core.syncmsg import SYNC_PORT
from .copies import CopyRule, fingerprint, u16, u32
from .pcap import NS

AUTO: Final = "auto"
CLIENT_SIDE: Final = "client"
DIRECTOR_SIDE: Final = "director"

SKIPPED: Final = -1
REQUEST: Final = 0
REPLY_VIP: Final = 1
REPLY_RS: Final = 2
SYNC: Final = 3

IGNORE_NOT_TCP_UDP: Final = "not TCP or UDP"
IGNORE_IPIP: Final = "IPIP (a TUN director's tunnelled copies)"
IGNORE_CUT: Final = "cut by the snaplen inside the TCP/UDP header"
IGNORE_FRAGMENT: Final = "non-first IP fragments (no ports)"
IGNORE_BAD_IP: Final = "not a valid IPv4 header"
IGNORE_UNRELATED: Final = "not to or from a virtual or real server address"
IGNORE_TO_RS: Final = "to a realserver address, not through a virtual service"
IGNORE_RS_REPLY: Final = "from a realserver, with no NAT entry expecting it"
IGNORE_RS_FORCED: Final = "from a realserver (--capture-point client)"
IGNORE_VIP_REPLY: Final = "replies from a VIP with no entry"
IGNORE_BYPASS: Final = "DR/TUN replies (they never cross the director)"
IGNORE_SNAT_COPY: Final = ("the director's rewritten replies "
                           "(--capture-point director)")
IGNORE_SYNC_NO_BACKUP: Final = "sync datagrams (no backup daemon running)"
IGNORE_SYNC_CUT: Final = "sync datagrams cut by the snaplen"


@dataclass
class ReplayStats:
    """What the replay did with the packets it read (the reader's own counts apart)."""

    packets: int = 0                 # IPv4 packets classified
    requests: int = 0
    replies_vip: int = 0
    replies_rs: int = 0
    copies: int = 0
    syncs: int = 0                   # sync datagrams
    # the first sync datagram's source (address, port): the director that sent it
    sync_source: tuple[int, int] | None = None
    truncated: int = 0               # cut by the snaplen (fed by their IP total length)
    reordered: int = 0               # out of time order, fed at the previous packet's time
    reordered_max_ns: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    ignored: dict[str, int] = field(default_factory=dict)
    # where the unrelated packets went: (protocol, address, port) -> [packets, openings]
    elsewhere: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)

    def ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1

    def went_elsewhere(self, proto: int, addr: int, port: int, opening: bool) -> None:
        """An unrelated packet's destination, to name when no service saw any traffic
        (the first 256 destinations)."""
        key = (proto, addr, port)
        counts = self.elsewhere.get(key)
        if counts is None:
            if len(self.elsewhere) >= 256:
                return
            counts = self.elsewhere[key] = [0, 0]
        counts[0] += 1
        if opening:
            counts[1] += 1

    def capture_point(self) -> str:
        """Where the capture was taken, as the packets show it."""
        if self.replies_rs:
            return ("director side, NAT: realservers' replies seen, the director's "
                    "rewritten copies skipped")
        if self.replies_vip:
            return "client side: both directions, client <-> VIP"
        if self.copies:
            return ("director side, DR/TUN: each client packet seen received and forwarded; "
                    "replies bypass the director")
        return "one direction only: client -> VIP"


@dataclass
class FeedStats:
    """What one director was handed."""

    inbound: int = 0
    outbound: int = 0
    bypassed: int = 0                # DR/TUN replies: they never reach the director
    synced: int = 0                  # sync datagrams received by the backup daemon
    ignored: dict[str, int] = field(default_factory=dict)

    def ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1




class Classifier:
    """Sans-I/O: (nanoseconds, packet) -> what the packet is (see the module docstring).
    After a call, ``ihl``, ``src``, ``dst``, ``sport`` and ``dport`` hold the packet's IP
    header length, addresses and ports.

    The copy rule keeps a fingerprint of each packet for two windows of 100 ms
    (:class:`pyvs.drivers.copies.CopyRule`)."""

    def __init__(self, vips: Iterable[int], realservers: Iterable[int],
                 stats: ReplayStats | None = None) -> None:
        self.stats = stats if stats is not None else ReplayStats()
        self._vips = _AddrSet(vips)
        self._rs = _AddrSet(set(realservers) - set(vips))
        self._copies = CopyRule()
        self.sync_group = SYNC_GROUP_ADDR
        self.sync_port = SYNC_PORT
        self.sync_port_end = SYNC_PORT + PORTS_MAX
        self.ihl = 20
        self.src = 0
        self.dst = 0
        self.sport = 0
        self.dport = 0

    @classmethod
    def for_director(cls, director: Director, stats: ReplayStats | None = None
                     ) -> Classifier:
        c = cls([svc.addr for svc in director.services if not svc.fwmark],
                [d.addr for svc in director.services for d in svc.dests], stats)
        c.follow_sync(director)
        return c

    def follow_sync(self, director: Director) -> None:
        """Sync datagrams are those to the backup daemon's group and ports (every port a
        daemon may use: sync_ports threads on consecutive ports), or to the defaults."""
        b = director.sync_backup
        if b is not None and b.config is not None:
            self.sync_group = b.config.mcast_group
            self.sync_port = b.config.mcast_port
            self.sync_port_end = b.config.mcast_port + PORTS_MAX

    def classify(self, ns: int, pkt: bytes) -> int:  # noqa: C901 (one call per packet)
        st = self.stats
        st.packets += 1
        n = len(pkt)
        if n < 20 or pkt[0] >> 4 != 4 or pkt[0] & 15 < 5:
            st.ignore(IGNORE_BAD_IP)
            return SKIPPED
        ihl = (pkt[0] & 15) << 2
        proto = pkt[9]
        if proto == 6:
            if n < ihl + 20:
                st.ignore(IGNORE_CUT)
                return SKIPPED
        elif proto == 17:
            if n < ihl + 8:
                st.ignore(IGNORE_CUT)
                return SKIPPED
        else:
            st.ignore(IGNORE_IPIP if proto == 4 else IGNORE_NOT_TCP_UDP)
            return SKIPPED
        if (pkt[6] & 0x1F) | pkt[7]:
            st.ignore(IGNORE_FRAGMENT)
            return SKIPPED
        src = u32(pkt, 12)
        dst = u32(pkt, 16)
        sport = u16(pkt, ihl)
        dport = u16(pkt, ihl + 2)
        # (plain assignments, not tuples: the compiled build would box every int)
        vips = self._vips
        rs = self._rs
        toward_server = False
        if vips.has(dst):
            kind = REQUEST
            toward_server = True
        elif vips.has(src):
            kind = REPLY_VIP
        elif rs.has(src):
            kind = REPLY_RS
        elif rs.has(dst):
            kind = SKIPPED
            toward_server = True
        elif proto == 17 and dst == self.sync_group and \
                self.sync_port <= dport < self.sync_port_end:
            st.syncs += 1
            if st.sync_source is None:          # the director that sent the first
                st.sync_source = (src, sport)
            self.ihl = ihl
            self.src = src
            self.sport = sport
            return SYNC
        else:
            st.ignore(IGNORE_UNRELATED)
            st.went_elsewhere(proto, dst, dport, proto == 17 or pkt[ihl + 13] & 0x12 == 0x02)
            return SKIPPED
        if self._copies.seen(ns, fingerprint(pkt, ihl, toward_server)):
            st.copies += 1
            return SKIPPED
        if kind == SKIPPED:
            st.ignore(IGNORE_TO_RS)
            return SKIPPED
        if ((pkt[2] << 8) | pkt[3]) > n:
            st.truncated += 1
        if kind == REQUEST:
            st.requests += 1
        elif kind == REPLY_VIP:
            st.replies_vip += 1
        else:
            st.replies_rs += 1
        self.ihl = ihl
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        return kind


class _AddrSet:
    """Addresses to test each packet against: a few are compared one by one (native in the
    compiled build, nothing boxed), many looked up in a set."""

    def __init__(self, addrs: Iterable[int]) -> None:
        self.few = vec[i64](sorted(set(addrs)))
        self.many = frozenset(self.few) if len(self.few) > 8 else None

    def has(self, addr: i64) -> bool:
        if self.many is not None:
            return addr in self.many
        for a in self.few:
            if a == addr:
                return True
        return False


class Replayer:
    """Hands one director the packets it would have received (see the module docstring)."""

    def __init__(self, director: Director, replies_via_director: bool = False,
                 capture_point: str = AUTO) -> None:
        self.director = director
        self.replies_via_director = replies_via_director
        self.client_side = capture_point == CLIENT_SIDE
        self.director_side = capture_point == DIRECTOR_SIDE
        self.stats = FeedStats()
        self.masq_possible = False
        self.config_changed()
        # a VIP's reply (its own address/port bytes) -> its entry: find_conn() builds a
        # key for every lookup; an entry is replaced only after it left the table
        self._by_reply: dict[bytes, Conn] = {}
        self._prune_at = 4096

    def config_changed(self) -> None:
        """After a control-plane event: could an entry forward by Masq now?  (Entries keep
        the method they were made with, so once possible it stays possible.)"""
        self.masq_possible = self.masq_possible or any(
            d.fwd == MASQ for svc in self.director.services for d in svc.dests)

    def deliver(self, kind: int, now: float, pkt: bytes, c: Classifier) -> None:
        """Hand the director the packet `c` just classified as `kind`."""
        st = self.stats
        d = self.director
        if kind == REQUEST:
            st.inbound += 1
            d.receive(pkt, now, IN, 0, True)
            return
        if kind == REPLY_RS:
            if self.client_side:
                st.ignore(IGNORE_RS_FORCED)
                return
            if not self.masq_possible or d.find_reply_conn(
                    pkt[9], c.src, c.sport, c.dst, c.dport) is None:
                st.ignore(IGNORE_RS_REPLY)
                return
        elif kind == SYNC:
            self._sync(pkt, now, c)
            return
        else:
            if not self.masq_possible and not self.replies_via_director:
                st.bypassed += 1               # no entry can be Masq: no lookup needed
                return
            cp = self._entry_for_reply(pkt, c)
            if cp is None:
                st.ignore(IGNORE_VIP_REPLY)
                return
            if cp.fwd == MASQ:
                if self.director_side:
                    st.ignore(IGNORE_SNAT_COPY)
                    return
                st.outbound += 1               # the realserver's reply, on its entry
                d.reply_seen(cp, pkt, now)
                return
            elif not self.replies_via_director:
                st.bypassed += 1
                return
        st.outbound += 1
        d.receive(pkt, now, OUT, 0, True)

    def _sync(self, pkt: bytes, now: float, c: Classifier) -> None:
        """A sync datagram, for the backup daemon (ip_vs_process_message())."""
        st = self.stats
        backup = self.director.sync_backup
        if backup is None:
            st.ignore(IGNORE_SYNC_NO_BACKUP)
            return
        end = (pkt[2] << 8) | pkt[3]
        if end > len(pkt):
            st.ignore(IGNORE_SYNC_CUT)
            return
        backup.receive(pkt[c.ihl + 8:end], now)
        st.synced += 1

    def _entry_for_reply(self, pkt: bytes, c: Classifier) -> Conn | None:
        ihl = c.ihl
        key = pkt[12:24] if ihl == 20 else pkt[12:20] + pkt[ihl:ihl + 4]
        by_reply = self._by_reply
        cp = by_reply.get(key)
        if cp is not None and cp.alive:
            return cp
        cp = self.director.find_conn(pkt[9], c.dst, c.dport, c.src, c.sport)
        if cp is not None:
            if len(by_reply) >= self._prune_at:     # keep it the size of the live table
                for k in [k for k, v in by_reply.items() if not v.alive]:
                    del by_reply[k]
                self._prune_at = max(4096, 2 * len(by_reply))
            by_reply[key] = cp
        return cp


@dataclass
class Mark:
    """An instant the caller asked for, in seconds after the first packet."""

    t: float
    what: str                        # "at" (a listing), "sample", "end"


class TimeOrder:
    """Capture time -> nanoseconds after the first packet, never decreasing: a packet a
    little out of order (the reader refuses big steps back) is fed at the time of the one
    before.  (Replay.run does the same inline.)"""

    def __init__(self, stats: ReplayStats) -> None:
        self.stats = stats
        self.last = -1

    def __call__(self, ns: int) -> int:
        st = self.stats
        if st.first_ns is None:
            st.first_ns = ns
        elif ns < self.last:
            st.reordered += 1
            if self.last - ns > st.reordered_max_ns:
                st.reordered_max_ns = self.last - ns
            ns = self.last
        self.last = ns
        st.last_ns = ns
        return ns - st.first_ns


# a nanosecond time after any capture's (146 years in; pcap's 32-bit seconds span 136):
# the largest native int of the compiled build, where 1 << 62 would be an object and every
# comparison with it a slow call
NEVER: Final = (1 << 62) - 1


class Replay:
    """One capture replay through one director: the classifier, the feed, their counts."""

    def __init__(self, director: Director, replies_via_director: bool = False,
                 capture_point: str = AUTO) -> None:
        self.director = director
        self.tick: Callable[[float], None] | None = None
        self._next_tick = NEVER
        self.stats = ReplayStats()
        self.classifier = Classifier.for_director(director, self.stats)
        self.feed = Replayer(director, replies_via_director, capture_point)
        self._listings: list[int] = []
        self._li = 0
        self._next_listing = NEVER
        self._step = 0
        self._next_sample = NEVER
        self._todo: list[Event] = []
        self._ei = 0
        self._next_event = NEVER

    def run(self, packets: Iterable[tuple[int, bytes]], at: list[float] | None = None,
            events: Iterable[Event] = (), every: float | None = None) -> Iterator[Mark]:
        """Stream `packets` (nanosecond times, in order) through the director.  Yields each
        mark with the director advanced to mark.t: every packet up to that instant (a
        packet at it included, to the nanosecond) and every event up to it, an event
        before a packet at the same instant.  Marks: each time in `at` (seconds after the
        first packet; None: once, "end", at the last packet) and, with `every`, a "sample"
        every that many seconds up to the end (the last packet, or the last `at` if
        later).  Without `every`, reading stops after the last `at`.  While the table is
        empty, samples jump to just before the next packet: nothing changes in between,
        and a capture may span idle years.  A packet a little earlier than the one before
        (the reader refuses big steps back) is fed at the time of the one before."""
        self._listings = sorted(round(t * NS) for t in at) if at is not None else []
        self._li = 0
        self._next_listing = self._listings[0] if self._listings else NEVER
        self._step = round(every * NS) if every else 0
        self._next_sample = 0 if self._step else NEVER
        self._todo = sorted(events, key=lambda e: e.at)
        self._ei = 0
        self._next_event = round(self._todo[0].at * NS) if self._todo else NEVER
        st = self.stats
        classifier = self.classifier
        feed = self.feed
        stop_early = at is not None and not self._step
        started = False
        first = last = rel = 0
        for ns, pkt in packets:
            if not started:
                started = True
                first = last = ns
                st.first_ns = ns
            elif ns < last:
                st.reordered += 1
                if last - ns > st.reordered_max_ns:
                    st.reordered_max_ns = last - ns
                ns = last
            last = ns
            rel = ns - first
            if self._next_listing < rel or self._next_sample < rel:
                st.last_ns = last
                mark = self._next_mark(rel, False)
                while mark is not None:
                    yield mark
                    mark = self._next_mark(rel, False)
                if stop_early and self._next_listing == NEVER:
                    return
            if self._next_event <= rel:
                self._events_until(rel)
            if self._next_tick <= rel:
                self._tick(rel)
            kind = classifier.classify(ns, pkt)
            if kind >= 0:
                feed.deliver(kind, rel / NS, pkt, classifier)
        st.last_ns = last if started else None
        end = max(rel, self._listings[-1] if self._listings else 0)
        mark = self._next_mark(end, True)
        while mark is not None:
            yield mark
            mark = self._next_mark(end, True)
        if at is None and started:
            yield self._mark(rel, "end")

    def packet(self, ns: int, now: float, pkt: bytes) -> None:
        """One packet (capture nanoseconds; `now` on the director's clock), classified and
        handed to the director: for drivers that interleave timers of their own."""
        kind = self.classifier.classify(ns, pkt)
        if kind >= 0:
            self.feed.deliver(kind, now, pkt, self.classifier)

    def set_tick(self, tick: Callable[[float], None]) -> None:
        """`tick` is called with the director's time at least once a second of capture
        time, before each event and at each mark: for a driver that drains timers of its
        own (a sync master's datagrams) without a call per packet."""
        self.tick = tick
        self._next_tick = 0

    def _tick(self, rel: int) -> None:
        if self.tick is not None:
            self.tick(rel / NS)
            self._next_tick = rel + NS

    def _events_until(self, limit: int) -> None:
        todo = self._todo
        while self._next_event <= limit:
            event = todo[self._ei]
            if self.tick is not None:
                self.tick(event.at)
            self.director.apply(event.command, event.at)
            self.feed.config_changed()
            self.classifier.follow_sync(self.director)
            self._ei += 1
            self._next_event = round(todo[self._ei].at * NS) if self._ei < len(todo) else NEVER

    def _mark(self, limit: int, what: str) -> Mark:
        self._events_until(limit)
        self.director.handle_timers(limit / NS)
        if self.tick is not None:
            self.tick(limit / NS)
        return Mark(limit / NS, what)

    def _next_mark(self, limit: int, inclusive: bool) -> Mark | None:
        """The next listing or sample before `limit` (or at it, if inclusive), or None."""
        nxt = min(self._next_listing, self._next_sample)
        if nxt > limit or (nxt == limit and not inclusive):
            return None
        if nxt == self._next_listing:
            self._li += 1
            self._next_listing = (self._listings[self._li] if self._li < len(self._listings)
                                  else NEVER)
            return self._mark(nxt, "at")
        mark = self._mark(nxt, "sample")
        self._next_sample = nxt + self._step
        if not self.director.connection_count() and self._next_sample < limit:
            self._next_sample += (limit - self._next_sample) // self._step * self._step
        return mark
