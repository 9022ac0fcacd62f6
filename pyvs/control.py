"""The control socket of a running director, and its client.

Protocol: a Unix stream socket (created 0600 in a directory that must be the user's own,
mode 0700); one JSON object per line each way, one response per request:

    {"op": "snapshot", "connections": true}   -> {"ok": true, "snapshot": {...}}
    {"op": "apply", "commands": [CMD, ...]}   -> {"ok": true, "errors": [null | TEXT, ...]}
    {"op": "ping"}                            -> {"ok": true, "pid": N}
    {"op": "save"}                            -> {"ok": true, "saved": PATH | null}

CMD is a control-plane command in the form `pyvs.core.commands.to_dict` writes.  A
request's commands are applied in order with no packet in between; each gets null or the
text libipvs would give ("Service already exists", ...), and a refused command does not
stop the rest (as ipvsadm -R goes on after an error).

The server lives in the director's loop (pyvs.drivers.loop): reads and writes never
block, a long listing is written in slices between packets, a request line is bounded
(MAX_LINE) and so is its nesting; anything else gets {"ok": false, "error": TEXT}.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from .drivers.loop import PAUSE, Pause
from .views.snapshot import expand_rows

MAX_LINE = 4 << 20           # a request line (ipvsadm -R of 30,000 rules fits)
MAX_CLIENTS = 1024           # connections served at once; more wait in the backlog
BACKLOG = 1024
OUT_HIGH = 1 << 20           # a listing waits while this much is unsent to a slow reader


class NoDirector(Exception):
    pass


class SocketPathError(Exception):
    """The socket's directory is not safe to use; the text says why."""


def runtime_dir() -> str:
    """Where a director keeps its socket and state: /run/pyvs for root, else
    $XDG_RUNTIME_DIR, else /tmp/pyvs-UID (which must then be the user's own, 0700)."""
    if os.geteuid() == 0:
        return "/run/pyvs"
    return os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/pyvs-{os.geteuid()}"


SO_NETNS_COOKIE = 71            # Linux 5.14: a network namespace's id, never reused


def namespace_id() -> str:
    """This network namespace, for files of its own under the shared /run: the netns
    cookie where the kernel has it (a namespace's inode number is reused once it is gone,
    which would hand a new namespace a dead one's rules and table), else the inode."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            cookie = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        return f"c{int.from_bytes(cookie, 'little')}"
    except OSError:
        return str(os.stat("/proc/self/ns/net").st_ino)


def default_socket() -> str:
    return os.environ.get("PYVS_SOCKET") or f"{runtime_dir()}/pyvs.sock"


def private_dir(path: Path) -> None:
    """Create `path` 0700, or check an existing one is ours and not open to others: a
    socket in someone else's directory could be swapped for theirs."""
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SocketPathError(f"{path}: cannot create it ({exc.strerror})") from None
    try:
        info = path.lstat()
    except OSError as exc:
        raise SocketPathError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise SocketPathError(f"{path} is not a directory")
    if info.st_uid != os.geteuid():
        raise SocketPathError(f"{path} belongs to uid {info.st_uid}, not to you "
                              f"(uid {os.geteuid()}); choose another with --socket")
    if info.st_mode & 0o077 and not (os.geteuid() == 0 and info.st_mode & 0o002 == 0):
        raise SocketPathError(f"{path} is mode {stat.S_IMODE(info.st_mode):04o}; it must "
                              "be 0700 (chmod 700 it, or choose another with --socket)")


class Service(Protocol):
    """What the socket serves (drivers.daemon.Runtime)."""

    def snapshot_stream(self, connections: bool, parts: bool = False
                        ) -> Iterator[bytes | Pause]: ...
    def apply(self, commands: list[Any]) -> list[str | None]: ...
    def save(self) -> None: ...
    state: Path | None


class _Client:
    __slots__ = ("sock", "inbuf", "outbuf", "job", "closing", "discarding")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.job: Iterator[bytes | Pause] | None = None
        self.closing = False
        self.discarding = False       # the rest of an over-long line is read and dropped


