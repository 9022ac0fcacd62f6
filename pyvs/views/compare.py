"""The NAT-versus-DR accuracy report: text table, realserver truth, JSON, plot."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sim.run import Result


def truth_text(states: dict[str, dict[str, int]]) -> str:
    """Each realserver's sockets the way the seeds count them:
    netstat -n | awk '/^tcp/ {++S[$NF]} END {for(a in S) print a, S[a]}'  (LISTEN left out)."""
    lines = []
    for addr, counts in states.items():
        lines.append(f"realserver {addr}:")
        if not counts:
            lines.append("(no connections)")
        lines.extend(f"{name} {n}" for name, n in sorted(counts.items()))
    return "\n".join(lines) + "\n"


def _totals(result: Result) -> dict[float, list[int]]:
    """Per sample time, summed over realservers: [active, truth active, inactive,
    truth inactive]."""
    totals: dict[float, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in result.samples:
        t = totals[s.t]
        t[0] += s.active
        t[1] += s.truth_active
        t[2] += s.inactive
        t[3] += s.truth_inactive
    return totals


def _means(result: Result) -> tuple[float, float, float, float]:
    """Mean of the per-sample totals: director and truth, active and inactive."""
    totals = _totals(result)
    n = len(totals) or 1
    return tuple(sum(v[i] for v in totals.values()) / n for i in range(4))   # type: ignore


HEADER = (f"{'scenario':<18} {'mode':<4} {'kernel':<6} "
          f"{'ActiveConn dir/true':>19} {'MAE':>6} {'max':>4}  "
          f"{'InActConn dir/true':>18} {'MAE':>7} {'max':>5}  "
          f"{'ghost s':>8} {'forgot s':>8}  dominant cause")


def table(results: list[Result]) -> str:
    lines = [HEADER]
    for r in results:
        a, ta, i, ti = _means(r)
        s = r.summary
        lines.append(
            f"{r.scenario:<18} {r.mode:<4} {r.kernel:<6} "
            f"{a:>9.2f}/{ta:<9.2f} {s['active_mae']:>6.2f} {s['active_max']:>4}  "
            f"{i:>8.2f}/{ti:<9.2f} {s['inactive_mae']:>7.2f} {s['inactive_max']:>5}  "
            f"{s['ghost_seconds']:>8.0f} {s['forgotten_seconds']:>8.0f}  {r.cause}")
    return "\n".join(lines) + "\n"


def as_json(results: list[Result]) -> dict[str, Any]:
    return {"results": [r.as_json() for r in results]}


# (color, director line width): NAT drawn wide underneath so DR/TUN stay visible on top
_STYLE = {"nat": ("tab:blue", 3.0), "dr": ("tab:orange", 1.3), "tun": ("tab:green", 1.0),
          "mixed": ("tab:purple", 1.3)}


def plot(results: list[Result], path: str) -> None:
    """Per scenario: ActiveConn and InActConn over time, each mode's director against the
    realservers' truth (summed over realservers)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios: dict[str, list[Result]] = {}
    for r in results:
        scenarios.setdefault(r.scenario, []).append(r)
    rows = len(scenarios)
    fig, axes = plt.subplots(rows, 2, figsize=(13, 2.4 * rows + 0.8), squeeze=False)
    for row, (name, runs) in enumerate(scenarios.items()):
        for col, label in enumerate(("ActiveConn", "InActConn")):
            ax = axes[row][col]
            for r in runs:
                times, director, truth = _series(r, col == 0)
                color, width = _STYLE.get(r.mode, ("tab:gray", 1.3))
                ax.plot(times, director, color=color, linewidth=width, alpha=0.85,
                        label=f"director, {r.mode.upper()}", drawstyle="steps-post")
                ax.plot(times, truth, color=color, linewidth=1.2, linestyle=(0, (2, 2)),
                        label=f"truth on the realservers, {r.mode.upper()}",
                        drawstyle="steps-post")
            ax.set_title(f"{name}: {label}", fontsize=9, loc="left")
            ax.tick_params(labelsize=7)
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
            if row == rows - 1:
                ax.set_xlabel("simulated seconds", fontsize=8)
            if row == 0 and col == 1:
                ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("pyvs compare: the director's ActiveConn / InActConn against the "
                 "realservers' truth", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _series(r: Result, active: bool) -> tuple[list[float], list[int], list[int]]:
    """Times, the director's and the truth's totals for ActiveConn or InActConn."""
    totals = _totals(r)
    times = sorted(totals)
    i = 0 if active else 2
    return times, [totals[t][i] for t in times], [totals[t][i + 1] for t in times]
