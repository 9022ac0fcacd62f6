"""A SYN flood against the engine, with and without the kernel's defenses, and what a
million-entry listing costs the packet path.

    .venv/bin/python bench/flood.py                       # 1M spoofed SYNs at 50k/s
    .venv/bin/python bench/flood.py --syns 100000         # smaller

Flood: spoofed SYNs (never answered) at --rate, interleaved with legitimate clients (one
new connection every --legit-every spoofed SYNs: handshake, a request, a close).  A
legitimate SYN that is dropped is sent again as Linux does (after 1, 3, 7 s); a client
that gets through within 7 s succeeded.  Each configuration runs in a process of its own,
so its peak RSS is its own.  Printed: the table's peak and final size, peak RSS, the
legitimate clients' success rate and extra delay, the engine's time per packet.

Listing: a director holding --entries entries streams its -Lnc listing in the loop's
slices (as the control socket does) while a timer stands for the packet path; printed:
the longest the packet path waited, per 100k entries listed, against the 10 ms target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyvs import ENGINE  # noqa: E402
from pyvs.core import commands as C  # noqa: E402
from pyvs.core.craft import ACK, FIN, PSH, SYN, tcp  # noqa: E402
from pyvs.core.engine import IN, OUT, Director  # noqa: E402
from pyvs.core.forwarding import MASQ  # noqa: E402
from pyvs.core.packet import IPPROTO_TCP, ip_to_int  # noqa: E402

VIP, RS1, RS2 = ip_to_int("10.0.0.100"), ip_to_int("192.168.10.1"), ip_to_int("192.168.10.2")
CLIENTS = ip_to_int("10.1.0.0")
SPOOF = ip_to_int("172.16.0.0")
RETRIES = (1.0, 3.0, 7.0)            # Linux's SYN retransmissions within 7 s
CONFIGS = {
    "none": {},
    "budget": {"memory": 100 << 20},
    "budget+defenses": {"memory": 100 << 20, "sysctls": {
        "drop_entry": 1, "drop_packet": 1, "secure_tcp": 1, "amemthresh": 8192}},
}


def director(config: dict) -> Director:
    d = Director(seed=1)
    for name, value in config.get("sysctls", {}).items():
        d.apply(C.SetSysctl(name, value), 0.0)
    svc = C.ServiceKey(IPPROTO_TCP, VIP, 80)
    d.apply(C.AddService(svc, "wlc"), 0.0)
    for rs in (RS1, RS2):
        d.apply(C.AddDest(svc, rs, 80, MASQ), 0.0)
    if config.get("memory"):
        d.set_memory_limit(config["memory"], 0.0)
    return d


class Timed:
    """The engine's receive, timed apart from crafting the packets."""

    def __init__(self, d: Director) -> None:
        self.d = d
        self.seconds = 0.0
        self.packets = 0

    def __call__(self, packet: bytes, now: float, direction: int):
        start = time.perf_counter()
        v = self.d.receive(packet, now, direction)
        self.seconds += time.perf_counter() - start
        self.packets += 1
        return v


def legit_exchange(rx: Timed, client: int, port: int, t: float) -> float | None:
    """A legitimate connection from t: its extra delay if it got through, else None."""
    for extra in (0.0, *RETRIES):
        v = rx(tcp(client, port, VIP, 80, SYN), t + extra, IN)
        if v.action == "accept":
            break
    else:
        return None
    when = t + extra
    cp = rx.d.find_conn(IPPROTO_TCP, client, port, VIP, 80)
    assert cp is not None
    rs = cp.daddr
    rx(tcp(rs, 80, client, port, SYN | ACK), when + 0.001, OUT)
    rx(tcp(client, port, VIP, 80, ACK), when + 0.002, IN)
    rx(tcp(client, port, VIP, 80, PSH | ACK, payload=b"GET /"), when + 0.003, IN)
    rx(tcp(client, port, VIP, 80, FIN | ACK), when + 0.004, IN)
    return extra


