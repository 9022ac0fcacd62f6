"""The `pyvs` command: argument wiring only.  Bad input gets one line naming what is wrong
and exit status 2."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__
from .config import FORMATS, ConfigFileError, load
from .config.events import read_events
from .core.engine import ConfigError
from .core.forwarding import MODES
from .core.states import KERNELS
from .views.listing import Fmt, render, state_counts


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:      # one line, exit 2, no usage dump
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


def _fmt(args: argparse.Namespace) -> Fmt:
    fmt = Fmt.NONE if args.names else Fmt.NUMERIC
    for flag, bit in (("exact", Fmt.EXACT), ("nosort", Fmt.NOSORT),
                      ("persistent_conn", Fmt.PERSISTENTCONN), ("stats", Fmt.STATS),
                      ("rate", Fmt.RATE), ("thresholds", Fmt.THRESHOLDS)):
        if getattr(args, flag):
            fmt |= bit
    return fmt


def _render(snap: dict, args: argparse.Namespace) -> str:
    if args.json:
        return json.dumps(snap) + "\n"
    return render(snap, _fmt(args), args.connection, args.timeout)


def _check_output(path: str | None, flag: str) -> None:
    """Refuse an output the run could not write, before the run: a file's directory must
    exist and be writable; a plot's DIR/ is made, so its nearest existing parent."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir() and not path.endswith("/"):
        raise UsageError(f"{flag} {path}: is a directory")
    parent = target.parent
    if path.endswith("/"):
        parent = target
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write in {parent}")


def _written(write, path: str, flag: str):
    """Run `write` (an output's writer); an OSError becomes one line."""
    try:
        return write()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write: {exc.strerror}") from None


def _check_listing(args: argparse.Namespace) -> None:
    """ipvsadm's "options conflicts in the list command"."""
    exclusive = [args.connection, args.timeout]
    shaping = [args.stats, args.rate, args.thresholds]
    if sum(exclusive) > 1 or (any(exclusive) and any(shaping)) or sum(shaping) > 1:
        raise UsageError("options conflicts in the list command")


def _load(args: argparse.Namespace, name: str = "config"):
    path = getattr(args, name)
    cfg = load(path, args.config_format)
    for warning in cfg.warnings:
        print(f"pyvs: warning: {warning}", file=sys.stderr)
    return cfg


def _events(args: argparse.Namespace) -> list:
    events = []
    if args.events:
        try:
            lines = Path(args.events).read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"{args.events}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{args.events}: not a text file") from None
        events += read_events(lines, f"{args.events}: line ")
    if args.event:
        events += read_events(args.event, "--event ")
    return sorted(events, key=lambda e: e.at)


def _check_replay_flags(args: argparse.Namespace) -> None:
    _check_listing(args)
    if args.at and any(t < 0 for t in args.at):
        raise UsageError("--at: times are seconds after the first packet, not negative")
    if args.sync_source and not args.sync_master:
        raise UsageError("--sync-source: the source of --sync-master's datagrams; give "
                         "--sync-master OUT.pcap")
    _check_output(args.plot, "--plot")


