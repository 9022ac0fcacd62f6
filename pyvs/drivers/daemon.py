"""A director living in a process: its lock, monotonic clock, control socket, and the
views kept current for other tools (procfs export, Prometheus endpoint).

Packet drivers (the live NFQUEUE loop) and `pyvs serve` share it: whoever touches the
director holds `lock`; the control socket holds it only to copy a snapshot or apply a
change.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..control import Control, ControlServer
from ..core import commands as C
from ..core.engine import ConfigError, Director
from ..views import procfs
from ..views.snapshot import snapshot

log = logging.getLogger("pyvs")
PROCFS_PERIOD = 2.0
MAX_SLEEP = 3600.0          # a timer-less director still wakes hourly (nothing is due)


class Runtime:
    def __init__(self, director: Director, socket_path: str, procfs_dir: str | None = None,
                 metrics: str | None = None) -> None:
        self.director = director
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self._t0 = time.monotonic()
        self.procfs_dir = procfs_dir
        self._next_procfs = 0.0
        self.control = ControlServer(Control(self.snapshot, self.apply), socket_path)
        self.metrics_server: Any = None
        if metrics:
            self._start_metrics(metrics)

    def now(self) -> float:
        """Seconds since the director started, from the monotonic clock."""
        return time.monotonic() - self._t0

    def start(self) -> Runtime:
        self.control.start()
        log.info("control socket %s", self.control.path)
        return self

    def snapshot(self, connections: bool = False) -> dict[str, Any]:
        with self.lock:
            snap = snapshot(self.director, self.now(), connections=connections)
            snap["drops"] = dict(self.director.drops)
            snap["entries"] = self.director.connection_count()
        return snap

    def apply(self, commands: list[dict]) -> list[str | None]:
        """ipvsadm changes, in order, with no packet in between: None or libipvs's text for
        each; a refused change does not stop the rest (as ipvsadm -R goes on)."""
        errors: list[str | None] = []
        self.changed.set()          # a timer may now be due sooner: wake the sleeper
        with self.lock:
            now = self.now()
            for raw in commands:
                try:
                    self.director.apply(C.from_dict(raw), now)
                    errors.append(None)
                except (C.CommandError, ConfigError) as exc:
                    errors.append(str(exc))
        return errors

    def tick(self) -> float:
        """Run due timers; refresh the procfs export every 2 s.  Returns how long the
        caller may sleep: until the director's next timer or the next export."""
        now = self.now()
        with self.lock:
            self.director.handle_timers(now)
            due = self.director.next_timer()
        if self.procfs_dir and now >= self._next_procfs:
            procfs.export(self.snapshot(connections=True), self.procfs_dir)
            self._next_procfs = now + PROCFS_PERIOD
        if self.procfs_dir:
            due = self._next_procfs if due is None else min(due, self._next_procfs)
        return MAX_SLEEP if due is None else max(0.0, min(MAX_SLEEP, due - self.now()))

    def _start_metrics(self, where: str) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from ..views.metrics import IpvsCollector
        host, _, port = where.rpartition(":")
        registry = CollectorRegistry()
        registry.register(IpvsCollector(self.snapshot))
        self.metrics_server = start_http_server(int(port), addr=host or "127.0.0.1",
                                                registry=registry)
        log.info("metrics on http://%s:%s/metrics", host or "127.0.0.1", port)

    def close(self) -> None:
        self.control.close()
        if self.metrics_server is not None:
            self.metrics_server[0].shutdown()


def serve(director: Director, socket_path: str, procfs_dir: str | None = None,
          metrics: str | None = None) -> int:
    """`pyvs serve`: the director with no packet source, until SIGINT/SIGTERM.  The loop
    sleeps until the director's next timer (or the next procfs export), or until a
    control-plane change wakes it."""
    import signal
    import sys
    stop = threading.Event()
    runtime = Runtime(director, socket_path, procfs_dir, metrics).start()

    def on_signal(*_: object) -> None:
        stop.set()
        runtime.changed.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    print(f"pyvs: serving {runtime.control.path}", file=sys.stderr)
    try:
        while not stop.is_set():
            runtime.changed.wait(runtime.tick())
            runtime.changed.clear()
    finally:
        runtime.close()
    return 0
