"""The control socket of a running director, and its client.

Protocol: a Unix stream socket (created 0600, owned by the user running the director);
one JSON object per line each way, one response per request:

    {"op": "snapshot", "connections": true}   -> {"ok": true, "snapshot": {...}}
    {"op": "apply", "commands": [CMD, ...]}   -> {"ok": true, "errors": [null | TEXT, ...]}
    {"op": "ping"}                            -> {"ok": true, "pid": N}

CMD is one ipvsadm change as `pyvs.ipvsadm.Command.as_dict()` writes it.  A request's
commands run under the director's lock, in order, with no packet in between; each gets
null or the text libipvs would give ("Service already exists", ...), and a failed
command does not stop the rest (as ipvsadm -R goes on after an error).  Readers
hold the lock only while the snapshot is copied; rendering happens in the client.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_socket() -> str:
    env = os.environ.get("PYVS_SOCKET")
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/pyvs/pyvs.sock"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/pyvs-{os.geteuid()}"
    return f"{base}/pyvs.sock"


class ControlError(Exception):
    """The director refused a change; the text is what ipvsadm would print."""


class NoDirector(Exception):
    pass


class Control:
    """What the socket serves: the director's snapshot and its changes, each taken under
    the director's lock by whoever owns it (drivers.daemon.Runtime)."""

    def __init__(self, snapshot: Callable[[bool], dict[str, Any]],
                 apply: Callable[[list[dict]], list[str | None]]) -> None:
        self.snapshot = snapshot
        self.apply = apply

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "snapshot":
            return {"ok": True, "snapshot": self.snapshot(bool(req.get("connections", True)))}
        if op == "apply":
            return {"ok": True, "errors": self.apply(req.get("commands") or [])}
        return {"ok": False, "error": f"unknown op {op!r}"}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        control: Control = self.server.control          # type: ignore[attr-defined]
        for line in self.rfile:
            try:
                req = json.loads(line)
                reply = control.handle(req) if isinstance(req, dict) else {
                    "ok": False, "error": "request is not an object"}
            except ValueError as exc:
                reply = {"ok": False, "error": f"bad JSON: {exc}"}
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ControlServer:
    """Serve `control` on a Unix socket from a background thread."""

    def __init__(self, control: Control, path: str) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.path.exists(path):
            if _alive(path):
                raise OSError(f"{path}: a director is already serving this socket")
            os.unlink(path)
        old = os.umask(0o177)
        try:
            self.server = _Server(path, _Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.server.control = control                   # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True, name="pyvs-control")

    def start(self) -> ControlServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _alive(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
        return True
    except OSError:
        return False


def request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request/response; NoDirector when nothing serves `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
    except OSError as exc:
        raise NoDirector(f"no pyvs director at {path} ({exc.strerror or exc})") from None
    if not buf:
        raise NoDirector(f"no answer from the pyvs director at {path}")
    return json.loads(buf)
