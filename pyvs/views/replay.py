"""What a capture replay read and did (the summary beside its listings), and its plot: the
director's ActiveConn and InActConn per realserver over the capture's time."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..core.engine import Director
from ..core.packet import int_to_ip
from ..drivers.pcap import NS
from ..drivers.replay import IGNORE_BYPASS

if TYPE_CHECKING:
    from ..drivers.pcap import ReadStats
    from ..drivers.replay import Replay, ReplayStats


def capture_summary(reader: ReadStats, st: ReplayStats) -> dict[str, Any]:
    """What the capture held and where it was taken, whatever director it is fed to."""
    first = st.first_ns
    return {
        "files": list(reader.files),
        "capture_point": st.capture_point(),
        "frames": st.packets + sum(reader.skipped.values()),
        "packets": st.packets,
        "copies": st.copies, "truncated": st.truncated, "sync_datagrams": st.syncs,
        "reordered": st.reordered, "reordered_max": st.reordered_max_ns / NS,
        "ignored": _by_count({**reader.skipped, **st.ignored}),
        "first": None if first is None else first / NS,
        "duration": 0.0 if first is None or st.last_ns is None else (st.last_ns - first) / NS,
    }


def summary(reader: ReadStats, rp: Replay) -> dict[str, Any]:
    """The replay's counts so far, as plain data (the `replay` field of --json listings)."""
    out = capture_summary(reader, rp.stats)
    feed = rp.feed.stats
    ignored = dict(out["ignored"])
    for reason, n in feed.ignored.items():
        ignored[reason] = ignored.get(reason, 0) + n
    if feed.bypassed:
        ignored[IGNORE_BYPASS] = feed.bypassed
    out.update(inbound=feed.inbound, outbound=feed.outbound, synced=feed.synced,
               ignored=_by_count(ignored))
    return out


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def summary_text(s: dict[str, Any]) -> str:
    """The summary as `pyvs replay` prints it on stderr."""
    files = s["files"]
    lines = [
        f"capture: {files[0] if len(files) == 1 else f'{len(files)} files, merged in time'}; "
        f"{s['frames']:,} frames, {s['packets']:,} IPv4 packets over {s['duration']:.3f} s",
        f"capture point: {s['capture_point']}",
        f"fed to the director: {s['inbound']:,} inbound, {s['outbound']:,} outbound; "
        f"{s['copies']:,} second copies skipped",
    ]
    if s["synced"]:
        lines.append(f"sync datagrams received by the backup daemon: {s['synced']:,}")
    if s["truncated"]:
        lines.append(f"{s['truncated']:,} packets cut by the snaplen: counted by their IP "
                     "total length, as the kernel saw them")
    if s["reordered"]:
        lines.append(f"{s['reordered']:,} packets out of time order (up to "
                     f"{s['reordered_max'] * 1e3:.3f} ms): fed at the time of the one before")
    if s["ignored"]:
        lines.append("ignored: " + "; ".join(f"{n:,} {reason}"
                                             for reason, n in s["ignored"].items()))
    return "".join(f"pyvs replay: {line}\n" for line in lines)


def destinations(st: ReplayStats, shown: int = 3) -> str:
    """Where the capture's unrelated connections go (the destinations of their SYNs, else
    of all their packets), most frequent first: `10.0.0.1:80 (TCP)`."""
    opening = {k: c[1] for k, c in st.elsewhere.items() if c[1]}
    seen = opening or {k: c[0] for k, c in st.elsewhere.items()}
    ranked = sorted(seen.items(), key=lambda kv: -kv[1])
    top = [f"{int_to_ip(addr)}:{port} ({'TCP' if proto == 6 else 'UDP'})"
           for (proto, addr, port), _ in ranked[:shown]]
    more = len(ranked) - len(top)
    return (", ".join(top) + (f" and {more} more" if more > 0 else "")) or "no TCP or UDP"


def per_realserver(director: Director, t: float) -> list[tuple[float, str, int, int]]:
    """(t, realserver, ActiveConn, InActConn), summed over the services each serves."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for svc in director.services:
        for d in svc.dests:
            c = counts[d.addr]
            c[0] += d.activeconns
            c[1] += d.inactconns
    return [(t, int_to_ip(a), c[0], c[1]) for a, c in sorted(counts.items())]


def plot(samples: list[tuple[float, str, int, int]], path: str, title: str) -> None:
    """ActiveConn and InActConn of each realserver against the capture's seconds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .compare import style_axes

    series: dict[str, tuple[list[float], list[int], list[int]]] = {}
    for t, dest, active, inactive in samples:
        times, act, inact = series.setdefault(dest, ([], [], []))
        times.append(t)
        act.append(active)
        inact.append(inactive)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), squeeze=False)
    for col, label in enumerate(("ActiveConn", "InActConn")):
        ax = axes[0][col]
        peak = 0
        for dest, (times, act, inact) in series.items():
            values = act if col == 0 else inact
            ax.plot(times, values, linewidth=1.4, drawstyle="steps-post", label=dest)
            peak = max([peak, *values])
        style_axes(ax, f"{title}: {label}", peak, f"no {label}", True)
        if series:
            ax.legend(fontsize=7, frameon=False, loc="upper right")
    fig.suptitle("pyvs replay: the director's ActiveConn / InActConn per realserver over "
                 "the capture", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=90)
    plt.close(fig)
