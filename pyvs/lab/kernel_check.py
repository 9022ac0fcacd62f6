"""The real-kernel check: scenarios recorded on Debian 12's kernel (6.1) under qemu, replayed
through pyvs, compared view by view.

A *record* (``tests/kernel/records/<scenario>/``) is what the in-guest runner
(``scripts/kernel-lab/guest/runner.py``) wrote: ``record.json`` (the scenario, the guest's
versions, every command with guest timestamps taken just before and after it, every
observation's outputs) and the captures (``director.pcap`` from ``tcpdump -i any`` on the
director, ``client.pcap``, ``sync.pcap`` with two directors).

The pyvs side is the command line a user would run: ``pyvs replay director.pcap --config
RULES --events EVENTS --json --at T...`` and the same without ``--json`` for each text
listing, where RULES holds the scenario's ipvsadm commands in their order (``ipvsadm -R``
lines), EVENTS the control-plane changes of the timeline (``T ipvsadm ARGS`` or ``T sysctl
NAME=VALUE``; the start sysctls at 0) and T = guest time - the capture's first packet.
Each kernel output is compared with pyvs at the instants just before and just after its
command ran (either may be what the kernel saw).  What is tolerated, and why:

* the connection list (``-c``, ``/proc/net/ip_vs_conn``) is compared as a multiset of rows
  (the kernel lists in hash order), each row's expiry within [pyvs after - 1, pyvs before
  + 1] s; a kernel row showing 0 s that pyvs has already expired is the 4.8+ timer wheel
  firing late (up to 1/8 of the timeout; the ActiveConn/InActConn it still holds in
  ``-L`` are not excused: such an observation shows as a difference);
* counters and rates (``--stats``, ``--rate``, ``/proc/net/ip_vs_stats``) are the
  kernel's as of its last 2 s estimator tick, whose phase is set when the namespace was
  made and is not in the capture: a listing that differs is replayed again with pyvs's
  clock started earlier by each shift (0-2 s) that moves a tick across a packet or a
  command, and matches if one shift gives it; failing that, a --stats counter may lie
  between pyvs's at T-2 and at its first tick at or after T;
* ``/proc/net/ip_vs`` is compared as a set of lines (hash order).

Every other view is compared byte for byte.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "kernel" / "scenarios"
RECORDS = ROOT / "tests" / "kernel" / "records"
KNOWN = ROOT / "docs" / "kernel-check.md"
LAB = ROOT / "scripts" / "kernel-lab"

TIMELINE_KEYS = {"observe", "connect", "send", "close", "rst", "udp", "ipvsadm", "sysctl",
                 "exec"}
TOP_KEYS = {"summary", "topology", "sysctls", "setup", "ipvsadm", "timeline",
            "observe_conntrack"}
MODES = ("nat", "dr", "tun")
# ipvsadm commands of the start configuration that are not rules (-R lines) but events
EVENT_COMMANDS = ("--set", "-Z", "--zero")
DAEMON_COMMANDS = ("--start-daemon", "--stop-daemon")
SYSCTL_PREFIX = "net.ipv4.vs."
NS = 1_000_000_000                  # capture timestamps are integer nanoseconds
ESTIMATOR = 2.0                     # seconds between the kernel's estimator ticks
STATS_VIEWS = ("-L -n --stats --exact", "-L -n --rate", "/proc/net/ip_vs_stats")
# IPv4/UDP 192.0.2.254:9 -> 192.0.2.253:9, no payload: a packet no service takes
MARKER = bytes.fromhex("4500001c000040004011" "0000" "c00002fe" "c00002fd" "000900090008" "0000")

# view name in the record -> column in the table
COLUMNS = {
    "-L -n": "-Ln", "-L -n -c": "-Lnc", "-L -n --stats --exact": "--stats",
    "-L -n --rate": "--rate", "-L -n --persistent-conn": "--pers", "-L -n --timeout":
    "--timeout", "-S -n": "-Sn", "/proc/net/ip_vs": "ip_vs", "/proc/net/ip_vs_conn":
    "ip_vs_conn", "/proc/net/ip_vs_stats": "ip_vs_stats",
}
# view -> the replay flags of its text listing (None: rendered from the JSON snapshot)
REPLAY_FLAGS: dict[str, list[str] | None] = {
    "-L -n": [], "-L -n -c": ["-c"], "-L -n --stats --exact": ["--stats", "--exact"],
    "-L -n --rate": ["--rate"], "-L -n --persistent-conn": ["--persistent-conn"],
    "-L -n --timeout": ["--timeout"], "-S -n": None, "/proc/net/ip_vs": None,
    "/proc/net/ip_vs_conn": None, "/proc/net/ip_vs_stats": None,
}


class ScenarioError(Exception):
    """One line: '<file>: <field>: <reason>'."""


# -- scenarios ---------------------------------------------------------------------------

def load_scenario(path: Path) -> dict[str, Any]:
    """A scenario YAML file, checked enough that the guest never meets a typo."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: not a mapping")
    for key in data:
        if key not in TOP_KEYS:
            raise ScenarioError(f"{path}: {key}: unknown field")
    mode = data.get("topology", {}).get("mode", "nat")
    if mode not in MODES:
        raise ScenarioError(f"{path}: topology.mode: {mode!r} is not one of nat, dr, tun")
    if not isinstance(data.get("ipvsadm", []), list):
        raise ScenarioError(f"{path}: ipvsadm: a list of ipvsadm command lines")
    for i, ev in enumerate(data.get("timeline", [])):
        if not isinstance(ev, dict) or not isinstance(ev.get("t"), (int, float)):
            raise ScenarioError(f"{path}: timeline[{i}].t: every event needs a time")
        kinds = TIMELINE_KEYS & set(ev)
        if len(kinds) != 1:
            raise ScenarioError(f"{path}: timeline[{i}]: needs exactly one of "
                                + ", ".join(sorted(TIMELINE_KEYS)))
    if not any("observe" in ev for ev in data.get("timeline", [])):
        raise ScenarioError(f"{path}: timeline: no observe point")
    data["name"] = path.stem
    return data


