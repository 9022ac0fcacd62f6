"""Ground truth and how far the director's table is from it.

The truth is each realserver's own sockets for connections it accepted (what `ss -tan` on
the realserver shows, LISTEN left out): ESTABLISHED is the true ActiveConn, every other
state (SYN_RECV, FIN_WAIT1/2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT) the true InActConn.

Both sides are kept as they change, not by scanning: realserver sockets report every state
change, the engine reports every entry's creation, state change and expiry (`watch`).  So
per-connection disagreements are integrated exactly, to the packet, not per sample:

  ghost      the director counts the connection in ActiveConn; the realserver has no
             ESTABLISHED socket for it (it has closed, or never opened)
  forgotten  the realserver holds a socket for it; the director has no entry
  stale      the director counts it in InActConn; the realserver has no socket for it
  hidden     the director counts it in InActConn; the realserver's socket is ESTABLISHED
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..core.conn import Conn
from ..core.engine import Director
from ..truth import tcpstates as tcp

NONE, ACTIVE, INACTIVE = 0, 1, 2
KINDS = ("ghost", "forgotten", "stale", "hidden")
REMOVED = "(removed)"       # the director-side state of an entry whose realserver is gone
EXPIRED_EARLY = "(expired early)"   # ... of one the director dropped before its timer


class Endpoint(Protocol):
    """A realserver's end of a connection: a simulated socket, or one inferred from a
    capture (pyvs/truth/capture.py)."""

    raddr: int                  # the client's address and port
    rport: int
    state: int                  # pyvs/truth/tcpstates.py


def socket_class(state: int) -> int:
    if state == tcp.ESTABLISHED:
        return ACTIVE
    if state == tcp.CLOSED or state == tcp.LISTEN:
        return NONE
    return INACTIVE


def kind(dclass: int, rclass: int) -> str | None:
    if dclass == rclass:
        return None
    if dclass == ACTIVE:
        return "ghost"
    if dclass == NONE:
        return "forgotten"
    return "stale" if rclass == NONE else "hidden"


@dataclass
class RealserverTruth:
    """One realserver's accepted sockets: counts by state, kept as sockets change."""

    addr: int
    by_state: list[int] = field(default_factory=lambda: [0] * len(tcp.STATE_NAMES))

    @property
    def active(self) -> int:
        return self.by_state[tcp.ESTABLISHED]

    @property
    def inactive(self) -> int:
        return sum(self.by_state) - self.by_state[tcp.ESTABLISHED]


class Agreement:
    """Per-connection director-versus-realserver classes, integrated over time."""

    def __init__(self, director: Director) -> None:
        self.director = director
        # key (realserver, client addr, client port) -> [conn, dclass, dstate, rclass, rstate,
        # since]
        self.entries: dict[tuple[int, int, int], list] = {}
        self.seconds: dict[tuple[str, str, str], float] = {}
        self.current: dict[str, int] = dict.fromkeys(KINDS, 0)    # entries in each kind now
        self.worst: dict[str, int] = dict.fromkeys(KINDS, 0)      # ... at most, so far

    def conn_changed(self, cp: Conn, now: float) -> None:
        key = (cp.daddr, cp.caddr, cp.cport)
        entry = self.entries.get(key)
        if cp.alive and not cp.dest.available:
            # a removed realserver is not listed: ipvsadm counts none of its entries
            self._update(key, entry, now, cp, NONE, REMOVED, None)
        elif cp.alive:
            dclass = INACTIVE if cp.inactive else ACTIVE
            self._update(key, entry, now, cp, dclass, self.director.state_name(cp), None)
        elif entry is not None and entry[0] is cp:
            # gone before its timer: flushed (expire_nodest_conn) or replaced (port reuse)
            early = now < cp.expires - 1e-6
            self._update(key, entry, now, None, NONE, EXPIRED_EARLY if early else "-", None)

    def dests_changed(self, now: float) -> None:
        """After a control-plane change: entries whose realserver was removed (or came
        back) change class without a packet."""
        for cp in list(self.director._in.values()):
            entry = self.entries.get((cp.daddr, cp.caddr, cp.cport))
            if entry is not None and entry[0] is cp and (entry[2] == REMOVED) == (
                    cp.dest.available):
                self.conn_changed(cp, now)

    def socket_changed(self, rs: int, sock: Endpoint, now: float) -> None:
        key = (rs, sock.raddr, sock.rport)
        rclass = socket_class(sock.state)
        rstate = tcp.STATE_NAMES[sock.state] if rclass else "-"
        self._update(key, self.entries.get(key), now, None, None, None, (rclass, rstate))

    def _update(self, key: tuple, entry: list | None, now: float, cp: Conn | None,
                dclass: int | None, dstate: str | None, rs: tuple[int, str] | None) -> None:
        if entry is None:
            entry = [None, NONE, "-", NONE, "-", now]
            self.entries[key] = entry
        else:
            self._account(entry, now)
        old = kind(entry[1], entry[3])
        if dclass is not None:
            entry[0], entry[1], entry[2] = cp, dclass, dstate
        if rs is not None:
            entry[3], entry[4] = rs
        entry[5] = now
        new = kind(entry[1], entry[3])
        if old != new:
            if old is not None:
                self.current[old] -= 1
            if new is not None:
                self.current[new] += 1
                if self.current[new] > self.worst[new]:
                    self.worst[new] = self.current[new]
        if entry[1] == NONE and entry[3] == NONE:
            del self.entries[key]

    def _account(self, entry: list, now: float) -> None:
        k = kind(entry[1], entry[3])
        if k is not None and now > entry[5]:
            cell = (k, entry[2], entry[4])
            self.seconds[cell] = self.seconds.get(cell, 0.0) + (now - entry[5])

    def finish(self, now: float) -> None:
        for entry in self.entries.values():
            self._account(entry, now)
            entry[5] = now


