"""TCP endpoints for the simulator: RFC 9293 states as a transition table, Linux's timers.

The realservers' sockets are the truth that the director's table is measured against, so
they must close, linger and time out as a Linux host's do: SYN and SYN-ACK retransmission
with exponential backoff (tcp_syn_retries 6, tcp_synack_retries 5), data and FIN
retransmission (tcp_retries2 15, RTO capped at 120 s), TIME_WAIT 60 s, an orphaned
FIN_WAIT2 dropped after tcp_fin_timeout 60 s, keepalive after tcp_keepalive_time with
tcp_keepalive_intvl / tcp_keepalive_probes and an RST when it gives up, an RST for segments
that match no socket.  Segments carry real sequence numbers and lengths; payload bytes are
zeros and checksums are left 0, because nothing on the simulated path verifies them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..truth.tcpstates import (
    CLOSE,
    CLOSE_WAIT,
    CLOSED,
    CONNECT,
    ESTABLISHED,
    FIN_SENT,
    FIN_WAIT2,
    LISTEN,
    RCV_ACK_OF_FIN,
    RCV_ACK_OF_SYN,
    RCV_FIN,
    RCV_SYN,
    RCV_SYNACK,
    RECEIVING,
    SENDING,
    SYN_RECV,
    SYN_SENT,
    SYNCHRONIZED,
    TIME_WAIT,
    TIMEOUT,
    TRANSITIONS,
)

if TYPE_CHECKING:
    from .events import Simulation

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

SEGMENT = struct.Struct("!BBHHHBBHIIHHIIBBHHH")     # IPv4 + TCP, no options
_RECEIVED = struct.Struct("!2xH8xIIHHII1xB")   # tot_len, src, dst, ports, seq, ack, flags
_QUOTED = struct.Struct("!12xIIHH")             # the quoted header's src, dst and ports
ICMP = 1
ICMP_DEST_UNREACH = 3
IPIP = 4
INF = float("inf")
_ZEROS = bytes(65536)


def build(src: int, sport: int, dst: int, dport: int, flags: int, seq: int, ack: int,
          length: int = 0) -> bytes:
    head = SEGMENT.pack(0x45, 0, 40 + length, 0, 0x4000, 64, 6, 0, src, dst, sport, dport,
                        seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0)
    return head + _ZEROS[:length] if length else head


def reset(laddr: int, lport: int, raddr: int, rport: int, flags: int, seq: int, ack: int,
          length: int) -> bytes:
    """RFC 9293 3.10.7.1: the RST answering a segment (flags, seq, ack, length) that
    raddr:rport sent to laddr:lport, from the receiving side."""
    if flags & ACK:
        return build(laddr, lport, raddr, rport, RST, ack, 0)
    end = seq + length + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return build(laddr, lport, raddr, rport, RST | ACK, 0, end)


@dataclass
class TcpParams:
    """Linux's defaults (net.ipv4.tcp_*), overridable per scenario."""

    syn_retries: int = 6
    synack_retries: int = 5
    retries2: int = 15
    rto_init: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 120.0
    time_wait: float = 60.0
    fin_timeout: float = 60.0
    keepalive_time: float = 7200.0
    keepalive_intvl: float = 75.0
    keepalive_probes: int = 9
    mss: int = 1448


class App(Protocol):
    def connected(self, sock: Socket) -> None: ...
    def data(self, sock: Socket, n: int) -> None: ...
    def eof(self, sock: Socket) -> None: ...
    def closed(self, sock: Socket) -> None: ...


