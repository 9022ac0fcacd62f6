"""The `pyvs` command.  Bad input gets one line naming what is wrong and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigFileError, load
from .drivers.pcap import CaptureError, ReadStats, read_capture
from .drivers.replay import CLIENT_SIDE, DIRECTOR_SIDE, replay
from .views.ipvsadm import Fmt, list_all, list_conn, list_timeout
from .views.snapshot import snapshot

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:          # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def _listing_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--connection", action="store_true", help="list connections")
    p.add_argument("--stats", action="store_true", help="packet and byte counters")
    p.add_argument("--rate", action="store_true", help="rates from the 2 s estimator")
    p.add_argument("--thresholds", action="store_true")
    p.add_argument("--persistent-conn", action="store_true")
    p.add_argument("--timeout", action="store_true")
    p.add_argument("--exact", "-X", action="store_true")
    p.add_argument("--nosort", action="store_true")
    p.add_argument("-n", "--numeric", action="store_true",
                   help="numeric addresses (the default: -n is implied; use --names)")
    p.add_argument("--names", action="store_true", help="resolve names as ipvsadm -L does")
    p.add_argument("--json", action="store_true", help="the table as JSON, one object per time")


def _render(snap: dict, args: argparse.Namespace) -> str:
    if args.json:
        return json.dumps(snap) + "\n"
    fmt = Fmt.NONE if args.names else Fmt.NUMERIC
    if args.exact:
        fmt |= Fmt.EXACT
    if args.nosort:
        fmt |= Fmt.NOSORT
    if args.persistent_conn:
        fmt |= Fmt.PERSISTENTCONN
    if args.connection:
        return list_conn(snap, fmt)
    if args.timeout:
        return list_timeout(snap)
    if args.stats:
        fmt |= Fmt.STATS
    elif args.rate:
        fmt |= Fmt.RATE
    elif args.thresholds:
        fmt |= Fmt.THRESHOLDS
    return list_all(snap, fmt)


def _check_listing(args: argparse.Namespace) -> None:
    """ipvsadm's "options conflicts in the list command"."""
    exclusive = [args.connection, args.timeout]
    shaping = [args.stats, args.rate, args.thresholds]
    if sum(exclusive) > 1 or (any(exclusive) and any(shaping)) or sum(shaping) > 1:
        raise UsageError("options conflicts in the list command")


def cmd_replay(args: argparse.Namespace) -> int:
    _check_listing(args)
    cfg = load(args.config)
    director = cfg.build(now=0.0)
    stats = ReadStats()
    try:
        packets = list(read_capture(args.capture, stats))
    except CaptureError as exc:
        raise UsageError(f"{args.capture}: {exc}") from None
    if not packets:
        raise UsageError(f"{args.capture}: no IPv4 packets in the capture")
    last = packets[-1][0] - packets[0][0]
    at = args.at if args.at else [last]
    if any(t < 0 for t in at):
        raise UsageError("--at: times are seconds after the first packet, not negative")
    point = {"auto": None, "client": CLIENT_SIDE, "director": DIRECTOR_SIDE}[args.capture_point]
    out = sys.stdout
    for i, (t, _) in enumerate(replay(director, packets, at, point, args.replies_via_director)):
        snap = snapshot(director, t, connections=args.connection or args.json)
        if not args.json and len(at) > 1:
            out.write(("\n" if i else "") + f"# at {t:g} s\n")
        out.write(_render(snap, args))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    director = cfg.build()
    sys.stdout.write(list_all(snapshot(director, 0.0, connections=False),
                              Fmt.NUMERIC | Fmt.RULE))
    return 0


def _time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    return value


def cmd_scenarios(args: argparse.Namespace) -> int:
    from .sim.scenarios import BUILTIN
    for name, sc in BUILTIN.items():
        print(f"{name:<18} {sc.summary}")
    return 0


def _sim_config(args: argparse.Namespace):
    return load(args.config) if args.config else None


def cmd_simulate(args: argparse.Namespace) -> int:
    from .sim import scenarios
    from .sim.run import run
    from .views.compare import truth_text
    _check_listing(args)
    scenario = scenarios.get(args.scenario)
    at = tuple(args.at) if args.at else scenario.show or (scenario.duration,)
    result = run(scenario, args.mode, args.kernel, args.seed, _sim_config(args), at)
    out = []
    for snap, states in result.snapshots:
        if args.json:
            out.append(json.dumps({**snap, "truth": states}) + "\n")
            continue
        out.append(f"--- {scenario.name} at {snap['time']:g} s (mode {result.mode}, "
                   f"kernel {result.kernel}): the director's table\n")
        out.append(_render(snap, args))
        out.append("--- the realservers' sockets (netstat -n | awk '/^tcp/ {++S[$NF]} ...', "
                   "LISTEN left out)\n")
        out.append(truth_text(states))
        out.append("\n")
    sys.stdout.write("".join(out).rstrip("\n") + "\n")
    return 0


