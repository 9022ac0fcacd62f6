"""`pyvs compare --live`: the accuracy comparison on real TCP stacks in the namespace lab.

For each scenario and mode the lab is built afresh; the scenario drives real tools from the client
namespace (curl, Python sockets), and every 0.25 s the director's table (over the control
socket) and `ss -tan` in each realserver namespace are read.  A sample is kept only if the
director's table did not change while `ss` ran (read, ss, read again), so both sides are
seen at one instant.  The report is the simulated comparison's (same Result, same table).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ..control import request
from ..core import states as S
from ..sim.run import Result, Sample, summarize
from ..sim.truth import ACTIVE, INACTIVE, KINDS, NONE, explain, kind
from . import netns

SS_NAMES = {"ESTAB": "ESTABLISHED", "SYN-RECV": "SYN_RECV", "SYN-SENT": "SYN_SENT",
            "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
            "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK", "CLOSING": "CLOSING"}
SERVICE_PORTS = {80, 23, 21}
PERIOD = 0.25


def _client(state: dict, script: str, *args: str, timeout: float = 30) -> str:
    return subprocess.run(["ip", "netns", "exec", "pyvs-c1", sys.executable, "-c", script,
                           state["vip"], *args], capture_output=True, text=True,
                          timeout=timeout).stdout


def _curl(state: dict, max_time: float = 5) -> None:
    subprocess.run(["ip", "netns", "exec", "pyvs-c1", "curl", "-s", "-o", "/dev/null",
                    "--max-time", str(max_time), f"http://{state['vip']}/"],
                   timeout=max_time + 5)


HOLD = """import socket, sys, time
s = socket.create_connection((sys.argv[1], 23), 5); s.recv(200)
time.sleep(float(sys.argv[2])); s.sendall(b"exit\\r\\n")
try:
    while s.recv(200): pass
except OSError as e: print(e)
s.close()"""

RST = """import socket, struct, sys, time
for _ in range(3):
    s = socket.create_connection((sys.argv[1], 23), 5); s.recv(200)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
    time.sleep(1)"""


def http10(state: dict) -> None:
    for _ in range(6):
        _curl(state)
        time.sleep(1)
    time.sleep(3)


def held(state: dict) -> None:
    _client(state, HOLD, "4")
    time.sleep(3)


def client_rst(state: dict) -> None:
    _client(state, RST)
    time.sleep(2)


def bad_routing(state: dict) -> None:
    """The realservers' replies go nowhere (seed 000's wrong default gateway)."""
    client = state["clients"][0]
    rss = [f"pyvs-r{i + 1}" for i in range(len(state["realservers"]))]
    for ns in rss:
        netns.exec_in(ns, "ip", "route", "add", "blackhole", f"{client}/32")
    try:
        threads = [threading.Thread(target=_curl, args=(state, 4)) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.5)
        for t in threads:
            t.join()
    finally:
        for ns in rss:
            netns.exec_in(ns, "ip", "route", "del", "blackhole", f"{client}/32", check=False)
    time.sleep(2)


def idle_past_timeout(state: dict) -> None:
    """`--set 3 0 0`, a held connection idle 5 s: the director forgets it, the realserver
    does not; the client's logout then gets an RST (NAT) or ICMP unreachable (DR)."""
    request(netns.SOCKET, {"op": "apply", "commands": [
        {"cmd": "set", "timeouts": [3, 0, 0]}]})
    try:
        _client(state, HOLD, "5")
        time.sleep(2)
    finally:
        request(netns.SOCKET, {"op": "apply", "commands": [
            {"cmd": "set", "timeouts": [900, 0, 0]}]})


SCENARIOS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "http10": ("six curl fetches 1 s apart (python http.server closes first)", http10),
    "held": ("a telnet-like connection held 4 s, then logout (the server closes)", held),
    "client-rst": ("three connections aborted by the client with SO_LINGER 0", client_rst),
    "bad-routing": ("realservers' replies blackholed: handshakes never complete",
                    bad_routing),
    "idle-past-timeout": ("--set 3: a connection idle 5 s, past the director's timeout",
                          idle_past_timeout),
}


