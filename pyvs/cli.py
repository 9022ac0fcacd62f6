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
    if not args.json:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(result.drops.items())) or "none"
        out.append(f"--- the run: {result.packets} packets sent, {result.lost} lost, "
                   f"{result.firewall_resets} firewall resets, director drops: {drops}\n")
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
    if args.from_files:
        if args.scenario or args.live or args.ssh_config:
            raise UsageError("pyvs compare: --from reads saved results; it runs no scenario")
        results = [r for f in args.from_files for r in _saved_results(f)]
    elif args.live or args.ssh_config:
        results = _compare_live(args)
    else:
        modes = _modes(args.modes or "nat,dr")
        chosen = [scenarios.get(n) for n in args.scenario or list(scenarios.BUILTIN)]
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


def _saved_results(path: str) -> list:
    """The results a `pyvs compare --json FILE` wrote, to print or plot them together."""
    from .sim.run import Result
    try:
        data = json.loads(Path(path).read_text())
        return [Result.from_json(r) for r in data["results"]]
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not what pyvs compare --json writes "
                         f"(missing or bad {exc})") from None


def _compare_live(args: argparse.Namespace) -> list:
    from .lab import live_compare, netns
    from .lab.cluster import ClusterError, Ssh
    names = args.scenario or list(live_compare.SCENARIOS)
    for n in names:
        if n not in live_compare.SCENARIOS:
            raise UsageError(f"pyvs compare --live: {n!r} is not a live scenario "
                             f"({', '.join(live_compare.SCENARIOS)})")
    if args.ssh_config:
        try:
            cluster = Ssh(args.ssh_config)
        except ClusterError as exc:
            raise UsageError(f"pyvs compare --ssh-config: {exc}") from None
        try:
            if args.modes and _modes(args.modes) != [cluster.mode]:
                raise UsageError(f"pyvs compare --ssh-config: the cluster runs "
                                 f"{cluster.mode}; rebuild it for another mode "
                                 "(vagrant/README.md) and compare the saved --json files")
            progress = Progress(len(names))
            results = live_compare.compare_on(cluster, names, progress)
        except ClusterError as exc:
            raise UsageError(f"pyvs compare --ssh-config: {exc}") from None
        finally:
            cluster.close()
        progress.done()
        return results
    modes = _modes(args.modes or "nat,dr")
    if "tun" in modes:
        raise UsageError("pyvs compare --live: tun needs an IPIP driver on the realservers; "
                         "use --modes nat,dr")
    progress = Progress(len(names) * len(modes))
    try:
        results = live_compare.compare(names, modes, progress)
    except netns.LabError as exc:
        raise UsageError(f"pyvs compare --live: {exc}") from None
    progress.done()
    return results


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


