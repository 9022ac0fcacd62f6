"""Live director throughput in the namespace lab (root; netfilterqueue installed).

Configurations, each run in a fresh lab, each part bounded (--seconds):
  (a) kernel   plain forwarding through the director namespace, no queue (client -> rs1)
  (b) bare     the same path with every packet through a Python netfilterqueue loop that
               accepts everything (the same hooks pyvs uses, both directions)
  (b2) bare+payload  the same loop handing every packet back with set_payload (unchanged
               bytes): the floor of any rewriting director (the kernel re-checks checksums
               of a packet given back, and everything here shares 2 cores)
  (b3) bare3   the accept-all loop on pyvs's own binding (pyvs.drivers.nfqueue): bursts in,
               batched verdicts out; with the queue's GSO flag (--gso on, the default), or
               without it (--gso off: bare3-nogso), or both side by side (--gso both)
  (c) NAT      pyvs run, LVS-NAT (client -> VIP -> rs1 and back through the director)
  (d) DR       pyvs run, LVS-DR (client -> VIP -> rs1; replies go straight to the client)
With --own-loop, also (experimental: what the engine achieves on the binding):
  (c3) nat3    a minimal NAT director loop, pyvs's engine on pyvs's binding
  (d3) dr3     the same loop, LVS-DR

Bulk: one client streams to rs1's discard port.  packets/s = queued packets: the queue's
id_sequence (/proc/net/netfilter/nfnetlink_queue) for (b)-(d3), the director's rx_packets
for (a) (GSO super-packets there).  With GSO one queued packet carries up to 64 KiB, so the
figure to compare across configurations is segments/s: the TCP segments the peers sent
through the director (TcpOutSegs of the client, and of rs1 where its replies cross the
director), which counts a GSO packet as the MTU-sized packets it stands for.
Connections: --procs client processes connect, read the name, close, to rs1:8080.
Every queue's drop counters (queue_dropped + user_dropped) are read before its program
stops; a run with drops is marked "drops=N" (the loops on pyvs's binding run without
FAIL_OPEN here so that an overrun shows as drops).  Prints the medians of --runs runs
and the ratios; the runs go round-robin over the configurations.

    .venv/bin/python bench/live.py [--runs 3] [--seconds 3] [--procs 4] [--gso on|off|both]
    .venv/bin/python bench/live.py --own-loop --gso both  # adds (c3) and (d3), GSO and not
    PYVS_PURE=1 .venv/bin/python bench/live.py     # the director on the Python source
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

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
          "nat": "(c)", "dr": "(d)", "nat3": "(c3)", "dr3": "(d3)"}
NOGSO = "-nogso"                                # suffix: the same without the GSO flag
BARE = ("bare", "bare+payload", "bare3")        # queue rules of their own, to rs1 directly
OWN_LOOP = ("bare3", "nat3", "dr3")             # programs on pyvs's binding (--loop)


@dataclass
class Run:
    mbit: float
    pps: float                  # queued packets/s (rx_packets for the kernel)
    segs: float                 # TCP segments/s through the director
    conns: float
    drops: int                  # queue_dropped + user_dropped, both parts


def queue_line() -> dict[str, int] | None:
    text = exec_in(netns.ns("d"), "cat", "/proc/net/netfilter/nfnetlink_queue", check=False)
    names = ("queue", "portid", "waiting", "copy_mode", "copy_range", "queue_dropped",
             "user_dropped", "id_sequence")
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "0":
            return dict(zip(names, map(int, fields)))
    return None


def queued() -> int:
    line = queue_line()
    return line["id_sequence"] if line else 0


def dropped() -> int:
    line = queue_line()
    return line["queue_dropped"] + line["user_dropped"] if line else 0


def rx_packets() -> int:
    return sum(int(exec_in(netns.ns("d"), "cat", f"/sys/class/net/{dev}/statistics/rx_packets")
                   or 0) for dev in ("eth0", "eth1"))


def out_segs(host: str) -> int:
    lines = [line.split() for line in exec_in(netns.ns(host), "cat", "/proc/net/snmp")
             .splitlines() if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


def client(script: str, *args: str) -> int:
    out = exec_in(netns.ns("c1"), sys.executable, "-c", script, *args, check=False,
                  timeout=60).strip()
    return int(out or 0)


def wait_bound(proc: subprocess.Popen) -> None:
    for _ in range(100):
        if queue_line() is not None:
            return
        if proc.poll() is not None:
            raise SystemExit("bench/live.py: the queue program exited before binding")
        time.sleep(0.05)
    raise SystemExit("bench/live.py: the queue program did not bind queue 0 within 5 s")


def measure(name: str, seconds: float, procs: int) -> Run:
    """One run of a configuration in a fresh lab."""
    config, gso = name.removesuffix(NOGSO), not name.endswith(NOGSO)
    mode = "dr" if config in ("dr", "dr3") else "nat"
    devnull = open(os.devnull, "w")
    netns.down(out=devnull)
    state = netns.up(mode, 1, 1, out=devnull, director=config in ("nat", "dr"))
    helper = None
    try:
        target = state["realservers"][0] if config in ("kernel", *BARE) else state["vip"]
        if config in BARE:
            rs = state["realservers"][0]
            for rule in (["raw", "PREROUTING", "-d", rs, "-j", "CT", "--notrack"],
                         ["raw", "PREROUTING", "-s", rs, "-j", "CT", "--notrack"],
                         ["mangle", "PREROUTING", "-d", rs, "-p", "tcp", "-j", "NFQUEUE",
                          "--queue-num", "0", "--queue-bypass"],
                         ["mangle", "POSTROUTING", "-s", rs, "-p", "tcp", "-j", "NFQUEUE",
                          "--queue-num", "0", "--queue-bypass"]):
                exec_in(netns.ns("d"), "iptables", "-t", rule[0], "-A", *rule[1:])
        if config in OWN_LOOP:
            cmd = [sys.executable, os.path.abspath(__file__), "--loop",
                   config.rstrip("3"), *([] if gso else ["--no-gso"])]
        elif config in ("bare", "bare+payload"):
            cmd = [sys.executable, "-c", f"PAYLOAD = {config == 'bare+payload'}\n" + ACCEPT_ALL]
        if config in (*BARE, "nat3", "dr3"):
            helper = subprocess.Popen(["ip", "netns", "exec", netns.ns("d"), *cmd],
                                      stdout=subprocess.PIPE, text=True)
            wait_bound(helper)
        count = rx_packets if config == "kernel" else queued
        peers = ("c1",) if mode == "dr" else ("c1", "r1")
        before, segs0, t0 = count(), sum(map(out_segs, peers)), time.monotonic()
        sent = client(SENDER, target, str(seconds))
        elapsed = time.monotonic() - t0
        pps = (count() - before) / elapsed
        segs = (sum(map(out_segs, peers)) - segs0) / elapsed
        conns = client(CONNECTOR, target, str(seconds), str(procs)) / seconds
        return Run(sent * 8 / elapsed / 1e6, pps, segs, conns, dropped())
    finally:
        if helper is not None:
            helper.terminate()
            helper.wait()
        netns.down(out=devnull)


# ---------------------------------------------------------------------- --loop (in netns)
def own_loop(kind: str, gso: bool) -> None:
    """A queue program on pyvs's binding, run in the director's namespace: `bare` accepts
    everything; `nat`/`dr` is a minimal director: the lab's services in pyvs's engine,
    pyvs run's iptables rules and routes, one burst in, its verdicts out, timers between."""
    from pyvs.config import load
    from pyvs.core.engine import IN, OUT
    from pyvs.core.verdict import ACCEPT
    from pyvs.drivers import netfilter
    from pyvs.drivers.nfqueue import NF_INET_POST_ROUTING, Queue, finish_checksum

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    setup = None
    if kind != "bare":
        config = netns.STATE_DIR / f"bench-{kind}.yaml"
        config.write_text(netns.config_yaml(kind, 1))
        director = load(config).build(0.0)
        setup = netfilter.Setup(director, 0, fail_closed=False)
        setup.apply()
    q = Queue(0, gso=gso, fail_open=False)
    try:
        if kind == "bare":
            while not stop:                 # (a bounded wait: SIGTERM may come just before it)
                for p in q.receive(0.5):
                    q.accept(p.id)
                q.flush()
            return
        t0 = time.monotonic()
        receive, accept, drop = director.receive, q.accept, q.drop
        while not stop:
            timer = director.next_timer()
            now = time.monotonic() - t0
            packets = q.receive(0.5 if timer is None else min(0.5, max(timer - now, 0.001)))
            now = time.monotonic() - t0
            for p in packets:
                v = receive(p.payload, now, OUT if p.hook == NF_INET_POST_ROUTING else IN,
                            p.mark)
                if v.action != ACCEPT:
                    drop(p.id)
                elif v.data is None:
                    accept(p.id, v.mark or None)
                else:
                    accept(p.id, None, finish_checksum(v.data) if p.needs_checksum
                           else v.data)
            q.flush()
            if not packets and timer is not None and now >= timer:
                director.handle_timers(now)
    finally:
        print(json.dumps({"received": q.received, "errors": q.errors}), flush=True)
        q.close()
        if setup is not None and setup.owned:
            netfilter.undo(setup.path)


