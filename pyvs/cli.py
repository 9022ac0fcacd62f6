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
