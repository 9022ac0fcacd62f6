"""Health checks in the simulator: keepalived's checker logic (pyvs.core.health, the same
as `pyvs run`'s) with each check a simulated TCP connection from the director's own
address to the realserver, across the simulated LAN, as a live check crosses the real one.

TCP_CHECK and HTTP_GET pass when the connection opens within connect_timeout (the
simulated servers answer every request, so an HTTP check that connects gets its 200) and
fail on an RST (refused) or the timeout; the checker then closes.  MISC_CHECK runs a script
on the director, which the simulator cannot: it passes while the realserver is up and
reachable.  The checks' own connections are the director's, not clients': the realservers'
truth leaves them out (its sockets counted are the clients'), as a user of `ss` on a
realserver leaves out the director's address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import health as H
from ..core.engine import ConfigError
from ..core.packet import int_to_ip
from .network import DIRECTOR_DIP

if TYPE_CHECKING:
    from ..config.model import Config
    from ..core.engine import Director
    from .events import Simulation
    from .network import Lab
    from .tcp import Socket
    from .truth import Agreement


class _Probe:
    """The checker's end of one check connection."""

    __slots__ = ("checks", "probe", "finished")

    def __init__(self, checks: SimChecks, probe: H.Probe) -> None:
        self.checks = checks
        self.probe = probe
        self.finished = False

    def connected(self, sock: Socket) -> None:
        self._finish(True, "connected")
        sock.close()

    def data(self, sock: Socket, n: int) -> None:
        pass

    def eof(self, sock: Socket) -> None:
        sock.close()

    def closed(self, sock: Socket) -> None:
        self._finish(False, f"connection {sock.end or 'closed'}")

    def timed_out(self, sock: Socket) -> None:
        if not self.finished:
            self._finish(False, "connect timeout")
            sock.abort()

    def _finish(self, ok: bool, detail: str) -> None:
        if not self.finished:
            self.finished = True
            self.checks.result(self.probe, ok, detail)


class SimChecks:
    """A configuration's checks, run on the simulation's clock."""

    def __init__(self, sim: Simulation, lab: Lab, director: Director, cfg: Config,
                 agreement: Agreement) -> None:
        self.sim = sim
        self.lab = lab
        self.director = director
        self.agreement = agreement
        self.monitor = H.Monitor(cfg.pools(), start=0.0, rand=sim.random.random)
        self.transitions: list[H.Transition] = []
        self.refused: list[str] = []            # changes the director refused
        self._armed: set[float] = set()
        for port in sorted({c.target()[1] for c in self.monitor.checkers} - {0}):
            lab.listen(port, False)                 # the realservers' services run from 0
        self._arm()

    def _arm(self) -> None:
        due = self.monitor.next_timer()
        if due is not None and due not in self._armed:
            self._armed.add(due)
            self.sim.at(max(due, self.sim.now), self._tick, due)

    def _tick(self, due: float) -> None:
        self._armed.discard(due)
        for probe in self.monitor.due(self.sim.now):
            self._start(probe)
        self._arm()

    def _start(self, probe: H.Probe) -> None:
        if probe.kind == H.MISC_CHECK:
            rs = self.lab.realservers.get(probe.addr)
            up = rs is not None and rs.alive and not rs.cut
            self.sim.after(0.0, self.result, probe, up, "script exit 0" if up else
                           "script exit 1")
            return
        app = _Probe(self, probe)
        sock = self.lab.director_stack.connect(DIRECTOR_DIP, probe.addr, probe.port, app)
        self.sim.after(probe.timeout, app.timed_out, sock)

    def result(self, probe: H.Probe, ok: bool, detail: str) -> None:
        now = self.sim.now
        update = self.monitor.result(probe, ok, now, detail, 0 if ok else 1)
        for cmd in update.commands:
            try:
                self.director.apply(cmd, now)
            except ConfigError as exc:          # as keepalived logs a refused change
                self.refused.append(f"{now:g} s {int_to_ip(probe.addr)}: {exc}")
        if update.commands:
            self.agreement.dests_changed(now)
        self.transitions.extend(update.transitions)
        self._arm()
