"""Capture replay: feed a stream of captured packets through the engine at their own
timestamps, as the director at that point of the network would have seen them.

Each packet is first classified by what the capture shows, whatever the director's
forwarding mode (:class:`Classifier`):

* **request**: to a virtual address (client -> VIP);
* **reply from a VIP**: what a client sees (a client-side capture, a span port, a DR
  realserver), or a NAT director's own rewritten copy of a realserver's reply;
* **reply from a realserver**: what a NAT director receives (``tcpdump -i any`` on it);
* **second copy**: a packet identical to one seen less than 10 ms before, but for its TTL,
  its checksums and the server side's address and port (the one thing a director rewrites)
  -- the same packet seen again as the director forwards it: DR sends client -> VIP packets
  on unchanged, NAT rewrites VIP <-> realserver, and ``tcpdump -i any`` records both the
  received and the sent copy.  The first copy is the received one (a director sends after
  it receives), which is what the director's table saw.  Checksums are left out because
  the received copy may hold a partial one (checksum offload, CHECKSUM_PARTIAL) where the
  forwarded copy holds the full one.  A real retransmission is not a copy: Linux gives
  every segment of a connected socket a new IP ID, TCP timestamps change with it, and it
  comes an RTO (at least 200 ms) later; a UDP datagram's first payload bytes are part of
  the comparison, since connectionless senders repeat IP IDs.
* anything else (ARP, ICMP, the director's packets to realservers, IPIP) is ignored and
  counted by reason.

:class:`Replayer` then hands a director what it would have received: requests inbound;
a realserver's reply outbound when a NAT entry expects it; a VIP's reply, for a NAT entry,
outbound as the realserver sent it (its source put back to the realserver), and for a
DR/TUN entry not at all -- replies bypass such a director -- unless
``replies_via_director`` (realservers whose gateway is the director).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..core.commands import Event
from ..core.engine import IN, OUT, Director
from ..core.forwarding import MASQ
from .pcap import NS

AUTO, CLIENT_SIDE, DIRECTOR_SIDE = "auto", "client", "director"
COPY_WINDOW_NS = 10_000_000          # an identical packet within 10 ms is the same packet

SKIPPED, REQUEST, REPLY_VIP, REPLY_RS = -1, 0, 1, 2

IGNORE_NOT_TCP_UDP = "not TCP or UDP"
IGNORE_IPIP = "IPIP (a TUN director's tunnelled copies)"
IGNORE_CUT = "cut by the snaplen inside the TCP/UDP header"
IGNORE_FRAGMENT = "non-first IP fragments (no ports)"
IGNORE_BAD_IP = "not a valid IPv4 header"
IGNORE_UNRELATED = "not to or from a virtual or real server address"
IGNORE_TO_RS = "to a realserver address, not through a virtual service"
IGNORE_RS_REPLY = "from a realserver, with no NAT entry expecting it"
IGNORE_RS_FORCED = "from a realserver (--capture-point client)"
IGNORE_VIP_REPLY = "replies from a VIP with no entry"
IGNORE_BYPASS = "DR/TUN replies (they never cross the director)"
IGNORE_SNAT_COPY = "the director's rewritten replies (--capture-point director)"


@dataclass
class ReplayStats:
    """What the replay did with the packets it read (the reader's own counts apart)."""

    packets: int = 0                 # IPv4 packets classified
    requests: int = 0
    replies_vip: int = 0
    replies_rs: int = 0
    copies: int = 0
    truncated: int = 0               # cut by the snaplen (fed by their IP total length)
    reordered: int = 0               # out of time order, fed at the previous packet's time
    reordered_max_ns: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    ignored: dict[str, int] = field(default_factory=dict)

    def ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1

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
    ignored: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)

    def ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1


def _addr_set(addrs: Iterable[int]) -> frozenset[bytes]:
    return frozenset(a.to_bytes(4, "big") for a in addrs)


class Classifier:
    """Sans-I/O: (nanoseconds, packet) -> what the packet is (see the module docstring).
    After a call, ``ihl`` holds the packet's IP header length."""

    def __init__(self, vips: Iterable[int], realservers: Iterable[int],
                 stats: ReplayStats | None = None) -> None:
        self.stats = stats if stats is not None else ReplayStats()
        self._vips = _addr_set(vips)
        self._rs = _addr_set(realservers) - self._vips
        self._recent: dict[bytes, int] = {}
        self._order: deque[tuple[int, bytes]] = deque()
        self.ihl = 20

    @classmethod
    def for_director(cls, director: Director, stats: ReplayStats | None = None
                     ) -> Classifier:
        return cls((svc.addr for svc in director.services if not svc.fwmark),
                   (d.addr for svc in director.services for d in svc.dests), stats)

    def classify(self, ns: int, pkt: bytes) -> int:
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
        src, dst = pkt[12:16], pkt[16:20]
        if dst in self._vips:
            kind, toward_server = REQUEST, True
        elif src in self._vips:
            kind, toward_server = REPLY_VIP, False
        elif src in self._rs:
            kind, toward_server = REPLY_RS, False
        elif dst in self._rs:
            kind, toward_server = SKIPPED, True
        else:
            st.ignore(IGNORE_UNRELATED)
            return SKIPPED
        # the copy rule: everything but TTL, checksums and the server side's address:port
        if toward_server:
            client = b"\0" + src + pkt[ihl:ihl + 2]
        else:
            client = b"\1" + dst + pkt[ihl + 2:ihl + 4]
        if proto == 6:
            sig = b"%b%b%b%b%b" % (client, pkt[:8], pkt[9:10], pkt[ihl + 4:ihl + 16],
                                   pkt[ihl + 18:ihl + ((pkt[ihl + 12] >> 4) << 2)])
        else:
            sig = b"%b%b%b%b%b" % (client, pkt[:8], pkt[9:10], pkt[ihl + 4:ihl + 6],
                                   pkt[ihl + 8:ihl + 24])
        recent, order = self._recent, self._order
        horizon = ns - COPY_WINDOW_NS
        while order and order[0][0] < horizon:
            del recent[order.popleft()[1]]
        if sig in recent:
            st.copies += 1
            return SKIPPED
        recent[sig] = ns
        order.append((ns, sig))
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
        return kind


