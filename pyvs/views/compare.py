"""The NAT-versus-DR accuracy report: text table, realserver truth, JSON, plot."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sim.run import Result


def simulation_text(result: Result, render: Callable[[dict[str, Any]], str]) -> str:
    """`pyvs simulate`'s report: at each instant, the director's listing (as `render`
    draws it) beside the realservers' sockets, then what the run did."""
    out = []
    for snap, states in result.snapshots:
        whose = (f"director {snap['director']}'s table ({snap['role']})" if "director" in snap
                 else "the director's table")
        out.append(f"--- {result.scenario} at {snap['time']:g} s (mode {result.mode}, "
                   f"kernel {result.kernel}): {whose}\n")
        out.append(render(snap))
        if states is None:          # several directors: the truth once, after the last
            continue
        out.append("--- the realservers' sockets (netstat -n | awk '/^tcp/ {++S[$NF]} ...', "
                   "LISTEN left out)\n")
        out.append(truth_text(states))
        out.append("\n")
    drops = ", ".join(f"{k} {v}" for k, v in sorted(result.drops.items())) or "none"
    out.append(f"--- the run: {result.packets} packets sent, {result.lost} lost, "
               f"{result.firewall_resets} firewall resets, director drops: {drops}\n")
    if result.checks:
        out.append("--- the health checks:\n" + "".join(f"{c}\n" for c in result.checks))
    for line in getattr(result, "notes", ()):
        out.append(f"  {line}\n")
    lines = getattr(result, "connections", ())
    if lines:
        out.append(f"--- each client connection (held: established before "
                   f"{getattr(result, 'pivot', 0.0):g} s, {getattr(result, 'pivot_what', '')}; "
                   "opening: started before it; new: after it)\n")
        out.extend(f"  {line}\n" for line in lines)
        out.append(f"  {clients_text(result.clients, always=True)}\n")
    return "".join(out).rstrip("\n") + "\n"


def truth_text(states: dict[str, dict[str, int]]) -> str:
    """Each realserver's sockets counted the way LVS operators count them:
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


WIDTH = 120
LEGEND = ("director/truth: the cluster's total, mean over the samples (connections); "
          "|err|, max: absolute error per realserver and sample (connections); "
          "ghost: entries counted ActiveConn with no ESTABLISHED socket, forgotten: sockets "
          "with no entry, stale: InActConn entries with no socket, hidden: InActConn entries "
          "whose socket is ESTABLISHED (connection-seconds)")
_HEAD = (f"{'':36} {'ActiveConn (connections)':<25}  {'InActConn (connections)':<27}  "
         f"{'ghost':>6} {'forgotten':>9}",
         f"{'scenario':<24} mode kernel director truth |err|  max  "
         "director truth  |err|   max  conn-s    conn-s")


QUIET_ENDS = ("closed", "aborted", "open")      # what a client means to happen


def clients_text(clients: dict[str, float], always: bool = False) -> str:
    """What the clients saw, when it is not the uneventful (or `always`): how sessions
    ended and slow connects, e.g. "60 sessions: 60 closed; 56 connects took 1 s or more
    (max 1.01 s)"."""
    if not clients:
        return ""
    ends = {k: int(v) for k, v in clients.items()
            if k not in ("sessions", "connect_max", "connect_mean", "connect_over_1s") and v}
    slow = int(clients.get("connect_over_1s", 0))
    if not always and not slow and all(k in QUIET_ENDS for k in ends):
        return ""
    if any("/" in k for k in ends):
        text = _fates_text(ends)
    else:
        text = f"{int(clients['sessions'])} sessions: " + ", ".join(
            f"{n} {k}" for k, n in sorted(ends.items(), key=lambda kv: -kv[1]))
    if slow:
        text += (f"; {slow} connect{'s' if slow > 1 else ''} took 1 s or more "
                 f"(max {clients['connect_max']:.2f} s)")
    return text


PHASES = ("before", "held", "opening", "new")