def cmd_replay(args: argparse.Namespace) -> int:
    from .drivers.pcap import CaptureError, ReadStats, read_captures
    from .drivers.replay import Replay
    from .views import replay as view
    from .views.snapshot import snapshot
    _check_replay_flags(args)
    director = _load(args).build(now=0.0)
    events = _events(args)
    reader = ReadStats()
    _start_sync_daemons(args, director, events)
    rp = Replay(director, args.replies_via_director, args.capture_point)
    recorder = _sync_recorder(args, director, rp)
    samples: list = []
    out = sys.stdout
    listings = 0
    last = 0.0
    packets = None
    finished = False
    try:
        packets = read_captures(args.capture, reader)
        first = next(packets, None)
        if first is None:
            raise UsageError(f"{', '.join(args.capture)}: no IPv4 packets in the capture")
        every = 1.0 if args.plot and not args.at else None
        for mark in rp.run(itertools.chain((first,), packets), args.at, events, every):
            last = mark.t
            if args.plot:
                samples += view.per_realserver(director, mark.t)
            if mark.what == "sample":
                continue
            snap = snapshot(director, mark.t, connections=args.connection or args.json)
            if args.json:
                out.write(json.dumps({**snap, "replay": view.summary(reader, rp)}) + "\n")
                continue
            if args.at and len(args.at) > 1:
                out.write(("\n" if listings else "") + f"# at {mark.t:g} s\n")
            out.write(_render(snap, args))
            listings += 1
        if recorder is not None:
            _finish_sync_recording(recorder, args, max(args.at) if args.at else last)
        finished = True
    except CaptureError as exc:
        raise UsageError(str(exc)) from None
    except ConfigError as exc:
        raise UsageError(f"pyvs replay: an event was refused: {exc}") from None
    finally:
        if packets is not None:
            packets.close()
        if recorder is not None and not finished:     # no half-written pcap left behind
            recorder.abandon()
    end = max(args.at) if args.at else last
    late = sum(e.at > end for e in events)
    if late:
        print(f"pyvs: warning: {late} event{'s' if late > 1 else ''} after the last --at "
              f"({end:g} s) {'were' if late > 1 else 'was'} not applied", file=sys.stderr)
    if not _forwarded(director) and not rp.feed.stats.synced:
        print(f"pyvs: warning: {', '.join(args.capture)}: no packet reached a realserver of "
              f"a service in {args.config} (the capture's traffic goes to "
              f"{view.destinations(rp.stats)}); the table shows none of it", file=sys.stderr)
    sys.stderr.write(view.summary_text(view.summary(reader, rp)))
    if args.plot:
        _written(lambda: view.plot(samples, args.plot, Path(args.capture[0]).name),
                 args.plot, "--plot")
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _start_sync_daemons(args: argparse.Namespace, director, events: list) -> None:
    """--sync-master / --sync-backup: a daemon of that kind from the start (syncid
    --syncid), unless the configuration starts one or an event does."""
    from .core.commands import StartDaemon
    for state, wanted, running in (("master", args.sync_master, director.sync_master),
                                   ("backup", args.sync_backup, director.sync_backup)):
        later = any(isinstance(e.command, StartDaemon) and e.command.state == state
                    for e in events)
        if wanted and running is None and not later:
            director.apply(StartDaemon(state, "replay", args.syncid), 0.0)


def _sync_recorder(args: argparse.Namespace, director, rp):
    """The --sync-master pcap, driven by the replay's ticks."""
    if not args.sync_master:
        return None
    from .drivers.syncpcap import SyncRecorder
    try:
        recorder = SyncRecorder(director, args.sync_master, rp.stats, args.sync_source)
    except OSError as exc:
        raise UsageError(f"--sync-master {args.sync_master}: cannot write: "
                         f"{exc.strerror}") from None
    rp.set_tick(recorder.drain)
    return recorder


def _finish_sync_recording(recorder, args: argparse.Namespace, end: float) -> None:
    from .core.packet import int_to_ip
    n = recorder.finish(end)
    src, sport = recorder.source
    note = (" (give --sync-source: no sync datagram of the capture's own gave one)"
            if recorder.guessed else "")
    print(f"pyvs replay: sync master: {n:,} datagrams, {recorder.records:,} records, "
          f"written to {args.sync_master}, from {int_to_ip(src)}:{sport}{note}",
          file=sys.stderr)


def _forwarded(director) -> bool:
    """Whether any packet was forwarded to a realserver (a service's counters moved)."""
    return bool(director.total_base.inpkts
                or any(svc.live_counters().inpkts for svc in director.services))


def cmd_check(args: argparse.Namespace) -> int:
    from .views.listing import list_all
    from .views.snapshot import snapshot
    director = _load(args).build()
    sys.stdout.write(list_all(snapshot(director, 0.0, connections=False),
                              Fmt.NUMERIC | Fmt.RULE))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .config.yamlfile import dump
    sys.stdout.write(dump(_load(args)))
    return 0


def _time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def cmd_scenarios(args: argparse.Namespace) -> int:
    from .sim.scenarios import BUILTIN
    for name, sc in BUILTIN.items():
        print(f"{name:<18} {sc.summary}")
    return 0


def _sim_config(args: argparse.Namespace):
    return _load(args) if args.config else None


