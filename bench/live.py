"""Live director throughput in the namespace lab (root; netfilterqueue installed).

Configurations, each run in a fresh lab, each part bounded (--seconds):
  (a) kernel   plain forwarding through the director namespace, no queue (client -> rs1)
  (b) bare     the same path with every packet through a Python netfilterqueue loop that
               accepts everything (the same hooks pyvs uses, both directions)
  (b2) bare+payload  the same loop handing every packet back with set_payload (unchanged
               bytes)
  (b3) bare3   the accept-all loop on pyvs's own binding (pyvs.drivers.nfqueue), set up as
               `pyvs run` sets it up (GSO, heads of 576 bytes copied): bursts in, batched
               verdicts out; with the queue's GSO flag (--gso on, the default), without it
               (--gso off: bare3-nogso), or both side by side (--gso both)
  (b4) bare3+payload  that loop handing every packet back as bytes, unchanged (partial
               checksums completed, which the kernel takes as final in a changed packet):
               the floor of any rewriting director on NFQUEUE, whose payload verdicts
               carry whole packets (the kernel makes each one linear and copies it in)
  (c) nat      pyvs run, LVS-NAT (client -> VIP -> rs1 and back through the director)
  (d) dr       pyvs run, LVS-DR (client -> VIP -> rs1; replies go straight to the client)
  (e) nat-qN, dr-qN  pyvs run --queues N (--queues, default 2): N worker processes, one
               queue each; the lab has N clients, whose addresses the queues split between
               them, and the bulk senders and the connecting processes run on all of them
               at once (the same total of --procs)
(c3)/(d3) of earlier versions, a minimal engine loop on the binding written before `pyvs
run` read the binding itself, are gone: `pyvs run` now runs the same loop inside its
selector loop, and measured at least as much (2026-12-01, `--runs 3`, pyvs run copying
heads, the old loops whole packets: NAT 232k segments/s against 131k, DR 457k against
226k; the director's CPU per connection 83-143 us against 68-110 us, within the noise).

Bulk: one client streams to rs1's discard port.  packets/s = queued packets: the queues'
id_sequence (/proc/net/netfilter/nfnetlink_queue, every queue) for (b)-(e), the director's
rx_packets for (a) (GSO super-packets there).  With GSO one queued packet carries up to
64 KiB, so the figure to compare across configurations is segments/s: the TCP segments the
peers sent through the director (TcpOutSegs of the clients, and of rs1 where its replies
cross the director), the packets on the wire, which counts a GSO packet as the MTU-sized
packets it stands for.  The targets are read in segments/s.
Connections: --procs client processes connect, read the name, close, to rs1:8080.
Every queue's drop counters (queue_dropped + user_dropped) are read before its program
stops; a run with drops is marked "drops=N" (the loops on pyvs's binding run without
FAIL_OPEN here so that an overrun shows as drops; `pyvs run` fails open, and an overrun
of it would show as missing packets).  Prints the medians of --runs runs and the ratios;
the runs go round-robin over the configurations (a slow spell hits all alike).

    .venv/bin/python bench/live.py [--runs 3] [--seconds 3] [--procs 4] [--gso on|off|both]
    .venv/bin/python bench/live.py --runs 3 --gso both      # what docs/performance.md quotes
    PYVS_PURE=1 .venv/bin/python bench/live.py     # the director on the Python source
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import pyvs
from pyvs.lab import netns
from pyvs.lab.netns import exec_in

SENDER = """import socket, sys, time
s = socket.create_connection((sys.argv[1], 9), 5); buf = b"x" * 65536
end = time.monotonic() + float(sys.argv[2]); n = 0
while time.monotonic() < end: s.sendall(buf); n += len(buf)
s.close(); print(n)"""

CONNECTOR = """import multiprocessing, socket, sys, time
def worker(q):
    end = time.monotonic() + float(sys.argv[2]); n = 0
    while time.monotonic() < end:
        try:
            s = socket.create_connection((sys.argv[1], 8080), 2); s.recv(64); s.close(); n += 1
        except OSError: pass
    q.put(n)
q = multiprocessing.Queue(); ps = [multiprocessing.Process(target=worker, args=(q,))
                                    for _ in range(int(sys.argv[3]))]
[p.start() for p in ps]; print(sum(q.get() for _ in ps)); [p.join() for p in ps]"""

ACCEPT_ALL = """import signal, sys
from netfilterqueue import NetfilterQueue
def accept(p):
    if PAYLOAD: p.set_payload(p.get_payload())
    p.accept()