def _fates_text(fates: dict[str, int]) -> str:
    """A several-director run's clients by phase (see pyvs.sim.directors.outcomes):
    "held 9: 7 survived, 2 reset by d2; new 2: 2 survived"."""
    by_phase: dict[str, dict[str, int]] = {}
    for key, n in fates.items():
        phase, _, fate = key.partition("/")
        by_phase.setdefault(phase, {})[fate] = n
    parts = []
    for phase in sorted(by_phase, key=lambda p: PHASES.index(p) if p in PHASES else 9):
        counts = by_phase[phase]
        parts.append(f"{phase} {sum(counts.values())}: " + ", ".join(
            f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    return "; ".join(parts)


def _row(r: Result) -> str:
    a, ta, i, ti = _means(r)
    s = r.summary
    return (f"{r.scenario[:24]:<24} {r.mode:<4} {r.kernel:<6} {a:>8.2f} {ta:>5.2f} "
            f"{s['active_mae']:>5.2f} {s['active_max']:>4}  {i:>8.2f} {ti:>5.2f} "
            f"{s['inactive_mae']:>6.2f} {s['inactive_max']:>5}  {s['ghost_seconds']:>6.0f} "
            f"{s['forgotten_seconds']:>9.0f}")


def table(results: list[Result], wide: bool = False) -> str:
    """The accuracy report: one row per run, its dominant cause below it (within 120
    columns); `wide`: the stale and hidden columns and the cause on the row itself."""
    lines = list(_HEAD)
    if wide:
        lines = [lines[0], lines[1] + " stale conn-s hidden conn-s  dominant cause"]
    for r in results:
        if wide:
            s = r.summary
            lines.append(f"{_row(r)} {s['stale_seconds']:>12.0f} {s['hidden_seconds']:>13.0f}"
                         f"  {r.cause}")
        else:
            lines.append(_row(r))
            lines.extend(textwrap.wrap(r.cause, WIDTH, initial_indent="  cause: ",
                                       subsequent_indent="         "))
            seen = clients_text(r.clients)
            lines.extend(textwrap.wrap(seen, WIDTH, initial_indent="  clients: ",
                                       subsequent_indent="           "))
    lines.extend([""] + textwrap.wrap(LEGEND, WIDTH))
    return "\n".join(lines) + "\n"


def as_json(results: list[Result]) -> dict[str, Any]:
    return {"results": [r.as_json() for r in results]}


# one colour per mode; the director drawn solid, the realservers' truth dashed
_COLOURS = {"nat": "tab:blue", "dr": "tab:orange", "tun": "tab:green", "mixed": "tab:purple"}
_PANELS = ("ActiveConn", "InActConn")
OVERVIEW_ONE_COLUMN = 12     # more scenarios than this: the overview sets two side by side


def plot(results: list[Result], path: str) -> list[str]:
    """Each scenario's ActiveConn and InActConn over time, every mode's director against
    its realservers' truth (both summed over the realservers).  A path ending in / is a
    directory: an overview.png and one PNG per scenario.  Returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    scenarios: dict[str, list[Result]] = {}
    for r in results:
        scenarios.setdefault(r.scenario, []).append(r)
    across = 1 if len(scenarios) <= OVERVIEW_ONE_COLUMN else 2
    if not path.endswith("/"):
        _figure(list(scenarios.items()), path, across)
        return [path]
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    written = [str(out / "overview.png")]
    _figure(list(scenarios.items()), written[0], across)
    for name, runs in scenarios.items():
        target = out / f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in name)}.png"
        _figure([(name, runs)], str(target))
        written.append(str(target))
    return written


def style_axes(ax: Any, title: str, peak: float, empty: str, xlabel: bool) -> None:
    """One panel as every pyvs plot draws it: title left, connections against seconds from
    0, integer ticks, a note instead of an empty frame."""
    from matplotlib.ticker import MaxNLocator
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_ylabel("connections", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlim(left=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    if peak == 0:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="0.4")
    else:
        ax.set_ylim(0, peak * 1.1 + 0.5)
    if xlabel:
        ax.set_xlabel("seconds", fontsize=8)


def _figure(rows: list[tuple[str, list[Result]]], path: str, across: int = 1) -> None:
    """`across` scenarios side by side, each as its ActiveConn and InActConn panels."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    height = -(-len(rows) // across)
    fig, axes = plt.subplots(height, 2 * across,
                             figsize=(12 * across, 2.3 * height + 1.2), squeeze=False)
    for extra in range(len(rows), height * across):      # an odd one out: blank cells
        for col in range(2):
            axes[extra // across][2 * (extra % across) + col].axis("off")
    modes: list[str] = []
    for n, (name, runs) in enumerate(rows):
        row = n // across
        for col, label in enumerate(_PANELS):
            ax = axes[row][2 * (n % across) + col]
            peak = 0
            for k, r in enumerate(runs):
                times, director, truth = _series(r, col == 0)
                colour = _COLOURS.get(r.mode, "tab:gray")
                # the first mode drawn wider, beneath: where the modes agree it shows
                # as a rim around the next one instead of vanishing behind it
                wide = 1.0 if k else 2.0
                ax.plot(times, director, color=colour, linewidth=1.6 * wide,
                        drawstyle="steps-post", zorder=3 - k)
                ax.plot(times, truth, color=colour, linewidth=1.2 * wide,
                        linestyle=(0, (3, 2)), drawstyle="steps-post", zorder=3 - k)
                peak = max([peak, *director, *truth])
                if r.mode not in modes:
                    modes.append(r.mode)
            for t, text in runs[0].marks:        # the timeline: one line per change
                ax.axvline(t, color="0.45", linewidth=0.8, linestyle=":")
                if col == 0:
                    ax.annotate(text, (t, 1), xycoords=("data", "axes fraction"),
                                xytext=(2, -2), textcoords="offset points", fontsize=6,
                                color="0.35", va="top", rotation=90)
            style_axes(ax, f"{name}: {label}", peak, f"no {label} on either side",
                       row == height - 1 or n + across >= len(rows))
    handles = [Line2D([], [], color=_COLOURS.get(m, "tab:gray"), linewidth=1.6,
                      label=f"{m.upper()} director") for m in modes]
    handles += [Line2D([], [], color=_COLOURS.get(m, "tab:gray"), linewidth=1.2,
                       linestyle=(0, (3, 2)), label=f"{m.upper()} truth (realservers)")
                for m in modes]
    top = 1 - 0.9 / fig.get_figheight()
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 1 - 0.35 / fig.get_figheight()))
    fig.suptitle("pyvs compare: the director's ActiveConn / InActConn (solid) against the "
                 "realservers' sockets (dashed), summed over the realservers", fontsize=10,
                 y=1 - 0.08 / fig.get_figheight())
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _series(r: Result, active: bool) -> tuple[list[float], list[int], list[int]]:
    """Times, the director's and the truth's totals for ActiveConn or InActConn."""
    totals = _totals(r)
    times = sorted(totals)
    i = 0 if active else 2
    return times, [totals[t][i] for t in times], [totals[t][i + 1] for t in times]