def cmd_simulate(args: argparse.Namespace) -> int:
    from .sim import scenarios
    from .sim.run import run
    from .views.compare import simulation_text
    _check_listing(args)
    scenario = scenarios.get(args.scenario)
    at = tuple(args.at) if args.at else scenario.show or (scenario.duration,)
    result = run(scenario, args.mode, args.kernel, args.seed, _sim_config(args), at)
    if args.json:
        for snap, states in result.snapshots:
            sys.stdout.write(json.dumps({**snap, "truth": states}) + "\n")
        return 0
    sys.stdout.write(simulation_text(result, lambda snap: _render(snap, args)))
    return 0


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise UsageError(f"pyvs compare: --modes: {m!r} is not one of {', '.join(MODES)}")
    if not modes:
        raise UsageError("pyvs compare: --modes: no mode given")
    return modes


def cmd_compare(args: argparse.Namespace) -> int:
    from .views import compare
    extra: dict = {}
    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    if args.at and not args.capture:
        raise UsageError("pyvs compare: --at is for --capture (scenarios sample every second)")
    if args.from_files:
        if args.scenario or args.live or args.ssh_config or args.capture:
            raise UsageError("pyvs compare: --from reads saved results; it runs no scenario")
        results = [r for f in args.from_files for r in _saved_results(f)]
    elif args.capture:
        if args.scenario or args.live or args.ssh_config:
            raise UsageError("pyvs compare: --capture replays a capture; it runs no scenario")
        results, extra = _compare_capture(args)
    elif args.live or args.ssh_config:
        results = _compare_live(args)
    else:
        results = _compare_simulated(args)
    sys.stdout.write(compare.table(results, wide=args.wide))
    if args.json:
        text = json.dumps({**compare.as_json(results), **extra}, indent=1) + "\n"
        _written(lambda: Path(args.json).write_text(text), args.json, "--json")
    if args.plot:
        for path in _written(lambda: compare.plot(results, args.plot), args.plot, "--plot"):
            print(f"plot written to {path}", file=sys.stderr)
    return 0


def _compare_capture(args: argparse.Namespace) -> tuple[list, dict]:
    """The capture's traffic through a director per mode, against the truth it shows."""
    from dataclasses import asdict

    from .drivers.capture_compare import CompareError, compare
    from .drivers.pcap import CaptureError
    from .views.replay import capture_summary
    if not args.config:
        raise UsageError("pyvs compare --capture: --config FILE: the director's services")
    if args.at and any(t < 0 for t in args.at):
        raise UsageError("--at: times are seconds after the first packet, not negative")
    config = _load(args)
    if args.kernel:
        from dataclasses import replace
        config = replace(config, kernel=args.kernel)
    try:
        results, basis, reader, stats = compare(args.capture, config,
                                                _modes(args.modes or "nat,dr"), args.at)
    except (CaptureError, CompareError) as exc:
        raise UsageError(str(exc)) from None
    summary = capture_summary(reader, stats)
    sys.stdout.write(f"capture: {summary['capture_point']}; {summary['packets']:,} IPv4 "
                     f"packets over {summary['duration']:.3f} s\n{basis.text()}\n\n")
    return results, {"capture": {**summary, "truth": {**asdict(basis),
                                                      "text": basis.text()}}}


def _compare_simulated(args: argparse.Namespace) -> list:
    from .sim import scenarios
    from .sim.run import run
    from .views.progress import Progress
    modes = _modes(args.modes or "nat,dr")
    chosen = [scenarios.get(n) for n in args.scenario or list(scenarios.BUILTIN)]
    config = _sim_config(args)
    runs = [(sc, mode) for sc in chosen for mode in modes
            if not sc.modes or mode in sc.modes]       # e.g. ECMP runs in DR and TUN only
    progress = Progress(len(runs))
    results = []
    for sc, mode in runs:
        progress.step(f"{sc.name} {mode}")
        results.append(run(sc, mode, args.kernel, args.seed, config))
    progress.done()
    return results


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
    from .views.progress import Progress
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
    progress = Progress(len(names) * len(modes))
    try:
        results = live_compare.compare(names, modes, progress)
    except netns.LabError as exc:
        raise UsageError(f"pyvs compare --live: {exc}") from None
    progress.done()
    return results