class Socket:
    __slots__ = ("stack", "laddr", "lport", "raddr", "rport", "state", "snd_una", "snd_nxt",
                 "rcv_nxt", "acked", "rtx", "rtx_gen", "rto", "rto_at", "rto_event", "retries",
                 "max_retries", "app", "keepalive", "probes", "last_rcv", "ka_gen", "passive",
                 "fin_seq", "rtt", "end")

    def __init__(self, stack: Stack, laddr: int, lport: int, raddr: int, rport: int,
                 passive: bool) -> None:
        self.stack = stack
        self.laddr, self.lport, self.raddr, self.rport = laddr, lport, raddr, rport
        self.state = CLOSED
        iss = stack.sim.random.getrandbits(30)
        self.snd_una = self.snd_nxt = iss
        self.rcv_nxt = 0
        self.acked = 0                  # the rcv_nxt last acknowledged to the peer
        self.rtx: list[tuple[int, int, int]] = []      # unacknowledged (seq, flags, length)
        self.rtx_gen = 0              # bumped to cancel every timer event in flight
        self.rto = stack.params.rto_init
        self.rto_at = INF             # when the retransmission timer expires
        self.rto_event = INF          # the time of its one live event
        self.retries = 0
        self.max_retries = stack.params.retries2
        self.app: App | None = None
        self.keepalive = False
        self.probes = 0
        self.last_rcv = stack.sim.now
        self.ka_gen = 0
        self.passive = passive
        self.fin_seq = -1
        self.rtt = 0.0
        self.end = ""                 # why it closed: closed, reset, refused, timeout, ...

    # -------------------------------------------------------------- state
    def _set(self, new: int) -> None:
        old = self.state
        self.state = new
        stack = self.stack
        if stack.on_state is not None:
            stack.on_state(self, old, new)
        sim, p = stack.sim, stack.params
        if new == CLOSED:
            self.end = self.end or "closed"
            stack.sockets.pop((self.laddr, self.lport, self.raddr, self.rport), None)
            self._cancel_timers()
            self.ka_gen += 1
            if self.app is not None:
                app, self.app = self.app, None
                app.closed(self)
        elif new == TIME_WAIT:
            self._cancel_timers()
            self.ka_gen += 1
            if self.app is not None:          # for the application the connection is over
                self.end = self.end or "closed"
                app, self.app = self.app, None
                app.closed(self)
            sim.after(p.time_wait, self._timeout, TIME_WAIT, self.rtx_gen)
        elif new == FIN_WAIT2:
            sim.after(p.fin_timeout, self._timeout, FIN_WAIT2, self.rtx_gen)
        elif new == ESTABLISHED and self.keepalive:
            self._ka_arm(self.last_rcv + p.keepalive_time)

    def _event(self, event: int) -> None:
        self._set(TRANSITIONS[(self.state, event)])

    def _timeout(self, state: int, gen: int) -> None:
        if self.state == state and (state == FIN_WAIT2 or gen == self.rtx_gen):
            self._event(TIMEOUT)

    # -------------------------------------------------------------- sending
    def _emit(self, flags: int, seq: int, length: int = 0) -> None:
        if flags & ACK:
            self.acked = self.rcv_nxt
        self.stack.output(build(self.laddr, self.lport, self.raddr, self.rport, flags, seq,
                              self.rcv_nxt if flags & ACK else 0, length))

    def _send_seq(self, flags: int, length: int) -> None:
        seq = self.snd_nxt
        self.snd_nxt = seq + length + (1 if flags & (SYN | FIN) else 0)
        if not self.rtx:
            self._rtx_arm()
        self.rtx.append((seq, flags, length))
        self._emit(flags, seq, length)

    def _rtx_arm(self) -> None:
        """(Re)start the retransmission timer.  Restarting it later (every ACK does) only
        moves `rto_at`; the one event in flight re-files itself when it fires early."""
        at = self.stack.sim.now + self.rto
        self.rto_at = at
        if at < self.rto_event:
            self.rto_event = at
            self.stack.sim.at(at, self._rtx_fire, self.rtx_gen)

    def _cancel_timers(self) -> None:
        self.rtx_gen += 1
        self.rto_event = self.rto_at = INF

    def _rtx_fire(self, gen: int) -> None:
        now = self.stack.sim.now
        if gen != self.rtx_gen or now != self.rto_event:
            return                          # cancelled, or superseded by an earlier event
        self.rto_event = INF
        if not self.rtx:
            return
        if now < self.rto_at:
            self.rto_event = self.rto_at
            self.stack.sim.at(self.rto_at, self._rtx_fire, gen)
            return
        if self.retries >= self.max_retries:
            self.end = "timeout"
            self._set(CLOSED)               # ETIMEDOUT: given up, no RST sent
            return
        self.retries += 1
        self.rto = min(self.rto * 2, self.stack.params.rto_max)
        self._rtx_arm()
        for seq, flags, length in self.rtx:
            self._emit(flags, seq, length)

    # -------------------------------------------------------------- the application's calls
    def connect(self) -> None:
        self.max_retries = self.stack.params.syn_retries
        self.rtt = self.stack.sim.now
        self._event(CONNECT)
        self._send_seq(SYN, 0)

    def send(self, n: int) -> None:
        if self.state not in SENDING:
            return
        mss = self.stack.params.mss
        while n > 0:
            chunk = mss if n > mss else n
            self._send_seq(PSH | ACK, chunk)
            n -= chunk

    def close(self) -> None:
        """close(): a FIN after any queued data (or nothing before the handshake)."""
        if self.state == SYN_SENT:
            self._event(CLOSE)
        elif self.state in (ESTABLISHED, CLOSE_WAIT, SYN_RECV):
            self.fin_seq = self.snd_nxt
            self._event(CLOSE)
            self._send_seq(FIN | ACK, 0)

    def abort(self) -> None:
        """close() with SO_LINGER 0: an RST, and the socket is gone at once."""
        if self.state in SYNCHRONIZED or self.state == SYN_RECV:
            self._emit(RST | ACK, self.snd_nxt)
        if self.state != CLOSED:
            self.end = "aborted"
            self._set(CLOSED)

    # -------------------------------------------------------------- keepalive
    def _ka_arm(self, at: float) -> None:
        self.ka_gen += 1
        self.stack.sim.at(at, self._ka_fire, self.ka_gen)

    def _ka_fire(self, gen: int) -> None:
        """tcp_keepalive_timer(): probe after keepalive_time idle, give up after probes."""
        if gen != self.ka_gen or self.state not in SYNCHRONIZED:
            return
        p, now = self.stack.params, self.stack.sim.now
        if self.rtx:                                   # retransmission timer is in charge
            self._ka_arm(now + p.keepalive_time)
            return
        if now - self.last_rcv < p.keepalive_time:
            self._ka_arm(self.last_rcv + p.keepalive_time)
            return
        if self.probes >= p.keepalive_probes:
            self._emit(RST | ACK, self.snd_nxt)
            self.end = "timeout"
            self._set(CLOSED)
            return
        self.probes += 1
        self._emit(ACK, self.snd_una - 1)
        self._ka_arm(now + p.keepalive_intvl)

    # -------------------------------------------------------------- receiving
    def segment(self, flags: int, seq: int, ack: int,  # noqa: C901 (one call per segment)
                length: int) -> None:
        state = self.state
        self.last_rcv = self.stack.sim.now
        if flags & RST:
            if state != SYN_SENT or (flags & ACK and ack == self.snd_nxt & 0xFFFFFFFF):
                self.end = "refused" if state == SYN_SENT else "reset"
                self._set(CLOSED)
            return
        if state == SYN_SENT:
            if flags & SYN and flags & ACK and ack == self.snd_nxt & 0xFFFFFFFF:
                self.rcv_nxt = seq + 1
                self.snd_una = self.snd_nxt
                self._acked_all()
                p = self.stack.params
                self.rtt = self.stack.sim.now - self.rtt
                self.rto = p.rto_min + self.rtt
                self.max_retries = p.retries2
                self._event(RCV_SYNACK)
                self._emit(ACK, self.snd_nxt)
                if self.app is not None:
                    self.app.connected(self)
            return
        if flags & SYN:
            if state == SYN_RECV:                      # the client retransmitted its SYN
                for rseq, rflags, rlength in self.rtx:
                    self._emit(rflags, rseq, rlength)
            else:
                self._emit(ACK, self.snd_nxt)          # challenge ACK
            return
        self.probes = 0
        if flags & ACK:
            self._ack(ack)
            if self.state == CLOSED:
                return
        rcv_nxt = self.rcv_nxt & 0xFFFFFFFF
        # Out-of-order data, a keepalive probe, an old duplicate, a repeated FIN: ACK at once.
        # In-order data or FIN: ACK unless the application's answer already carried it.
        duplicate = seq != rcv_nxt
        if length and seq == rcv_nxt and self.state in RECEIVING:
            self.rcv_nxt += length
            rcv_nxt = self.rcv_nxt & 0xFFFFFFFF
            if self.app is not None:
                self.app.data(self, length)
        if flags & FIN:
            if seq + length == rcv_nxt and self.state in RECEIVING:
                duplicate = False
                self.rcv_nxt += 1
                self._event(RCV_FIN)
                if self.app is not None:
                    self.app.eof(self)
            elif self.state == TIME_WAIT:              # our last ACK was lost: again
                duplicate = True
                self._set(TIME_WAIT)
        if self.state != CLOSED and (duplicate or self.acked != self.rcv_nxt):
            self._emit(ACK, self.snd_nxt)

    def _ack(self, ack: int) -> None:
        una = self.snd_una & 0xFFFFFFFF
        if not 0 < (ack - una) & 0xFFFFFFFF <= (self.snd_nxt - self.snd_una):
            return
        self.snd_una += (ack - una) & 0xFFFFFFFF
        rtx = self.rtx
        while rtx:
            seq, flags, length = rtx[0]
            if seq + length + (1 if flags & (SYN | FIN) else 0) > self.snd_una:
                break
            rtx.pop(0)
        self.retries = 0
        if rtx:
            self._rtx_arm()
        else:
            self._acked_all()
        state = self.state
        if state == SYN_RECV:
            p = self.stack.params
            self.rto = p.rto_min + (self.stack.sim.now - self.rtt)
            self.max_retries = p.retries2
            self._event(RCV_ACK_OF_SYN)
            self.stack.accepted(self)
        elif self.fin_seq >= 0 and self.snd_una > self.fin_seq and state in FIN_SENT:
            self._event(RCV_ACK_OF_FIN)

    def _acked_all(self) -> None:
        self.rtx.clear()
        self.rto_at = INF


