"""Client and server applications: what each side of a session sends, waits for and closes.

A `Session` is one client's use of one virtual service, written the way LVS write-ups describe
the protocols: a greeting from the server (telnet, ftp), request/response exchanges, a hold,
and who ends it and how (the client's close, the server's idle close as with Apache's
KeepAliveTimeout, a logout that makes the server close, an RST, or nobody).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .events import Simulation
    from .tcp import Socket

ENDS = ("client-close", "server-close", "quit", "client-rst", "none")
QUIT_BYTES, LOGOUT_BYTES = 6, 10


@dataclass
class Session:
    """One client connection (and, for ftp, its data connection)."""

    start: float = 0.0              # when the client connects
    client: int = 0                 # which client host
    port: int = 80                  # the virtual service port
    banner: int = 0                 # bytes the server sends first (telnet/ftp greeting)
    banner_delay: float = 0.0       # before the greeting (an identd lookup, say)
    requests: int = 1
    request_bytes: int = 300
    response_bytes: int = 5000
    server_delay: float = 0.0       # before each response
    think: float = 0.0              # between a response and the next request
    hold: float = 0.0               # after the last exchange, before `end`
    end: str = "client-close"       # one of ENDS
    peer_close_delay: float = 0.0   # the side that receives the FIN closes this much later
    crash: float | None = None      # the client host crashes this long after connecting
    data: Session | None = None     # a second connection once the exchanges are done
    keepalive: bool = False         # the server socket has SO_KEEPALIVE
    cport: int = 0                  # the client's port (bind() first); 0: an ephemeral one

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class Registry:
    """Which session a server-side socket belongs to, by the client's address and port."""

    by_client: dict[tuple[int, int], Session] = field(default_factory=dict)


class SessionStarter(Protocol):
    def start_session(self, session: Session, client: int) -> None: ...
    def session_connected(self, delay: float) -> None: ...
    def session_ended(self, how: str) -> None: ...


class ClientApp:
    __slots__ = ("sim", "session", "received", "done", "greeted", "lab", "began")

    def __init__(self, sim: Simulation, session: Session, lab: SessionStarter) -> None:
        self.sim = sim
        self.session = session
        self.received = 0
        self.done = 0                  # exchanges completed
        self.greeted = not session.banner
        self.lab = lab
        self.began = sim.now

    def connected(self, sock: Socket) -> None:
        self.lab.session_connected(self.sim.now - self.began)
        if self.greeted:
            self._next(sock)

    def _next(self, sock: Socket) -> None:
        s = self.session
        if self.done < s.requests:
            sock.send(s.request_bytes)
            return
        if s.data is not None:
            self.lab.start_session(s.data, s.client)
        self.sim.after(s.hold, self._end, sock)

    def _end(self, sock: Socket) -> None:
        end = self.session.end
        if end == "client-close":
            sock.close()
        elif end == "client-rst":
            sock.abort()
        elif end == "quit":
            sock.send(QUIT_BYTES)

    def data(self, sock: Socket, n: int) -> None:
        s = self.session
        self.received += n
        if not self.greeted:
            if self.received >= s.banner:
                self.greeted = True
                self._next(sock)
        elif self.done < s.requests and (
                self.received >= s.banner + s.response_bytes * (self.done + 1)):
            self.done += 1
            if self.done < s.requests:
                self.sim.after(s.think, self._next, sock)
            else:
                self._next(sock)

    def eof(self, sock: Socket) -> None:
        self.sim.after(self.session.peer_close_delay, sock.close)

    def closed(self, sock: Socket) -> None:
        """How the client saw its connection end: closed, aborted (its own RST), reset,
        refused, timeout, crash."""
        self.lab.session_ended(sock.end)


class ServerApp:
    __slots__ = ("sim", "session", "received", "answered")

    def __init__(self, sim: Simulation, session: Session) -> None:
        self.sim = sim
        self.session = session
        self.received = 0
        self.answered = 0

    def connected(self, sock: Socket) -> None:
        s = self.session
        if s.banner:
            self.sim.after(s.banner_delay, self._banner, sock)

    def _banner(self, sock: Socket) -> None:
        sock.send(self.session.banner)
        if not self.session.requests:
            self._last_response_sent(sock)

    def data(self, sock: Socket, n: int) -> None:
        s = self.session
        self.received += n
        if self.answered >= s.requests:
            if s.end == "quit" and self.received >= s.request_bytes * s.requests + QUIT_BYTES:
                sock.send(LOGOUT_BYTES)
                sock.close()
            return
        if self.received >= s.request_bytes * (self.answered + 1):
            self.answered += 1
            self.sim.after(s.server_delay, self._respond, sock)

    def _respond(self, sock: Socket) -> None:
        sock.send(self.session.response_bytes)
        if self.answered >= self.session.requests:
            self._last_response_sent(sock)

    def _last_response_sent(self, sock: Socket) -> None:
        if self.session.end == "server-close":
            self.sim.after(self.session.hold, sock.close)

    def eof(self, sock: Socket) -> None:
        self.sim.after(self.session.peer_close_delay, sock.close)

    def closed(self, sock: Socket) -> None:
        pass
