"""Live health checks: keepalived's TCP_CHECK, HTTP_GET and MISC_CHECK against the real
realservers, driving pyvs.core.health.Monitor.

One thread runs an asyncio loop: it starts the checks the monitor says are due, sleeps
until its next timer (or until a result arrives), and feeds each result back; the
commands a result makes go, in order, to `apply(commands) -> [None | error text]` with the
commands in their dict form (pyvs.core.commands.to_dict), which is what the director's
loop (pyvs.drivers.daemon.Runtime.submit) and the control socket's "apply" take.  Nothing here
blocks the caller: a check is a non-blocking connect, read or child process with its
timeout; the applying runs on its own worker thread, one batch after the other.

    checks = start(runtime, config)      # in the director's process, through its loop
    checks = Checks(config, over_socket(path)).start()   # beside it (pyvs serve, checks)
    checks.status(); checks.close()

Each transition is logged on the "pyvs" logger as
`check: rs 192.0.2.11:80 DOWN (HTTP_GET status 500), weight 0 (inhibit_on_failure) [...]`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..control import NoDirector, request
from ..core import commands as C
from ..core import health as H
from ..core.packet import int_to_ip

log = logging.getLogger("pyvs")
Apply = Callable[[list[dict]], list[str | None]]
READ_CHUNK = 1 << 16
SO_MARK = getattr(socket, "SO_MARK", 36)


class CheckFailed(Exception):
    """A check's failure, worded for the log (`connection refused`, `status 500`)."""


def _reason(exc: OSError) -> str:
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


async def _connect(probe: H.Probe) -> socket.socket:
    check = probe.check
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if check.fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, check.fwmark)
        if check.bindto is not None or check.bind_port is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((int_to_ip(check.bindto or 0), check.bind_port or 0))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (int_to_ip(probe.addr), probe.port)),
                               probe.timeout)
        return sock
    except asyncio.TimeoutError:
        sock.close()
        raise CheckFailed("connect timeout") from None
    except OSError as exc:
        sock.close()
        raise CheckFailed(_reason(exc)) from None


async def tcp_check(probe: H.Probe) -> tuple[bool, str, int | None]:
    """check_tcp.c: a connect within connect_timeout."""
    (await _connect(probe)).close()
    return True, "connected", None


async def http_check(probe: H.Probe) -> tuple[bool, str, int | None]:
    """check_http.c: GET the url, read to the end (or Content-Length), each read within
    connect_timeout; the status code and the body's MD5 decide."""
    sock = await _connect(probe)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(H.http_request(probe))
        await asyncio.wait_for(writer.drain(), probe.timeout)
        head = b""
        md5 = None
        status: int | None = None
        length: int | None = None
        received = 0
        body_started = False
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(READ_CHUNK), probe.timeout)
            except asyncio.TimeoutError:
                raise CheckFailed("read timeout") from None
            if not chunk:
                break
            if not body_started:
                head += chunk
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    if len(head) > READ_CHUNK:
                        raise CheckFailed("no end of the response header")
                    continue
                body_started = True
                status, length = _status_and_length(head[:end])
                chunk = head[end + 4:]
                md5 = hashlib.md5(usedforsecurity=False)
            assert md5 is not None
            if length is not None:
                chunk = chunk[:max(0, length - received)]
            md5.update(chunk)
            received += len(chunk)
            if length is not None and received >= length:
                break
        if not body_started and head:
            status, length = _status_and_length(head)
            md5 = hashlib.md5(usedforsecurity=False)
        assert probe.url is not None
        ok, detail = H.http_verdict(probe.url, status, md5.hexdigest() if md5 else None)
        return ok, detail, None
    except OSError as exc:
        raise CheckFailed(_reason(exc)) from None
    finally:
        writer.close()


def _status_and_length(head: bytes) -> tuple[int | None, int | None]:
    """extract_status_code(), extract_content_length()."""
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return status, length


