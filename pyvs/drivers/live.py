"""`pyvs run`: the live director, a thin NFQUEUE driver around the engine.

Packets queued from mangle PREROUTING are client->VIP (IN); from POSTROUTING, NAT replies
(OUT).  Each burst the queue holds is read at once, every packet goes through the engine,
and the verdicts go back together (pyvs.drivers.nfqueue): rewritten bytes for Masq and
Tunnel, a routing mark for Route (one policy route per realserver), a drop with its reason
counted, and for a connection with no usable realserver the ICMP port unreachable the
kernel's ip_vs_leave() sends.  The queue, the control socket and the timers share one
thread (pyvs.drivers.loop); the rules follow every control-plane change.

At a stop (SIGTERM, SIGINT) the table is saved and the queued traffic held for a grace
period (pyvs.drivers.netfilter), so `systemctl restart` loses no flow: the next director
takes the rules over and loads the table.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.model import Config
from ..core.engine import IN, OUT, Director
from ..core.forwarding import TUNNEL
from ..core.verdict import DROP
from ..views.health import HealthCollector
from . import health, netfilter
from .daemon import Runtime, on_stop_signals
from .queues import Split
from .workers import Fleet

log = logging.getLogger("pyvs")
NF_INET_POST_ROUTING = 4
GRACE = 10.0                # seconds a stop holds the queued traffic for a restart


class Packets:
    """The queue's reader: a burst in, the engine, the burst's verdicts out."""

    def __init__(self, queue: Any, director: Director, runtime: Runtime) -> None:
        from .nfqueue import finish_checksum
        self.queue = queue
        self.director = director
        self.clock = runtime.now
        self.finish = finish_checksum
        self.icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.icmp.setblocking(False)
        self.packets = 0
        self.gso = True
        self.follow()
        runtime.loop.add_reader(queue, self.read)

    def follow(self) -> None:
        """After a change: GSO only while no realserver is a tunnel's (the queue hands
        GSO packets over whole; wrapped in IPIP and returned, one could not be cut up)."""
        gso = not any(d.fwd == TUNNEL for svc in self.director.services for d in svc.dests)
        if gso != self.gso:
            self.queue.set_gso(gso)
            self.gso = gso

    def read(self) -> None:
        q, receive, now = self.queue, self.director.receive, self.clock()
        for p in q.receive():
            v = receive(p.payload, now, OUT if p.hook == NF_INET_POST_ROUTING else IN, p.mark)
            if v.action == DROP:
                q.drop(p.id)
                if v.reply is not None:
                    self._send_back(v.reply)
            elif v.data is not None:
                q.accept(p.id, payload=self.finish(v.data) if p.needs_checksum else v.data)
            elif v.mark:
                q.accept(p.id, mark=v.mark)
            else:
                q.accept(p.id)
            self.packets += 1
        q.flush()

    def _send_back(self, packet: bytes) -> None:
        try:
            self.icmp.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
        except OSError as exc:
            log.debug("ICMP not sent: %s", exc)

    def close(self) -> None:
        self.icmp.close()
        self.queue.close()


def _following(setup: netfilter.Setup, packets: Packets | None) -> Callable[[], None]:
    """What a control-plane change is followed by: the rules, and the queue's GSO."""
    def changed() -> None:
        setup.update()
        if packets is not None:
            packets.follow()
    return changed


def run(director: Director, socket_path: str, queue: int = 0, fail_closed: bool = False,
        procfs_dir: str | None = None, metrics: str | None = None,
        state: Path | None = None, grace: float = GRACE, queues: int = 1,
        config: Config | None = None) -> int:
    """The director on queue `queue`, or on `queues` queues from `queue` on, one worker
    process each (pyvs.drivers.workers); `config`'s health checks run beside it."""
    from .nfqueue import NfqueueError, Queue
    split = Split(queues, queue, director.services) if queues > 1 else None
    runtime: Runtime
    if split is None:
        runtime = Runtime(director, socket_path, procfs_dir, metrics, state)
    else:
        runtime = Fleet(director, socket_path, split, fail_closed, procfs_dir, metrics, state)
    setup = netfilter.Setup(director, queue, fail_closed, split)
    packets: Packets | None = None
    checks: health.Checks | None = None
    try:
        log.info("%s", runtime.restore())
        if split is None:
            try:
                packets = Packets(Queue(queue, fail_open=not fail_closed), director, runtime)
            except NfqueueError as exc:
                raise netfilter.SetupError(str(exc)) from None
        log.info("rules: %s", setup.apply())          # the queue is read before it fills
        runtime.on_change = _following(setup, packets)
        runtime.start()
        checks = None if config is None else health.start(runtime, config)
        if checks is not None and runtime.registry is not None:
            runtime.registry.register(HealthCollector(checks.status))
        on_stop_signals(runtime.loop.stop)
        log.info("director running: %s, %d services",
                 f"queue {queue}" if split is None else
                 f"queues {queue}-{queue + queues - 1}, {queues} workers",
                 len(director.services))
        runtime.loop.run()
    finally:
        if checks is not None:
            checks.close()
        if setup.owned:
            if split is None:
                runtime.save()            # a fleet's workers save theirs as they stop
            if grace > 0:
                setup.hold(grace)
            else:
                for step in netfilter.undo(setup.path):
                    log.info("removed: %s", step)
        drops = ", ".join(f"{k} {v}" for k, v in sorted(runtime.drops().items()))
        if isinstance(runtime, Fleet):
            runtime.stop_workers()
        if packets is not None:
            packets.close()
        runtime.close()
        log.info("stopped; drops: %s", drops or "none")
    return 0