def _table_snapshot(args: argparse.Namespace, connections: bool) -> dict:
    """The table from a saved snapshot (--from) or the running director's socket."""
    from .control import NoDirector, default_socket, request
    from .views.snapshot import SnapshotError, read_saved
    if args.from_file:
        try:
            return read_saved(args.from_file, connections)
        except SnapshotError as exc:
            raise UsageError(str(exc)) from None
    try:
        return request(args.socket or default_socket(),
                       {"op": "snapshot", "connections": connections})["snapshot"]
    except NoDirector as exc:
        raise UsageError(f"pyvs: {exc}; start one with pyvs serve or pyvs run, "
                         "or list a saved table with --from FILE.json") from None


def cmd_list(args: argparse.Namespace) -> int:
    _check_listing(args)
    if args.save_yaml:
        from .config import from_snapshot
        from .config.yamlfile import dump
        sys.stdout.write(dump(from_snapshot(_table_snapshot(args, False))))
        return 0
    sys.stdout.write(_render(_table_snapshot(args, args.connection or args.json), args))
    return 0


def cmd_states(args: argparse.Namespace) -> int:
    """The director's entries counted by state, as `netstat -n | awk` counts sockets."""
    sys.stdout.write(state_counts(_table_snapshot(args, True), args.per_realserver))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .views import procfs
    procfs.export(_table_snapshot(args, True), args.dir)
    return 0


def _size(text: str) -> int:
    """512M, 2G, 300000 (bytes): a memory budget."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 512M, 2G)")
    return int(digits) * scale


def _sync_source(text: str) -> tuple[int, int]:
    """ADDR or ADDR:PORT, the source of recorded sync datagrams."""
    from .core.packet import ip_to_int
    addr, _, port = text.partition(":")
    try:
        value = ip_to_int(addr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {addr!r} is not an IPv4 address"
                                         ) from None
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"{text!r}: {port!r} is not a port (1-65535)")
    from .core.syncmsg import SYNC_PORT
    return value, int(port) if port else SYNC_PORT


def _syncid(text: str) -> int:
    if not text.isdigit() or int(text) > 255:
        raise argparse.ArgumentTypeError(f"{text!r} is not a syncid (0-255)")
    return int(text)


def _queues(text: str) -> int:
    from .drivers.queues import MAX_QUEUES
    if not text.isdigit() or not 1 <= int(text) <= MAX_QUEUES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of queues "
                                         f"(1-{MAX_QUEUES})")
    return int(text)


def _director(args: argparse.Namespace, cfg=None):
    from .core.engine import Director
    from .drivers.syncsock import links  # the interfaces a configured sync daemon names
    if cfg is None and args.config:
        cfg = _load(args)
    director = cfg.build(0.0, links()) if cfg is not None else Director()
    if args.max_memory:
        director.set_memory_limit(args.max_memory, 0.0)
    return director


def cmd_serve(args: argparse.Namespace) -> int:
    """A director with no packet source: a control plane to drive with pyvsadm; the
    configuration's health checks run beside it, through its control socket."""
    from .control import SocketPathError, default_socket
    from .drivers.daemon import serve
    cfg = _load(args) if args.config else None
    path = args.socket or default_socket()
    checks = _start_checks(cfg, path) if cfg is not None and cfg.has_checks() else None
    try:
        return serve(_director(args, cfg), path, args.procfs, args.metrics)
    except (OSError, SocketPathError) as exc:
        raise UsageError(f"pyvs serve: {exc}") from None
    finally:
        if checks is not None:
            checks.close()


def _start_checks(cfg, path: str):
    import logging

    from .drivers.health import Checks, over_socket
    logging.basicConfig(level=logging.INFO, format="pyvs: %(message)s", stream=sys.stderr)
    return Checks(cfg, over_socket(path)).start()


