"""The live director under change and faults, in the namespace lab with real Linux peers:
services added with pyvsadm are forwarded at once, a connection with no realserver is
refused at once (ICMP port unreachable), a drain and a removal give the table replay
gives, a held connection survives a restart (SIGTERM, start) in NAT and DR, a SIGKILL'd
director's rules are taken over by the next one, and pyvsadm storms are served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pyvs.control import request
from pyvs.lab import netns
from tests.test_live import _missing, curl, dests, table

pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
PYVSADM = [sys.executable, "-m", "pyvs.pyvsadm"]


@pytest.fixture
def lab(request):
    netns.down(out=open(os.devnull, "w"))
    state = netns.up(request.param, 2, 1, out=open(os.devnull, "w"))
    try:
        yield state
    finally:
        netns.down(out=open(os.devnull, "w"))


def adm(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns.ns("d"), *PYVSADM, *args],
                          capture_output=True, text=True, input=stdin, timeout=30,
                          env={**os.environ, "PYVS_SOCKET": netns.SOCKET})


def client(script: str, *args: str, timeout: float = 30) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", netns.ns("c1"), sys.executable, "-c",
                             script, *args], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            text=True)


HOLD = """import socket, sys
s = socket.create_connection((sys.argv[1], 23), 5)
print(s.recv(200).decode().split()[0], flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    print(s.recv(200).decode().strip(), flush=True)
"""


def restart_director(state: dict, sig: int) -> subprocess.Popen:
    """Stop the lab's director with `sig` and start it again as the lab does."""
    os.killpg(state["pids"]["director"], sig)
    for _ in range(100):
        try:
            os.kill(state["pids"]["director"], 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    log = open(netns.STATE_DIR / "director2.log", "w")
    proc = subprocess.Popen(["ip", "netns", "exec", netns.ns("d"), sys.executable, "-m",
                             "pyvs.cli", "run", "--config", state["config"], "--socket",
                             netns.SOCKET], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    state["pids"]["director"] = proc.pid
    netns._save(state)
    for _ in range(100):
        try:
            request(netns.SOCKET, {"op": "ping"}, timeout=1)
            return proc
        except Exception:
            time.sleep(0.1)
    raise AssertionError((netns.STATE_DIR / "director2.log").read_text())


@pytest.mark.parametrize("lab", ["nat", "dr"], indirect=True)
def test_a_held_connection_survives_a_restart(lab) -> None:
    holder = client(HOLD, lab["vip"])
    try:
        assert holder.stdout.readline().strip() in ("rs1", "rs2")
        holder.stdin.write("before\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "before"
        restart_director(lab, signal.SIGTERM)
        log = (netns.STATE_DIR / "director2.log").read_text()
        assert "took over the rules held by a director that stopped" in log
        assert "restored 1 entries" in log
        holder.stdin.write("after\n")          # through the new director, same realserver
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "after"
        snap = table()
        assert [c["state"] for c in snap["connections"] if c["dest"].endswith(":23")] == [
            "ESTABLISHED"]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("lab", ["dr"], indirect=True)
def test_a_killed_directors_rules_are_taken_over(lab) -> None:
    restart_director(lab, signal.SIGKILL)
    log = (netns.STATE_DIR / "director2.log").read_text()
    assert "which died (no clean stop)" in log
    assert curl(lab) in ("rs1\n", "rs2\n")


@pytest.mark.parametrize("lab", ["nat"], indirect=True)
def test_services_added_with_pyvsadm_are_forwarded_at_once(lab) -> None:
    vip = lab["vip"]
    rs1, rs2 = lab["realservers"]
    assert adm("-A", "-t", f"{vip}:8080", "-s", "rr").returncode == 0
    for rs in (rs1, rs2):
        assert adm("-a", "-t", f"{vip}:8080", "-r", f"{rs}:8080", "-m").returncode == 0
    got = [subprocess.run(["ip", "netns", "exec", netns.ns("c1"), "curl", "-s", "--http0.9",
                           "--max-time", "3", f"http://{vip}:8080/"], capture_output=True,
                          text=True, timeout=10).stdout for _ in range(2)]
    assert sorted(got) == ["rs1\n", "rs2\n"]
    assert adm("-D", "-t", f"{vip}:8080").returncode == 0
    gone = subprocess.run(["ip", "netns", "exec", netns.ns("c1"), "curl", "-s", "-o",
                           "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                           f"http://{vip}:8080/"], capture_output=True, text=True, timeout=10)
    assert gone.returncode != 0 and gone.stdout == "000"


@pytest.mark.parametrize("lab", ["nat", "dr"], indirect=True)
def test_no_usable_realserver_refuses_at_once(lab) -> None:
    vip, fwd = lab["vip"], "-m" if lab["mode"] == "nat" else "-g"
    for rs in lab["realservers"]:
        assert adm("-e", "-t", f"{vip}:80", "-r", f"{rs}:80", fwd, "-w", "0").returncode == 0
    start = time.monotonic()
    r = subprocess.run(["ip", "netns", "exec", netns.ns("c1"), "curl", "-s", "--max-time",
                        "5", f"http://{vip}/"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 7                        # couldn't connect: refused
    assert time.monotonic() - start < 1.0           # at once, not after SYN retries
    assert table(False)["drops"].get("no-destination", 0) >= 1


@pytest.mark.parametrize("lab", ["nat"], indirect=True)
def test_a_drained_then_removed_realserver_in_the_live_lab(lab) -> None:
    vip = lab["vip"]
    rs1, rs2 = lab["realservers"]
    holder = client(HOLD, vip)
    try:
        assert holder.stdout.readline().strip() == "rs2"     # rr: the last added first
        assert adm("-e", "-t", f"{vip}:23", "-r", f"{rs2}:23", "-m", "-w", "0").returncode == 0
        assert [curl(lab) for _ in range(2)] == ["rs2\n", "rs1\n"]     # port 80 unaffected
        assert adm("-d", "-t", f"{vip}:23", "-r", f"{rs2}:23").returncode == 0
        holder.stdin.write("lost\n")
        holder.stdin.flush()
        time.sleep(1.0)
        snap = table()
        assert dests(snap, 23) == {rs1: (0, 0)}                 # rs2 no longer listed
        held = [c for c in snap["connections"] if c["dest"] == f"{rs2}:23"]
        assert [c["state"] for c in held] == ["ESTABLISHED"]    # its entry lives on ...
        assert snap["drops"].get("dest-unavailable", 0) >= 1    # ... and its packets drop
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("lab", ["dr"], indirect=True)
def test_a_pyvsadm_storm_is_served(lab) -> None:
    procs = [subprocess.Popen(["ip", "netns", "exec", netns.ns("d"), *PYVSADM, "-Ln"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYVS_SOCKET": netns.SOCKET})
             for _ in range(60)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in results if e][:3]
    assert all(out.startswith("IP Virtual Server version") for out, _ in results)
