"""`pyvs run --queues N` in the namespace lab: two clients (198.51.100.2 and .3) land on
different workers, pyvsadm sees one director (listings merged, changes reaching every
worker), held connections survive restarts that change N (each worker loads its own
clients' entries from every saved table), a killed worker is started again with its
table, and a stop, clean or SIGKILL + cleanup, leaves the rules as they were."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pyvs.control import request
from pyvs.lab import netns
from tests.test_live import _missing
from tests.test_live_director import HOLD, adm

pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture
def lab():
    netns.down(out=open(os.devnull, "w"))
    state = netns.up("nat", 2, 2, out=open(os.devnull, "w"), director=False)
    state["config"] = str(netns.STATE_DIR / "lab-nat.yaml")
    (netns.STATE_DIR / "lab-nat.yaml").write_text(netns.config_yaml("nat", 2))
    try:
        yield state
    finally:
        netns.down(out=open(os.devnull, "w"))


def on_director(*cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns.ns("d"), *cmd], capture_output=True,
                          text=True, timeout=30).stdout


def rules() -> list[str]:
    """The director's iptables rules and chains of its own (not the tables' built-in
    chains, which iptables-save shows once a table is in use)."""
    return [line for line in on_director("iptables-save").split("\n")
            if line.startswith("-A") or line.startswith(":") and " - " in line]


def start(state: dict, *args: str, log: str = "director.log") -> subprocess.Popen:
    out = open(netns.STATE_DIR / log, "w")
    proc = subprocess.Popen(["ip", "netns", "exec", netns.ns("d"), sys.executable, "-m",
                             "pyvs.cli", "run", "--config", state["config"], "--socket",
                             netns.SOCKET, *args], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    state["pids"]["director"] = proc.pid
    netns._save(state)
    for _ in range(150):
        assert proc.poll() is None, (netns.STATE_DIR / log).read_text()
        try:
            request(netns.SOCKET, {"op": "ping"}, timeout=1)
            return proc
        except Exception:
            time.sleep(0.1)
    raise AssertionError((netns.STATE_DIR / log).read_text())


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def snapshot(path: str = netns.SOCKET) -> dict:
    return request(path, {"op": "snapshot", "connections": True})["snapshot"]


def entries(snap: dict) -> list[tuple[str, str, str]]:
    return sorted((c["client"].split(":")[0], c["dest"], c["state"])
                  for c in snap["connections"])


def holder(client: str, vip: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", netns.ns(client), sys.executable, "-c",
                             HOLD, vip], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            text=True)


def say(h: subprocess.Popen, text: str) -> str:
    h.stdin.write(text + "\n")
    h.stdin.flush()
    return h.stdout.readline().strip()


def curl(client: str, vip: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns.ns(client), "curl", "-s",
                           "--max-time", "5", f"http://{vip}/"], capture_output=True,
                          text=True, timeout=10).stdout.strip()


def test_two_workers_are_one_director(lab) -> None:
    vip = lab["vip"]
    before = rules()
    proc = start(lab, "--queues", "2", "--restart-grace", "0")
    try:
        got = [curl(c, vip) for c in ("c1", "c2", "c1", "c2")]
        assert sorted(got) == ["rs1", "rs1", "rs2", "rs2"]
        w0, w1 = snapshot(f"{netns.SOCKET}.q0"), snapshot(f"{netns.SOCKET}.q1")
        assert {e[0] for e in entries(w0)} == {"198.51.100.2"}    # by the client's address
        assert {e[0] for e in entries(w1)} == {"198.51.100.3"}
        merged = snapshot()
        assert entries(merged) == sorted(entries(w0) + entries(w1))
        http = {svc["port"]: svc for svc in merged["services"]}[80]
        assert {d["address"]: d["inactive"] for d in http["dests"]} == {
            "192.0.2.11": 2, "192.0.2.12": 2}
        assert merged["entries"] == w0["entries"] + w1["entries"] == 4
        # a change reaches every worker; the listing of each shows it
        assert adm("-e", "-t", f"{vip}:80", "-r", "192.0.2.11:80", "-m", "-w", "0"
                   ).returncode == 0
        for path in (netns.SOCKET, f"{netns.SOCKET}.q0", f"{netns.SOCKET}.q1"):
            svc = {s["port"]: s for s in snapshot(path)["services"]}[80]
            assert {d["address"]: d["weight"] for d in svc["dests"]} == {
                "192.0.2.11": 0, "192.0.2.12": 1}
        assert [curl(c, vip) for c in ("c1", "c2")] == ["rs2", "rs2"]
    finally:
        stop(proc)
    assert rules() == before


def test_held_connections_survive_restarts_that_change_the_queues(lab) -> None:
    vip = lab["vip"]
    proc = start(lab, "--queues", "2")
    hs = [holder(c, vip) for c in ("c1", "c2")]
    try:
        first = [h.stdout.readline().strip() for h in hs]
        assert first == ["rs2", "rs2"]          # rr: each worker's own, at the same start
        for n, log in (("3", "d2.log"), ("1", "d3.log"), ("2", "d4.log")):
            stop(proc)
            proc = start(lab, "--queues", n, log=log)
            assert [say(h, f"after {n}") for h in hs] == [f"after {n}"] * 2
            held = [e for e in entries(snapshot()) if e[1].endswith(":23")]
            assert [(e[0], e[2]) for e in held] == [("198.51.100.2", "ESTABLISHED"),
                                                    ("198.51.100.3", "ESTABLISHED")]
            text = (netns.STATE_DIR / log).read_text()
            assert sum(map(int, re.findall(r"restored (\d+) entries", text))) == 2, text
        # a killed worker is started again from its saved table
        pid = int(request(f"{netns.SOCKET}.q1", {"op": "ping"})["pid"])
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                if request(f"{netns.SOCKET}.q1", {"op": "ping"}, timeout=1)["pid"] != pid:
                    break
            except Exception:
                pass
            time.sleep(0.1)
        assert [say(h, "after a crash") for h in hs] == ["after a crash"] * 2
        assert "died (signal SIGKILL); starting it again" in (
            netns.STATE_DIR / "d4.log").read_text()
    finally:
        for h in hs:
            h.kill()
            h.wait()
        stop(proc)


def test_sigkill_of_the_director_then_cleanup_leaves_nothing(lab) -> None:
    before = rules()
    proc = start(lab, "--queues", "2")
    assert curl("c1", lab["vip"]) in ("rs1", "rs2")
    assert "PYVS-QIN" in on_director("iptables", "-t", "mangle", "-S")
    stop(proc, signal.SIGKILL)
    for _ in range(50):                     # the workers follow their parent (PDEATHSIG)
        if not on_director("ss", "-xlp").count("pyvs.sock.q"):
            break
        time.sleep(0.1)
    on_director(sys.executable, "-m", "pyvs.cli", "cleanup")
    assert rules() == before


def test_health_checks_run_inside_a_director_of_two_queues(lab, tmp_path) -> None:
    """`pyvs run --config keepalived.conf --queues 2`: the director's own checks take a
    dead realserver's weight to 0 in every worker, and bring it back."""
    from tests.test_health_live import wait_until
    from tests.test_live import LAB_CONF
    conf = tmp_path / "keepalived.conf"
    conf.write_text(LAB_CONF)
    lab["config"] = str(conf)
    proc = start(lab, "--queues", "2")

    def weights(addr: str) -> list[int | None]:
        out = []
        for path in (netns.SOCKET, f"{netns.SOCKET}.q0", f"{netns.SOCKET}.q1"):
            svc = next(s for s in snapshot(path)["services"] if s["port"] == 80)
            out.append(next((d["weight"] for d in svc["dests"] if d["address"] == addr),
                            None))
        return out
    try:
        wait_until(lambda: weights("192.0.2.11") == [1, 1, 1], 5)
        os.killpg(lab["pids"]["rs1"], signal.SIGKILL)
        wait_until(lambda: weights("192.0.2.11") == [0, 0, 0], 1 + 0.5 + 2 + 1.5)
        assert [curl(c, lab["vip"]) for c in ("c1", "c2", "c1")] == ["rs2"] * 3
        backend = subprocess.Popen(["ip", "netns", "exec", netns.ns("r1"), sys.executable,
                                    "-m", "pyvs.lab.backends", "--name", "rs1"],
                                   start_new_session=True)
        lab["pids"]["rs1"] = backend.pid
        netns._save(lab)
        wait_until(lambda: weights("192.0.2.11") == [1, 1, 1], 6)
    finally:
        stop(proc)
    log = (netns.STATE_DIR / "director.log").read_text()
    assert "check: rs 192.0.2.11:80 DOWN (HTTP_GET" in log
    assert "check: rs 192.0.2.11:80 UP (HTTP_GET status 200), weight 1" in log