async def misc_check(probe: H.Probe) -> tuple[bool, str, int | None]:
    """check_misc.c: run the command; past misc_timeout it gets SIGTERM, and SIGKILL 2 s
    later (a killed script is a failure)."""
    argv = probe.check.misc_path
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise CheckFailed(f"cannot run {argv[0]}: {_reason(exc)}") from None
    try:
        code: int | None = await asyncio.wait_for(proc.wait(), probe.timeout)
    except asyncio.TimeoutError:
        code = None
        for sig, grace in ((signal.SIGTERM, H.MISC_TERM_GRACE), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                await asyncio.wait_for(proc.wait(), grace)
                break
            except asyncio.TimeoutError:
                continue
    except asyncio.CancelledError:                # closing: the script goes too
        _kill(proc)
        await proc.wait()
        raise
    if code is not None and code < 0:
        code = None                                 # ended by a signal: a failure
    ok, detail = H.misc_verdict(probe.check, code)
    return ok, detail, code


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


PERFORM = {H.TCP_CHECK: tcp_check, H.HTTP_GET: http_check, H.MISC_CHECK: misc_check}


class Checks:
    """The running checks of one configuration (start() starts them, close() stops)."""

    def __init__(self, config: Config, apply: Apply,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.apply = apply
        self.clock = clock
        self.monitor = H.Monitor(config.pools(), start=clock(), rand=random.random)
        self.events: Counter[str] = Counter()
        self.apply_errors = 0
        self._lock = threading.Lock()             # status() reads what the loop changes
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pyvs-checks")
        self._applier = concurrent.futures.ThreadPoolExecutor(1, "pyvs-check-apply")
        self._wake: asyncio.Event | None = None
        self._stopping = False

    def start(self) -> Checks:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop)
            self._thread.join(10)
        self._applier.shutdown(wait=True)

    def status(self) -> dict[str, Any]:
        with self._lock:
            out = self.monitor.status()
        out["events"] = dict(self.events)
        out["apply_errors"] = self.apply_errors
        return out

    # ------------------------------------------------------------------ the loop
    def _stop(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except asyncio.CancelledError:
            pass
        finally:                # the checks were cancelled with the loop: let them end
            pending = asyncio.all_tasks(self._loop)
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        running: set[asyncio.Task] = set()
        while not self._stopping:
            with self._lock:
                probes = self.monitor.due(self.clock())
                due = self.monitor.next_timer()
            for probe in probes:
                task = asyncio.ensure_future(self._check(probe))
                running.add(task)
                task.add_done_callback(running.discard)
            timeout = None if due is None else max(0.0, due - self.clock())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _check(self, probe: H.Probe) -> None:
        try:
            ok, detail, code = await PERFORM[probe.kind](probe)
        except CheckFailed as exc:
            ok, detail, code = False, str(exc), None
        except Exception as exc:                    # a bug here must not stop the checks
            log.exception("check: %s %s", probe.kind, probe.target)
            ok, detail, code = False, f"error: {exc}", None
        with self._lock:
            update = self.monitor.result(probe, ok, self.clock(), detail, code)
        for t in update.transitions:
            self.events[t.event] += 1
            log.info("check: %s", t.text())
        if update.commands:
            batch = [C.to_dict(c) for c in update.commands]
            self._applier.submit(self._apply, batch)
        assert self._wake is not None
        self._wake.set()

    def _apply(self, batch: list[dict]) -> None:
        try:
            errors = self.apply(batch)
        except (NoDirector, OSError) as exc:
            errors = [str(exc)] * len(batch)
        for cmd, error in zip(batch, errors):
            if error:
                self.apply_errors += 1
                log.warning("check: %s %s refused: %s", cmd["op"],
                            int_to_ip(cmd.get("addr", 0)), error)


def start(runtime: Any, config: Config) -> Checks | None:
    """The checks of `config` inside a director process: changes are handed to the
    director's loop (pyvs.drivers.daemon.Runtime.submit), times are its clock.  None when
    the configuration has no checks."""
    if not config.has_checks():
        return None
    return Checks(config, in_loop(runtime), runtime.now).start()


def in_loop(runtime: Any, wait: float = 10.0) -> Apply:
    """An `apply` that runs the commands in the director's loop and waits for their
    errors (the loop owns the director; this runs on the checks' applying thread)."""
    def apply(commands: list[dict]) -> list[str | None]:
        done = threading.Event()
        box: list[list[str | None]] = []

        def finished(errors: list[str | None]) -> None:
            box.append(errors)
            done.set()
        runtime.submit(commands, finished)
        if not done.wait(wait):
            return ["the director's loop did not answer"] * len(commands)
        return box[0]
    return apply


def over_socket(path: str, wait: float = 10.0) -> Apply:
    """An `apply` that sends the commands to a director's control socket, waiting up to
    `wait` seconds for the socket to answer (the director may still be starting)."""
    def apply(commands: list[dict]) -> list[str | None]:
        deadline = time.monotonic() + wait
        while True:
            try:
                return request(path, {"op": "apply", "commands": commands})["errors"]
            except NoDirector:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    return apply
