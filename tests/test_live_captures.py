"""Captures taken in the namespace lab with real tcpdump, replayed: a director's
`tcpdump -i any` gives the live director's own counters, and a client's capture gives the
realservers' sockets as `ss -tan` lists them, connection by connection, at the same instants.
Traffic: a few bounded requests inside namespaces the lab creates; `lab down` always runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyvs.config import load
from pyvs.drivers.pcap import NS, read_captures
from pyvs.drivers.replay import REPLY_RS, REQUEST, Classifier
from pyvs.lab import netns
from pyvs.truth.capture import CaptureTruth
from pyvs.truth.tcpstates import STATE_NAMES


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, NFQUEUE, tcpdump)"
    for tool in ("ip", "iptables", "curl", "ss", "tcpdump"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return "netfilterqueue is not installed (pip install 'pyvs[live]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
PYVS = [sys.executable, "-m", "pyvs.cli"]


@pytest.fixture
def lab(request):
    netns.down(out=open(os.devnull, "w"))
    state = netns.up(request.param, 2, 1, out=open(os.devnull, "w"))
    try:
        yield state
    finally:
        netns.down(out=open(os.devnull, "w"))


@contextlib.contextmanager
def tcpdump(namespace: str, iface: str, path: Path, report: list | None = None):
    """tcpdump -w PATH in a namespace, each packet written as it comes (libpcap's
    TPACKET_V3 ring otherwise holds them), headers only (-s 256: the ring's slots are
    snaplen-sized, and a busy machine overflows a ring of 256 KiB slots), stopped with
    SIGINT (which flushes the file)."""
    proc = subprocess.Popen(["ip", "netns", "exec", namespace, "tcpdump", "--immediate-mode",
                             "-U", "-n", "-Z", "root", "-s", "256", "-B", "4096", "-i", iface,
                             "-w", str(path), "tcp"], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "listening on" in line:
                break
        else:
            raise AssertionError("tcpdump did not start")
        yield
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        proc.wait(timeout=10)
        if report is not None:
            report.append(rest)


def curl(state: dict, port: int = 80) -> str:
    return subprocess.run(["ip", "netns", "exec", netns.ns("c1"), "curl", "-s", "--max-time",
                           "5", f"http://{state['vip']}:{port}/"], capture_output=True,
                          text=True, timeout=10).stdout


@pytest.mark.parametrize("lab", ["nat", "dr"], indirect=True)
def test_director_any_capture_replays_to_the_live_director_s_counters(lab, tmp_path):
    """`tcpdump -i any -s 256` on the director (cooked; headers only; in DR each client
    packet twice, with the partial checksum of an offloaded send): `pyvs replay --stats
    --exact` equals the live director's `pyvs list --stats --exact`, byte for byte, once
    both estimators have ticked after the traffic."""
    cap = tmp_path / "director.pcap"
    report: list[str] = []
    with tcpdump(netns.ns("d"), "any", cap, report):
        assert [curl(lab) for _ in range(4)] == ["rs2\n", "rs1\n", "rs2\n", "rs1\n"]
        _closed(netns.ns("c1"), lab["vip"])
    time.sleep(2.5)                                # the live director's 2 s estimator tick
    live = subprocess.run([*PYVS, "list", "--stats", "--exact", "--socket", netns.SOCKET],
                          capture_output=True, text=True, timeout=30)
    assert live.returncode == 0, live.stderr
    replay = subprocess.run([*PYVS, "replay", str(cap), "--config", lab["config"], "--stats",
                             "--exact", "--at", "60"], capture_output=True, text=True,
                            timeout=60)
    assert replay.returncode == 0, replay.stderr
    assert "\n0 packets dropped by kernel" in "\n" + report[0], f"tcpdump dropped: {report}"
    assert replay.stdout == live.stdout
    www = next(line.split() for line in live.stdout.splitlines()
               if line.startswith("TCP") and line.split()[1].endswith(":80"))
    assert int(www[2]) == 4 and int(www[3]) >= 4 * 5      # Conns, InPkts
    point = "director side, NAT" if lab["mode"] == "nat" else "director side, DR/TUN"
    assert f"capture point: {point}" in replay.stderr
    if lab["mode"] == "dr":
        assert _partial_checksums(cap), "no offloaded (partial) checksum in the capture"


def _closed(namespace: str, vip: str) -> None:
    """Until the client holds no connection to the VIP but in TIME-WAIT: the closes are
    over, so the capture holds every packet the live director counted."""
    for _ in range(100):
        out = subprocess.run(["ip", "netns", "exec", namespace, "ss", "-Htan", "dst", vip],
                             capture_output=True, text=True, timeout=10).stdout
        if all(line.startswith("TIME-WAIT") for line in out.splitlines()):
            return
        time.sleep(0.1)
    raise AssertionError(f"connections to {vip} still closing: {out}")


def _partial_checksums(cap: Path) -> int:
    """TCP packets whose checksum does not verify: the partial sums of an offloaded send
    (CHECKSUM_PARTIAL), which the copy rule must not depend on."""
    partial = 0
    for _, pkt in read_captures([str(cap)]):
        ihl = (pkt[0] & 15) << 2
        segment = pkt[ihl:(pkt[2] << 8) | pkt[3]]
        data = pkt[12:20] + bytes((0, 6)) + len(segment).to_bytes(2, "big") + segment
        data += b"\0" * (len(data) % 2)
        total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        partial += total != 0xFFFF
    return partial


SCENARIO = """import socket, struct, sys, time
vip = sys.argv[1]
def telnet():
    s = socket.create_connection((vip, 23), 5); s.recv(200); return s