class Replayer:
    """Hands one director the packets it would have received (see the module docstring)."""

    def __init__(self, director: Director, replies_via_director: bool = False,
                 capture_point: str = AUTO) -> None:
        self.director = director
        self.replies_via_director = replies_via_director
        self.capture_point = capture_point
        self.stats = FeedStats()

    def deliver(self, kind: int, now: float, pkt: bytes, ihl: int) -> None:
        st = self.stats
        d = self.director
        if kind == REQUEST:
            direction = IN
            st.inbound += 1
        elif kind == REPLY_RS:
            if self.capture_point == CLIENT_SIDE:
                st.ignore(IGNORE_RS_FORCED)
                return
            if d.find_reply_conn(pkt[9], _addr(pkt, 12), _port(pkt, ihl), _addr(pkt, 16),
                                 _port(pkt, ihl + 2)) is None:
                st.ignore(IGNORE_RS_REPLY)
                return
            direction = OUT
            st.outbound += 1
        else:
            cp = d.find_conn(pkt[9], _addr(pkt, 16), _port(pkt, ihl + 2), _addr(pkt, 12),
                             _port(pkt, ihl))
            if cp is None:
                st.ignore(IGNORE_VIP_REPLY)
                return
            if cp.fwd == MASQ:
                if self.capture_point == DIRECTOR_SIDE:
                    st.ignore(IGNORE_SNAT_COPY)
                    return
                pkt = _with_source(pkt, ihl, cp.daddr, cp.dport)
            elif not self.replies_via_director:
                st.ignore(IGNORE_BYPASS)
                return
            direction = OUT
            st.outbound += 1
        reason = d.receive(pkt, now, direction, 0, True).reason
        st.verdicts[reason] = st.verdicts.get(reason, 0) + 1


def _addr(pkt: bytes, at: int) -> int:
    return int.from_bytes(pkt[at:at + 4], "big")


def _port(pkt: bytes, at: int) -> int:
    return (pkt[at] << 8) | pkt[at + 1]


def _with_source(pkt: bytes, ihl: int, addr: int, port: int) -> bytes:
    """The packet as the realserver sent it: source put back from the VIP to the
    realserver (checksums are not read on the replay path)."""
    return b"%b%b%b%b%b" % (pkt[:12], addr.to_bytes(4, "big"), pkt[16:ihl],
                            port.to_bytes(2, "big"), pkt[ihl + 2:])


@dataclass
class Mark:
    """An instant the caller asked for, in seconds after the first packet."""

    t: float
    what: str                        # "at" (a listing), "sample", "end"


class TimeOrder:
    """Capture time -> seconds after the first packet, never decreasing: a packet a little
    out of order (the reader refuses big steps back) is fed at the time of the one before."""

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


class Replay:
    """One capture replay through one director: the classifier, the feed, their counts."""

    def __init__(self, director: Director, replies_via_director: bool = False,
                 capture_point: str = AUTO) -> None:
        self.director = director
        self.stats = ReplayStats()
        self.classifier = Classifier.for_director(director, self.stats)
        self.feed = Replayer(director, replies_via_director, capture_point)

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
        and a capture may span idle years."""
        director = self.director
        classifier = self.classifier
        classify, deliver = classifier.classify, self.feed.deliver
        order = TimeOrder(self.stats)
        listings = sorted(round(t * NS) for t in at) if at is not None else []
        todo = sorted(events, key=lambda e: e.at)
        step = round(every * NS) if every else 0
        never = 1 << 200
        li = ei = 0
        next_listing = listings[0] if listings else never
        next_sample = 0 if step else never
        next_event = round(todo[0].at * NS) if todo else never

        def events_until(limit: int) -> None:
            nonlocal ei, next_event
            while next_event <= limit:
                director.apply(todo[ei].command, todo[ei].at)
                ei += 1
                next_event = round(todo[ei].at * NS) if ei < len(todo) else never

        def mark(limit: int, what: str) -> Mark:
            events_until(limit)
            director.handle_timers(limit / NS)
            return Mark(limit / NS, what)

        def marks_before(limit: int, inclusive: bool) -> Iterator[Mark]:
            nonlocal li, next_listing, next_sample
            while True:
                nxt = min(next_listing, next_sample)
                if nxt > limit or (nxt == limit and not inclusive):
                    return
                if nxt == next_listing:
                    yield mark(next_listing, "at")
                    li += 1
                    next_listing = listings[li] if li < len(listings) else never
                else:
                    yield mark(next_sample, "sample")
                    next_sample += step
                    if not director.connection_count() and next_sample < limit:
                        next_sample += (limit - next_sample) // step * step

        rel = -1
        for ns, pkt in packets:
            rel = order(ns)
            if min(next_listing, next_sample) < rel:
                yield from marks_before(rel, False)
                if next_listing == never and not step and at is not None:
                    return
            if next_event <= rel:
                events_until(rel)
            kind = classify(ns, pkt)
            if kind >= 0:
                deliver(kind, rel / NS, pkt, classifier.ihl)
        yield from marks_before(max(rel, listings[-1] if listings else 0), True)
        if at is None and rel >= 0:
            yield mark(rel, "end")
