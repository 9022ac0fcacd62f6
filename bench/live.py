"""Live director throughput in the namespace lab (root; netfilterqueue installed).

Four configurations, each in a fresh lab, each run bounded (--seconds per part):
  (a) kernel   plain forwarding through the director namespace, no queue (client -> rs1)
  (b) bare     the same path with every packet through a Python netfilterqueue loop that
               accepts everything (the same hooks pyvs uses, both directions)
  (b2) bare+payload  the same loop handing every packet back with set_payload (unchanged
               bytes): the floor of any rewriting director (the kernel re-checks checksums
               of a packet given back, and everything here shares 2 cores)
  (c) NAT      pyvs run, LVS-NAT (client -> VIP -> rs1 and back through the director)
  (d) DR       pyvs run, LVS-DR (client -> VIP -> rs1; replies go straight to the client)

Bulk: one client streams to rs1's discard port.  packets/s = packets that went through the
director: the queue's id_sequence (/proc/net/netfilter/nfnetlink_queue) for (b)-(d), the
director's rx_packets for (a) (GSO super-packets there, so (a)'s packets/s is low).
Connections: --procs client processes connect, read the name, close, to rs1:8080.
Prints the medians of --runs runs and the ratios c/b, d/b, b/a.

    .venv/bin/python bench/live.py [--runs 3] [--seconds 3] [--procs 4]
    PYVS_PURE=1 .venv/bin/python bench/live.py     # the director on the Python source
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

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


def queued() -> int:
    text = exec_in(netns.ns("d"), "cat", "/proc/net/netfilter/nfnetlink_queue").split()
    return int(text[7]) if len(text) > 7 else 0


def rx_packets() -> int:
    return sum(int(exec_in(netns.ns("d"), "cat", f"/sys/class/net/{dev}/statistics/rx_packets")
                   or 0) for dev in ("eth0", "eth1"))


def client(script: str, *args: str) -> int:
    out = exec_in(netns.ns("c1"), sys.executable, "-c", script, *args, check=False,
                  timeout=60).strip()
    return int(out or 0)


def measure(config: str, seconds: float, procs: int) -> tuple[float, float, float]:
    """(bulk Mbit/s, packets/s through the director, connections/s) for one fresh lab."""
    mode = "dr" if config == "dr" else "nat"
    devnull = open(os.devnull, "w")
    netns.down(out=devnull)
    state = netns.up(mode, 1, 1, out=devnull, director=config in ("nat", "dr"))
    helper = None
    try:
        target = state["vip"] if config in ("nat", "dr") else state["realservers"][0]
        if config in ("bare", "bare+payload"):
            rs = state["realservers"][0]
            for rule in (["raw", "PREROUTING", "-d", rs, "-j", "CT", "--notrack"],
                         ["raw", "PREROUTING", "-s", rs, "-j", "CT", "--notrack"],
                         ["mangle", "PREROUTING", "-d", rs, "-p", "tcp", "-j", "NFQUEUE",
                          "--queue-num", "0", "--queue-bypass"],
                         ["mangle", "POSTROUTING", "-s", rs, "-p", "tcp", "-j", "NFQUEUE",
                          "--queue-num", "0", "--queue-bypass"]):
                exec_in(netns.ns("d"), "iptables", "-t", rule[0], "-A", *rule[1:])
            program = f"PAYLOAD = {config == 'bare+payload'}\n" + ACCEPT_ALL
            helper = subprocess.Popen(["ip", "netns", "exec", netns.ns("d"), sys.executable, "-c",
                                       program])
            time.sleep(0.5)
        count = rx_packets if config == "kernel" else queued
        before, t0 = count(), time.monotonic()
        sent = client(SENDER, target, str(seconds))
        elapsed = time.monotonic() - t0
        pps = (count() - before) / elapsed
        conns = client(CONNECTOR, target, str(seconds), str(procs)) / seconds
        return sent * 8 / elapsed / 1e6, pps, conns
    finally:
        if helper is not None:
            helper.terminate()
            helper.wait()
        netns.down(out=devnull)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=4)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/live.py needs root (network namespaces, NFQUEUE)")
    print(f"pyvs engine {pyvs.ENGINE} (PYVS_PURE=1: python), {args.runs} runs of "
          f"{args.seconds:g} s per configuration, medians")
    medians = {}
    labels = {"kernel": "(a)", "bare": "(b)", "bare+payload": "(b2)", "nat": "(c)", "dr": "(d)"}
    for config in labels:
        runs = [measure(config, args.seconds, args.procs) for _ in range(args.runs)]
        med = tuple(statistics.median(r[i] for r in runs) for i in range(3))
        medians[config] = med
        print(f"{labels[config]:<4} {config:<12} "
              f"bulk {med[0]:8.0f} Mbit/s  {med[1]:9,.0f} packets/s through the director  "
              f"{med[2]:7,.0f} conn/s   runs: "
              + " ".join(f"{r[1]:,.0f}pps/{r[2]:,.0f}cps" for r in runs))
    b = medians["bare"]
    for name in ("nat", "dr"):
        m = medians[name]
        print(f"{name}/bare: packets/s {m[1] / b[1]:.2f}, conn/s {m[2] / b[2]:.2f}")
    print(f"nat/(bare+payload): packets/s "
          f"{medians['nat'][1] / medians['bare+payload'][1]:.2f}")
    print(f"bare/kernel: conn/s {b[2] / medians['kernel'][2]:.2f}, bulk "
          f"{b[0] / medians['kernel'][0]:.2f}")
    ratio = medians["nat"][1] / b[1]
    print(f"target: pyvs NAT >= 0.8 x the bare loop in packets/s: "
          f"{'met' if ratio >= 0.8 else 'MISSED'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
