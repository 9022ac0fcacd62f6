"""The realservers' TCP sockets, inferred from a capture that sees both directions.

Sans-I/O: fed (time, packet) with what the packet is (pyvs/drivers/replay.py's Classifier:
a client's segment toward a virtual service, or a server's segment toward a client, from the
VIP or from a realserver), it drives each connection's server end through the RFC 9293 table
of pyvs/truth/tcpstates.py -- the table the simulator's sockets use -- with Linux's timers:

* a client's SYN makes the half-open socket (SYN_RECV); it gives up when the SYN-ACK
  retries run out, 63 s after the first (tcp_synack_retries 5, backoff from 1 s);
* the client's ACK of the SYN-ACK completes it; a FIN each way, and the ACK of the
  server's FIN, move it as the table says; the side that closed first holds TIME_WAIT 60 s,
  re-armed by every segment the client sends into it (the retransmitted FIN whose ACK was
  lost); an orphaned FIN_WAIT2 lasts tcp_fin_timeout (60 s), and new data in it resets it;
* an RST the server sends closes it; a client's RST closes it when its sequence number is
  the one the server expects (RFC 5961: Linux answers any other with a challenge ACK), in
  TIME_WAIT too (tcp_rfc1337 0);
* a client's SYN on a TIME_WAIT socket takes its place (the new connection);
* evidence beats inference: a server that retransmits its FIN never got the ACK the capture
  showed (lost after the capture point), so its socket goes back to the state before that
  ACK; and a host with no socket for a connection sends nothing but RSTs for it, so any
  other segment from a server taken for closed puts its socket back where it was -- if it
  comes more than a round trip (capture point - server - capture point, measured from SYN
  to SYN-ACK) after that change, so it cannot have been sent before it;
* a FIN retransmitted by an orphan for the eighth time (tcp_orphan_retries' default) ends
  the socket one backed-off interval later.

A change is known at the packet that shows it: a client's segment is taken as received
when the capture sees it, a server's as sent.  The truth is counted only for connections
whose server side the capture holds (*confirmed*: a packet from the server); a connection
whose opening the capture does not hold is not inferred at all.  Sequence numbers are
compared modulo 2^32.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from ..sim.tcp import TcpParams
from .tcpstates import (
    CLOSE,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    FIN_SENT,
    FIN_WAIT1,
    FIN_WAIT2,
    LAST_ACK,
    LISTEN,
    RCV_ACK_OF_FIN,
    RCV_ACK_OF_SYN,
    RCV_FIN,
    RCV_SYN,
    RECEIVING,
    SYN_RECV,
    TIME_WAIT,
    TIMEOUT,
    TRANSITIONS,
)

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
MOD = 1 << 32
ORPHAN_RETRIES = 8          # tcp_orphan_retries 0 means 8 for a live peer (tcp_orphan_retries())
LINGER = 120.0              # a closed socket's record is kept this long, for late evidence
UNKNOWN_WINDOW = 900.0      # the tcp timeout: a connection silent longer is as good as gone
# After an ACK of our FIN, the state an unacknowledged FIN leaves us in (undo of that ACK).
BEFORE_ACK_OF_FIN = {FIN_WAIT2: FIN_WAIT1, TIME_WAIT: CLOSING}
AFTER_CLIENT_FIN = frozenset((CLOSE_WAIT, CLOSING, LAST_ACK))


def _after(a: int, b: int) -> bool:
    """a is later than b in sequence space."""
    return 0 < (a - b) % MOD < MOD // 2


class ServerEnd:
    """One connection's server side: a realserver's socket, as the capture shows it.
    ``raddr``/``rport`` are the client's (the socket's remote end), as for a real socket."""

    __slots__ = ("key", "raddr", "rport", "vaddr", "vport", "start", "state", "rcv_nxt",
                 "iss", "fin_seq", "fin_sends", "fin_at", "fin_gap", "prior", "changed",
                 "opened", "rtt", "confirmed", "excluded", "gen", "rip", "attribution")

    def __init__(self, key: bytes, start: int, now: float) -> None:
        self.key = key                  # caddr, vaddr, cport, vport: the client's view
        self.raddr = int.from_bytes(key[0:4], "big")
        self.vaddr = int.from_bytes(key[4:8], "big")
        self.rport = (key[8] << 8) | key[9]
        self.vport = (key[10] << 8) | key[11]
        self.start = start              # capture nanoseconds of the SYN: the incarnation
        self.state = LISTEN
        self.rcv_nxt = 0
        self.iss = -1                   # the server's SYN-ACK sequence number, once seen
        self.fin_seq = -1               # sequence number of the server's FIN, once sent
        self.fin_sends = 0
        self.fin_at = 0.0
        self.fin_gap = 0.0
        self.prior = CLOSED             # the state it was closed from (for undoing)
        self.changed = now              # when its state last changed
        self.opened = now
        self.rtt = 0.0                  # SYN to SYN-ACK at the capture point
        self.confirmed = False          # a packet from the server side was seen
        self.excluded = False
        self.gen = 0                    # bumped to cancel timers in flight
        self.rip = 0                    # the realserver's own address, if the capture shows it
        self.attribution: list[int] | None = None     # per compared director: realserver


@dataclass
class TruthStats:
    connections: int = 0            # incarnations opened by a SYN the capture holds
    confirmed: int = 0              # ... whose server side the capture shows
    refused: int = 0                # ... answered by an RST at once (no socket)
    one_way: int = 0                # ... never shown from the server side
    already_open: int = 0           # connections seen without their opening


class CaptureTruth:
    """Every connection's server end; ``on_change(end, old, new, now)`` for each change of
    a confirmed, not excluded end.  `exclude`: (key, start) of incarnations to infer but
    not report (the one-way connections a first pass found)."""

    def __init__(self, params: TcpParams | None = None,
                 on_change: Callable[[ServerEnd, int, int, float], None] | None = None,
                 exclude: set[tuple[bytes, int]] | frozenset[tuple[bytes, int]] = frozenset(),
                 on_finished: Callable[[ServerEnd], None] | None = None) -> None:
        self.params = params or TcpParams()
        p = self.params
        self.synack_life = p.rto_init * ((2 << p.synack_retries) - 1)
        self.on_change = on_change
        self.on_finished = on_finished
        self.exclude = exclude
        self.conns: dict[bytes, ServerEnd] = {}
        self.by_client: dict[bytes, ServerEnd] = {}     # caddr + cport -> end
        # keys seen without their opening, counted once each: two generations of
        # UNKNOWN_WINDOW seconds, so memory follows the live traffic, not the capture
        self._unknown: set[bytes] = set()
        self._unknown_old: set[bytes] = set()
        self._unknown_since = 0.0
        self.stats = TruthStats()
        self._timers: list[tuple[float, int, int, ServerEnd]] = []
        self._seq = 0

    # ------------------------------------------------------------------ timers
    def next_timer(self) -> float | None:
        timers = self._timers
        while timers and timers[0][2] != timers[0][3].gen:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, gen, end = heapq.heappop(timers)
            if gen != end.gen:
                continue
            if end.state == CLOSED:
                self._forget(end)
            elif end.state in (TIME_WAIT, FIN_WAIT2):
                self._event(end, TIMEOUT, at)
            else:                       # SYN_RECV out of SYN-ACK retries, an orphan's FIN
                self._set(end, CLOSED, at)

    def _arm(self, end: ServerEnd, at: float) -> None:
        end.gen += 1
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, end.gen, end))

    # ------------------------------------------------------------------ state
    def _set(self, end: ServerEnd, new: int, now: float) -> None:
        """A state change: the old state's timer is cancelled, the new one's armed."""
        old = end.state
        if new == old:
            return
        end.state = new
        end.gen += 1
        end.changed = now
        p = self.params
        if new == CLOSED:
            end.prior = old
            self._arm(end, now + LINGER)
        elif new == TIME_WAIT:
            self._arm(end, now + p.time_wait)
        elif new == FIN_WAIT2:
            self._arm(end, now + p.fin_timeout)
        if end.confirmed and not end.excluded and self.on_change is not None:
            self.on_change(end, old, new, now)

    def _event(self, end: ServerEnd, event: int, now: float) -> None:
        new = TRANSITIONS.get((end.state, event))
        if new is not None:
            self._set(end, new, now)

    def _forget(self, end: ServerEnd) -> None:
        if self.conns.get(end.key) is end:
            del self.conns[end.key]
            client = end.key[0:4] + end.key[8:10]
            if self.by_client.get(client) is end:
                del self.by_client[client]
        self._finished(end)

    def _finished(self, end: ServerEnd) -> None:
        if not end.confirmed:
            self.stats.one_way += 1
        if self.on_finished is not None:
            self.on_finished(end)

    def finish(self) -> None:
        """The capture has ended: count the connections never seen from the server."""
        for end in self.conns.values():
            self._finished(end)

    def _seen_unopened(self, key: bytes, now: float) -> None:
        """A connection open before the capture (or forgotten): counted the first time;
        one silent for two windows and heard again is counted again."""
        if now - self._unknown_since >= UNKNOWN_WINDOW:
            self._unknown_old, self._unknown = self._unknown, set()
            self._unknown_since = now
        if key in self._unknown:
            return
        if key not in self._unknown_old:
            self.stats.already_open += 1
        self._unknown.add(key)

    # ------------------------------------------------------------------ segments
    def client_segment(self, key: bytes, ns: int, now: float, flags: int, seq: int, ack: int,
                       length: int) -> ServerEnd | None:
        """A segment from the client to the service: the server receives it."""
        end = self.conns.get(key)
        if flags & (SYN | ACK | RST) == SYN:
            return self._client_syn(end, key, ns, now, seq)
        if end is None:
            if not flags & RST:
                self._seen_unopened(key, now)
            return None
        state = end.state
        if state == CLOSED:
            return end
        if flags & RST:
            # tcp_validate_incoming(): exactly rcv_nxt (or one less after the client's FIN);
            # a request socket takes any in-window RST (tcp_check_req())
            if seq == end.rcv_nxt or (state == SYN_RECV and not _after(end.rcv_nxt, seq)) or (
                    (seq + 1) % MOD == end.rcv_nxt and state in AFTER_CLIENT_FIN):
                self._set(end, CLOSED, now)
            return end
        if state == TIME_WAIT:
            if flags & ACK:                     # tcp_timewait_state_process(): re-armed
                self._arm(end, now + self.params.time_wait)
            return end
        if flags & ACK:
            if state == SYN_RECV and (end.iss < 0 or ack == (end.iss + 1) % MOD):
                self._event(end, RCV_ACK_OF_SYN, now)
            elif state in FIN_SENT and end.fin_seq >= 0 and not _after(end.fin_seq + 1, ack):
                self._event(end, RCV_ACK_OF_FIN, now)
        self._client_data(end, flags, seq, length, now)
        return end

    def _client_syn(self, end: ServerEnd | None, key: bytes, ns: int, now: float, seq: int
                    ) -> ServerEnd | None:
        if end is not None and end.state == SYN_RECV:
            return end                          # the client retransmits its SYN
        if end is None or end.state == CLOSED or end.state == TIME_WAIT:
            if end is not None:
                if end.state == TIME_WAIT:      # tcp_timewait_state_process(): TW_SYN
                    self._set(end, CLOSED, now)
                end.gen += 1
                self._forget(end)
            return self._open(key, ns, now, seq)
        return end                              # a SYN on a live socket: a challenge ACK

    def _client_data(self, end: ServerEnd, flags: int, seq: int, length: int, now: float
                     ) -> None:
        """The client's data and FIN, received in order."""
        state = end.state
        data_end = (seq + length) % MOD
        if length and _after(data_end, end.rcv_nxt):
            end.rcv_nxt = data_end
            if state == FIN_WAIT2:              # data after a half-duplex close: RST
                self._set(end, CLOSED, now)
                return
        if flags & FIN and data_end == end.rcv_nxt and state in RECEIVING:
            end.rcv_nxt = (data_end + 1) % MOD
            self._event(end, RCV_FIN, now)

    def server_segment(self, end: ServerEnd | None, now: float, flags: int, seq: int,
                       length: int, rip: int = 0) -> ServerEnd | None:
        """A segment the server sent."""
        if end is None:
            return None
        if rip:
            end.rip = rip
        if not end.confirmed and not self._confirm(end, flags, now):
            return end
        state = end.state
        if flags & RST:
            if state != CLOSED:
                self._set(end, CLOSED, now)
            return end
        settled = now - end.changed > end.rtt     # sent after our last change reached it
        if state == CLOSED:
            if end.prior != CLOSED and settled:
                self._set(end, end.prior, now)  # it never got the RST, or the last ACK
                if flags & FIN and end.fin_seq >= 0:
                    self._fin_again(end, now)
        elif flags & SYN:
            if flags & ACK and state == SYN_RECV and end.iss < 0:
                end.iss = seq
                end.rtt = now - end.opened
                self._arm(end, now + self.synack_life)
        elif flags & FIN:
            self._server_fin(end, (seq + length) % MOD, settled, now)
        return end

    def _confirm(self, end: ServerEnd, flags: int, now: float) -> bool:
        """The first packet from the server side: the socket is real from now on (False:
        there is none to follow, it was refused or has already gone)."""
        if end.state == CLOSED:
            return False
        end.confirmed = True
        if flags & RST and end.iss < 0:         # refused: no listener, no socket
            self.stats.refused += 1
            end.state = end.prior = CLOSED
            self._arm(end, now + LINGER)
            return False
        self.stats.confirmed += 1
        if not end.excluded and self.on_change is not None and end.state != LISTEN:
            self.on_change(end, LISTEN, end.state, now)
        return True

    def _server_fin(self, end: ServerEnd, fin_seq: int, settled: bool, now: float) -> None:
        if end.fin_seq < 0:
            end.fin_seq = fin_seq
            end.fin_sends, end.fin_at, end.fin_gap = 1, now, 0.0
            self._event(end, CLOSE, now)
        elif fin_seq == end.fin_seq:            # again: was the ACK the capture saw lost?
            back = BEFORE_ACK_OF_FIN.get(end.state)
            if back is not None and settled:
                self._set(end, back, now)
            self._fin_again(end, now)

    def _fin_again(self, end: ServerEnd, now: float) -> None:
        """A retransmission of the server's FIN; the orphan gives up after its last one."""
        end.fin_gap = now - end.fin_at
        end.fin_at = now
        end.fin_sends += 1
        if end.fin_sends > ORPHAN_RETRIES and end.state in FIN_SENT:
            self._arm(end, now + min(2 * end.fin_gap, self.params.rto_max))

    def _open(self, key: bytes, ns: int, now: float, seq: int) -> ServerEnd:
        end = ServerEnd(key, ns, now)
        end.rcv_nxt = (seq + 1) % MOD
        end.excluded = (key, ns) in self.exclude
        self.conns[key] = end
        self.by_client[key[0:4] + key[8:10]] = end
        self.stats.connections += 1
        self._event(end, RCV_SYN, now)
        self._arm(end, now + self.synack_life)
        return end

    # ------------------------------------------------------------------ packets
    def request(self, ns: int, now: float, pkt: bytes, ihl: int) -> ServerEnd | None:
        """A classified client -> VIP packet (TCP only; the caller checked the headers)."""
        key = pkt[12:20] + pkt[ihl:ihl + 4]
        seq = int.from_bytes(pkt[ihl + 4:ihl + 8], "big")
        ack = int.from_bytes(pkt[ihl + 8:ihl + 12], "big")
        return self.client_segment(key, ns, now, pkt[ihl + 13], seq, ack, _payload(pkt, ihl))

    def reply(self, now: float, pkt: bytes, ihl: int, from_realserver: bool
              ) -> ServerEnd | None:
        """A classified server -> client packet, from the VIP or from a realserver."""
        if from_realserver:
            end = self.by_client.get(pkt[16:20] + pkt[ihl + 2:ihl + 4])
            rip = int.from_bytes(pkt[12:16], "big")
        else:
            end = self.conns.get(pkt[16:20] + pkt[12:16] + pkt[ihl + 2:ihl + 4]
                                 + pkt[ihl:ihl + 2])
            rip = 0
        seq = int.from_bytes(pkt[ihl + 4:ihl + 8], "big")
        return self.server_segment(end, now, pkt[ihl + 13], seq, _payload(pkt, ihl), rip)


def _payload(pkt: bytes, ihl: int) -> int:
    """Payload length from the headers (the packet may be cut by a snaplen)."""
    return ((pkt[2] << 8) | pkt[3]) - ihl - ((pkt[ihl + 12] >> 4) << 2)
