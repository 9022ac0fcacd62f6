"""Sync benchmark: what a master sync daemon costs the packet path, side by side in one run
(the same DR trace through a director without and with a SyncMaster), and how fast a
backup applies the datagrams that master sent.

    .venv/bin/python bench/sync.py [--packets 300000] [--rounds 3]
    PYVS_PURE=1 .venv/bin/python bench/sync.py     # the Python source, not the mypyc build

The trace is bench/engine.py's (short HTTP/1.0-style connections and some long ones).
The runs without and with a master alternate, `--rounds` times, and the best of each is
shown: on a shared machine a slow spell then hits both alike.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import RS, VIP, build_trace  # noqa: E402

import pyvs  # noqa: E402
from pyvs.core.engine import Director  # noqa: E402
from pyvs.core.forwarding import DROUTE  # noqa: E402
from pyvs.core.sync import SyncBackup, SyncMaster  # noqa: E402


def director() -> Director:
    d = Director()
    svc = d.add_service(6, VIP, 80, scheduler="rr")
    for addr in reversed(RS):
        d.add_dest(svc, addr, 80, DROUTE)
    return d


def run(trace, master: bool) -> tuple[float, list[tuple[float, bytes]]]:
    """(packets/s, [(time, datagram)] the master sent)."""
    d = director()
    m = SyncMaster(d, start=0.0) if master else None
    sent: list[tuple[float, bytes]] = []
    receive = d.receive
    gc.disable()
    start = time.perf_counter()
    for now, data, direction in trace:
        if m is not None:
            t = m.next_timer()
            while t is not None and t <= now:
                sent += [(t, dg) for _, dg in m.due(t)]
                t = m.next_timer()
        receive(data, now, direction)
    elapsed = time.perf_counter() - start
    gc.enable()
    if m is not None:
        sent += [(trace[-1][0] + 3, dg) for _, dg in m.due(trace[-1][0] + 3)]
    return len(trace) / elapsed, sent


def backup_rate(sent) -> tuple[float, int]:
    d = director()
    b = SyncBackup(d)
    records = 0
    start = time.perf_counter()
    for now, dg in sent:
        records += len(b.receive(dg, now).actions)
    return records / (time.perf_counter() - start), records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    trace = build_trace(args.packets, nat=False)
    print(f"engine build: {pyvs.ENGINE}; DR trace of {len(trace)} packets, "
          f"{trace[-1][0]:.0f} s of traffic; best of {args.rounds} rounds")
    plain = synced = 0.0
    for _ in range(args.rounds):
        plain = max(plain, run(trace, master=False)[0])
        rate, sent = run(trace, master=True)
        synced = max(synced, rate)
    print(f"packets/s without a sync daemon  {plain:12,.0f}")
    print(f"packets/s with a master          {synced:12,.0f}   ({synced / plain:.2f} of it)")
    size = sum(len(dg) for _, dg in sent)
    print(f"datagrams sent                   {len(sent):12,d}   ({size:,d} bytes)")
    rate, records = backup_rate(sent)
    print(f"backup: records applied/s        {rate:12,.0f}   ({records:,d} records)")


if __name__ == "__main__":
    main()
