"""Timed control-plane events in text: `T ipvsadm ARGS...` or `T sysctl NAME=VALUE`.

T is seconds (after a capture's first packet in replay, simulated seconds in a scenario);
ipvsadm arguments are parsed by pyvsadm's parser, so an event means what the same
pyvsadm command means against a running director.  NAME is a file of
/proc/sys/net/ipv4/vs (`net.ipv4.vs.` may be written before it); sync_threshold takes its
two numbers ("3 50"), written at once as the kernel's file is.
"""

from __future__ import annotations

import shlex

from ..core import commands as C
from ..core.sysctls import PAIRS
from ..pyvsadm import Exit, parse
from .model import ConfigFileError

CHANGES = ("add-service", "edit-service", "delete-service", "flush", "add-server",
           "edit-server", "delete-server", "zero", "set", "start-daemon", "stop-daemon")


class EventError(ValueError):
    """An event that cannot be read; the text names it and says why."""


def sysctl_commands(assignment: str) -> list[C.Command]:
    """`NAME=VALUE` -> the command it makes (a list, one command)."""
    name, eq, value = assignment.partition("=")
    name = name.strip().removeprefix("net.ipv4.vs.").replace("/", ".")
    if not eq or not name:
        raise EventError(f"sysctl {assignment!r}: expected NAME=VALUE")
    parts = value.split()
    names = PAIRS.get(name, (name,))
    if len(parts) != len(names) or not all(p.lstrip("-").isdigit() for p in parts):
        raise EventError(f"sysctl {name}: {value!r} is not {len(names)} integer(s)")
    cmd: C.Command = (C.SetSyncThreshold(int(parts[0]), int(parts[1])) if len(parts) == 2
                      else C.SetSysctl(name, int(parts[0])))
    problem = C.check(cmd)
    if problem:
        raise EventError(f"sysctl {problem}")
    return [cmd]


def parse_event(text: str) -> list[C.Event]:
    """One event line -> its events."""
    words = shlex.split(text, comments=True)
    if not words:
        return []
    try:
        at = float(words[0])
    except ValueError:
        raise EventError(f"{words[0]!r} is not a time in seconds") from None
    if at < 0 or at != at:
        raise EventError(f"{words[0]}: a time must be 0 or more seconds")
    if len(words) < 2 or words[1] not in ("ipvsadm", "pyvsadm", "sysctl"):
        raise EventError("expected `T ipvsadm ARGS...` or `T sysctl NAME=VALUE`")
    if words[1] == "sysctl":
        return [C.Event(at, cmd) for cmd in sysctl_commands(" ".join(words[2:]))]
    try:
        inv = parse(words[2:], "ipvsadm")
    except Exit as exc:
        raise EventError(exc.message.strip().splitlines()[0] if exc.message
                         else "not an ipvsadm change") from None
    if inv.cmd not in CHANGES:
        raise EventError(f"ipvsadm {inv.cmd} is not a change (events change the table)")
    return [C.Event(at, inv.command())]


def read_events(lines: list[str], where: str) -> list[C.Event]:
    """Events from the lines of an --events file (or the --event options), in time
    order, events at one instant in the order given; ConfigFileError naming the line."""
    events: list[C.Event] = []
    for n, line in enumerate(lines, 1):
        try:
            events.extend(parse_event(line))
        except (EventError, ValueError) as exc:
            raise ConfigFileError(f"{where}{n}: {line.strip()!r}: {exc}") from None
    return sorted(events, key=lambda e: e.at)
