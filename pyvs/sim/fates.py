"""What became of each client connection in a several-director simulation: survived,
reset (and by whom), refused, timed out or hung, and its phase against the scenario's
pivot (the failure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.packet import int_to_ip
from . import tcp
from .apps import ClientApp, Session
from .events import Simulation
from .network import Lab


@dataclass
class ClientConn:
    """What became of one client connection."""

    session: Session
    started: float
    established: float | None = None
    ended: float | None = None
    end: str = ""
    sock: tcp.Socket | None = None
    app: ClientApp | None = None


@dataclass
class Ledger:
    """A run's client connections, who last sent an RST to each client port, and which
    realserver accepted each (both keyed by the client's address and port)."""

    conns: list[ClientConn] = field(default_factory=list)
    rst_from: dict[tuple[int, int], str] = field(default_factory=dict)
    accepted_by: dict[tuple[int, int], int] = field(default_factory=dict)


class Tracked(ClientApp):
    """A client session that records its connection's fate."""

    __slots__ = ("conn",)

    def __init__(self, sim: Simulation, session: Session, lab: Lab,
                 conns: list[ClientConn]) -> None:
        super().__init__(sim, session, lab)
        self.conn = ClientConn(session, sim.now, app=self)
        conns.append(self.conn)

    def connected(self, sock: tcp.Socket) -> None:
        self.conn.established = self.sim.now
        super().connected(sock)

    def closed(self, sock: tcp.Socket) -> None:
        self.conn.sock = sock
        self.conn.end = sock.end
        self.conn.ended = self.sim.now
        super().closed(sock)


def _fate(conn: ClientConn, ledger: Ledger) -> str:
    sock = conn.sock
    if conn.ended is None:
        if (sock is not None and sock.state == tcp.ESTABLISHED and not sock.rtx
                and conn.app is not None and conn.app.done >= conn.session.requests):
            return "open"
        return "hung"
    if conn.end == "closed":
        done = conn.app is not None and conn.app.done >= conn.session.requests
        return "survived" if done else "closed early"
    if conn.end == "reset" and sock is not None:
        return f"reset by {ledger.rst_from.get((sock.laddr, sock.lport), 'the peer')}"
    return {"timeout": "timed out"}.get(conn.end, conn.end)


def _phase(conn: ClientConn, pivot: float) -> str:
    if conn.ended is not None and conn.ended < pivot:
        return "before"
    if conn.established is not None and conn.established < pivot:
        return "held"
    return "opening" if conn.started < pivot else "new"


@dataclass(frozen=True)
class Fate:
    """One client connection's story."""

    client: str          # its address:port
    realserver: str      # where it was first accepted ("" if nowhere)
    started: float
    phase: str           # before, held, opening, new (against the scenario's pivot)
    fate: str            # survived, reset by d2, reset by rs1, hung, timed out, ...
    ended: float | None

    def line(self, port: int) -> str:
        where = f" -> {self.realserver}" if self.realserver else " (never reached a realserver)"
        when = "" if self.ended is None else f" at {self.ended:.2f} s"
        return (f"{self.client}{where}, from {self.started:.2f} s, port {port}: "
                f"{self.phase}, {self.fate}{when}")


def outcomes(ledger: Ledger, clients: list[tcp.Stack], pivot: float
             ) -> tuple[dict[str, float], list[Fate], list[str]]:
    """`phase/fate` counts for Result.clients, each connection's Fate, and its line."""
    for stack in clients:
        for open_sock in stack.sockets.values():
            if isinstance(open_sock.app, Tracked):
                open_sock.app.conn.sock = open_sock
    counts: dict[str, float] = {}
    fates, lines = [], []
    for conn in sorted(ledger.conns, key=lambda c: c.started):
        fate, phase = _fate(conn, ledger), _phase(conn, pivot)
        counts[f"{phase}/{fate}"] = counts.get(f"{phase}/{fate}", 0) + 1
        sock = conn.sock
        client, rs = "?", 0
        if sock is not None:
            client = f"{int_to_ip(sock.laddr)}:{sock.lport}"
            rs = ledger.accepted_by.get((sock.laddr, sock.lport), 0)
        f = Fate(client, int_to_ip(rs) if rs else "", conn.started, phase, fate, conn.ended)
        fates.append(f)
        lines.append(f.line(conn.session.port))
    return counts, fates, lines