class Stack:
    """One host's TCP: sockets by 4-tuple, listeners, ephemeral ports, RST for strays."""

    def __init__(self, sim: Simulation, addrs: set[int], params: TcpParams,
                 send: Callable[[bytes], None]) -> None:
        self.sim = sim
        self.addrs = addrs
        self.params = params
        self.send = send
        self.sockets: dict[tuple[int, int, int, int], Socket] = {}
        self.listeners: dict[int, Callable[[Socket], App]] = {}
        self.keepalive_ports: set[int] = set()
        self.on_state: Callable[[Socket, int, int], None] | None = None
        self.alive = True
        self.cut = False          # blackholed: nothing in or out, the host runs on
        self.refusing = False     # its services stopped listening: SYNs get RST
        self.next_port = 32768 + sim.random.randrange(28232)

    def listen(self, port: int, accept: Callable[[Socket], App], keepalive: bool = False
               ) -> None:
        self.listeners[port] = accept
        if keepalive:
            self.keepalive_ports.add(port)

    def connect(self, laddr: int, raddr: int, rport: int, app: App, lport: int = 0) -> Socket:
        """connect(): from `lport` (bind() first), or the next free ephemeral port
        (32768-60999), skipping ports in use."""
        port = lport or self.next_port
        while not lport and (laddr, port, raddr, rport) in self.sockets:
            port = 32768 if port >= 60999 else port + 1
        if not lport:
            self.next_port = 32768 if port >= 60999 else port + 1
        old = self.sockets.get((laddr, port, raddr, rport))
        if old is not None:                    # bind() to a port still in use: the old
            old.end = "aborted"                # socket is given up (SO_REUSEADDR client)
            old._set(CLOSED)
        sock = Socket(self, laddr, port, raddr, rport, passive=False)
        sock.app = app
        self.sockets[(laddr, port, raddr, rport)] = sock
        sock.connect()
        return sock

    def crash(self) -> None:
        """The host stops: no more packets in or out, no timers, no RST; its sockets are
        gone without a word (a rebooted host holds none)."""
        self.alive = False
        for sock in list(self.sockets.values()):
            sock.app = None
            sock.end = "crash"
            sock._set(CLOSED)

    def recover(self) -> None:
        """Back from any fault: running, reachable, accepting (after a crash, with an
        empty socket table, so segments of old connections are answered with RST)."""
        self.alive = True
        self.cut = False
        self.refusing = False

    def accepted(self, sock: Socket) -> None:
        factory = self.listeners.get(sock.lport)
        if factory is not None:
            sock.app = factory(sock)
            sock.app.connected(sock)

    def output(self, pkt: bytes) -> None:
        """Everything this host sends goes here (nothing leaves a cut host)."""
        if not self.cut:
            self.send(pkt)

    def receive(self, data: bytes) -> None:
        if not self.alive or self.cut:
            return
        if data[9] == IPIP:
            data = data[(data[0] & 15) << 2:]
        if data[9] == ICMP:
            self._icmp(data)
            return
        if data[9] != 6 or len(data) < 40:
            return
        tot_len, src, dst, sport, dport, seq, ack, flags = _RECEIVED.unpack_from(data)
        if dst not in self.addrs:
            return
        length = tot_len - 40
        sock = self.sockets.get((dst, dport, src, sport))
        if sock is not None and sock.state == TIME_WAIT and flags & (SYN | ACK | RST) == SYN:
            sock._set(CLOSED)              # tcp_timewait_state_process(): TW_SYN, reuse
            sock = None
        if sock is not None:
            sock.segment(flags, seq, ack, length)
        elif flags & (SYN | ACK | RST) == SYN and dport in self.listeners and not self.refusing:
            self._passive_open(dst, dport, src, sport, seq)
        elif not flags & RST:
            self._reset(dst, dport, src, sport, flags, seq, ack, length)

    def _passive_open(self, laddr: int, lport: int, raddr: int, rport: int, seq: int) -> None:
        sock = Socket(self, laddr, lport, raddr, rport, passive=True)
        sock.keepalive = lport in self.keepalive_ports
        sock.rcv_nxt = seq + 1
        sock.max_retries = self.params.synack_retries
        sock.rtt = self.sim.now
        self.sockets[(laddr, lport, raddr, rport)] = sock
        sock.state = LISTEN             # the request socket a SYN makes from the listener
        sock._event(RCV_SYN)
        sock._send_seq(SYN | ACK, 0)

    def _icmp(self, data: bytes) -> None:
        """tcp_v4_err(): a destination unreachable for a connection still opening is a
        hard error (connect() fails: port unreachable is ECONNREFUSED); later, a soft one."""
        ihl = (data[0] & 15) << 2
        if len(data) < ihl + 8 + 28 or data[ihl] != ICMP_DEST_UNREACH:
            return
        q = data[ihl + 8:]
        src, dst, sport, dport = _QUOTED.unpack_from(q)
        sock = self.sockets.get((src, sport, dst, dport))
        if sock is not None and sock.state in (SYN_SENT, SYN_RECV):
            sock.end = "refused"
            sock._set(CLOSED)

    def _reset(self, laddr: int, lport: int, raddr: int, rport: int, flags: int, seq: int,
               ack: int, length: int) -> None:
        self.output(reset(laddr, lport, raddr, rport, flags, seq, ack, length))