def _table_snapshot(args: argparse.Namespace, connections: bool) -> dict:
    """The table from a saved snapshot (--from) or the running director's socket."""
    from .control import NoDirector, default_socket, request
    if args.from_file:
        try:
            data = json.loads(Path(args.from_file).read_text())
        except OSError as exc:
            raise UsageError(f"{args.from_file}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"{args.from_file}: not a JSON snapshot ({exc})") from None
        if isinstance(data, dict) and "snapshot" in data:
            data = data["snapshot"]
        if not isinstance(data, dict) or "services" not in data:
            raise UsageError(f"{args.from_file}: not a pyvs snapshot (no 'services')")
        if connections and "connections" not in data:
            raise UsageError(f"{args.from_file}: snapshot has no connection list")
        return data
    try:
        return request(args.socket or default_socket(),
                       {"op": "snapshot", "connections": connections})["snapshot"]
    except NoDirector as exc:
        raise UsageError(f"pyvs: {exc}; start one with pyvs serve or pyvs run, "
                         "or list a saved table with --from FILE.json") from None


def cmd_list(args: argparse.Namespace) -> int:
    _check_listing(args)
    snap = _table_snapshot(args, args.connection or args.json)
    sys.stdout.write(_render(snap, args))
    return 0


def cmd_states(args: argparse.Namespace) -> int:
    """The seeds' netstat | awk view of the director's table."""
    snap = _table_snapshot(args, True)
    groups: dict[str, dict[str, int]] = {}
    for c in snap["connections"]:
        if c["template"]:
            continue
        key = c["dest"].rsplit(":", 1)[0] if args.per_realserver else ""
        counts = groups.setdefault(key, {})
        counts[c["state"]] = counts.get(c["state"], 0) + 1
    for key in sorted(groups):
        if args.per_realserver:
            print(f"realserver {key}:")
        for state, n in sorted(groups[key].items()):
            print(state, n)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .views import procfs
    procfs.export(_table_snapshot(args, True), args.dir)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """A director with no packet source: a control plane to drive with pyvsadm."""
    import signal
    import threading

    from .control import default_socket
    from .core.engine import Director
    from .drivers.daemon import Runtime
    director = load(args.config).build(0.0) if args.config else Director()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runtime = Runtime(director, args.socket or default_socket(), args.procfs,
                          args.metrics).start()
    except OSError as exc:
        raise UsageError(f"pyvs serve: {exc}") from None
    print(f"pyvs: serving {runtime.control.path}", file=sys.stderr)
    try:
        while not stop.wait(0.5):
            runtime.tick()
    finally:
        runtime.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from .control import default_socket
    from .drivers import live, netfilter
    logging.basicConfig(level=logging.INFO, format="pyvs: %(message)s", stream=sys.stderr)
    director = load(args.config).build(0.0)
    try:
        return live.run(director, args.socket or default_socket(), args.queue,
                        args.fail_closed, args.procfs, args.metrics)
    except (netfilter.SetupError, OSError) as exc:
        raise UsageError(f"pyvs run: {exc}") from None


def cmd_cleanup(args: argparse.Namespace) -> int:
    from .drivers import netfilter
    done = netfilter.undo()
    for step in done:
        print(f"removed: {step}")
    if not done:
        print("pyvs cleanup: nothing of pyvs's in this network namespace")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from .lab import netns
    try:
        if args.action == "up":
            netns.up(args.mode, args.realservers, args.clients)
        elif args.action == "down":
            netns.down()
        elif args.action == "status":
            return netns.status()
        elif args.action == "check":
            return netns.check()
        elif args.action == "config":
            sys.stdout.write(netns.config_yaml(args.mode, args.realservers))
        elif args.action == "ssh-config":
            sys.stdout.write(netns.ssh_config())
        else:
            return netns.lab_exec(args.host, args.cmd[1:] if args.cmd[:1] == ["--"]
                                  else args.cmd)
    except netns.LabError as exc:
        raise UsageError(f"pyvs lab {args.action}: {exc}") from None
    return 0


def _table_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="from_file", metavar="FILE.json",
                   help="a saved snapshot (pyvs list --json, replay/simulate --json)")
    p.add_argument("--socket", help="the director's control socket")


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
    li = sub.add_parser("list", help="list the running director's table (ipvsadm -L)")
    _table_source(li)
    _listing_flags(li)
    li.set_defaults(func=cmd_list)
    st = sub.add_parser("states", help="state counts of the director's table (netstat|awk)")
    st.add_argument("--per-realserver", action="store_true")
    _table_source(st)
    st.set_defaults(func=cmd_states)
    ex = sub.add_parser("export", help="write the table as /proc/net/ip_vs* files")
    ex.add_argument("what", choices=("procfs",))
    ex.add_argument("dir", help="DIR: writes DIR/net/ip_vs, ip_vs_conn, ip_vs_stats")
    _table_source(ex)
    ex.set_defaults(func=cmd_export)
    sv = sub.add_parser("serve", help="run a director with no packet source (control plane)")
    sv.add_argument("--config", help="services to start with (YAML); default: none")
    sv.add_argument("--socket", help="control socket path")
    sv.add_argument("--procfs", metavar="DIR", help="keep DIR/net/ip_vs* current")
    sv.add_argument("--metrics", metavar="[HOST]:PORT", help="serve Prometheus metrics")
    sv.set_defaults(func=cmd_serve)
    rn = sub.add_parser("run", help="the live director: NFQUEUE, iptables, policy routes")
    rn.add_argument("--config", required=True, help="director configuration (YAML)")
    rn.add_argument("--queue", type=int, default=0, help="NFQUEUE number (default 0)")
    rn.add_argument("--fail-closed", action="store_true",
                    help="drop queued traffic while no director runs (default: bypass)")
    rn.add_argument("--socket", help="control socket path")
    rn.add_argument("--procfs", metavar="DIR", help="keep DIR/net/ip_vs* current")
    rn.add_argument("--metrics", metavar="[HOST]:PORT", help="serve Prometheus metrics")
    rn.set_defaults(func=cmd_run)
    sub.add_parser("cleanup", help="remove every rule, route and sysctl a dead director "
                   "left in this network namespace").set_defaults(func=cmd_cleanup)
    lab = sub.add_parser("lab", help="a cluster of network namespaces running pyvs (root)")
    lsub = lab.add_subparsers(dest="action", required=True, parser_class=_Parser)
    lu = lsub.add_parser("up", help="build the cluster and start the director")
    lc = lsub.add_parser("config", help="print the lab director's config")
    for q in (lu, lc):
        q.add_argument("--mode", choices=("nat", "dr", "tun"), default="nat")
        q.add_argument("--realservers", type=int, default=2)
    lu.add_argument("--clients", type=int, default=1)
    lsub.add_parser("down", help="stop everything, delete the namespaces")
    lsub.add_parser("status", help="processes and addresses")
    lsub.add_parser("check", help="diagnose the classic LVS set-up mistakes")
    lsub.add_parser("ssh-config", help="an ssh_config reaching the lab's hosts over a "
                    "real sshd, as `vagrant ssh-config` does for the VMs")
    le = lsub.add_parser("exec", help="run a command on a lab host: exec HOST -- CMD")
    le.add_argument("host", help="client, c1.., director, rs1..")
    le.add_argument("cmd", nargs=argparse.REMAINDER)
    lab.set_defaults(func=cmd_lab)
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
    m.add_argument("--modes", help="comma-separated: nat,dr,tun (default nat,dr; with "
                   "--ssh-config: the cluster's own mode)")
    m.add_argument("--plot", metavar="FILE.png", help="write a plot of the runs")
    m.add_argument("--json", metavar="FILE", help="write samples and summaries as JSON")
    m.add_argument("--live", action="store_true",
                   help="run the live scenarios on the namespace lab (root)")
    m.add_argument("--ssh-config", metavar="FILE",
                   help="run the live scenarios on a cluster over ssh: FILE names the hosts "
                   "client, director, rs1.. (vagrant ssh-config > FILE)")
    m.add_argument("--from", dest="from_files", action="append", metavar="FILE.json",
                   help="print (and --plot) results saved with --json (repeatable)")
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
