"""`pyvs compare --live`: the accuracy comparison on real TCP stacks, in the namespace lab
or on a cluster over ssh (the Vagrant VMs).

The scenario drives real tools from the client (curl, Python sockets), and every 0.25 s
the director's table and `ss -tan` on each realserver are read.  A sample is kept only if the
director's table did not change while `ss` ran (read, ss, read again), so both sides are
seen at one instant.  The report is the simulated comparison's (same Result, same table).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..core import states as S
from ..sim.run import Result, Sample, summarize
from ..sim.truth import ACTIVE, INACTIVE, KINDS, NONE, explain, kind
from . import netns
from .cluster import Cluster, Namespaces

SERVICE_PORTS = {80, 23, 21} | set(range(30000, 31000))     # 30000.. : the ftp data ports
PERIOD = 0.25
QUIET_LIMIT = 150.0         # the director keeps TIME_WAIT/FIN_WAIT 120 s after a scenario


def _client(cluster: Cluster, script: str, *args: str, timeout: float = 30) -> str:
    return cluster.run("client", cluster.python, "-c", script, cluster.vip, *args,
                       timeout=timeout, check=False)


def _curl(cluster: Cluster, max_time: float = 5) -> None:
    cluster.run("client", "curl", "-s", "-o", "/dev/null", "--max-time", str(max_time),
                f"http://{cluster.vip}/", timeout=max_time + 5, check=False)


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


def http10(cluster: Cluster) -> None:
    for _ in range(6):
        _curl(cluster)
        time.sleep(1)
    time.sleep(3)


def held(cluster: Cluster) -> None:
    _client(cluster, HOLD, "4")
    time.sleep(3)


def client_rst(cluster: Cluster) -> None:
    _client(cluster, RST)
    time.sleep(2)


def bad_routing(cluster: Cluster) -> None:
    """The realservers' replies go nowhere (a wrong default gateway, the LVS-HOWTO's
    "incorrect routing")."""
    blackhole = ("blackhole", f"{cluster.client}/32")
    for host in cluster.realservers.values():
        cluster.run(host, "ip", "route", "add", *blackhole)
    try:
        threads = [threading.Thread(target=_curl, args=(cluster, 4)) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.5)
        for t in threads:
            t.join()
    finally:
        for host in cluster.realservers.values():
            cluster.run(host, "ip", "route", "del", *blackhole, check=False)
    time.sleep(2)


def idle_past_timeout(cluster: Cluster) -> None:
    """`--set 3 0 0`, a held connection idle 5 s: the director forgets it, the realserver
    does not; the client's logout then gets an RST (NAT) or ICMP unreachable (DR)."""
    cluster.set_timeouts(3)
    try:
        _client(cluster, HOLD, "5")
        time.sleep(2)
    finally:
        cluster.set_timeouts(900)


SCENARIOS: dict[str, tuple[str, Callable[[Cluster], None]]] = {
    "http10": ("six curl fetches 1 s apart (python http.server closes first)", http10),
    "held": ("a telnet-like connection held 4 s, then logout (the server closes)", held),
    "client-rst": ("three connections aborted by the client with SO_LINGER 0", client_rst),
    "bad-routing": ("realservers' replies blackholed: handshakes never complete",
                    bad_routing),
    "idle-past-timeout": ("--set 3: a connection idle 5 s, past the director's timeout",
                          idle_past_timeout),
}


def _shape(snap: dict) -> tuple:
    """What a sample compares: each entry's state and each realserver's counters (not the
    seconds left, which tick while a slow read over ssh runs)."""
    return (sorted((c["client"], c["dest"], c["state"], c["template"])
                   for c in snap["connections"]),
            [(d["address"], d["port"], d["active"], d["inactive"])
             for s in snap["services"] for d in s["dests"]])


class Sampler:
    def __init__(self, cluster: Cluster, result: Result) -> None:
        self.cluster = cluster
        self.result = result
        self.seconds: dict[tuple[str, str, str], float] = {}
        self.peaks: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.stop = threading.Event()
        self.start = time.monotonic()

    def _ss(self) -> dict[str, list[tuple[str, str]]]:
        return {addr: self.cluster.sockets(host, SERVICE_PORTS)
                for addr, host in self.cluster.realservers.items()}

    def sample(self) -> None:
        for _ in range(5):
            before = self.cluster.table()
            ss = self._ss()
            after = self.cluster.table()
            if _shape(before) == _shape(after):
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


def run_scenario(name: str, cluster: Cluster) -> Result:
    result = Result(name, cluster.mode, "modern", 0.0)
    sampler = Sampler(cluster, result)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        SCENARIOS[name][1](cluster)
    finally:
        sampler.stop.set()
        thread.join()
    result.duration = time.monotonic() - sampler.start
    result.summary = summarize(result.samples, sampler.seconds, sampler.peaks)
    tcp = 3 if name == "idle-past-timeout" else 900
    result.cause = explain(sampler.seconds, tcp, 120)
    return result


def compare(names: list[str], modes: list[str], progress=None) -> list[Result]:
    """Each scenario in each mode on a namespace lab built afresh for it, so nothing is
    left over from the one before."""
    results = []
    devnull = open("/dev/null", "w")
    for name in names:
        for mode in modes:
            if progress is not None:
                progress.step(f"{name} {mode} (live)")
            netns.down(out=devnull)
            state = netns.up(mode, 2, 1, out=devnull)
            try:
                results.append(run_scenario(name, Namespaces(state)))
            finally:
                netns.down(out=devnull)
    return results


def compare_on(cluster: Cluster, names: list[str], progress=None) -> list[Result]:
    """Each scenario on a standing cluster (VMs over ssh), in the mode it was built for;
    before each, wait until what the last one left has expired on both sides."""
    results = []
    for name in names:
        if progress is not None:
            progress.step(f"{name} {cluster.mode} (live; first waiting for a quiet cluster)")
        cluster.wait_quiet(SERVICE_PORTS, QUIET_LIMIT)
        results.append(run_scenario(name, cluster))
    return results
