"""Engine benchmark: packets/s in NAT and DR against the CPython ceiling and a scapy loop,
RSS per 1M live connections, and the time to render `ipvsadm -L -n` with 1M connections.

    .venv/bin/python bench/engine.py [--packets 1000000] [--conns 1000000]
    PYVS_PURE=1 .venv/bin/python bench/engine.py     # the Python source, not the mypyc build

The trace: many short HTTP/1.0-style connections (handshake, request, response, close) and
some long ones that keep sending, interleaved.  In NAT the realservers' replies go through
the engine too; in DR only client->VIP packets exist, as on a real director.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyvs  # noqa: E402
from pyvs.core.craft import ACK, FIN, PSH, SYN, tcp  # noqa: E402
from pyvs.core.engine import IN, OUT, Director  # noqa: E402
from pyvs.core.forwarding import DROUTE, MASQ  # noqa: E402
from pyvs.core.packet import IP_ADDRS, TCP_HEAD, ip_to_int  # noqa: E402
from pyvs.views.listing import Fmt, list_all  # noqa: E402
from pyvs.views.snapshot import snapshot  # noqa: E402

VIP = ip_to_int("10.0.0.100")
RS = [ip_to_int("192.168.10.2"), ip_to_int("192.168.10.1")]   # rr order: newest first
CLIENT_BASE = ip_to_int("10.1.0.0")
PAYLOAD = b"x" * 100


def build_trace(n_packets: int, nat: bool) -> list[tuple[float, bytes, int]]:
    """(time, packet, direction); short connections, plus every 20th one long-lived."""
    short_in = [SYN, ACK, PSH | ACK, FIN | ACK, ACK]
    short_out = [SYN | ACK, PSH | ACK, FIN | ACK]
    templates: dict[tuple, bytes] = {}

    def pkt(src, sport, dst, dport, flags, payload=b""):
        # build once per flag/payload shape, then patch addresses and ports in place
        key = (flags, len(payload), src == VIP or src in RS)
        base = templates.get(key)
        if base is None:
            base = tcp(1, 1, 2, 2, flags, payload=payload)
            templates[key] = base
        b = bytearray(base)
        struct.pack_into("!II", b, 12, src, dst)
        struct.pack_into("!HH", b, 20, sport, dport)
        return bytes(b)

    trace: list[tuple[float, bytes, int]] = []
    t = 0.0
    conn = 0
    longs: list[tuple[int, int, int]] = []
    while len(trace) < n_packets:
        client = CLIENT_BASE + (conn >> 14)
        cport = 1024 + (conn & 0x3FFF)
        rs = RS[conn % 2]
        if conn % 20 == 0:
            trace.append((t, pkt(client, cport, VIP, 80, SYN), IN))
            if nat:
                trace.append((t, pkt(rs, 80, client, cport, SYN | ACK), OUT))
            trace.append((t, pkt(client, cport, VIP, 80, ACK), IN))
            longs.append((client, cport, rs))
        else:
            outs = iter(short_out)
            for flags in short_in:
                trace.append((t, pkt(client, cport, VIP, 80, flags,
                                     PAYLOAD if flags & PSH else b""), IN))
                if nat and flags != ACK:
                    o = next(outs)
                    trace.append((t, pkt(rs, 80, client, cport, o,
                                         PAYLOAD if o & PSH else b""), OUT))
        for client_l, cport_l, rs_l in longs[-50:][::7]:
            trace.append((t, pkt(client_l, cport_l, VIP, 80, PSH | ACK, PAYLOAD), IN))
            if nat:
                trace.append((t, pkt(rs_l, 80, client_l, cport_l, ACK), OUT))
        conn += 1
        t += 0.0005
    return trace[:n_packets]


def bench_engine(trace, fwd: int) -> float:
    d = Director()
    svc = d.add_service(6, VIP, 80, scheduler="rr")
    for addr in reversed(RS):
        d.add_dest(svc, addr, 80, fwd)
    receive = d.receive
    gc.disable()
    start = time.perf_counter()
    for now, data, direction in trace:
        receive(data, now, direction)
    elapsed = time.perf_counter() - start
    gc.enable()
    return len(trace) / elapsed


def bench_parse(trace) -> float:
    """The CPython ceiling: parse exactly the header fields the engine needs, nothing else."""
    unpack_ip, unpack_tcp = IP_ADDRS.unpack_from, TCP_HEAD.unpack_from
    keys = {}
    start = time.perf_counter()
    for _now, data, _direction in trace:
        ihl = (data[0] & 15) << 2
        tot_len, frag, proto, saddr, daddr = unpack_ip(data)
        sport, dport, flags = unpack_tcp(data, ihl)
        keys[proto, saddr, sport, daddr, dport] = flags      # the lookup key, stored
    return len(trace) / (time.perf_counter() - start)


def bench_scapy(trace, n: int = 20000) -> float:
    from scapy.layers.inet import IP, TCP
    sample = trace[:n]
    start = time.perf_counter()
    for _now, data, _direction in sample:
        p = IP(data)
        (p.src, p.dst, p[TCP].sport, p[TCP].dport, p[TCP].flags)
    return len(sample) / (time.perf_counter() - start)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_table(n_conns: int) -> tuple[float, float, float]:
    """(MiB RSS for n live connections, -L -n render ms, build seconds)."""
    gc.collect()
    before = rss_kib()
    d = Director()
    svc = d.add_service(6, VIP, 80, scheduler="wlc")
    for addr in RS:
        d.add_dest(svc, addr, 80, DROUTE)
    syn = bytearray(tcp(1, 1, VIP, 80, SYN))
    start = time.perf_counter()
    for i in range(n_conns):
        struct.pack_into("!I", syn, 12, CLIENT_BASE + (i >> 14))
        struct.pack_into("!H", syn, 20, 1024 + (i & 0x3FFF))
        d.receive(syn, 0.0, IN)
    built = time.perf_counter() - start
    gc.collect()
    used = (rss_kib() - before) / 1024
    assert d.connection_count() == n_conns
    start = time.perf_counter()
    text = list_all(snapshot(d, 1.0, connections=False), Fmt.NUMERIC)
    render_ms = (time.perf_counter() - start) * 1000
    assert "ActiveConn" in text
    return used, render_ms, built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--conns", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    print(f"python {sys.version.split()[0]}, engine {pyvs.ENGINE} (PYVS_PURE=1: python), "
          f"{args.packets} packets per trace, median of {args.runs} runs "
          "(ratios: median of paired runs)")
    # the table first, in a fresh process: RSS grown by the traces would hide its cost
    used, render_ms, built = bench_table(args.conns)
    per_conn = used * 1024 * 1024 / args.conns
    print(f"{args.conns:,} live connections: {used:.0f} MiB RSS "
          f"({per_conn:.0f} B/conn, {per_conn:.0f} MB = {per_conn / 1.048576:.0f} MiB per 1M), "
          f"built in {built:.1f} s; ipvsadm -L -n render {render_ms:.2f} ms")
    results = {}
    for mode, fwd in (("NAT", MASQ), ("DR", DROUTE)):
        trace = build_trace(args.packets, nat=fwd == MASQ)
        # engine and parse runs alternate, so each ratio compares runs of the same moment
        # (this VM's speed drifts by tens of percent from minute to minute)
        pairs = [(bench_engine(trace, fwd), bench_parse(trace)) for _ in range(args.runs)]
        eng = statistics.median(e for e, _ in pairs)
        parse = statistics.median(p for _, p in pairs)
        ratio = statistics.median(e / p for e, p in pairs)
        results[mode] = (eng, ratio)
        print(f"{mode:3s} engine {eng:10,.0f} pkt/s   bare parse {parse:10,.0f} pkt/s   "
              f"engine/parse {ratio:.2f}")
    scapy = bench_scapy(trace)
    eng_nat = results["NAT"][0]
    print(f"scapy parse {scapy:10,.0f} pkt/s   NAT engine/scapy {eng_nat / scapy:.1f}x")
    ok = (eng_nat >= 300_000, results["NAT"][1] >= 0.5, eng_nat >= 20 * scapy,
          per_conn <= 300, render_ms < 50)
    names = ("NAT >= 300k pkt/s", "engine >= 0.5x parse", "engine >= 20x scapy",
             "1M conns <= 300 MB", "-L -n < 50 ms")
    print("targets: " + ", ".join(f"{n}: {'met' if o else 'MISSED'}" for n, o in zip(names, ok)))


if __name__ == "__main__":
    main()