def scenario_paths(names: list[str]) -> list[Path]:
    if not names:
        return sorted(SCENARIOS.glob("*.yaml"))
    out = []
    for n in names:
        p = Path(n) if n.endswith(".yaml") else SCENARIOS / f"{n}.yaml"
        if not p.exists():
            raise ScenarioError(f"{n}: no such scenario ({p})")
        out.append(p)
    return out


# -- recording (qemu) --------------------------------------------------------------------

def record(paths: list[Path], out: Path) -> list[Path]:
    """Boot the guest once and record every scenario into out/<name>/."""
    scenarios = [load_scenario(p) for p in paths]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyvs-kernel-lab.") as tmp:
        share = Path(tmp)
        (share / "scenarios").mkdir()
        for f in (LAB / "guest").glob("*.py"):
            shutil.copy(f, share / f.name)
        names = []
        for sc in scenarios:
            (share / "scenarios" / f"{sc['name']}.json").write_text(json.dumps(sc))
            names.append(sc["name"])
        (share / "run").write_text(
            "status=0\nfor n in " + " ".join(names) + "; do\n"
            "  echo \"== $n $(date +%s.%N)\"\n"
            "  python3 runner.py scenarios/$n.json records/$n || status=1\n"
            "done\necho \"== end $(date +%s.%N)\"\nexit $status\n")
        proc = subprocess.run([str(LAB / "boot.sh"), str(share)])
        log = share / "guest.log"
        if log.exists():
            sys.stderr.write(log.read_text())
        done = []
        for n in names:
            src = share / "records" / n
            if (src / "record.json").exists():
                dst = out / n
                if dst.exists():
                    shutil.rmtree(dst)
                shutil.copytree(src, dst)
                done.append(dst)
        if proc.returncode != 0:
            sys.stderr.write(f"kernel-check: the guest failed (status {proc.returncode})\n")
    return done


# -- the pyvs side -----------------------------------------------------------------------

@dataclass
class Inputs:
    """What pyvs is given for one record."""
    capture: Path
    rules: str
    events: str
    first: float                    # guest time of the capture's first packet


def first_packet_time(capture: Path) -> float:
    from ..drivers.pcap import read_capture
    for ns, _ in read_capture(capture):
        return ns / NS
    raise ScenarioError(f"{capture}: no IPv4 packets")