def _modes(text: str) -> list[str]:
    from .sim.run import MODES
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise UsageError(f"pyvs compare: --modes: {m!r} is not one of {', '.join(MODES)}")
    if not modes:
        raise UsageError("pyvs compare: --modes: no mode given")
    return modes


def cmd_compare(args: argparse.Namespace) -> int:
    from .sim import scenarios
    from .sim.run import run
    from .views import compare
    names = args.scenario or list(scenarios.BUILTIN)
    chosen = [scenarios.get(n) for n in names]
    modes = _modes(args.modes)
    config = _sim_config(args)
    progress = Progress(len(chosen) * len(modes))
    results = []
    for sc in chosen:
        for mode in modes:
            progress.step(f"{sc.name} {mode}")
            results.append(run(sc, mode, args.kernel, args.seed, config))
    progress.done()
    sys.stdout.write(compare.table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(compare.as_json(results), indent=1) + "\n")
    if args.plot:
        compare.plot(results, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


class Progress:
    """A progress bar on stderr once a run has taken more than a second."""

    def __init__(self, total: int) -> None:
        import time
        self.clock = time.monotonic
        self.start = self.clock()
        self.total = total
        self.n = 0
        self.shown = False
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        if self.clock() - self.start > 1.0:
            self._show(label)
        self.n += 1

    def _show(self, label: str) -> None:
        width = 30
        fill = width * self.n // max(self.total, 1)
        bar = f"[{'#' * fill}{'.' * (width - fill)}] {self.n}/{self.total} {label}"
        if self.tty:
            sys.stderr.write("\r" + bar.ljust(70))
        else:
            sys.stderr.write(bar + "\n")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self._show("done")
            if self.tty:
                sys.stderr.write("\n")


def _sim_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="director services (YAML); default: the seed's director")
    p.add_argument("--kernel", choices=("modern", "4.4", "2.6"),
                   help="kernel profile (default: the config's)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyvs", description="A userspace LVS/IPVS director and table emulator.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    r = sub.add_parser("replay", help="feed a capture through the director, list the table")
    r.add_argument("capture", help="pcap or pcapng file (Ethernet, raw IP, Linux cooked)")
    r.add_argument("--config", required=True, help="director configuration (YAML)")
    r.add_argument("--at", type=_time, action="append", metavar="T",
                   help="list the table T seconds after the first packet (repeatable)")
    r.add_argument("--capture-point", choices=("auto", "client", "director"), default="auto")
    r.add_argument("--replies-via-director", action="store_true",
                   help="DR/TUN replies cross the director (realserver gateway = director)")
    _listing_flags(r)
    r.set_defaults(func=cmd_replay)
    c = sub.add_parser("check-config", help="validate a configuration, print it as ipvsadm -S")
    c.add_argument("config")
    c.set_defaults(func=cmd_check)
    sub.add_parser("scenarios", help="list the built-in scenarios").set_defaults(
        func=cmd_scenarios)
    s = sub.add_parser("simulate", help="run a scenario; list the table and the truth")
    s.add_argument("scenario", help="a built-in scenario name or a scenario YAML file")
    s.add_argument("--mode", choices=("nat", "dr", "tun"),
                   help="forward every realserver this way (default: as configured)")
    s.add_argument("--at", type=_time, action="append", metavar="T",
                   help="show the table at T simulated seconds (repeatable)")
    _sim_flags(s)
    _listing_flags(s)
    s.set_defaults(func=cmd_simulate)
    m = sub.add_parser("compare", help="director versus truth, scenario by scenario, per mode")
    m.add_argument("scenario", nargs="*", help="scenario names or YAML files (default: all)")
    m.add_argument("--modes", default="nat,dr", help="comma-separated: nat,dr,tun")
    m.add_argument("--plot", metavar="FILE.png", help="write a plot of the runs")
    m.add_argument("--json", metavar="FILE", help="write samples and summaries as JSON")
    _sim_flags(m)
    m.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return args.func(args)
    except (UsageError, ConfigFileError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