q = NetfilterQueue(); q.bind(0, accept, max_len=4096)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
try: q.run()
finally: q.unbind()"""

LABELS = {"kernel": "(a)", "bare": "(b)", "bare+payload": "(b2)", "bare3": "(b3)",
          "bare3+payload": "(b4)", "nat": "(c)", "dr": "(d)", "nat-q": "(e)", "dr-q": "(e)"}
NOGSO = "-nogso"                                # suffix: the same without the GSO flag
OWN_LOOP = ("bare3", "bare3+payload")           # loops on pyvs's binding (--loop)
PYVS = ("nat", "dr", "nat-q", "dr-q")           # pyvs run in the lab
HEAD = 576                                      # as pyvs.drivers.live.HEAD


@dataclass
class Run:
    mbit: float
    pps: float                  # queued packets/s (rx_packets for the kernel)
    segs: float                 # TCP segments/s through the director
    conns: float
    drops: int                  # queue_dropped + user_dropped, every queue, both parts


@dataclass(frozen=True)
class Setup:
    """How one configuration is built and driven."""

    name: str
    kind: str                   # the LABELS key
    gso: bool
    queues: int                 # the queues traffic goes through (0: none)

    @property
    def mode(self) -> str:
        return "dr" if self.kind.startswith("dr") else "nat"

    @property
    def clients(self) -> int:
        return max(1, self.queues) if self.kind in ("nat-q", "dr-q") else 1

    @property
    def run_args(self) -> tuple[str, ...]:
        return ("--queues", str(self.queues)) if self.kind in ("nat-q", "dr-q") else ()


def queue_lines() -> list[dict[str, int]]:
    """Every queue's line of /proc/net/netfilter/nfnetlink_queue in the director."""
    text = exec_in(netns.ns("d"), "cat", "/proc/net/netfilter/nfnetlink_queue", check=False)
    names = ("queue", "portid", "waiting", "copy_mode", "copy_range", "queue_dropped",
             "user_dropped", "id_sequence")
    return [dict(zip(names, map(int, line.split()))) for line in text.splitlines()
            if line.split()]


def queued() -> int:
    return sum(line["id_sequence"] for line in queue_lines())


def dropped() -> int:
    return sum(line["queue_dropped"] + line["user_dropped"] for line in queue_lines())


def rx_packets() -> int:
    return sum(int(exec_in(netns.ns("d"), "cat", f"/sys/class/net/{dev}/statistics/rx_packets")
                   or 0) for dev in ("eth0", "eth1"))


