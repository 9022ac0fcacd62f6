"""Simulator throughput: the mixed web scenario with 10,000 connections, NAT and DR.

Prints simulated seconds per wall-clock second and simulated packets per second (packets
sent by the simulated hosts and the director's own stack; a NAT packet crossing the director
counts once).  Median of --runs runs.  Target: >= 100k simulated packets/s.

    .venv/bin/python bench/sim.py [--connections N] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import pyvs
from pyvs.sim.run import run
from pyvs.sim.scenarios import BUILTIN, Mix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rate = 20.0
    scenario = replace(BUILTIN["web-mix"], mix=Mix(connections=args.connections, rate=rate),
                       duration=args.connections / rate + 300, sample=1.0)
    print(f"engine {pyvs.ENGINE}; web-mix: {args.connections} connections at {rate:g}/s, "
          f"{scenario.duration:g} simulated seconds, sampled every second")
    for mode in ("nat", "dr"):
        walls, results = [], []
        for _ in range(args.runs):
            r = run(scenario, mode)
            walls.append(r.wall)
            results.append(r)
        wall = statistics.median(walls)
        r = results[0]
        print(f"  {mode.upper():3}  {r.packets:>9,} packets  {r.events:>9,} events  "
              f"wall {wall:6.2f} s  {scenario.duration / wall:8.0f} sim-s/s  "
              f"{r.packets / wall:>9,.0f} packets/s  (target 100,000: "
              f"{'met' if r.packets / wall >= 100_000 else 'MISSED'})")


if __name__ == "__main__":
    main()
