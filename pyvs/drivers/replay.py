"""Capture replay: feed a pcap/pcapng through the engine at the packets' own timestamps.

Where the capture was taken decides what each packet is:

* **client side** (no packet from a realserver address): packets to a virtual service are
  inbound; replies from the VIP to a client are outbound.  For a Masq connection the reply is
  handed to the engine as the realserver sent it (source = the connection's realserver), which
  is what the director would have seen.  For Route/Tunnel connections replies never cross
  the director, so they are ignored unless ``replies_via_director`` is set (a realserver whose
  default gateway is the director: the LVS-HOWTO's "incorrect routing").
* **director side** (``tcpdump -i any`` on the director): packets to a virtual service are
  inbound, packets from a realserver to a client are outbound, and the director's own
  forwarded copies (client -> realserver, VIP -> client after SNAT, IPIP) are skipped.

Either way, a packet that repeats one seen less than 10 ms before, byte for byte but for
its TTL and IP checksum, is a second copy of one packet, not a second packet: a DR
director forwards client -> VIP packets unchanged, so a capture on it (one interface, or
``-i any``) holds each of them twice.  A real repeat differs in its IP ID or in its TCP
checksum (timestamps) and comes after a retransmission timeout, not within 10 ms.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..core.commands import Event
from ..core.engine import IN, OUT, Director
from ..core.forwarding import MASQ
from ..core.packet import IP_ADDRS, PORTS

CLIENT_SIDE = "client"
DIRECTOR_SIDE = "director"
COPY_WINDOW = 0.010          # seconds within which an identical packet is the same packet


@dataclass
class ReplayStats:
    packets: int = 0
    inbound: int = 0
    outbound: int = 0
    skipped: int = 0
    copies: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)


def _realserver_addrs(director: Director) -> set[int]:
    return {d.addr for svc in director.services for d in svc.dests}


def detect_capture_point(director: Director, packets: Iterable[tuple[float, bytes]]) -> str:
    rs = _realserver_addrs(director)
    vips = {svc.addr for svc in director.services}
    for _, pkt in packets:
        if len(pkt) >= 20:
            src = IP_ADDRS.unpack_from(pkt)[3]
            if src in rs and src not in vips:
                return DIRECTOR_SIDE
    return CLIENT_SIDE


class Replayer:
    """Drive one director from capture packets; call :meth:`feed` in time order."""

    def __init__(self, director: Director, capture_point: str = CLIENT_SIDE,
                 replies_via_director: bool = False) -> None:
        self.director = director
        self.capture_point = capture_point
        self.replies_via_director = replies_via_director
        self.stats = ReplayStats()
        self._vips = {(svc.addr, svc.port) for svc in director.services if not svc.fwmark}
        self._vip_addrs = {svc.addr for svc in director.services if not svc.fwmark}
        self._recent: dict[bytes, float] = {}
        self._recent_order: deque[tuple[float, bytes]] = deque()

    def feed(self, now: float, pkt: bytes) -> None:
        st = self.stats
        st.packets += 1
        if len(pkt) < 20 or pkt[0] >> 4 != 4:
            st.skipped += 1
            return
        tot_len, _, proto, saddr, daddr = IP_ADDRS.unpack_from(pkt)
        if len(pkt) < tot_len:                     # snaplen-truncated: headers are enough
            pkt = pkt + bytes(tot_len - len(pkt))
        ihl = (pkt[0] & 15) << 2
        if proto not in (6, 17) or len(pkt) < ihl + 4:
            st.skipped += 1
            return
        if self._is_copy(now, pkt, ihl):
            st.copies += 1
            return
        sport, dport = PORTS.unpack_from(pkt, ihl)
        d = self.director
        if daddr in self._vip_addrs:
            direction = IN
        else:
            cp = d.find_conn(proto, daddr, dport, saddr, sport)
            if cp is not None and saddr == cp.vaddr:
                # a reply with the VIP as source
                if self.capture_point == DIRECTOR_SIDE and cp.fwd == MASQ:
                    st.skipped += 1                 # the director's own post-SNAT copy
                    return
                if cp.fwd != MASQ and not self.replies_via_director:
                    st.skipped += 1
                    return
                if cp.fwd == MASQ:
                    pkt = _with_source(pkt, ihl, cp.daddr, cp.dport)
                direction = OUT
            elif d.find_reply_conn(proto, saddr, sport, daddr, dport) is not None:
                direction = OUT
            else:
                st.skipped += 1                     # forwarded copy or unrelated traffic
                return
        if direction == IN:
            st.inbound += 1
        else:
            st.outbound += 1
        verdict = d.receive(pkt, now, direction)
        key = f"{verdict.action}:{verdict.reason}"
        st.verdicts[key] = st.verdicts.get(key, 0) + 1


    def _is_copy(self, now: float, pkt: bytes, ihl: int) -> bool:
        """True for the second copy of a packet (see the module docstring)."""
        recent, order = self._recent, self._recent_order
        while order and order[0][0] < now - COPY_WINDOW:
            del recent[order.popleft()[1]]
        sig = pkt[2:8] + pkt[9:10] + pkt[12:20] + pkt[ihl:ihl + 20]
        if sig in recent:
            return True
        recent[sig] = now
        order.append((now, sig))
        return False


def _with_source(pkt: bytes, ihl: int, addr: int, port: int) -> bytes:
    buf = bytearray(pkt)
    buf[12:16] = addr.to_bytes(4, "big")
    buf[ihl:ihl + 2] = port.to_bytes(2, "big")
    return bytes(buf)


NS = 1_000_000_000


def replay(director: Director, packets: list[tuple[int, bytes]], at: list[float],
           capture_point: str | None = None, replies_via_director: bool = False,
           events: Iterable[Event] = ()) -> Iterator[tuple[float, Replayer]]:
    """Yield (T, replayer) for each T in `at` (seconds after the first packet), with the
    director advanced to that instant: every packet up to T (a packet at T included, to
    the nanosecond) and every event up to T, an event before a packet at the same
    instant.  Packet times are integer nanoseconds (pcap.read_capture)."""
    if capture_point is None:
        capture_point = detect_capture_point(director, packets)
    rp = Replayer(director, capture_point, replies_via_director)
    t0 = packets[0][0] if packets else 0
    todo = sorted(events, key=lambda e: e.at)
    i = j = 0
    for t in sorted(at):
        limit = round(t * NS)
        while True:
            packet_ns = packets[i][0] - t0 if i < len(packets) else None
            event_ns = round(todo[j].at * NS) if j < len(todo) else None
            if event_ns is not None and event_ns <= limit and (
                    packet_ns is None or event_ns <= packet_ns):
                director.apply(todo[j].command, todo[j].at)
                j += 1
            elif packet_ns is not None and packet_ns <= limit:
                rp.feed(packet_ns / NS, packets[i][1])
                i += 1
            else:
                break
        director.handle_timers(t)
        yield t, rp
