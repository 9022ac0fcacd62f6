"""The live checkers against real servers on loopback (any user): HTTP servers and
scripts, `pyvs serve` running a keepalived.conf's checks.  The namespace lab's test (a
realserver's web server stopped and started while a client curls the VIP) is in
test_live.py."""

from __future__ import annotations

import http.server
import logging
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pyvs.config import load
from pyvs.core.packet import int_to_ip
from pyvs.drivers import health
from pyvs.drivers.daemon import Runtime

ROOT = Path(__file__).resolve().parent.parent


class Web:
    """An HTTP/1.0 server on loopback whose answer the test changes."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.status, self.body = 200, b"hello\n"
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(web.status)
                self.send_header("Content-Length", str(len(web.body)))
                self.end_headers()
                self.wfile.write(web.body)

            def log_message(self, *args: object) -> None:
                pass
        socketserver.TCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(what: Callable[[], object], limit: float) -> float:
    """Seconds until `what()` is true (fails after `limit`)."""
    t0 = time.monotonic()
    while not what():
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"not within {limit} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def dests(rt: Runtime) -> dict[str, int]:
    """The director's realservers and weights, read in its loop."""
    def read() -> dict[str, int]:
        return {f"{int_to_ip(d.addr)}:{d.port}": d.weight
                for svc in rt.director.services for d in svc.dests}
    return rt.call(read)


@pytest.fixture
def web():
    w = Web()
    yield w
    w.close()


def start(tmp_path: Path, conf: str):
    (tmp_path / "keepalived.conf").write_text(conf)
    cfg = load(str(tmp_path / "keepalived.conf"))
    assert cfg.warnings == []
    rt = Runtime(cfg.build(0.0), str(tmp_path / "ctl.sock")).start()
    thread = rt.run_in_thread()
    checks = health.start(rt, cfg)

    def stop() -> None:
        checks.close()
        rt.loop.stop()
        thread.join(5)
        rt.close()
    return rt, checks, stop


def test_http_get_status_and_digest_inhibit_then_back(tmp_path: Path, web: Web,
                                                      caplog) -> None:
    caplog.set_level(logging.INFO, logger="pyvs")
    rt, checks, stop = start(tmp_path, f"""\
virtual_server 10.0.0.1 {web.port} {{
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    delay_loop 0.5
    real_server 127.0.0.1 {web.port} {{
        weight 3
        inhibit_on_failure
        HTTP_GET {{
            url {{
                path /health
                digest b1946ac92492d2347c6235b4d2611184
            }}
            connect_timeout 1
            retry 1
            delay_before_retry 0.2
        }}
    }}
}}
""")
    rs = f"127.0.0.1:{web.port}"
    try:
        assert dests(rt) == {rs: 3}
        time.sleep(1.5)                               # several passing checks
        assert dests(rt) == {rs: 3}
        web.status = 500
        # a failure, one retry 0.2 s later: down within delay_loop + retry x delay_before_retry
        assert wait_until(lambda: dests(rt) == {rs: 0}, 0.5 + 1 * 0.2 + 1.0) < 1.7
        assert (f"check: rs {rs} DOWN (HTTP_GET status 500), weight 0 (inhibit_on_failure) "
                f"[TCP 10.0.0.1:{web.port}]") in caplog.messages
        web.status = 200
        # HTTP_GET after a failure: the failed url, then a pass of all urls (0.5 s apart)
        wait_until(lambda: dests(rt) == {rs: 3}, 3.0)
        web.body = b"changed\n"
        wait_until(lambda: dests(rt) == {rs: 0}, 3.0)
        assert any("DOWN (HTTP_GET MD5 digest mismatch)" in m for m in caplog.messages)
        status = checks.status()
        assert status["pools"][0]["realservers"][0]["alive"] is False
        assert status["events"]["DOWN"] == 2 and status["events"]["UP"] == 1
        assert status["checks_total"] >= 7 and status["apply_errors"] == 0
    finally:
        stop()


def test_misc_check_dynamic_weight_and_timeout(tmp_path: Path) -> None:
    code = tmp_path / "code"

    def put(text: str) -> None:                    # atomically: the script never reads ""
        (tmp_path / "code.new").write_text(text)
        os.replace(tmp_path / "code.new", code)
    put("0")
    script = tmp_path / "check.sh"
    script.write_text('#!/bin/sh\n[ "$(cat "$1")" = sleep ] && sleep 30\nexit "$(cat "$1")"\n')
    script.chmod(0o755)
    rt, checks, stop = start(tmp_path, f"""\
virtual_server 10.0.0.1 53 {{
    lvs_sched wrr
    lvs_method NAT
    protocol UDP
    real_server 127.0.0.1 53 {{
        MISC_CHECK {{
            misc_path "{script} {code}"
            misc_timeout 1
            misc_dynamic
            delay_loop 0.3
        }}
    }}
}}
""")
    try:
        assert dests(rt) == {"127.0.0.1:53": 1}
        put("12")                          # weight = exit code - 2
        wait_until(lambda: dests(rt) == {"127.0.0.1:53": 10}, 2.0)
        put("1")
        wait_until(lambda: dests(rt) == {}, 2.0)
        put("0")
        wait_until(lambda: dests(rt) == {"127.0.0.1:53": 1}, 2.0)
        put("sleep")                       # killed after misc_timeout 1 s
        t = wait_until(lambda: dests(rt) == {}, 4.0)
        assert t >= 0.9
        checker = checks.status()["pools"][0]["realservers"][0]["checks"][0]
        assert checker["last"] == "timed out" and checker["up"] is False
    finally:
        stop()
    # the killed script's process group is gone too
    out = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True).stdout
    assert out == ""


def test_pyvs_serve_runs_a_keepalived_conf_s_checks(tmp_path: Path, web: Web) -> None:
    """`pyvs serve --config keepalived.conf`: the checks run beside the director and
    change it through its control socket; `pyvs list` shows it."""
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as s:
        closed = s.server_address[1]                  # a port nothing listens on after this
    conf = tmp_path / "keepalived.conf"
    conf.write_text(f"""\
virtual_server 10.0.0.1 80 {{
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    delay_loop 0.5
    real_server 127.0.0.1 {web.port} {{
        TCP_CHECK {{
        }}
    }}
    real_server 127.0.0.1 {closed} {{
        TCP_CHECK {{
            connect_timeout 1
            retry 0
        }}
    }}
}}
""")
    sock = str(tmp_path / "ctl.sock")
    env = {**os.environ, "PYVS_SOCKET": sock}
    proc = subprocess.Popen([sys.executable, "-m", "pyvs.cli", "serve", "--config", str(conf)],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def listing() -> str:
        return subprocess.run([sys.executable, "-m", "pyvs.cli", "list"], env=env,
                              capture_output=True, text=True, timeout=30).stdout
    try:
        wait_until(lambda: os.path.exists(sock), 10)
        wait_until(lambda: f"127.0.0.1:{closed}" not in listing(), 5)
        assert f"  -> 127.0.0.1:{web.port}" in listing()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert (f"pyvs: check: rs 127.0.0.1:{closed} DOWN (TCP_CHECK connection refused), "
            "removed [TCP 10.0.0.1:80]") in err.splitlines()