def one_flood(name: str, syns: int, rate: float, legit_every: int) -> dict:
    d = director(CONFIGS[name])
    rx = Timed(d)
    peak = got = legit = 0
    delays: list[float] = []
    for i in range(syns):
        t = i / rate
        rx(tcp(SPOOF + i % (1 << 20), 1024 + i % 60000, VIP, 80, SYN), t, IN)
        if i % legit_every == 0:
            legit += 1
            extra = legit_exchange(rx, CLIENTS + legit % 60000, 1024 + legit % 60000, t)
            if extra is not None:
                got += 1
                delays.append(extra)
        if i % 10000 == 0:
            peak = max(peak, d.connection_count())
    peak = max(peak, d.connection_count())
    delays.sort()
    return {"config": name, "peak_entries": peak, "final_entries": d.connection_count(),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "legit": legit, "succeeded": got, "delay_median": delays[len(delays) // 2]
            if delays else None, "us_per_packet": rx.seconds / rx.packets * 1e6,
            "drops": dict(d.drops), "entries_dropped": d.defense.entries_dropped,
            "sysctls_at_end": {k: getattr(d.sysctls, k)
                               for k in ("drop_entry", "drop_packet", "secure_tcp")}}


def one_listing(entries: int) -> dict:
    from pyvs.drivers.loop import Loop
    from pyvs.views.snapshot import stream
    d = director({})
    for i in range(entries):
        d.receive(tcp(SPOOF + i % (1 << 22), 1024 + i % 60000, VIP, 80, SYN), 0.0, IN)
    loop = Loop(time.monotonic)
    waits: list[float] = []
    last = [time.perf_counter()]
    done = [False]

    def packet_path() -> None:           # stands for the queue: due every 0.5 ms
        now = time.perf_counter()
        waits.append(now - last[0])
        last[0] = now
        if not done[0]:
            loop.at(time.monotonic() + 0.0005, packet_path)

    steps: list[float] = []               # CPU seconds per step: immune to a busy machine

    def listing():
        size = 0
        pieces = stream(d, 1.0, True)
        while True:
            cpu = time.thread_time()
            piece = next(pieces, None)
            steps.append(time.thread_time() - cpu)
            if piece is None:
                break
            size += len(piece)
            yield
        done[0] = True
        loop.stop()
        listing.size = size             # type: ignore[attr-defined]
    loop.at(time.monotonic(), packet_path)
    loop.spawn(listing())
    start = time.perf_counter()
    loop.run()
    total = time.perf_counter() - start
    return {"entries": entries, "seconds": total, "longest_wait_ms": max(waits) * 1e3,
            "longest_slice_ms": loop.longest_slice * 1e3, "longest_step_cpu_ms":
            max(steps) * 1e3, "bytes": listing.size}  # type: ignore[attr-defined]


def subprocess_run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=True, env={**os.environ})
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syns", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=50_000.0, help="spoofed SYNs per second")
    ap.add_argument("--legit-every", type=int, default=100)
    ap.add_argument("--entries", type=int, default=1_000_000, help="for the listing")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--listing", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_flood(args.one, args.syns, args.rate, args.legit_every)))
        return
    if args.listing:
        print(json.dumps(one_listing(args.entries)))
        return
    print(f"python {sys.version.split()[0]}, engine {ENGINE}; {args.syns:,} spoofed SYNs at "
          f"{args.rate:,.0f}/s, one legitimate connection per {args.legit_every}")
    for name in CONFIGS:
        r = subprocess_run(["--one", name, "--syns", str(args.syns), "--rate", str(args.rate),
                            "--legit-every", str(args.legit_every)])
        rate = r["succeeded"] / r["legit"] if r["legit"] else 0.0
        delay = "-" if r["delay_median"] is None else f"{r['delay_median']:.0f} s"
        print(f"{name:<16} table peak {r['peak_entries']:>9,} end {r['final_entries']:>9,}  "
              f"RSS {r['rss_mib']:6.0f} MiB  legitimate {rate:6.1%} (median extra delay "
              f"{delay})  {r['us_per_packet']:.2f} us/packet  drops {r['drops']}  "
              f"entries dropped {r['entries_dropped']:,}  sysctls {r['sysctls_at_end']}")
    r = subprocess_run(["--listing", "--entries", str(args.entries)])
    per_100k = r["longest_step_cpu_ms"] / max(1, r["entries"] / 100_000)
    print(f"listing {r['entries']:,} entries ({r['bytes'] / 1e6:.0f} MB of JSON) in "
          f"{r['seconds']:.1f} s: the packet path waited at most {r['longest_wait_ms']:.1f} ms "
          f"wall; the longest step took {r['longest_step_cpu_ms']:.2f} ms of CPU "
          f"({per_100k:.2f} ms per 100k entries listed; target <= 10: "
          f"{'met' if per_100k <= 10 else 'missed'})")


if __name__ == "__main__":
    main()