class ControlServer:
    """The socket, served from a loop (add_reader / watch / spawn / remove)."""

    def __init__(self, service: Service, path: str, loop: Any) -> None:
        self.service = service
        self.path = path
        self.loop = loop
        self.clients: dict[socket.socket, _Client] = {}
        private_dir(Path(path).parent)
        if os.path.exists(path):
            if _alive(path):
                raise OSError(f"{path}: a director is already serving this socket")
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(BACKLOG)
        self.sock.setblocking(False)
        self.accepting = True
        loop.add_reader(self.sock, self._accept)

    def _accept(self) -> None:
        while len(self.clients) < MAX_CLIENTS:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            client = self.clients[conn] = _Client(conn)
            self._watch(client)
        self.loop.watch(self.sock, None, None)        # full: leave the rest in the backlog
        self.accepting = False

    def _watch(self, c: _Client) -> None:
        reading = c.job is None and not c.closing
        self.loop.watch(c.sock, (lambda: self._read(c)) if reading else None,
                        (lambda: self._write(c)) if c.outbuf else None)

    def _read(self, c: _Client) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:                          # the client is done sending
            if c.outbuf or c.job is not None:
                c.closing = True                  # answer first, then close
                self.loop.watch(c.sock, None, lambda: self._write(c))
            else:
                self._close(c)
            return
        if c.discarding:
            end = data.find(b"\n")
            if end < 0:
                return
            c.discarding = False
            data = data[end + 1:]
        c.inbuf += data
        line_end = c.inbuf.find(b"\n")
        if line_end < 0:
            if len(c.inbuf) > MAX_LINE:
                c.inbuf.clear()
                c.discarding = True
                self._reply(c, {"ok": False, "error": f"request longer than {MAX_LINE} "
                                                      "bytes"})
            return
        line = bytes(c.inbuf[:line_end])
        del c.inbuf[:line_end + 1]
        self._request(c, line)

    def _request(self, c: _Client, line: bytes) -> None:
        try:
            req = json.loads(line)
        except RecursionError:
            self._reply(c, {"ok": False, "error": "request nested too deeply"})
            return
        except ValueError as exc:
            self._reply(c, {"ok": False, "error": f"bad JSON: {exc}"})
            return
        op = req.get("op") if isinstance(req, dict) else None
        if op == "ping":
            self._reply(c, {"ok": True, "pid": os.getpid()})
        elif op == "snapshot":
            c.job = self.service.snapshot_stream(bool(req.get("connections", True)),
                                                 bool(req.get("parts", False)))
            self.loop.spawn(self._stream(c))
            self._watch(c)
        elif op == "save":                    # the table to its state file, now
            self.service.save()
            self._reply(c, {"ok": True, "saved": None if self.service.state is None
                            else str(self.service.state)})
        elif op == "apply":
            commands = req.get("commands") or []
            if not isinstance(commands, list):
                self._reply(c, {"ok": False, "error": "commands: expected a list"})
                return
            self._reply(c, {"ok": True, "errors": self.service.apply(commands)})
        else:
            self._reply(c, {"ok": False, "error": "request is not an object with an op "
                                                  "(ping, snapshot, apply, save)"
                            if op is None else f"unknown op {op!r}"})

    def _stream(self, c: _Client) -> Iterator[Pause | None]:
        """A job: the reply's pieces, one per step, pausing while the reader is slow."""
        assert c.job is not None
        for piece in c.job:
            if c.sock.fileno() < 0:
                return
            if isinstance(piece, Pause):      # the source waits for something
                yield PAUSE
                continue
            c.outbuf += piece
            self._watch(c)
            while len(c.outbuf) > OUT_HIGH:
                yield PAUSE                       # _write wakes it as the reader drains
                if c.sock.fileno() < 0:
                    return
            yield None
        c.job = None
        self._watch(c)
        if c.inbuf.find(b"\n") >= 0:          # a pipelined request waited for this one
            line_end = c.inbuf.find(b"\n")
            line = bytes(c.inbuf[:line_end])
            del c.inbuf[:line_end + 1]
            self._request(c, line)

    def _reply(self, c: _Client, reply: dict[str, Any], close: bool = False) -> None:
        c.outbuf += json.dumps(reply).encode() + b"\n"
        c.closing = c.closing or close
        self._watch(c)

    def _write(self, c: _Client) -> None:
        try:
            sent = c.sock.send(c.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        del c.outbuf[:sent]
        if c.job is not None and len(c.outbuf) <= OUT_HIGH:
            self.loop.wake()
        if not c.outbuf and c.closing and c.job is None:
            self._close(c)
            return
        self._watch(c)

    def _close(self, c: _Client) -> None:
        self.loop.remove(c.sock)
        self.clients.pop(c.sock, None)
        c.sock.close()
        if c.job is not None:
            self.loop.wake()                  # a paused listing sees the socket gone
        if not self.accepting:                        # a place is free again
            self.accepting = True
            self.loop.watch(self.sock, self._accept, None)

    def close(self) -> None:
        for c in list(self.clients.values()):
            self.loop.remove(c.sock)
            c.sock.close()
        self.clients.clear()
        self.loop.remove(self.sock)
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _alive(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
        return True
    except OSError:
        return False


def request(path: str, req: dict[str, Any], timeout: float = 30.0,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One request/response; NoDirector when nothing serves `path`.  A connect that
    finds the backlog full (EAGAIN) is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            _connect(s, path, deadline)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            s.sendall(json.dumps(req).encode() + b"\n")
            chunks: list[bytes] = []
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                if progress is not None:
                    progress(len(chunk))
                if chunk.endswith(b"\n"):
                    break
    except OSError as exc:
        raise NoDirector(f"no pyvs director at {path} ({exc.strerror or exc})") from None
    if not chunks:
        raise NoDirector(f"no answer from the pyvs director at {path}")
    reply = json.loads(b"".join(chunks))
    if isinstance(reply.get("snapshot"), dict):
        expand_rows(reply["snapshot"])
    return reply


def _connect(s: socket.socket, path: str, deadline: float) -> None:
    delay = 0.001
    while True:
        try:
            s.connect(path)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK) or (
                    time.monotonic() + delay > deadline):
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