def _affects_active(cell: tuple[str, str, str]) -> bool:
    k, _, rstate = cell
    return k in ("ghost", "hidden") or (k == "forgotten" and rstate == "ESTABLISHED")


NEGLIGIBLE = 0.05      # connection-seconds: a packet's flight across a lab, not a cause


def dominant(seconds: dict[tuple[str, str, str], float]) -> tuple[str, str, str, float] | None:
    """The (kind, director state, realserver state) that disagreed longest, ActiveConn
    errors first when they are a tenth of the total or more: schedulers weigh ActiveConn
    256 times InActConn, and InActConn outliving the realserver's socket is by design."""
    total = sum(seconds.values())
    if total < NEGLIGIBLE:
        return None
    active = sum(sec for cell, sec in seconds.items() if _affects_active(cell))
    first = active >= 0.1 * total
    (k, d, r), sec = max(seconds.items(), key=lambda kv: (first and _affects_active(kv[0]),
                                                          kv[1]))
    return k, d, r, sec


_CLOSE_NOT_SEEN = "server-initiated close not seen; entry stays ESTABLISHED until the client's FIN"
EXPLAIN: dict[tuple[str, str], str] = {
    ("ESTABLISHED", "FIN_WAIT1"): _CLOSE_NOT_SEEN,
    ("ESTABLISHED", "FIN_WAIT2"): _CLOSE_NOT_SEEN,
    ("ESTABLISHED", "TIME_WAIT"): _CLOSE_NOT_SEEN,
    ("ESTABLISHED", "-"): "entry stays ESTABLISHED after the realserver's socket is gone "
                          "(its close or reset never crossed the director)",
    ("-", "ESTABLISHED"): "idle entry expired after the director's tcp timeout ({tcp} s) while "
                          "the realserver still holds the connection",
    ("FIN_WAIT", "-"): "only the client's FIN is seen: FIN_WAIT kept {tcpfin} s after the "
                       "realserver's socket is gone",
    ("TIME_WAIT", "-"): "TIME_WAIT kept 120 s after the realserver's socket is gone (it closed "
                        "passively, or its own TIME_WAIT is only 60 s)",
    ("SYN_RECV", "SYN_RECV"): "handshake incomplete: SYN_RECV counts as ActiveConn on this "
                              "kernel while the realserver's socket is half-open",
    ("SYN_RECV", "-"): "SYN_RECV entry kept (each SYN retry re-arms 60 s) after the "
                       "realserver gave up the half-open connection",
    ("CLOSE", "-"): "RST seen: CLOSE entry kept 10 s",
    ("CLOSE_WAIT", "-"): "CLOSE_WAIT kept 60 s after the realserver's socket is gone",
    ("LAST_ACK", "-"): "LAST_ACK kept 30 s after the realserver's socket is gone",
    (EXPIRED_EARLY, "ESTABLISHED"): "the director expired the entry before its timer "
                                    "(its realserver removed with expire_nodest_conn=1): the "
                                    "realserver still holds the connection",
    (EXPIRED_EARLY, "TIME_WAIT"): "a reused client port replaced the entry (conn_reuse_mode) "
                                  "while the realserver's old socket is in TIME_WAIT",
    (REMOVED, "ESTABLISHED"): "the realserver was removed from the service: ipvsadm no "
                              "longer counts its connections, while their entries live on "
                              "(packets dropped unless expire_nodest_conn=1)",
}


def explain(seconds: dict[tuple[str, str, str], float], tcp: int, tcpfin: int) -> str:
    """One line naming the dominant cause of disagreement."""
    top = dominant(seconds)
    if top is None:
        return "exact: director and realservers agree on every connection"
    k, d, r, sec = top
    text = EXPLAIN.get((d, r))
    if text is None and d in ("-", EXPIRED_EARLY):
        text = "director has no entry while the realserver's socket is {rstate}"
    if text is None:
        text = "director shows {dstate} while the realserver's socket is {rstate}"
    text = text.format(tcp=tcp, tcpfin=tcpfin, dstate=d, rstate=r if r != "-" else "gone")
    return f"{k} {sec:.0f} s: {text}" if sec >= 10 else f"{k} {sec:.1f} s: {text}"