def mark(name):                                    # then wait until the test has listed
    print(name, flush=True); sys.stdin.readline()
held = telnet()                                    # held open to the end
closer = telnet()
mark("opened")
closer.close()                                     # client closes first: server LAST_ACK
mark("client-close")
web = socket.create_connection((vip, 80), 5)       # HTTP/1.0: the server closes first
web.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); web.recv(1000)
mark("server-close-half")                          # server FIN_WAIT2 (client not closed)
web.close()
mark("server-close")                               # server TIME_WAIT
rst = telnet()
mark("before-rst")
rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); rst.close()
mark("rst")
quit = telnet(); quit.sendall(b"exit\\r\\n"); quit.recv(200)
mark("quit")                                       # server closed on logout: FIN_WAIT2
quit.close()
mark("end")
held.close()
"""


def _ss(host: str) -> dict[int, str]:
    """ss -Htan in a realserver: client port -> state (our names), LISTEN left out."""
    out = subprocess.run(["ip", "netns", "exec", netns.ns(host), "ss", "-Htan"],
                         capture_output=True, text=True, timeout=10).stdout
    states = {}
    for line in out.splitlines():
        fields = line.split()
        if fields[0] == "LISTEN":
            continue
        name = {"ESTAB": "ESTABLISHED"}.get(fields[0], fields[0].replace("-", "_"))
        states[int(fields[4].rsplit(":", 1)[1])] = name.replace("WAIT_", "WAIT")
    return states


def _inferred(cap: Path, config: str, instants: list[float]) -> list[dict[int, str]]:
    """The server ends a client-side capture shows at each epoch instant: client port ->
    state, for every connection confirmed and not closed."""
    director = load(config).build(0.0)
    classifier = Classifier.for_director(director)
    truth = CaptureTruth()
    out: list[dict[int, str]] = []
    todo = sorted(instants)

    def take(t_ns: int) -> None:
        truth.handle_timers(t_ns / NS)
        out.append({end.rport: STATE_NAMES[end.state] for end in truth.conns.values()
                    if end.confirmed and STATE_NAMES[end.state] != "CLOSED"})

    for ns, pkt in read_captures([str(cap)]):
        while todo and round(todo[0] * NS) < ns:
            take(round(todo.pop(0) * NS))
        kind = classifier.classify(ns, pkt)
        if kind == REQUEST:
            truth.request(ns, ns / NS, pkt, classifier.ihl)
        elif kind >= 0:
            truth.reply(ns / NS, pkt, classifier.ihl, kind == REPLY_RS)
        truth.handle_timers(ns / NS)
    for t in todo:
        take(round(t * NS))
    return out


@pytest.mark.parametrize("lab", ["dr"], indirect=True)
def test_client_capture_truth_equals_ss_on_the_realservers(lab, tmp_path):
    """Client close, server close (its FIN_WAIT2 and TIME_WAIT), an RST, a logout and a
    held connection: at each instant, every socket `ss` shows on either realserver is the
    one the capture's inference holds, in the same state, and nothing more."""
    cap = tmp_path / "client.pcap"
    instants: list[float] = []
    seen: list[dict[int, str]] = []
    with tcpdump(netns.ns("c1"), "eth0", cap):
        proc = subprocess.Popen(["ip", "netns", "exec", netns.ns("c1"), sys.executable, "-c",
                                 SCENARIO, lab["vip"]], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        names = []
        for line in proc.stdout:
            time.sleep(0.5)                # the step's packets have all been exchanged
            t0 = time.time()
            states = {**_ss("r1"), **_ss("r2")}
            instants.append((t0 + time.time()) / 2)
            seen.append(states)
            names.append(line.strip())
            proc.stdin.write("\n")
            proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    assert names == ["opened", "client-close", "server-close-half", "server-close",
                     "before-rst", "rst", "quit", "end"]
    inferred = _inferred(cap, lab["config"], instants)
    assert inferred == seen
    # the scenario did reach the states it is about
    every = {state for states in seen for state in states.values()}
    assert {"ESTABLISHED", "FIN_WAIT2", "TIME_WAIT"} <= every
