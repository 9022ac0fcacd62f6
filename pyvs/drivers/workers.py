"""`pyvs run --queues N`: N worker processes, each with its own engine on its own queue,
behind one control plane.

The kernel runs IPVS on every CPU over one shared table; Python runs one engine per
process, so pyvs splits the traffic instead (pyvs.drivers.queues: by client address, both
directions of a connection and every connection of a persistent client reach one worker)
and merges what users see.  The parent process owns the control socket, the iptables
rules, the metrics and procfs views; it keeps a replica of the configuration (a Director
that sees no packets) to check each control-plane change, hands the accepted ones to every
worker, and merges the workers' listings (pyvs.views.merge) as they stream in.

A worker is a fork of the parent's replica, so it starts with the same services, marks
and sysctls.  It serves the same control protocol on a socket of its own (the director's
path + .qK), answers listings as lines (`parts`), saves its own table, and on a restart
loads from every saved table the entries of its own clients.  What differs from one
kernel: each worker schedules with its own scheduler state (rr alternates within each
worker), and --max-memory is shared out evenly.  A worker that dies is started again from
the replica and its saved table; SIGINT goes to the parent only, which holds the traffic
before it stops the workers, so a stop loses no flow.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..control import NoDirector, request
from ..core import commands as C
from ..core.engine import Director
from ..views.merge import merge
from . import netfilter
from .daemon import PROCFS_PERIOD, Runtime, saved_tables, worker_state
from .loop import PAUSE, Pause
from .queues import Split

log = logging.getLogger("pyvs")
START_TIMEOUT = 60.0         # a worker restoring a large table takes a while
STOP_TIMEOUT = 30.0
READ_AHEAD = 4 << 20         # a listing's bytes buffered per worker before reading pauses
PR_SET_PDEATHSIG = 1
STOP = signal.SIGUSR1            # what stops a worker (saving its table)


class Worker:
    def __init__(self, k: int, socket_path: str, state: Path | None) -> None:
        self.k = k
        self.socket = f"{socket_path}.q{k}"
        self.state = state
        self.pid = 0
        self.pidfd = -1


class Fleet(Runtime):
    """The parent: the control plane of N workers."""

    sync_sockets = False            # each worker runs its own sync daemons' sockets

    def __init__(self, replica: Director, socket_path: str, split: Split,
                 fail_closed: bool, procfs_dir: str | None, metrics: str | None,
                 state: Path | None) -> None:
        self.split = split
        self.fail_closed = fail_closed
        self.base_state = state
        self.workers = [Worker(k, socket_path, None if state is None else
                               worker_state(state, k)) for k in range(split.n)]
        self.stopping = False
        self.ready = False
        t0 = time.monotonic()
        self.replica = replica
        try:
            for w in self.workers:            # before the parent has threads or sockets
                self._spawn(w, t0)
            super().__init__(replica, socket_path, procfs_dir, metrics, None, t0)
            for w in self.workers:
                self._await(w)
                self._watch_exit(w)
        except BaseException:
            self.stop_workers()
            raise
        self.ready = True
        if state is not None:                 # every worker holds its clients' entries now
            old = saved_tables(state)
            self.save()
            for k, path in old:
                if k >= split.n or path != worker_state(state, k):
                    path.unlink(missing_ok=True)
        self._refresh(self.now())

    # ------------------------------------------------------------------ workers
    def _spawn(self, w: Worker, t0: float) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._work(w, t0)
            except Exception as exc:                      # a worker says why, then exits
                log.error("q%d: %s", w.k, exc)
            finally:
                logging.shutdown()
                os._exit(code)
        w.pid, w.pidfd = pid, os.pidfd_open(pid)

    def _work(self, w: Worker, t0: float) -> int:
        """A worker's life, in the child process."""
        from .live import Packets
        from .nfqueue import Queue
        # Ctrl-C and systemd's SIGTERM reach the whole group: the parent holds the traffic,
        # then stops the workers with STOP (also sent by the kernel if the parent dies)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, STOP)
        for h in logging.getLogger().handlers:
            h.setFormatter(logging.Formatter(f"pyvs[q{w.k}]: %(message)s"))
        director = self.replica
        runtime = Runtime(director, w.socket, state=w.state, t0=t0)
        if runtime.sync is not None:  # every worker's backup hears every datagram
            runtime.sync.owns = lambda addr: self.split.worker(addr) == w.k
        if director.memory_limit:
            director.set_memory_limit(director.memory_limit // self.split.n, runtime.now())
        packets = None
        try:
            if self.base_state is not None:
                log.info("%s", runtime.restore(self.base_state, w.k, self.split.n,
                                               lambda addr: self.split.worker(addr) == w.k))
            packets = Packets(Queue(self.split.base + w.k, fail_open=not self.fail_closed),
                              director, runtime)
            runtime.on_change = packets.follow
            runtime.start()
            signal.signal(STOP, lambda *_: runtime.loop.stop())
            runtime.loop.run()
        finally:
            runtime.save()
            if packets is not None:
                packets.close()
            runtime.close()
        return 0

    def _await(self, w: Worker) -> None:
        """Until the worker answers on its socket (it has bound its queue by then)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if os.waitpid(w.pid, os.WNOHANG)[0]:
                raise netfilter.SetupError(f"worker q{w.k} (queue {self.split.base + w.k}) "
                                           "failed to start (its error is above)")
            try:
                request(w.socket, {"op": "ping"}, timeout=1.0)
                return
            except NoDirector:
                if time.monotonic() > deadline:
                    raise netfilter.SetupError(f"worker q{w.k} did not start within "
                                               f"{START_TIMEOUT:.0f} s") from None
                time.sleep(0.05)

    def _exited(self, w: Worker) -> None:
        self.loop.remove(w.pidfd)
        os.close(w.pidfd)
        _, status = os.waitpid(w.pid, 0)
        if self.stopping:
            return
        log.error("worker q%d (pid %d) died (%s); starting it again from its saved table",
                  w.k, w.pid, _status(status))
        self._spawn(w, self._t0)
        self._await(w)
        self._watch_exit(w)

    def _watch_exit(self, w: Worker) -> None:
        self.loop.add_reader(w.pidfd, lambda: self._exited(w))

    def stop_workers(self) -> None:
        """STOP to every worker (each saves its table), then wait for all of them."""
        self.stopping = True
        running = [w for w in self.workers if w.pid]
        for w in running:
            try:
                os.kill(w.pid, STOP)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in running:
            while not _reaped(w.pid):
                if time.monotonic() > deadline:
                    log.error("worker q%d did not stop; killing it", w.k)
                    os.kill(w.pid, signal.SIGKILL)
                    os.waitpid(w.pid, 0)
                    break
                time.sleep(0.02)

    # ------------------------------------------------------------------ the control plane
    def apply(self, commands: list[Any]) -> list[str | None]:
        """Checked on the replica; what it accepts goes to every worker, then the rules
        follow (so no packet reaches a worker before its service does)."""
        now = self.now()
        errors = self._apply_here(commands, now)
        accepted = [c if isinstance(c, dict) else C.to_dict(c)
                    for c, e in zip(commands, errors) if e is None]
        if accepted:
            for w in self.workers:
                try:
                    theirs = request(w.socket, {"op": "apply", "commands": accepted})
                except NoDirector as exc:     # it is starting again: its replica has them
                    log.error("worker q%d: %s", w.k, exc)
                    continue
                if any(theirs.get("errors") or ()):
                    log.warning("worker q%d refused what the director accepted: %s", w.k,
                                [e for e in theirs["errors"] if e])
            for c in self.director.services:
                self.split.check(c)
            self.on_change()
            self._refresh(now)
        return errors

    def _refresh(self, now: float) -> None:
        if not self.ready:
            return
        try:
            heads = [request(w.socket, {"op": "snapshot", "connections": False})["snapshot"]
                     for w in self.workers]
        except NoDirector as exc:             # a worker starting again: keep the last one
            log.error("summary: %s", exc)
            return
        self.summary = merge(heads, now)

    def drops(self) -> dict[str, int]:
        self._refresh(self.now())
        return dict(self.summary.get("drops", {}))

    def snapshot_stream(self, connections: bool, parts: bool = False
                        ) -> Iterator[bytes | Pause]:
        return self._merged(connections, parts)

    def _merged(self, connections: bool, parts: bool) -> Iterator[bytes | Pause]:
        """The workers' listings as one: their headers merged, then each one's rows."""
        replies: list[_Reply] = []
        try:
            for w in self.workers:
                try:
                    replies.append(_Reply(self.loop, w, connections))
                except OSError as exc:
                    yield json.dumps({"ok": False, "error": f"worker q{w.k}: {exc}"}
                                     ).encode() + b"\n"
                    return
            heads = []
            for r in replies:
                while (line := r.line()) is None:
                    yield PAUSE
                heads.append(json.loads(line))
            if not connections:
                snap = merge([h["snapshot"] for h in heads], self.now())
                yield json.dumps({"ok": True, "snapshot": snap}).encode() + b"\n"
                return
            snap = merge(heads, self.now())
            if parts:
                yield json.dumps(snap).encode() + b"\n"
            else:
                snap["connections"] = "@rows@"
                head, tail = json.dumps({"ok": True, "snapshot": snap}).split('"@rows@"')
                yield (head + "[").encode()
            first = True
            for r in replies:
                while True:
                    line = r.line()
                    if line is None:
                        yield PAUSE
                        continue
                    if line == b"[]":
                        break
                    if parts:
                        yield line + b"\n"
                    else:
                        yield (b"" if first else b",") + line[1:-1]
                        first = False
            yield b"[]\n" if parts else ("]" + tail + "\n").encode()
        finally:
            for r in replies:
                r.close()

    def _export_job(self, now: float) -> Iterator[Any]:
        """The procfs files from the merged listing, read as it streams."""
        from ..views import procfs
        from ..views.snapshot import CONN_FIELDS
        snap: dict[str, Any] | None = None
        rows: list[dict[str, Any]] = []
        for piece in self._merged(True, True):
            if isinstance(piece, Pause):
                yield PAUSE
                continue
            data = json.loads(piece)
            if snap is None:
                snap = data
            else:
                rows.extend(dict(zip(CONN_FIELDS, row)) for row in data)
            yield None
        assert snap is not None
        snap["connections"] = rows
        procfs.export(snap, self.procfs_dir or ".")
        self.loop.at(now + PROCFS_PERIOD, self._export)

    def save(self) -> None:
        """Every worker's table to its file, now (a stop saves them anyway)."""
        for w in self.workers:
            request(w.socket, {"op": "save"}, timeout=START_TIMEOUT)

    def restore(self, *args: Any, **kwargs: Any) -> str:
        return "each worker restores its own clients' entries"


class _Reply:
    """One worker's answer to a listing, read as it arrives; `line()` is None until a
    whole line is there (the job pauses; the reader wakes it)."""

    def __init__(self, loop: Any, w: Worker, connections: bool) -> None:
        self.loop = loop
        self.k = w.k
        self.buf = bytearray()
        self.eof = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5.0)
        self.sock.connect(w.socket)
        self.sock.sendall(json.dumps({"op": "snapshot", "connections": connections,
                                      "parts": connections}).encode() + b"\n")
        self.sock.setblocking(False)
        self.reading = True
        loop.add_reader(self.sock, self._read)

    def _read(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            self.loop.remove(self.sock)
        self.buf += data
        if len(self.buf) > READ_AHEAD and self.reading:
            self.loop.remove(self.sock)           # the reader of the merged listing is slow
            self.reading = False
        self.loop.wake()

    def line(self) -> bytes | None:
        end = self.buf.find(b"\n")
        if end < 0:
            if self.eof:
                log.error("worker q%d ended its listing early", self.k)
                return b"[]"
            return None
        line = bytes(self.buf[:end])
        del self.buf[:end + 1]
        if not self.reading and not self.eof and len(self.buf) < READ_AHEAD // 2:
            self.loop.add_reader(self.sock, self._read)
            self.reading = True
        return line

    def close(self) -> None:
        self.loop.remove(self.sock)
        self.sock.close()


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:                 # reaped already (it died while running)
        return True


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