def pyvs_inputs(rec: dict[str, Any], recdir: Path) -> Inputs:
    """RULES: the start commands in their order; EVENTS: start sysctls and start commands
    that are not rules at 0, then the timeline's control changes at their guest instants
    (the middle of the command) relative to the first packet."""
    sc = rec["scenario"]
    capture = recdir / rec["captures"]["director"]["file"]
    first = first_packet_time(capture)
    rules, events = [], []
    for name, value in sc.get("sysctls", {}).items():
        events.append(f"0 sysctl {SYSCTL_PREFIX}{name}={value}")
    for item in sc.get("ipvsadm", []):
        item = item if isinstance(item, dict) else {"cmd": item}
        if item.get("director", 1) not in (1, "all"):
            continue
        cmd = item["cmd"]
        word = cmd.split()[0]
        if word in DAEMON_COMMANDS:
            continue                                    # pyvs has no sync daemon
        if word in EVENT_COMMANDS:
            events.append(f"0 ipvsadm {cmd}")
        else:
            rules.append(cmd)
    for done in rec["timeline"]:
        ev = done["event"]
        if ("ipvsadm" not in ev and "sysctl" not in ev) or ev.get("director", 1) not in (1, "all"):
            continue
        res = done["result"]["results"][0]
        t = max(0.0, (res["t0"] + res["t1"]) / 2 - first)
        if "ipvsadm" in ev:
            if ev["ipvsadm"].split()[0] in DAEMON_COMMANDS:
                continue
            events.append(f"{t:.6f} ipvsadm {ev['ipvsadm']}")
        else:
            name, value = (s.strip() for s in ev["sysctl"].split("=", 1))
            events.append(f"{t:.6f} sysctl {SYSCTL_PREFIX}{name}={value}")
    return Inputs(capture, "\n".join(rules) + "\n", "\n".join(events) + "\n" if events else "",
                  first)