def cmd_checks(args: argparse.Namespace) -> int:
    """keepalived's checker beside a running director: the configuration's checks, their
    changes sent to the director's control socket, until SIGINT/SIGTERM."""
    import signal
    import threading

    from .control import NoDirector, default_socket, request
    cfg = _load(args)
    if not cfg.has_checks():
        raise UsageError(f"pyvs checks: {args.config} has no health checks")
    path = args.socket or default_socket()
    try:
        table = request(path, {"op": "snapshot", "connections": False})["snapshot"]
    except NoDirector as exc:
        raise UsageError(f"pyvs checks: {exc}; start one with pyvs run or pyvs serve") from None
    from .config import from_snapshot
    from .config.model import pool_name
    have = {vs.key for vs in from_snapshot(table).services}
    for vs in cfg.services:
        if vs.key not in have:
            print(f"pyvs: warning: the director has no {pool_name(vs.key)}: its checks' "
                  "changes will be refused", file=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    checks = _start_checks(cfg, path)
    n = sum(len(rs.checks) for vs in cfg.services for rs in vs.realservers)
    print(f"pyvs: checks: {n} checks of {len(cfg.pools())} virtual servers, changes to "
          f"{path}", file=sys.stderr)
    try:
        stop.wait()
    finally:
        checks.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from .control import SocketPathError, default_socket
    from .drivers import daemon, live, netfilter
    logging.basicConfig(level=logging.INFO, format="pyvs: %(message)s", stream=sys.stderr)
    cfg = _load(args) if args.config else None
    director = _director(args, cfg)
    state = None if args.no_state else Path(args.state) if args.state else daemon.state_path()
    try:
        return live.run(director, args.socket or default_socket(), args.queue,
                        args.fail_closed, args.procfs, args.metrics, state,
                        args.restart_grace, args.queues, cfg)
    except (netfilter.SetupError, OSError, SocketPathError) as exc:
        raise UsageError(f"pyvs run: {exc}") from None


def cmd_cleanup(args: argparse.Namespace) -> int:
    from .drivers import netfilter
    from .drivers.daemon import saved_tables, state_path
    done = netfilter.undo()
    if args.table:            # the namespace goes away: its saved table will never load
        for _, path in saved_tables(state_path()):
            path.unlink(missing_ok=True)
            done.append(f"saved table {path}")
    for step in done:
        print(f"removed: {step}")
    if not done:
        print("pyvs cleanup: nothing of pyvs's in this network namespace")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from .lab import netns
    try:
        if args.action == "up":
            netns.up(args.mode, args.realservers, args.clients,
                     run_args=("--queues", str(args.queues)) if args.queues > 1 else (),
                     n_directors=args.directors)
        elif args.action == "failover":
            return netns.failover()
        elif args.action == "down":
            netns.down()
        elif args.action == "status":
            return netns.status()
        elif args.action == "check":
            return netns.check()
        elif args.action == "config":
            sys.stdout.write(netns.config_yaml(args.mode, args.realservers, args.sync_iface))
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


def _config_flags(p: argparse.ArgumentParser, required: bool, text: str) -> None:
    p.add_argument("--config", required=required, help=text + " (pyvs YAML, an ipvsadm "
                   "rules file as ipvsadm -S writes it, a keepalived.conf, or a shipped "
                   "name: nat, dr, ...)")
    p.add_argument("--config-format", choices=FORMATS,
                   help="the config's format (default: detected from its content)")


def _sim_flags(p: argparse.ArgumentParser) -> None:
    _config_flags(p, False, "the director's services (default: the built-in lab's)")
    p.add_argument("--kernel", choices=KERNELS, help="kernel profile (default: the config's)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")


def _add_replay(sub) -> None:
    r = sub.add_parser("replay", help="feed a capture through the director, list the table")
    r.add_argument("capture", nargs="+", help="pcap or pcapng files (Ethernet, raw IP, Linux "
                   "cooked); several (tcpdump -C/-G rotations) are merged in time order")
    _config_flags(r, True, "the director's configuration")
    r.add_argument("--at", type=_time, action="append", metavar="T",
                   help="list the table T seconds after the first packet (repeatable)")
    r.add_argument("--event", action="append", metavar="'T COMMAND'",
                   help="a control-plane change at T: 'T ipvsadm ARGS' or "
                   "'T sysctl NAME=VALUE' (repeatable)")
    r.add_argument("--events", metavar="FILE", help="events, one 'T COMMAND' a line")
    r.add_argument("--capture-point", choices=("auto", "client", "director"), default="auto")
    r.add_argument("--replies-via-director", action="store_true",
                   help="DR/TUN replies cross the director (realserver gateway = director)")
    r.add_argument("--plot", metavar="FILE.png", help="plot ActiveConn and InActConn per "
                   "realserver over the capture (each second, or at each --at)")
    r.add_argument("--sync-master", metavar="OUT.pcap", help="write the sync datagrams "
                   "this director would send as master, when it would send them")
    r.add_argument("--sync-source", type=_sync_source, metavar="ADDR[:PORT]",
                   help="their source (default: that of the capture's own sync datagrams)")
    r.add_argument("--sync-backup", action="store_true", help="run a backup daemon: the "
                   "capture's sync datagrams (224.0.0.81:8848) update the table")
    r.add_argument("--syncid", type=_syncid, default=0, metavar="N",
                   help="the syncid of the daemons these flags start (0: a backup takes any)")
    _listing_flags(r)
    r.set_defaults(func=cmd_replay)


def _add_tables(sub) -> None:
    c = sub.add_parser("check-config", help="validate a configuration, print it as ipvsadm -S")
    c.add_argument("config")
    c.add_argument("--config-format", choices=FORMATS)
    c.set_defaults(func=cmd_check)
    im = sub.add_parser("import", help="print a configuration (any format) as pyvs YAML")
    im.add_argument("config")
    im.add_argument("--config-format", choices=FORMATS)
    im.set_defaults(func=cmd_import)
    li = sub.add_parser("list", help="list the running director's table (ipvsadm -L)")
    _table_source(li)
    _listing_flags(li)
    li.add_argument("--save-yaml", action="store_true",
                    help="print the director's configuration as pyvs YAML")
    li.set_defaults(func=cmd_list)
    st = sub.add_parser("states", help="state counts of the director's table (netstat|awk)")
    st.add_argument("--per-realserver", action="store_true")
    _table_source(st)
    st.set_defaults(func=cmd_states)
    ex = sub.add_parser("export", help="write the table as /proc/net/ip_vs* files")
    ex.add_argument("what", choices=("procfs",))
    ex.add_argument("dir", help="DIR: writes DIR/net/ip_vs, ip_vs_conn, ip_vs_conn_sync, "
                    "ip_vs_stats")
    _table_source(ex)
    ex.set_defaults(func=cmd_export)


def _add_director(sub) -> None:
    for name, text in (("serve", "run a director with no packet source (control plane)"),
                       ("run", "the live director: NFQUEUE, iptables, policy routes")):
        p = sub.add_parser(name, help=text)
        _config_flags(p, name == "run", "the director's configuration"
                      + (" (default: none)" if name == "serve" else ""))
        p.add_argument("--socket", help="control socket path")
        p.add_argument("--procfs", metavar="DIR", help="keep DIR/net/ip_vs* current")
        p.add_argument("--metrics", metavar="[HOST]:PORT",
                       help="serve Prometheus metrics (all addresses unless HOST is given)")
        p.add_argument("--max-memory", type=_size, metavar="SIZE",
                       help="the table's memory budget (e.g. 512M): the kernel's defenses "
                       "(amemthresh, drop_entry, drop_packet, secure_tcp) act on it, and "
                       "no entry is made past it")
        if name == "run":
            p.add_argument("--queue", type=int, default=0, help="NFQUEUE number (default 0)")
            p.add_argument("--queues", type=_queues, default=1, metavar="N",
                           help="N queues from --queue on, one worker process each, "
                           "split by client address (default 1: one engine, as the "
                           "kernel's one table)")
            p.add_argument("--fail-closed", action="store_true",
                           help="drop queued traffic while no director runs (default: bypass)")
            p.add_argument("--state", metavar="FILE",
                           help="the table is saved here at stop (and every minute) and "
                           "loaded at start (default: in the runtime directory)")
            p.add_argument("--no-state", action="store_true",
                           help="neither save nor load the table")
            p.add_argument("--restart-grace", type=float, default=10.0, metavar="S",
                           help="a stop holds the queued traffic S seconds for a restart "
                           "(default 10; 0: remove every rule at once)")
        p.set_defaults(func=cmd_serve if name == "serve" else cmd_run)
    c = sub.add_parser("cleanup", help="remove every rule, route and sysctl a dead director "
                       "left in this network namespace")
    c.add_argument("--table", action="store_true", help="also the table it saved for its "
                   "next start (for a namespace that is going away)")
    c.set_defaults(func=cmd_cleanup)
    ch = sub.add_parser("checks", help="run a configuration's health checks (keepalived's "
                        "checkers) against a running director")
    _config_flags(ch, True, "the configuration whose checks to run")
    ch.add_argument("--socket", help="the director's control socket")
    ch.set_defaults(func=cmd_checks)


def _add_lab(sub) -> None:
    lab = sub.add_parser("lab", help="a cluster of network namespaces running pyvs (root)")
    lsub = lab.add_subparsers(dest="action", required=True, parser_class=_Parser)
    lu = lsub.add_parser("up", help="build the cluster and start the director")
    lc = lsub.add_parser("config", help="print the lab director's config")
    for q in (lu, lc):
        q.add_argument("--mode", choices=MODES, default="nat")
        q.add_argument("--realservers", type=int, default=2)
    lc.add_argument("--sync-iface", metavar="IFACE",
                    help="a master and a backup sync daemon on IFACE (a director pair)")
    lu.add_argument("--clients", type=int, default=1)
    lu.add_argument("--queues", type=_queues, default=1, metavar="N",
                    help="the director runs N queues, one worker each (pyvs run --queues)")
    lu.add_argument("--directors", type=int, default=1, choices=(1, 2),
                    help="2: a second director and a sync daemon pair (NAT or DR)")
    lsub.add_parser("failover", help="move the VIP to the other director, as keepalived's "
                    "VRRP does (--directors 2)")
    lsub.add_parser("down", help="stop everything, delete the namespaces")
    lsub.add_parser("status", help="processes and addresses")
    lsub.add_parser("check", help="diagnose the classic LVS set-up mistakes")
    lsub.add_parser("ssh-config", help="an ssh_config reaching the lab's hosts over a "
                    "real sshd, as `vagrant ssh-config` does for the VMs")
    le = lsub.add_parser("exec", help="run a command on a lab host: exec HOST -- CMD")
    le.add_argument("host", help="client, c1.., director, rs1..")
    le.add_argument("cmd", nargs=argparse.REMAINDER)
    lab.set_defaults(func=cmd_lab)


def _add_simulation(sub) -> None:
    sub.add_parser("scenarios", help="list the built-in scenarios").set_defaults(
        func=cmd_scenarios)
    s = sub.add_parser("simulate", help="run a scenario; list the table and the truth")
    s.add_argument("scenario", help="a built-in scenario name or a scenario YAML file")
    s.add_argument("--mode", choices=MODES,
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
    m.add_argument("--plot", metavar="FILE.png|DIR/",
                   help="write a plot of the runs (DIR/: an overview and one per scenario)")
    m.add_argument("--json", metavar="FILE", help="write samples and summaries as JSON")
    m.add_argument("--wide", action="store_true", help="every column of the table")
    m.add_argument("--live", action="store_true",
                   help="run the live scenarios on the namespace lab (root)")
    m.add_argument("--ssh-config", metavar="FILE",
                   help="run the live scenarios on a cluster over ssh: FILE names the hosts "
                   "client, director, rs1.. (vagrant ssh-config > FILE)")
    m.add_argument("--from", dest="from_files", action="append", metavar="FILE.json",
                   help="print (and --plot) results saved with --json (repeatable)")
    m.add_argument("--capture", nargs="+", metavar="FILE",
                   help="replay captures (pcap/pcapng) through a director per mode, against "
                   "the realservers' sockets inferred from them (needs --config)")
    m.add_argument("--at", type=_time, action="append", metavar="T",
                   help="with --capture: sample T seconds after the first packet "
                   "(repeatable; default every second)")
    _sim_flags(m)
    m.set_defaults(func=cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyvs", description="A userspace LVS/IPVS director and table emulator.")
    p.add_argument("--version", action="version", version=f"pyvs {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    for add in (_add_replay, _add_tables, _add_director, _add_lab, _add_simulation):
        add(sub)
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


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
