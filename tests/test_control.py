"""The control socket under load and bad input: a thousand clients at once, hostile
lines, commands with impossible values, a listing of many entries streamed in slices,
and a socket directory that is not safely the user's own."""

import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from pyvs.control import MAX_LINE, NoDirector, request
from pyvs.core import commands as C
from pyvs.core.craft import SYN, tcp
from pyvs.core.engine import IN, Director
from pyvs.core.forwarding import DROUTE
from pyvs.core.packet import IPPROTO_TCP, ip_to_int
from pyvs.drivers.daemon import Runtime
from pyvs.views.snapshot import CHUNK

VIP = ip_to_int("10.0.0.100")


@pytest.fixture
def runtime(tmp_path):
    d = Director()
    svc = C.ServiceKey(IPPROTO_TCP, VIP, 80)
    d.apply(C.AddService(svc, "rr"), 0.0)
    d.apply(C.AddDest(svc, ip_to_int("192.168.10.1"), 80, DROUTE), 0.0)
    rt = Runtime(d, str(tmp_path / "ctl.sock")).start()
    thread = rt.run_in_thread()
    yield rt
    rt.loop.stop()
    thread.join(5)
    rt.close()


def raw(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass                  # the server answered and hung up before all was sent
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_a_thousand_clients_at_once(runtime) -> None:
    results: list[object] = []

    def ask() -> None:
        try:
            results.append(request(runtime.control.path, {"op": "snapshot",
                                                          "connections": False})["ok"])
        except NoDirector as exc:
            results.append(str(exc))
    threads = [threading.Thread(target=ask) for _ in range(1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(True) == 1000, [r for r in results if r is not True][:3]


@pytest.mark.parametrize("line,error", [
    (b"[" * 100_000 + b"\n", "request nested too deeply"),
    (b"{nope\n", "bad JSON"),
    (b'"ping"\n', "request is not an object with an op"),
    (b'{"op": "reboot"}\n', "unknown op 'reboot'"),
    (b'{"op": "apply", "commands": 5}\n', "commands: expected a list"),
])
def test_hostile_lines_get_an_error_and_the_server_goes_on(runtime, line, error) -> None:
    reply = json.loads(raw(runtime.control.path, line))
    assert reply["ok"] is False and reply["error"].startswith(error)
    assert request(runtime.control.path, {"op": "ping"})["ok"]


def test_an_endless_line_is_cut_off(runtime) -> None:
    reply = json.loads(raw(runtime.control.path, b"x" * (MAX_LINE + 100_000)))
    assert reply == {"ok": False, "error": f"request longer than {MAX_LINE} bytes"}
    assert request(runtime.control.path, {"op": "ping"})["ok"]


def test_impossible_commands_are_refused_and_the_table_still_lists(runtime) -> None:
    svc = {"protocol": 6, "addr": VIP, "port": 80, "fwmark": 0}
    reply = request(runtime.control.path, {"op": "apply", "commands": [
        {"op": "add-server", "service": svc, "addr": -1, "port": 80},
        {"op": "add-server", "service": svc, "addr": 2**40, "port": 80},
        {"op": "add-server", "service": svc, "addr": 5, "port": 70000},
        {"op": "add-service", "service": {**svc, "protocol": 99}},
        {"op": "add-server", "service": svc, "addr": 5, "port": 80, "weight": -7},
        {"op": "set", "tcp": -1},
        {"op": "add-server", "service": svc, "addr": 6, "port": 80, "weight": 2},
    ]})
    assert reply["errors"] == [
        "illegal real server address[:port] specified",
        "illegal real server address[:port] specified",
        "illegal real server address[:port] specified",
        "invalid protocol 99 (tcp 6 or udp 17)",
        "illegal weight specified",
        "invalid timeout value `-1' specified",
        None]
    snap = request(runtime.control.path, {"op": "snapshot"})["snapshot"]
    assert [d["address"] for d in snap["services"][0]["dests"]] == ["0.0.0.6", "192.168.10.1"]


def test_a_big_listing_is_streamed_in_slices(runtime) -> None:
    n = 5 * CHUNK + 17

    def fill() -> None:
        for i in range(n):
            runtime.director.receive(tcp(ip_to_int("172.16.0.0") + i, 1024 + i % 60000, VIP,
                                         80, SYN), runtime.now(), IN)
    runtime.call(fill)
    pieces = runtime.call(lambda: sum(1 for _ in runtime.snapshot_stream(True)))
    assert pieces == 2 + 5 + 1             # the header, one piece per CHUNK, the tail
    snap = request(runtime.control.path, {"op": "snapshot"})["snapshot"]
    assert len(snap["connections"]) == n == snap["entries"]


def _as_nobody(path) -> str:
    """private_dir(path) checked with the effective uid of nobody (a forked child)."""
    from pyvs.control import SocketPathError, private_dir
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setegid(65534)
            os.seteuid(65534)
            try:
                private_dir(path)
                text = "accepted"
            except SocketPathError as exc:
                text = str(exc)
            os.write(w, text.encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        return f.read()


def test_the_socket_directory_must_be_the_users_own() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to check the directory as another user")
    tmp_path = Path(tempfile.mkdtemp(prefix="pyvs-test-"))       # others may enter it
    os.chmod(tmp_path, 0o755)
    try:
        _check_directories(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _check_directories(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    assert _as_nobody(shared) == (f"{shared} belongs to uid 0, not to you (uid 65534); "
                                  "choose another with --socket")
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    os.chown(mine, 65534, 65534)
    assert _as_nobody(mine) == (f"{mine} is mode 0755; it must be 0700 (chmod 700 it, or "
                                "choose another with --socket)")
    os.chmod(mine, 0o700)
    assert _as_nobody(mine) == "accepted"
    assert _as_nobody(tmp_path / "mine" / "new") == "accepted"      # made, 0700
    assert (mine / "new").stat().st_mode & 0o777 == 0o700