class Pyvs:
    """pyvs replay of one record, queried at many instants with one run per listing.

    `shift` moves pyvs's time origin `shift` seconds before the first packet (a packet that
    concerns no service is put there), and so its 2 s estimator ticks: how the kernel's
    estimator phase, unknown to the capture, is fitted."""

    def __init__(self, inputs: Inputs, instants: list[float], workdir: Path,
                 shift: float = 0.0) -> None:
        self.inputs = inputs
        self.shift = shift
        self.instants = sorted(set(round(t, 6) for t in instants))
        rules = workdir / "rules"
        rules.write_text(inputs.rules)
        capture = inputs.capture
        if shift:
            from ..drivers.pcap import read_capture, write_pcap
            packets = [(ns / NS, pkt) for ns, pkt in read_capture(capture)]
            capture = workdir / "shifted.pcap"
            write_pcap(capture, [(inputs.first - shift, MARKER)] + packets)
        self.base = ["replay", str(capture), "--config", str(rules)]
        if inputs.events:
            events = inputs.events
            if shift:
                events = "".join(f"{float(t) + shift:.6f} {rest}\n" for t, rest in
                                 (line.split(None, 1) for line in events.splitlines()))
            (workdir / "events").write_text(events)
            self.base += ["--events", str(workdir / "events")]
        self.snaps = {t: json.loads(line) for t, line in
                      zip(self.instants, self._run(["--json"]).splitlines())}
        self._text: dict[str, dict[float, str]] = {}

    def _run(self, flags: list[str]) -> str:
        from ..cli import main
        argv = list(self.base) + flags
        for t in self.instants:
            argv += ["--at", f"{t + self.shift:.6f}"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        if rc != 0:
            raise ScenarioError(f"pyvs {' '.join(argv[:6])}...: {err.getvalue().strip()}")
        return out.getvalue()

    def text(self, view: str, t: float) -> str:
        t = round(t, 6)
        if view not in self._text:
            flags = REPLAY_FLAGS[view]
            if flags is None or self.shift:
                self._text[view] = {s: render(view, snap) for s, snap in self.snaps.items()}
            else:
                out = self._run(flags)
                if len(self.instants) == 1:
                    parts = [out]
                else:
                    parts = re.split(r"^# at \S+ s\n", out, flags=re.M)[1:]
                    parts = [p[:-1] if p.endswith("\n\n") else p for p in parts]
                self._text[view] = dict(zip(self.instants, parts))
        return self._text[view][t]


def render(view: str, snap: dict[str, Any]) -> str:
    """A view rendered from replay's JSON snapshot by the code `pyvs list --from` and `pyvs
    export procfs` use (-S and /proc, which replay does not print; the phase fit's runs)."""
    from ..views import procfs
    from ..views.listing import Fmt, list_all, list_conn, list_timeout
    fmt = Fmt.NUMERIC
    if view == "-S -n":
        return list_all(snap, fmt | Fmt.RULE)
    if view == "-L -n -c":
        return list_conn(snap, fmt)
    if view == "-L -n --timeout":
        return list_timeout(snap)
    if view.startswith("-L"):
        extra = {"-L -n": Fmt.NONE, "-L -n --stats --exact": Fmt.STATS | Fmt.EXACT,
                 "-L -n --rate": Fmt.RATE, "-L -n --persistent-conn": Fmt.PERSISTENTCONN}
        return list_all(snap, fmt | extra[view])
    return {"/proc/net/ip_vs": procfs.ip_vs, "/proc/net/ip_vs_conn": procfs.ip_vs_conn,
            "/proc/net/ip_vs_stats": procfs.ip_vs_stats}[view](snap)


# -- comparing ---------------------------------------------------------------------------

@dataclass
class Result:
    view: str
    observation: str
    ok: bool
    note: str = ""                  # the first difference, or what was tolerated


@dataclass
class Report:
    scenario: str
    results: list[Result] = field(default_factory=list)
    error: str = ""


def _first_diff(kernel: str, ours: str) -> str:
    k, o = kernel.splitlines(), ours.splitlines()
    for i in range(max(len(k), len(o))):
        a = k[i] if i < len(k) else "<none>"
        b = o[i] if i < len(o) else "<none>"
        if a != b:
            return f"line {i + 1}: kernel {a.strip()!r}, pyvs {b.strip()!r}"
    return "equal"


def _conn_rows(text: str, proc: bool) -> tuple[list[str], list[tuple[str, int]]]:
    """(header lines, [(row without its expiry, expiry seconds)])."""
    lines = text.splitlines()
    nhead = 1 if proc else 2
    rows = []
    for line in lines[nhead:]:
        if proc:                                    # "%-3s %08X %04X ... %-11s %7u%s"
            rows.append((line[:59] + line[66:], int(line[59:66])))
        else:                                       # "%-3s %-6s %-11s ..." with mm:ss
            mm, ss = line[4:10].split(":")
            rows.append((line[:4] + line[10:], int(mm) * 60 + int(ss)))
    return lines[:nhead], rows


def _rows_text(rows: Counter) -> str:
    return " | ".join(" ".join(r.split()) for r in rows.elements())


def compare_conns(kernel: str, before: str, after: str, proc: bool) -> tuple[bool, str]:
    """Rows as a multiset (hash order); expiry within pyvs's before/after +- 1 s; a kernel row
    at 0 s that pyvs no longer has is a timer firing late."""
    khead, krows = _conn_rows(kernel, proc)
    bhead, brows = _conn_rows(before, proc)
    _, arows = _conn_rows(after, proc)
    if khead != bhead:
        return False, _first_diff("\n".join(khead), "\n".join(bhead))
    have = Counter(r for r, _ in krows)
    for ours in (brows, arows):
        want = Counter(r for r, _ in ours)
        late = Counter(r for r, e in krows if e == 0) & (have - want)
        if have - late == want:
            break
    else:
        want = Counter(r for r, _ in brows)
        parts = []
        if have - want:
            parts.append(f"kernel has {_rows_text(have - want)!r}")
        if want - have:
            parts.append(f"pyvs has {_rows_text(want - have)!r}")
        return False, "; ".join(parts)
    expiries: dict[str, list[int]] = {}
    for r, e in brows + arows:
        expiries.setdefault(r, []).append(e)
    for r, e in krows:
        if r not in expiries:
            continue                                    # overdue (late timer)
        low, high = min(expiries[r]), max(expiries[r])
        if not low - 1 <= e <= high + 1:
            return False, (f"{' '.join(r.split())}: kernel expires in {e} s, pyvs "
                           f"{low}..{high} s")
    n = sum(late.values())
    return True, f"{n} entries overdue in the kernel (timer wheel)" if n else ""


def _numbers(text: str) -> tuple[list[str], list[list[int]]]:
    """(the lines of a --stats listing with their numbers cut off, each line's numbers)."""
    labels, values = [], []
    for line in text.splitlines():
        nums = line[33:].split()
        if line.startswith(("TCP ", "UDP ", "FWM ", "SCTP", "  -> ")) and nums and all(
                n.isdigit() for n in nums):
            labels.append(line[:33].rstrip())
            values.append([int(n) for n in nums])
        else:
            labels.append(line)
            values.append([])
    return labels, values


def compare_counters(kernel: str, bounds: list[str]) -> tuple[bool, str]:
    """`--stats`: each kernel counter between pyvs's at the two bounding instants."""
    klab, kval = _numbers(kernel)
    ranges = [_numbers(b) for b in bounds]
    for lab, _ in ranges:
        if lab != klab:
            return False, _first_diff(kernel, bounds[0])
    for i, row in enumerate(kval):
        for j, v in enumerate(row):
            vals = [r[1][i][j] for r in ranges]
            if not min(vals) <= v <= max(vals):
                return False, (f"{klab[i]!r} field {j + 1}: kernel {v}, pyvs "
                               f"{min(vals)}..{max(vals)} over the estimator window")
    return True, "within the estimator's 2 s window (no single phase fits)"


@dataclass(frozen=True)
class Check:
    observation: str
    view: str
    kernel: str
    t0: float                       # seconds after the first packet, before the command
    t1: float                       # and after it


def checks_of(rec: dict[str, Any], first: float) -> list[Check]:
    out = []
    for d in rec["timeline"]:
        if "observe" not in d["event"]:
            continue
        for c in d["result"]["commands"]:
            if c["host"] == "d1" and c["view"] in COLUMNS:
                out.append(Check(d["event"]["observe"], c["view"], c["out"],
                                 max(0.0, c["t0"] - first), max(0.0, c["t1"] - first)))
    return out


def _window(c: Check) -> tuple[float, float]:
    """pyvs instants bounding the kernel's last estimator tick before the command."""
    return max(0.0, c.t0 - ESTIMATOR), ESTIMATOR * math.ceil(c.t1 / ESTIMATOR)


def compare_record(recdir: Path) -> Report:
    rec = json.loads((recdir / "record.json").read_text())
    report = Report(recdir.name)
    inputs = pyvs_inputs(rec, recdir)
    checks = checks_of(rec, inputs.first)
    instants = [t for c in checks for t in (c.t0, c.t1)]
    instants += [t for c in checks if c.view in STATS_VIEWS for t in _window(c)]
    with tempfile.TemporaryDirectory() as tmp:
        pv = Pyvs(inputs, instants, Path(tmp))
        results: list[Result | None] = []
        unfitted = []
        for i, c in enumerate(checks):
            if c.view in STATS_VIEWS:
                if c.kernel in (pv.text(c.view, c.t0), pv.text(c.view, c.t1)):
                    results.append(Result(c.view, c.observation, True))
                else:
                    results.append(None)
                    unfitted.append(i)
            else:
                ok, note = compare_view(c.view, c.kernel, pv, c.t0, c.t1)
                results.append(Result(c.view, c.observation, ok, note))
        fitted = fit_phase(inputs, [checks[i] for i in unfitted], Path(tmp))
        for i in unfitted:
            c = checks[i]
            if c in fitted:
                results[i] = Result(c.view, c.observation, True, fitted[c])
            elif c.view == "-L -n --stats --exact":
                lo, hi = _window(c)
                ok, note = compare_counters(c.kernel, [pv.text(c.view, t) for t in (lo, hi)])
                results[i] = Result(c.view, c.observation, ok, note)
            else:
                results[i] = Result(c.view, c.observation, False, "no estimator phase fits: "
                                    + _first_diff(c.kernel, pv.text(c.view, c.t0)))
    report.results = [r for r in results if r is not None]
    return report


def fit_phase(inputs: Inputs, checks: list[Check], workdir: Path) -> dict[Check, str]:
    """Counters and rates the kernel showed that pyvs shows if its estimator ticks `shift`
    seconds earlier: {check: note}.  The listings change with the shift only where a tick
    crosses a packet, an event or a command, so one shift between each two such
    instants (mod 2 s) is tried."""
    if not checks:
        return {}
    from ..drivers.pcap import read_capture
    marks = [ns / NS for ns, _ in read_capture(inputs.capture)]
    marks += [c.t0 + inputs.first for c in checks] + [c.t1 + inputs.first for c in checks]
    cuts = sorted({round((inputs.first - m) % ESTIMATOR, 3) for m in marks})
    shifts = [(a + b) / 2 for a, b in zip(cuts, cuts[1:] + [cuts[0] + ESTIMATOR])]
    shifts = [s % ESTIMATOR for s in shifts if s % ESTIMATOR > 1e-3]
    instants = [t for c in checks for t in (c.t0, c.t1)]
    found: dict[Check, list[float]] = {}
    for n, shift in enumerate(shifts):
        sub = workdir / f"shift{n}"
        sub.mkdir()
        pv = Pyvs(inputs, instants, sub, shift)
        for c in checks:
            if c.kernel in (pv.text(c.view, c.t0), pv.text(c.view, c.t1)):
                found.setdefault(c, []).append(shift)
    return {c: f"estimator phase fitted: pyvs ticking {min(v):.2f}-{max(v):.2f} s earlier"
            for c, v in found.items()}


def compare_view(view: str, kernel: str, pv: Pyvs, t0: float, t1: float) -> tuple[bool, str]:
    before, after = pv.text(view, t0), pv.text(view, t1)
    if view in ("-L -n -c", "/proc/net/ip_vs_conn"):
        return compare_conns(kernel, before, after, view.startswith("/proc"))
    if kernel in (before, after):
        return True, ""
    if view == "/proc/net/ip_vs" and any(
            sorted(kernel.splitlines()) == sorted(x.splitlines()) for x in (before, after)):
        return True, "same lines, another order"
    return False, _first_diff(kernel, before)


# -- known differences -------------------------------------------------------------------

def known_differences(path: Path = KNOWN) -> dict[tuple[str, str], str]:
    """(scenario, view column) -> reason, from the table under '## Known differences'."""
    out: dict[tuple[str, str], str] = {}
    if not path.exists():
        return out
    section = path.read_text().split("## Known differences", 1)
    if len(section) < 2:
        return out
    for line in section[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] not in ("scenario", "") and not set(cells[0]) <= set("-:"):
            out[(cells[0], cells[1])] = cells[2]
    return out


# -- the table ---------------------------------------------------------------------------

def table(reports: list[Report], known: dict[tuple[str, str], str]) -> tuple[str, list[str], bool]:
    """(the scenarios x views table, the first difference of each failing cell, all ok)."""
    cols = list(dict.fromkeys(COLUMNS.values()))
    width = max([len(r.scenario) for r in reports] + [8])
    lines = [f"{'scenario':<{width}} " + " ".join(f"{c:<11}" for c in cols)]
    details, ok = [], True
    for rep in reports:
        cells = []
        for view, col in COLUMNS.items():
            rs = [r for r in rep.results if r.view == view]
            bad = next((r for r in rs if not r.ok), None)
            if rep.error:
                cell = "error"
            elif not rs:
                cell = "-"
            elif bad is None:
                cell = "match"
            elif (rep.scenario, col) in known:
                cell = "known"
                details.append(f"{rep.scenario} {col} @{bad.observation}: known: "
                               f"{known[(rep.scenario, col)]} ({bad.note})")
            else:
                cell = "DIFF"
                ok = False
                details.append(f"{rep.scenario} {col} @{bad.observation}: {bad.note}")
            cells.append(f"{cell:<11}")
        if rep.error:
            ok = False
            details.append(f"{rep.scenario}: {rep.error}")
        lines.append(f"{rep.scenario:<{width}} " + " ".join(cells))
    return "\n".join(lines) + "\n", details, ok


def compare_all(recdirs: list[Path]) -> tuple[str, bool]:
    reports = []
    for d in recdirs:
        try:
            reports.append(compare_record(d))
        except ScenarioError as exc:
            reports.append(Report(d.name, error=str(exc)))
    text, details, ok = table(reports, known_differences())
    if details:
        text += "\n" + "\n".join(details) + "\n"
    return text, ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kernel-check", description=__doc__.splitlines()[0])
    p.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    p.add_argument("--records-only", action="store_true",
                   help="compare the committed records, boot nothing")
    p.add_argument("--records", type=Path, default=RECORDS,
                   help="the records to compare with --records-only")
    p.add_argument("--out", type=Path, help="where new records go (default: a fresh "
                   "directory under /var/tmp/pyvs-kernel-check)")
    args = p.parse_args(argv)
    try:
        if args.records_only:
            names = args.scenarios or sorted(d.name for d in args.records.iterdir()
                                             if (d / "record.json").exists())
            recdirs = [args.records / n for n in names]
            missing = [str(d) for d in recdirs if not (d / "record.json").exists()]
            if missing:
                raise ScenarioError(f"no record: {', '.join(missing)}")
        else:
            paths = scenario_paths(args.scenarios)
            out = args.out or Path(tempfile.mkdtemp(prefix="run.", dir=_runs_dir()))
            recdirs = record(paths, out)
            print(f"records: {out}")
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 2
    text, ok = compare_all(recdirs)
    sys.stdout.write(text)
    return 0 if ok and recdirs else 1


def _runs_dir() -> Path:
    d = Path("/var/tmp/pyvs-kernel-check")
    d.mkdir(parents=True, exist_ok=True)
    return d


if __name__ == "__main__":
    sys.exit(main())