def out_segs(host: str) -> int:
    lines = [line.split() for line in exec_in(netns.ns(host), "cat", "/proc/net/snmp")
             .splitlines() if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


def on_clients(n: int, script: str, *args: str) -> int:
    """`script` on clients c1..cn at once; the sum of what each printed."""
    def one(k: int) -> int:
        out = exec_in(netns.ns(f"c{k}"), sys.executable, "-c", script, *args, check=False,
                      timeout=60).strip()
        return int(out or 0)
    with ThreadPoolExecutor(n) as pool:
        return sum(pool.map(one, range(1, n + 1)))


def wait_bound(proc: subprocess.Popen, queues: int = 1) -> None:
    for _ in range(100):
        if len(queue_lines()) >= queues:
            return
        if proc.poll() is not None:
            raise SystemExit("bench/live.py: the queue program exited before binding")
        time.sleep(0.05)
    raise SystemExit("bench/live.py: the queue program did not bind queue 0 within 5 s")


def bare_rules() -> None:
    """The bare loops' own rules: everything to and from rs1 through queue 0, untracked."""
    rs = netns.layout("nat", 1, 1)["realservers"][0]
    for rule in (["raw", "PREROUTING", "-d", rs, "-j", "CT", "--notrack"],
                 ["raw", "PREROUTING", "-s", rs, "-j", "CT", "--notrack"],
                 ["mangle", "PREROUTING", "-d", rs, "-p", "tcp", "-j", "NFQUEUE",
                  "--queue-num", "0", "--queue-bypass"],
                 ["mangle", "POSTROUTING", "-s", rs, "-p", "tcp", "-j", "NFQUEUE",
                  "--queue-num", "0", "--queue-bypass"]):
        exec_in(netns.ns("d"), "iptables", "-t", rule[0], "-A", *rule[1:])


def start_program(s: Setup) -> subprocess.Popen | None:
    """The bare loops, in the director's namespace (pyvs run is the lab's own)."""
    if s.kind in OWN_LOOP:
        cmd = [sys.executable, os.path.abspath(__file__), "--loop", s.kind,
               *([] if s.gso else ["--no-gso"])]
    elif s.kind in ("bare", "bare+payload"):
        cmd = [sys.executable, "-c", f"PAYLOAD = {s.kind == 'bare+payload'}\n" + ACCEPT_ALL]
    else:
        return None
    bare_rules()
    proc = subprocess.Popen(["ip", "netns", "exec", netns.ns("d"), *cmd],
                            stdout=subprocess.DEVNULL)
    wait_bound(proc)
    return proc


def measure(s: Setup, seconds: float, procs: int) -> Run:
    """One run of a configuration in a fresh lab."""
    devnull = open(os.devnull, "w")
    netns.down(out=devnull)
    state = netns.up(s.mode, 1, s.clients, out=devnull, director=s.kind in PYVS,
                     run_args=s.run_args)
    helper = None
    try:
        target = state["vip"] if s.kind in PYVS else state["realservers"][0]
        helper = start_program(s)
        count = rx_packets if s.kind == "kernel" else queued
        peers = [f"c{k}" for k in range(1, s.clients + 1)] + ([] if s.mode == "dr" else ["r1"])
        before, segs0, t0 = count(), sum(map(out_segs, peers)), time.monotonic()
        sent = on_clients(s.clients, SENDER, target, str(seconds))
        elapsed = time.monotonic() - t0
        pps = (count() - before) / elapsed
        segs = (sum(map(out_segs, peers)) - segs0) / elapsed
        each = str(max(1, procs // s.clients))
        conns = on_clients(s.clients, CONNECTOR, target, str(seconds), each) / seconds
        return Run(sent * 8 / elapsed / 1e6, pps, segs, conns, dropped())
    finally:
        if helper is not None:
            helper.terminate()
            helper.wait()
        netns.down(out=devnull)


# ---------------------------------------------------------------------- --loop (in netns)
def own_loop(kind: str, gso: bool) -> None:
    """A queue program on pyvs's binding, run in the director's namespace: `bare3` accepts
    everything; `bare3+payload` hands every packet back as bytes, as a director that
    rewrites them must (heads copied, the rest from the receive buffer, partial checksums
    completed).  No FAIL_OPEN, so an overrun is counted."""
    from pyvs.drivers.nfqueue import Queue, finish_checksum

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    q = Queue(0, gso=gso, fail_open=False, head=HEAD)
    payload = kind == "bare3+payload"
    try:
        while not stop:                 # (a bounded wait: SIGTERM may come just before it)
            for p in q.receive(0.5):
                if not payload:
                    q.accept(p.id)
                elif p.needs_checksum:
                    q.accept(p.id, payload=finish_checksum(p.payload + bytes(p.rest)))
                else:
                    q.accept(p.id, payload=p.payload, rest=p.rest)
            q.flush()
    finally:
        q.close()


# ---------------------------------------------------------------------- report
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def setups(args: argparse.Namespace) -> list[Setup]:
    """The configurations asked for, in the order they run in each round."""
    variants = {"on": [True], "off": [False], "both": [True, False]}[args.gso]
    out = []
    for kind in LABELS:
        if kind in OWN_LOOP:
            out += [Setup(kind + ("" if gso else NOGSO), kind, gso, 1) for gso in variants]
        elif kind in ("nat-q", "dr-q"):
            if args.queues > 1:
                out.append(Setup(f"{kind}{args.queues}", kind, True, args.queues))
        else:
            out.append(Setup(kind, kind, True, 0 if kind == "kernel" else 1))
    if args.only:
        out = [s for s in out if s.name in args.only.split(",")]
    return out


def run_all(configs: list[Setup], args: argparse.Namespace) -> dict[str, list[Run]]:
    """Round-robin: run i of every configuration, then run i + 1."""
    runs: dict[str, list[Run]] = {s.name: [] for s in configs}
    for _ in range(args.runs):
        for s in configs:
            runs[s.name].append(measure(s, args.seconds, args.procs))
    return runs


def medians(configs: list[Setup], runs: dict[str, list[Run]]) -> dict[str, Run]:
    med: dict[str, Run] = {}
    for s in configs:
        rs = runs[s.name]
        m = med[s.name] = Run(*(statistics.median(getattr(r, f.name) for r in rs)
                                for f in fields(Run)))
        print(f"{LABELS[s.kind]:<4} {s.name:<14} bulk {m.mbit:8.0f} Mbit/s  {m.pps:9,.0f} "
              f"packets/s through the director  {m.segs:9,.0f} segments/s  {m.conns:7,.0f} "
              "conn/s   runs: " + " ".join(
                  f"{r.pps:,.0f}pps/{r.segs:,.0f}sps/{r.conns:,.0f}cps/{r.mbit:,.0f}Mbps"
                  + (f"/drops={r.drops}" if r.drops else "") for r in rs))
    return med


def report(med: dict[str, Run], queues: int) -> None:
    """The ratios and the targets, from the medians."""
    b = med.get("bare")
    if b is not None:
        for name in ("nat", "dr"):          # the summary lines of every version
            if name in med:
                m = med[name]
                print(f"{name}/bare: packets/s {ratio(m.pps, b.pps)}, conn/s "
                      f"{ratio(m.conns, b.conns)}, segments/s {ratio(m.segs, b.segs)}, "
                      f"bulk {ratio(m.mbit, b.mbit)}")
        if "nat" in med and "bare+payload" in med:
            print(f"nat/(bare+payload): packets/s "
                  f"{ratio(med['nat'].pps, med['bare+payload'].pps)}")
        if "kernel" in med:
            print(f"bare/kernel: conn/s {ratio(b.conns, med['kernel'].conns)}, bulk "
                  f"{ratio(b.mbit, med['kernel'].mbit)}")
    nq, dq = f"nat-q{queues}", f"dr-q{queues}"
    pairs = [("bare3", "bare"), ("bare3+payload", "bare3"), ("nat", "bare3"),
             ("nat", "bare3+payload"), ("dr", "bare3"), (nq, "nat"), (dq, "dr"),
             (nq, "bare"), (nq, "bare3"), (dq, "bare"), (dq, "bare3"),
             ("bare3-nogso", "bare"), ("bare3+payload-nogso", "bare3-nogso"),
             ("bare3", "bare3-nogso")]
    for name, base in pairs:
        if name in med and base in med:
            m, o = med[name], med[base]
            print(f"{name}/{base}: segments/s {ratio(m.segs, o.segs)}, packets/s "
                  f"{ratio(m.pps, o.pps)}, conn/s {ratio(m.conns, o.conns)}, bulk "
                  f"{ratio(m.mbit, o.mbit)}")
    for name, base, want in (("nat", "bare", 1.0), ("nat", "bare3", 0.8), ("dr", "bare", 1.2),
                             (nq, "bare", 1.0), (nq, "bare3", 0.8), (dq, "bare", 1.2)):
        if name in med and base in med:
            r = med[name].segs / med[base].segs
            print(f"target: {name} >= {want} x {base} in packets on the wire (segments/s): "
                  f"{'met' if r >= want else 'MISSED'} ({r:.2f})")
    dropping = [c for c in med if med[c].drops]
    print("queue drops: " + (", ".join(f"{c} (median {med[c].drops:g})" for c in dropping)
                             if dropping else "none in any median"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--queues", type=int, default=2,
                    help="(e): pyvs run --queues N with N clients (1: leave (e) out)")
    ap.add_argument("--gso", choices=("on", "off", "both"), default="on",
                    help="the loops on pyvs's binding with the queue's GSO flag, without, "
                    "or both")
    ap.add_argument("--no-gso", action="store_true", help=argparse.SUPPRESS)   # for --loop
    ap.add_argument("--only", help=argparse.SUPPRESS)       # e.g. --only bare,bare3
    ap.add_argument("--loop", choices=OWN_LOOP, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loop:
        own_loop(args.loop, not args.no_gso)
        return
    if os.geteuid() != 0:
        sys.exit("bench/live.py needs root (network namespaces, NFQUEUE)")
    configs = setups(args)
    print(f"pyvs engine {pyvs.ENGINE} (PYVS_PURE=1: python), {args.runs} runs of "
          f"{args.seconds:g} s per configuration, medians; {NOGSO}: pyvs's binding without "
          "the GSO flag")
    report(medians(configs, run_all(configs, args)), args.queues)


if __name__ == "__main__":
    main()
