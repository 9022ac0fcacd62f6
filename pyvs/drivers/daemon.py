"""A director living in a process: its loop, monotonic clock, control socket, the views
kept current for other tools (procfs export, Prometheus endpoint) and its state file.

Everything runs in the loop's one thread (pyvs.drivers.loop): packets (pyvs run), control
requests, timers, and the long jobs (a listing, a procfs export, a state write) in
slices.  Other threads (the metrics server, health checkers) never touch the director:
they read `summary`, a snapshot without connections refreshed every estimator tick, or
hand commands to the loop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..control import ControlServer, namespace_id, runtime_dir
from ..core import commands as C
from ..core import tablestate
from ..core.engine import ConfigError, Director
from ..views import procfs
from ..views.snapshot import CHUNK, conn_entry, snapshot, stream
from .loop import Loop, Pause
from .syncsock import SyncSockets, links

log = logging.getLogger("pyvs")
PROCFS_PERIOD = 2.0
SUMMARY_PERIOD = 2.0            # the estimator's period: nothing in a summary moves faster
STATE_PERIOD = 60.0             # the table is also saved this often (a crash loses less)
STATE_CHUNK = 5000              # entries written per step


def state_path() -> Path:
    """The default state file: one per network namespace, in the runtime directory."""
    return Path(runtime_dir()) / f"table-{namespace_id()}.json"


def worker_state(state: Path, k: int) -> Path:
    """Worker k's table (pyvs run --queues N) beside the director's."""
    return state.with_name(f"{state.stem}.q{k}{state.suffix}")


def saved_tables(state: Path) -> list[tuple[int, Path]]:
    """Every table saved under `state`, with the worker each came from (0 for a director
    of one queue): a director that ran with another --queues left them."""
    found = [(0, state)] if state.exists() else []
    for p in state.parent.glob(f"{state.stem}.q*{state.suffix}"):
        k = p.name[len(state.stem) + 2:-len(state.suffix) or None]
        if k.isdigit():
            found.append((int(k), p))
    return sorted(found)


class Runtime:
    sync_sockets = True             # the sync daemons' sockets are this process's

    def __init__(self, director: Director, socket_path: str, procfs_dir: str | None = None,
                 metrics: str | None = None, state: Path | None = None,
                 t0: float | None = None) -> None:
        self.director = director
        self._t0 = time.monotonic() if t0 is None else t0
        self.loop = Loop(self.now)
        self.loop.next_deadline = self._next_deadline
        self.loop.on_deadline = self._timers
        self.sync = SyncSockets(director, self.loop, self.now) if self.sync_sockets else None
        self.procfs_dir = procfs_dir
        self.state = state
        self.on_change: Callable[[], None] = lambda: None    # e.g. the live rules
        self.summary: dict[str, Any] = {}
        self.metrics_server: Any = None
        self.registry: Any = None              # the Prometheus registry, with --metrics
        self.control = ControlServer(self, socket_path, self.loop)
        self._refresh(self.now())
        if metrics:
            self._start_metrics(metrics)

    def now(self) -> float:
        """Seconds since the director started, from the monotonic clock."""
        return time.monotonic() - self._t0

    def start(self) -> Runtime:
        log.info("control socket %s", self.control.path)
        if self.sync is not None:
            try:                      # daemons the director came with (a worker's fork)
                self.sync.follow()
            except OSError as exc:
                log.error("sync: %s", exc)
        now = self.now()
        if self.procfs_dir:
            self.loop.at(now, self._export)
        self.loop.at(now + SUMMARY_PERIOD, self._summarise)
        if self.state is not None:
            self.loop.at(now + STATE_PERIOD, self._save_periodically)
        return self

    # ------------------------------------------------------------------ the control plane
    def snapshot_stream(self, connections: bool, parts: bool = False
                        ) -> Iterator[bytes | Pause]:
        return stream(self.director, self.now(), connections, parts)

    def apply(self, commands: list[Any]) -> list[str | None]:
        """Control-plane changes, in order, with no packet in between: None or libipvs's
        text for each; a refused change does not stop the rest (as ipvsadm -R goes on).
        What the changes need outside the engine (iptables rules, routes) is in place
        before the reply."""
        now = self.now()
        errors = self._apply_here(commands, now)
        if any(e is None for e in errors):
            self.on_change()
            self._refresh(now)
        return errors

    def _apply_here(self, commands: list[Any], now: float) -> list[str | None]:
        errors: list[str | None] = []
        for raw in commands:
            try:
                cmd = raw if not isinstance(raw, dict) else C.from_dict(raw)
                if isinstance(cmd, C.StartDaemon):
                    self.director.links = links()     # the interfaces as they are now
                self.director.apply(cmd, now)
                if isinstance(cmd, (C.StartDaemon, C.StopDaemon)):
                    self._follow_daemons(cmd, now)
                errors.append(None)
            except (C.CommandError, ConfigError) as exc:
                errors.append(str(exc))
        return errors

    def _follow_daemons(self, cmd: C.StartDaemon | C.StopDaemon, now: float) -> None:
        """The sockets follow the daemons; a daemon whose sockets cannot be made is
        stopped again and the start refused (start_sync_thread() fails then too)."""
        if self.sync is None:
            return
        try:
            self.sync.follow()
        except OSError as exc:
            self.director.apply(C.StopDaemon(cmd.state), now)
            raise ConfigError(exc.strerror or str(exc)) from None

    def drops(self) -> dict[str, int]:
        """Packets dropped so far, by reason."""
        return dict(self.director.drops)

    def submit(self, commands: list[C.Command], done: Callable[[list], None]) -> None:
        """From another thread: apply `commands` in the loop, then call `done(errors)`."""
        self.loop.call_soon_threadsafe(lambda: done(self.apply(list(commands))))

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """From another thread: run `fn` in the loop and wait for its result."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(fn())
            done.set()
        self.loop.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError("the director's loop did not answer")
        return box[0]

    def run_in_thread(self) -> threading.Thread:
        """Run the loop in a thread of its own (a program that embeds a director)."""
        thread = threading.Thread(target=self.loop.run, daemon=True, name="pyvs-loop")
        thread.start()
        return thread

    # ------------------------------------------------------------------ timers and jobs
    def _next_deadline(self) -> float | None:
        """The engine's next timer, or the sync master's next wake-up if sooner."""
        t = self.director.next_timer()
        s = self.sync.next_timer() if self.sync is not None else None
        return s if s is not None and (t is None or s < t) else t

    def _timers(self, now: float) -> None:
        self.director.handle_timers(now)
        if self.sync is not None:
            self.sync.send_due(now)

    def _refresh(self, now: float) -> None:
        self.summary = snapshot(self.director, now, connections=False)
        if self.sync is not None:
            self.sync.annotate(self.summary)

    def _summarise(self) -> None:
        now = self.now()
        self._refresh(now)
        self.loop.at(now + SUMMARY_PERIOD, self._summarise)

    def _export(self) -> None:
        self.loop.spawn(self._export_job(self.now()))

    def _export_job(self, now: float) -> Iterator[None]:
        """procfs files for node_exporter and scripts, the connections in slices."""
        snap = snapshot(self.director, now, connections=False)
        entries = self.director.connections()
        rows: list[dict[str, Any]] = []
        for i in range(0, len(entries), CHUNK):
            rows.extend(conn_entry(self.director, cp, now)
                        for cp in entries[i:i + CHUNK] if cp.alive)
            yield None
        snap["connections"] = rows
        procfs.export(snap, self.procfs_dir or ".")
        self.loop.at(now + PROCFS_PERIOD, self._export)

    def _save_periodically(self) -> None:
        self.loop.spawn(self._save_job(self.now(), periodic=True))

    def _save_job(self, now: float, periodic: bool = False) -> Iterator[None]:
        """The table to the state file (written aside, then renamed into place)."""
        assert self.state is not None
        tmp = self.state.with_name(self.state.name + ".tmp")
        head = tablestate.header(self.director, now)
        head["wall"] = time.time()
        with open(tmp, "w") as f:
            f.write(json.dumps(head) + "\n")
            for n, row in enumerate(tablestate.rows(self.director, now), 1):
                f.write(json.dumps(row) + "\n")
                if n % STATE_CHUNK == 0:
                    yield None
        os.replace(tmp, self.state)
        if periodic:
            self.loop.at(now + STATE_PERIOD, self._save_periodically)

    def save(self) -> None:
        """Write the state file now, whole (at stop)."""
        if self.state is not None:
            for _ in self._save_job(self.now()):
                pass
            log.info("table saved to %s (%d entries)", self.state,
                     self.director.connection_count())

    def restore(self, base: Path | None = None, worker: int = 0, workers: int = 1,
                keep: Callable[[int], bool] | None = None) -> str:
        """Load the saved tables under `base` (default: the state file); says what it
        found (for the log).  Worker `worker` of `workers` takes the entries `keep`
        accepts from every table and the counters of the tables i with i % workers ==
        worker (the director saves the workers' tables once all have read them)."""
        base = base or self.state
        found = [] if base is None else saved_tables(base)
        if not found:
            return "no saved table"
        done = tablestate.Restored()
        ages, failed = [], []
        for k, path in found:
            try:
                with open(path) as f:
                    head = json.loads(f.readline())
                    elapsed = max(0.0, time.time() - float(head.get("wall", time.time())))
                    tablestate.restore(self.director, head, (json.loads(line) for line in f),
                                       self.now(), elapsed, keep, k % workers == worker, done)
                ages.append(elapsed)
            except (OSError, ValueError, tablestate.TableStateError) as exc:
                failed.append(f"; the saved table {path} could not be loaded ({exc})")
        if workers == 1 and any(path != self.state for _, path in found):
            self.save()                       # the workers' tables are in this one now
            for _, path in found:
                if path != self.state:
                    path.unlink(missing_ok=True)
        self._refresh(self.now())
        return (f"restored {done.entries} entries and {done.templates} templates from "
                f"{len(ages)} saved table(s) under {base}"
                + (f", saved {max(ages):.1f} s ago" if ages else "")
                + f"; left out {done.expired} that expired meanwhile and {done.unconfigured} "
                  f"no longer configured" + "".join(failed))

    # ------------------------------------------------------------------ metrics
    def _start_metrics(self, where: str) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from ..views.metrics import IpvsCollector
        host, _, port = where.rpartition(":")
        self.registry = CollectorRegistry()
        self.registry.register(IpvsCollector(lambda: self.summary))
        self.metrics_server = start_http_server(int(port), addr=host or "0.0.0.0",
                                                registry=self.registry)
        log.info("metrics on http://%s:%s/metrics", host or "0.0.0.0", port)

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        self.control.close()
        if self.metrics_server is not None:
            self.metrics_server[0].shutdown()
        self.loop.close()


def on_stop_signals(stop: Callable[[], None]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop())


def serve(director: Director, socket_path: str, procfs_dir: str | None = None,
          metrics: str | None = None) -> int:
    """`pyvs serve`: the director with no packet source, until SIGINT/SIGTERM."""
    runtime = Runtime(director, socket_path, procfs_dir, metrics).start()
    on_stop_signals(runtime.loop.stop)
    print(f"pyvs: serving {runtime.control.path}", file=sys.stderr)
    try:
        runtime.loop.run()
    finally:
        runtime.close()
    return 0