# ---------------------------------------------------------------------- report
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--gso", choices=("on", "off", "both"), default="on",
                    help="the loops on pyvs's binding with the queue's GSO flag, without, "
                    "or both")
    ap.add_argument("--no-gso", action="store_true", help=argparse.SUPPRESS)   # for --loop
    ap.add_argument("--own-loop", action="store_true",
                    help="also (c3)/(d3): pyvs's engine on pyvs's binding (experimental)")
    ap.add_argument("--only", help=argparse.SUPPRESS)       # e.g. --only bare,bare3
    ap.add_argument("--loop", choices=("bare", "nat", "dr"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loop:
        own_loop(args.loop, not args.no_gso)
        return
    if os.geteuid() != 0:
        sys.exit("bench/live.py needs root (network namespaces, NFQUEUE)")
    configs = []
    for c in LABELS:
        if c in OWN_LOOP:
            if c != "bare3" and not args.own_loop:
                continue
            configs += {"on": [c], "off": [c + NOGSO], "both": [c, c + NOGSO]}[args.gso]
        else:
            configs.append(c)
    if args.only:
        configs = [c for c in configs if c in args.only.split(",")]
    print(f"pyvs engine {pyvs.ENGINE} (PYVS_PURE=1: python), {args.runs} runs of "
          f"{args.seconds:g} s per configuration, medians; {NOGSO}: pyvs's binding without "
          "the GSO flag")
    # round-robin: run i of every configuration, then run i + 1, so that a slow spell of
    # the shared machine hits all configurations alike rather than one of them
    runs: dict[str, list[Run]] = {c: [] for c in configs}
    for _ in range(args.runs):
        for config in configs:
            runs[config].append(measure(config, args.seconds, args.procs))
    med: dict[str, Run] = {}
    for config in configs:
        med[config] = Run(*(statistics.median(getattr(r, f) for r in runs[config])
                            for f in ("mbit", "pps", "segs", "conns", "drops")))
        m = med[config]
        print(f"{LABELS[config.removesuffix(NOGSO)]:<4} {config:<12} bulk {m.mbit:8.0f} Mbit/s"
              f"  {m.pps:9,.0f} "
              f"packets/s through the director  {m.segs:9,.0f} segments/s  {m.conns:7,.0f} "
              "conn/s   runs: " + " ".join(
                  f"{r.pps:,.0f}pps/{r.segs:,.0f}sps/{r.conns:,.0f}cps/{r.mbit:,.0f}Mbps"
                  + (f"/drops={r.drops}" if r.drops else "") for r in runs[config]))
    report(med)


def report(med: dict[str, Run]) -> None:
    """The ratios and the targets, from the medians."""
    b = med.get("bare")
    if b is None:
        return
    for name in ("nat", "dr"):
        if name in med:
            m = med[name]
            print(f"{name}/bare: packets/s {ratio(m.pps, b.pps)}, conn/s {ratio(m.conns, b.conns)}")
    if "nat" in med and "bare+payload" in med:
        print(f"nat/(bare+payload): packets/s {ratio(med['nat'].pps, med['bare+payload'].pps)}")
    if "kernel" in med:
        print(f"bare/kernel: conn/s {ratio(b.conns, med['kernel'].conns)}, bulk "
              f"{ratio(b.mbit, med['kernel'].mbit)}")
    pairs = [(n + v, b + (v if b == "bare3" else "")) for v in ("", NOGSO)
             for n, b in (("bare3", "bare"), ("nat3", "bare"), ("nat3", "bare3"),
                          ("dr3", "bare"), ("dr3", "bare3"))]
    for name, base in pairs:
        if name in med and base in med:
            m, o = med[name], med[base]
            print(f"{name}/{base}: segments/s {ratio(m.segs, o.segs)}, packets/s "
                  f"{ratio(m.pps, o.pps)}, conn/s {ratio(m.conns, o.conns)}, bulk "
                  f"{ratio(m.mbit, o.mbit)}")
    if "nat" in med:
        r = med["nat"].pps / b.pps
        print(f"target: pyvs NAT >= 0.8 x the bare loop in packets/s: "
              f"{'met' if r >= 0.8 else 'MISSED'} ({r:.2f})")
    for name, base, want in [(n + v, b + (v if b == "bare3" else ""), w)
                             for v in ("", NOGSO)
                             for n, b, w in (("nat3", "bare", 1.0), ("nat3", "bare3", 0.8),
                                             ("dr3", "bare", 1.2))]:
        if name in med and base in med:
            r = med[name].segs / med[base].segs
            print(f"target: {name} >= {want} x {base} in segments/s: "
                  f"{'met' if r >= want else 'MISSED'} ({r:.2f})")
    dropping = [c for c in med if med[c].drops]
    print("queue drops: " + (", ".join(f"{c} (median {med[c].drops:g})" for c in dropping)
                             if dropping else "none in any median"))


if __name__ == "__main__":
    main()