class Sampler:
    def __init__(self, state: dict, result: Result) -> None:
        self.state = state
        self.result = result
        self.seconds: dict[tuple[str, str, str], float] = {}
        self.peaks: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.stop = threading.Event()
        self.start = time.monotonic()

    def _ss(self) -> dict[str, list[tuple[str, str]]]:
        out = {}
        for i, addr in enumerate(self.state["realservers"]):
            text = netns.exec_in(f"pyvs-r{i + 1}", "ss", "-Htan", check=False)
            socks = []
            for line in text.splitlines():
                f = line.split()
                if len(f) < 5 or f[0] == "LISTEN":
                    continue
                port = int(f[3].rsplit(":", 1)[1])
                if port in SERVICE_PORTS or 30000 <= port < 31000:
                    socks.append((SS_NAMES.get(f[0], f[0]), f[4]))
            out[addr] = socks
        return out

    def _table(self) -> dict:
        return request(netns.SOCKET, {"op": "snapshot", "connections": True})["snapshot"]

    def sample(self) -> None:
        for _ in range(5):
            before = self._table()
            ss = self._ss()
            after = self._table()
            if before["connections"] == after["connections"] and \
                    before["services"] == after["services"]:
                break
        else:
            return
        t = round(time.monotonic() - self.start, 2)
        active_states = {S.TCP_STATE_NAMES[i] for i, a in enumerate(
            S.PROFILES[after["kernel"]].active) if a}
        dconns: dict[tuple[str, str], str] = {}
        for c in after["connections"]:
            if not c["template"]:
                dconns[(c["dest"].rsplit(":", 1)[0], c["client"])] = c["state"]
        now_counts = dict.fromkeys(self.peaks, 0)
        for addr, socks in ss.items():
            active = sum(d["active"] for s in after["services"] for d in s["dests"]
                         if d["address"] == addr)
            inactive = sum(d["inactive"] for s in after["services"] for d in s["dests"]
                           if d["address"] == addr)
            truth_active = sum(1 for st, _ in socks if st == "ESTABLISHED")
            self.result.samples.append(Sample(t, addr, active, inactive, truth_active,
                                              len(socks) - truth_active))
            rconns = {peer: st for st, peer in socks}
            for peer in {p for (a, p) in dconns if a == addr} | set(rconns):
                dstate = dconns.get((addr, peer), "-")
                rstate = rconns.get(peer, "-")
                dclass = NONE if dstate == "-" else (
                    ACTIVE if dstate in active_states else INACTIVE)
                rclass = NONE if rstate == "-" else (
                    ACTIVE if rstate == "ESTABLISHED" else INACTIVE)
                k = kind(dclass, rclass)
                if k is not None:
                    cell = (k, dstate, rstate)
                    self.seconds[cell] = self.seconds.get(cell, 0.0) + PERIOD
                    now_counts[k] += 1
        for k, n in now_counts.items():
            self.peaks[k] = max(self.peaks[k], n)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(PERIOD)


def run_scenario(name: str, state: dict) -> Result:
    result = Result(name, state["mode"], "modern", 0.0)
    sampler = Sampler(state, result)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        SCENARIOS[name][1](state)
    finally:
        sampler.stop.set()
        thread.join()
    result.duration = time.monotonic() - sampler.start
    result.summary = summarize(result.samples, sampler.seconds, sampler.peaks)
    tcp = 3 if name == "idle-past-timeout" else 900
    result.cause = explain(sampler.seconds, tcp, 120)
    return result


def compare(names: list[str], modes: list[str], progress=None) -> list[Result]:
    results = []
    devnull = open("/dev/null", "w")
    for name in names:
        for mode in modes:          # a fresh lab each time: no leftovers between scenarios
            if progress is not None:
                progress.step(f"{name} {mode} (live)")
            netns.down(out=devnull)
            state = netns.up(mode, 2, 1, out=devnull)
            try:
                results.append(run_scenario(name, state))
            finally:
                netns.down(out=devnull)
    return results
