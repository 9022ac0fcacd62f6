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

from ..control import Control, ControlError, ControlServer
from ..core.engine import ConfigError, Director
from ..ipvsadm import apply
from ..views import procfs
from ..views.snapshot import snapshot

log = logging.getLogger("pyvs")
PROCFS_PERIOD = 2.0


class Runtime:
    def __init__(self, director: Director, socket_path: str, procfs_dir: str | None = None,
                 metrics: str | None = None) -> None:
        self.director = director
        self.lock = threading.Lock()
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
        with self.lock:
            now = self.now()
            for cmd in commands:
                try:
                    apply(self.director, cmd, now)
                    errors.append(None)
                except (ControlError, ConfigError) as exc:
                    errors.append(str(exc))
                except (KeyError, TypeError, ValueError) as exc:
                    errors.append(f"malformed command ({exc})")
        return errors

    def tick(self) -> None:
        """Run due timers; refresh the procfs export every 2 s."""
        now = self.now()
        with self.lock:
            self.director.handle_timers(now)
        if self.procfs_dir and now >= self._next_procfs:
            procfs.export(self.snapshot(connections=True), self.procfs_dir)
            self._next_procfs = now + PROCFS_PERIOD

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
