"""`pyvsadm`: ipvsadm 1.31's command line, against a running pyvs director.

Parsing follows ipvsadm.c's parse_options() and process_options(): popt-style options
(combined short flags such as -Ln, -Lnc, -At; `-p` with an optional argument), the
commands_v_options legality table and its error texts, the same exit statuses (2 for a
usage error, 255 when the director refuses a change, with libipvs's message).  A parsed
command line is an :class:`Invocation`; a change becomes a core control-plane command
(:mod:`pyvs.core.commands`) that the director applies, so ipvsadm rules files and replay
events share this parser.  Listings are rendered here from a snapshot of the director.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from .control import NoDirector, default_socket, request
from .core import commands as C
from .core.forwarding import DROUTE, MASQ, TUNNEL
from .core.limits import (
    DEFAULT_SCHEDULER,
    MAX_FWMARK,
    MAX_PORT,
    MAX_THRESHOLD,
    MAX_TIMEOUT,
    MAX_WEIGHT,
    NETMASK_ALL,
    PERSISTENT_TIMEOUT,
    SCHEDNAME_MAXLEN,
)
from .core.packet import IPPROTO_TCP, IPPROTO_UDP, PROTO_NAMES, int_to_ip
from .core.schedulers import SCHED_FLAG_BITS, sched_flags
from .core.service import SVC_F_ONEPACKET, SVC_F_PERSISTENT
from .views.listing import (
    Fmt,
    list_all,
    list_conn,
    list_daemon,
    list_timeout,
    service_entry,
    title,
)

VERSION = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)"
DEF_MCAST_IFN = "eth0"          # ipvsadm's default --mcast-interface

# ipvsadm.c's optnames[] and commands_v_options[][]: '+' compulsory, 'x' illegal,
# '1' exclusive, ' ' optional
OPTS = ("numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
        "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
        "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
        "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
        "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
        "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
LEGAL = {
    "add-service":    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    "edit-service":   "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    "delete-service": "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "flush":          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "list":           " 11xxxxxxxxx11       xxxxxxx xxxxx",
    "add-server":     "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    "delete-server":  "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "edit-server":    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    "set":            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "start-daemon":   "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
    "stop-daemon":    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
    "restore":        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "save":           " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "zero":           "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
}

# the first option: a command (or help/version)
_COMMANDS = {"A": "add-service", "E": "edit-service", "D": "delete-service", "C": "flush",
             "L": "list", "l": "list", "Z": "zero", "a": "add-server", "e": "edit-server",
             "d": "delete-server", "R": "restore", "S": "save", "set": "set",
             "start-daemon": "start-daemon", "stop-daemon": "stop-daemon"}
# spelling -> tag; which tags take an argument (2: optional, as -p)
_SHORT = {c: c for c in "AEDCLlZaedhvRStufsMrmigwxyncX6ob"} | {"p": "p"}
_LONG = {"add-service": "A", "edit-service": "E", "delete-service": "D", "clear": "C",
         "list": "L", "zero": "Z", "add-server": "a", "edit-server": "e",
         "delete-server": "d", "help": "h", "version": "v", "restore": "R", "save": "S",
         "tcp-service": "t", "udp-service": "u", "fwmark-service": "f", "scheduler": "s",
         "persistent": "p", "netmask": "M", "real-server": "r", "masquerading": "m",
         "ipip": "i", "gatewaying": "g", "weight": "w", "u-threshold": "x",
         "l-threshold": "y", "numeric": "n", "connection": "c", "exact": "X", "ipv6": "6",
         "ops": "o", "sched-flags": "b"}
for _name in ("set", "start-daemon", "stop-daemon", "sctp-service", "mcast-interface",
              "syncid", "timeout", "daemon", "stats", "rate", "thresholds",
              "persistent-conn", "nosort", "sort", "pe", "mcast-group", "mcast-port",
              "mcast-ttl", "sync-maxlen", "tun-info", "tun-type", "tun-port", "tun-nocsum",
              "tun-csum", "tun-remcsum"):
    _LONG[_name] = _name
_ARG = {"t": 1, "u": 1, "sctp-service": 1, "f": 1, "s": 1, "M": 1, "r": 1, "w": 1, "x": 1,
        "y": 1, "b": 1, "start-daemon": 1, "stop-daemon": 1, "mcast-interface": 1,
        "syncid": 1, "pe": 1, "mcast-group": 1, "mcast-port": 1, "mcast-ttl": 1,
        "sync-maxlen": 1, "tun-type": 1, "tun-port": 1, "p": 2}
# listing options: the Fmt bit each sets
_FORMATS = {"n": Fmt.NUMERIC, "stats": Fmt.STATS, "rate": Fmt.RATE,
            "thresholds": Fmt.THRESHOLDS, "persistent-conn": Fmt.PERSISTENTCONN,
            "nosort": Fmt.NOSORT, "X": Fmt.EXACT, "c": Fmt.NONE, "timeout": Fmt.NONE,
            "daemon": Fmt.NONE, "tun-info": Fmt.TUN_INFO}
_OPTION_OF = {"n": "numeric", "c": "connection", "X": "exact", "tun-info": "tun-info"}


class Exit(Exception):
    """Stop with this status after printing `message` (to stderr unless status is 0)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.line: int | None = None      # the rules-file line it came from


def fail(message: str) -> Exit:
    return Exit(2, message)


@dataclass
class Invocation:
    """One parsed ipvsadm command line (or -R line), before the director is asked."""

    cmd: str = ""
    options: set[str] = field(default_factory=set)
    fmt: Fmt = Fmt.NONE
    protocol: int = IPPROTO_TCP
    addr: int = 0
    port: int = 0
    fwmark: int = 0
    sched: str = ""
    flags: int = 0
    timeout: int = 0
    netmask: int = NETMASK_ALL
    daddr: int = 0
    dport: int = 0
    fwd: int = DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    timeouts: tuple[int, int, int] = (0, 0, 0)
    sched_flags: str = ""
    daemon: str = ""                # --start-daemon / --stop-daemon: master or backup
    mcast_ifn: str = ""
    syncid: int = 0
    sync_maxlen: int = 0
    mcast_group: int = 0
    mcast_port: int = 0
    mcast_ttl: int = 0

    @property
    def service(self) -> C.ServiceKey:
        return C.ServiceKey(self.protocol, 0 if self.fwmark else self.addr,
                            0 if self.fwmark else self.port, self.fwmark)

    def command(self) -> C.Command:
        """The control-plane change this command line asks for."""
        svc = self.service
        if self.cmd in ("add-service", "edit-service"):
            cls = C.AddService if self.cmd == "add-service" else C.EditService
            return cls(svc, self.sched, self.flags, self.timeout, self.netmask)
        if self.cmd in ("add-server", "edit-server"):
            cls2 = C.AddDest if self.cmd == "add-server" else C.EditDest
            return cls2(svc, self.daddr, self.dport, self.fwd, self.weight,
                        self.u_threshold, self.l_threshold)
        simple: dict[str, Callable[[], C.Command]] = {
            "delete-service": lambda: C.DelService(svc),
            "delete-server": lambda: C.DelDest(svc, self.daddr, self.dport),
            "flush": C.Flush,
            "zero": lambda: C.Zero(svc if "service-address" in self.options else None),
            "set": lambda: C.SetTimeouts(*self.timeouts),
            "start-daemon": lambda: C.StartDaemon(
                self.daemon, self.mcast_ifn, self.syncid, self.sync_maxlen, self.mcast_group,
                self.mcast_port, self.mcast_ttl),
            "stop-daemon": lambda: C.StopDaemon(self.daemon),
        }
        return simple[self.cmd]()


# ---------------------------------------------------------------------- parsing helpers
_STRTOL = re.compile(r"\s*[+-]?[0-9]+")


def number(text: str, low: int, high: int) -> int:
    """string_to_number(): strtol over the whole string, in range, else -1."""
    if not _STRTOL.fullmatch(text):
        return -1
    value = int(text)
    return value if low <= value <= high else -1


def host(name: str) -> int | None:
    """inet_aton() (so 010.0.0.1 is octal: 8.0.0.1, and 10 is 0.0.0.10), else a host
    name; None for neither.  An empty name is no address (glibc resolves none)."""
    if not name:
        return None
    try:
        return int.from_bytes(socket.inet_aton(name), "big")
    except OSError:
        pass
    try:
        return int.from_bytes(socket.inet_aton(socket.gethostbyname(name)), "big")
    except (OSError, UnicodeError):
        return None


def parse_service(text: str, protocol: int) -> tuple[int, int, int | None]:
    """parse_service(): (bits, addr, port); bit 1 = an address, bit 2 = a port."""
    if not text or text.isdigit():
        return 0, 0, None
    name, sep, port_text = text.rpartition(":")
    if not sep:
        name, port_text = text, ""
    addr = host(name)
    if addr is None:
        return 0, 0, None
    if not sep:
        return 1, addr, None
    port = number(port_text, 0, MAX_PORT)
    if port == -1:
        try:
            port = socket.getservbyname(port_text, PROTO_NAMES.get(protocol, "tcp").lower())
        except OSError:
            return 0, 0, None
    return 3, addr, port


def _timeout(text: str | None, low: int, high: int) -> int:
    """parse_timeout(): -p with no value is 360 s."""
    if text is None:
        return PERSISTENT_TIMEOUT
    value = number(text, low, high)
    if value == -1:
        raise fail(f"invalid timeout value `{text}' specified")
    return value


def _tokens(argv: list[str]) -> Iterator[tuple[str | None, str | None, str]]:
    """popt-like: (tag, argument, spelling) for options, (None, arg, arg) for arguments;
    tag "?" for an unknown option, "!" for one missing its argument."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok == "--":
            for rest in argv[i:]:
                yield None, rest, rest
            return
        if tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            tag = _LONG.get(name)
            needs = _ARG.get(tag or "", 0)
            if tag is None:
                yield "?", None, tok
                continue
            if needs and not eq:
                if i < len(argv) and (needs == 1 or not argv[i].startswith("-")):
                    value = argv[i]
                    i += 1
                elif needs == 1:
                    yield "!", None, tok
                    continue
                else:
                    yield tag, None, tok
                    continue
            yield tag, (value if needs else None), tok
        elif tok.startswith("-") and len(tok) > 1:
            for j, ch in enumerate(tok[1:], 2):
                tag = _SHORT.get(ch)
                if tag is None:
                    yield "?", None, tok
                    break
                needs = _ARG.get(tag, 0)
                if not needs:
                    yield tag, None, tok
                    continue
                attached: str | None = tok[j:] or None
                if attached is None and i < len(argv) and (
                        needs == 1 or not argv[i].startswith("-")):
                    attached = argv[i]
                    i += 1
                yield ("!", None, tok) if attached is None and needs == 1 else (
                    tag, attached, tok)
                break
        else:
            yield None, tok, tok


# ---------------------------------------------------------------------- option handlers
def _opt(c: Invocation, name: str) -> None:
    if name in c.options:
        raise fail(f"multiple '{name}' options specified")
    c.options.add(name)


def _on_service(c: Invocation, tag: str, value: str) -> None:
    _opt(c, "service-address")
    if tag == "sctp-service":
        raise Exit(255, "pyvs does not do SCTP services")
    c.protocol = IPPROTO_TCP if tag == "t" else IPPROTO_UDP
    bits, c.addr, port = parse_service(value, c.protocol)
    if not bits & 1:
        raise fail("illegal virtual server address[:port] specified")
    c.port = port or 0


def _on_fwmark(c: Invocation, tag: str, value: str) -> None:
    _opt(c, "service-address")
    mark = number(value, 1, MAX_FWMARK)
    if mark == -1:
        raise fail(f"invalid fwmark value `{value}' specified")
    c.protocol, c.fwmark = IPPROTO_TCP, mark


def _on_scheduler(c: Invocation, tag: str, value: str) -> None:
    _opt(c, "scheduler")
    c.sched = value[:SCHEDNAME_MAXLEN - 1]


def _on_persistent(c: Invocation, tag: str, value: str | None) -> None:
    _opt(c, "persistent")
    c.flags |= SVC_F_PERSISTENT
    c.timeout = _timeout(value, 1, MAX_TIMEOUT)


def _on_netmask(c: Invocation, tag: str, value: str) -> None:
    _opt(c, "netmask")
    mask = host(value)
    if mask is None:
        raise fail("illegal virtual server persistent mask specified")
    c.netmask = mask


def _on_real_server(c: Invocation, tag: str, value: str) -> None:
    _opt(c, "real-server")
    bits, c.daddr, port = parse_service(value, c.protocol)
    if not bits & 1:
        raise fail("illegal real server address[:port] specified")
    c.dport = c.port if bits == 1 else port or 0       # no port: the service's


def _on_forward(c: Invocation, tag: str, value: None) -> None:
    _opt(c, "forwarding-method")
    c.fwd = {"i": TUNNEL, "g": DROUTE, "m": MASQ}[tag]


_NUMBERS = {"w": ("weight", "weight", MAX_WEIGHT), "x": ("u-threshold", "u_threshold",
            MAX_THRESHOLD), "y": ("l-threshold", "l_threshold", MAX_THRESHOLD)}


def _on_number(c: Invocation, tag: str, value: str) -> None:
    option, attr, high = _NUMBERS[tag]
    _opt(c, option)
    n = number(value, 0, high)
    if n == -1:
        raise fail(f"illegal {attr} specified")
    setattr(c, attr, n)


def _on_format(c: Invocation, tag: str, value: None) -> None:
    _opt(c, _OPTION_OF.get(tag, tag))
    c.fmt |= _FORMATS[tag]


def _on_ipv6(c: Invocation, tag: str, value: None) -> None:
    raise fail("pyvs does not do IPv6" if c.fwmark else "-6 used before -f\n")


def _on_ops(c: Invocation, tag: str, value: None) -> None:
    _opt(c, "ops")
    c.flags |= SVC_F_ONEPACKET


def _sched_flag_items(arg: str) -> list[str]:
    """strtok(arg, ","): the items, empty ones skipped.  An argument of commas only
    gives none, and ipvsadm 1.31 then passes NULL to strcmp() and crashes; pyvs says
    what it read instead."""
    items = [item for item in arg.split(",") if item]
    if not items:
        raise ValueError(f"invalid scheduler flag `{arg}'")
    return items


def _on_sched_flags(c: Invocation, tag: str, value: str) -> None:
    _opt(c, "sched-flags")
    c.sched_flags = value[:127]       # snprintf() into sched_flags_arg[128]


def _on_unmodelled(c: Invocation, tag: str, value: str | None) -> None:
    """Options pyvs parses but does not model: refused, never accepted and ignored."""
    _opt(c, tag)
    if tag == "pe":
        raise Exit(255, f"--pe {value}: pyvs has no persistence engines")
    if tag == "tun-type" and value == "ipip":
        return
    raise Exit(255, f"--{tag}: pyvs tunnels with IPIP only (gue and gre are not modelled)")


# the daemon options' numbers: (attribute, low, high)
_DAEMON_NUMBERS = {"syncid": ("syncid", 0, 255), "mcast-port": ("mcast_port", 1, MAX_PORT),
                   "mcast-ttl": ("mcast_ttl", 1, 255),
                   "sync-maxlen": ("sync_maxlen", 1, C.MAX_SYNC_MAXLEN)}


def _on_daemon_option(c: Invocation, tag: str, value: str) -> None:
    _opt(c, tag)
    if tag == "mcast-interface":
        c.mcast_ifn = value.encode()[:C.IFNAME_MAXLEN - 1].decode(errors="ignore")  # strncpy
    elif tag == "mcast-group":
        c.mcast_group = _mcast_group(value)
    else:
        attr, low, high = _DAEMON_NUMBERS[tag]
        n = number(value, low, high)
        if n == -1:
            raise fail(f"illegal {tag} specified")
        setattr(c, attr, n)


def _mcast_group(text: str) -> int:
    """inet_pton() and IN_MULTICAST(), as ipvsadm checks --mcast-group."""
    if ":" in text:
        try:
            first = socket.inet_pton(socket.AF_INET6, text)[0]
        except OSError:
            first = 0
        if first != 0xFF:
            raise fail(f"invalid IPv6 mcast-group `{text}'")
        raise Exit(255, f"--mcast-group {text}: pyvs does not do IPv6")
    try:
        group = int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        group = 0
    if group >> 28 != 0xE:
        raise fail(f"invalid IPv4 mcast-group `{text}'")
    return group


_HANDLERS: dict[str, Callable[[Invocation, str, Any], None]] = {
    "t": _on_service, "u": _on_service, "sctp-service": _on_service, "f": _on_fwmark,
    "s": _on_scheduler, "p": _on_persistent, "M": _on_netmask, "r": _on_real_server,
    "i": _on_forward, "g": _on_forward, "m": _on_forward, "w": _on_number,
    "x": _on_number, "y": _on_number, "6": _on_ipv6, "o": _on_ops, "b": _on_sched_flags,
    "pe": _on_unmodelled, "tun-type": _on_unmodelled, "tun-port": _on_unmodelled,
    "tun-nocsum": _on_unmodelled, "tun-csum": _on_unmodelled, "tun-remcsum": _on_unmodelled,
    "sort": lambda c, tag, value: None,
    **{tag: _on_format for tag in _FORMATS},
    **{tag: _on_daemon_option for tag in ("mcast-interface", "syncid", "mcast-group",
                                          "mcast-port", "mcast-ttl", "sync-maxlen")},
}


def _command(tokens: Iterator[tuple[str | None, str | None, str]], prog: str) -> Invocation:
    """The first option: the command (or -h, -v, which answer at once)."""
    first = next((t for t in tokens if t[0] is not None), None)
    if first is None or first[0] not in (*_COMMANDS, "h", "v"):
        raise Exit(255, f"Try `{prog} -h' or '{prog} --help' for more information.")
    if first[0] == "h":
        raise Exit(0, usage(prog))
    if first[0] == "v":
        raise Exit(0, VERSION)
    c = Invocation(cmd=_COMMANDS[first[0]])
    if first[0] in ("start-daemon", "stop-daemon"):
        if first[1] not in C.DAEMON_STATES:
            raise fail("illegal start-daemon parameter specified" if first[0] == "start-daemon"
                       else "illegal start_daemon specified")     # (sic: ipvsadm's texts)
        c.daemon = first[1]
    return c


def _arguments(c: Invocation, args: list[str]) -> None:
    """--set's three timeouts; anything else left over is an error."""
    if c.cmd == "set":
        if len(args) < 3:
            raise fail("--set option requires 3 timeout values")
        tcp, tcpfin, udp = (_timeout(a, 0, MAX_TIMEOUT) for a in args[:3])
        c.timeouts = (tcp, tcpfin, udp)
        args = args[3:]
    if args:
        raise fail(f"unexpected argument {args[0]}")


def parse(argv: list[str], prog: str = "ipvsadm", reading_stdin: bool = False) -> Invocation:
    """parse_options() and process_options(), up to where the kernel would be called."""
    tokens = _tokens(argv)
    c = _command(tokens, prog)
    args: list[str] = []
    for tag, value, spelling in tokens:
        if tag is None:
            args.append(value or "")
        elif tag == "?":
            raise Exit(255, f"{spelling}: unknown option")
        elif tag == "!":
            raise Exit(255, f"{spelling}: missing argument")
        elif tag in _HANDLERS:
            _HANDLERS[tag](c, tag, value)
        else:                                   # a second command
            raise fail(f"invalid option `{spelling}'")
    _arguments(c, args)
    if c.sched_flags:
        c.flags &= ~SCHED_FLAG_BITS
        try:
            c.flags |= sched_flags(c.sched or DEFAULT_SCHEDULER,
                                   _sched_flag_items(c.sched_flags))
        except ValueError as exc:
            raise fail(str(exc)) from None
    if c.cmd == "restore" and reading_stdin:
        raise Exit(255, f"Try `{prog} -h' or '{prog} --help' for more information.")
    _check(c)
    if c.cmd == "start-daemon" and not c.mcast_ifn:
        c.mcast_ifn = DEF_MCAST_IFN
    return c


def _check(c: Invocation) -> None:
    """generic_opt_check() and the per-command rules of process_options()."""
    row = LEGAL[c.cmd]
    last = None
    for j, name in enumerate(OPTS):
        rule = row[j]
        if name not in c.options:
            if rule == "+":
                raise fail(f"You need to supply the '{name}' option for the '{c.cmd}' command")
            continue
        if rule == "x":
            raise fail(f"Illegal '{name}' option with the '{c.cmd}' command")
        if rule == "1":
            if last is not None:
                raise fail(f"The option '{name}' conflicts with the '{last}' option in "
                           f"the '{c.cmd}' command")
            last = name
    if c.cmd in ("add-service", "edit-service"):
        if not c.fwmark and not c.port and not c.flags & SVC_F_PERSISTENT:
            raise fail("Zero port specified for non-persistent service")
        if c.flags & SVC_F_ONEPACKET and not c.fwmark and c.protocol != IPPROTO_UDP:
            raise fail("One-Packet Scheduling is only for UDP virtual services")
        c.sched = c.sched or DEFAULT_SCHEDULER
    if c.cmd in ("add-server", "edit-server"):
        if not c.fwmark and c.fwd in (TUNNEL, DROUTE):
            c.dport = c.port                    # DR/TUN cannot change the port
        if c.options & {"tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"} \
                and c.fwd != TUNNEL:
            raise fail("Tunnel options conflict with forward method")
    if c.cmd == "list":
        o = c.options
        if (o & {"connection", "timeout", "daemon"} and o & {"stats", "rate", "thresholds"}) \
                or (o & {"timeout", "daemon"} and "persistent-conn" in o):
            raise fail("options conflicts in the list command")


def rules(lines: list[str], prog: str = "ipvsadm") -> Iterator[tuple[int, Invocation]]:
    """The commands of an ipvsadm rules file (what ipvsadm-save writes and ipvsadm -R
    reads): (line number, invocation) for each; '#' lines are comments as
    ipvsadm-restore drops them, and a leading 'ipvsadm' token is skipped."""
    for n, line in enumerate(lines, 1):
        words = line.split()
        if words and words[0] == "ipvsadm":
            words = words[1:]
        if not words or words[0].startswith("#"):
            continue
        try:
            inv = parse(words, prog, reading_stdin=True)
        except Exit as exc:
            exc.line = n
            raise
        yield n, inv


# ---------------------------------------------------------------------- the client side
def render_list(c: Invocation, snap: dict[str, Any]) -> str:
    if "connection" in c.options:
        return list_conn(snap, c.fmt)
    if "service-address" in c.options:
        svc = find_service(snap, c)
        if svc is None:
            raise Exit(1, "No such service")
        return title(c.fmt) + service_entry(svc, c.fmt)
    if "timeout" in c.options:
        return list_timeout(snap)
    if "daemon" in c.options:
        return list_daemon(snap)
    return list_all(snap, c.fmt)


def find_service(snap: dict[str, Any], c: Invocation) -> dict[str, Any] | None:
    for svc in snap["services"]:
        if c.fwmark:
            if svc["fwmark"] == c.fwmark:
                return svc
        elif (not svc["fwmark"] and svc["proto"] == PROTO_NAMES[c.protocol]
              and svc["address"] == int_to_ip(c.addr) and svc["port"] == c.port):
            return svc
    return None


class Client:
    def __init__(self, path: str, prog: str) -> None:
        self.path = path
        self.prog = prog

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            return request(self.path, req)
        except NoDirector as exc:
            raise Exit(2, f"Can't initialize ipvs: {exc}\n"
                          "Are you sure that a pyvs director is running "
                          "(pyvs serve, pyvs run)?") from None

    def snapshot(self, connections: bool) -> dict[str, Any]:
        return self.call({"op": "snapshot", "connections": connections})["snapshot"]

    def apply(self, commands: list[Invocation], err: TextIO) -> int:
        reply = self.call({"op": "apply",
                           "commands": [C.to_dict(c.command()) for c in commands]})
        if not reply.get("ok"):
            raise Exit(255, reply.get("error", "the director refused the request"))
        result = 0
        for error in reply.get("errors", []):
            if error:
                err.write(error + "\n")
            result = 255 if error else 0
        return result


def run(c: Invocation, client: Client, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if c.cmd == "list":
        out.write(render_list(c, client.snapshot("connection" in c.options)))
        return 0
    if c.cmd == "save":
        out.write(list_all(client.snapshot(False), c.fmt | Fmt.RULE))
        return 0
    if c.cmd == "restore":
        return restore(client, out, err, stdin)
    return client.apply([c], err)


def restore(client: Client, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """ipvsadm -R.  Unlike ipvsadm, which applies each line as it reads it, every line is
    parsed first and the changes go as one batch: a bad line leaves the table as it was,
    and no packet sees a half-restored table.  A refused change does not stop the rest."""
    result = 0
    batch: list[Invocation] = []
    for c in [inv for _, inv in rules(stdin.readlines(), client.prog)] + [None]:
        if c is not None and c.cmd not in ("list", "save"):
            batch.append(c)
            continue
        if batch:
            result = client.apply(batch, err)
            batch = []
        if c is not None:
            result = run(c, client, out, err, stdin)
    return result


def usage(prog: str) -> str:
    p = prog
    return (f"{VERSION}\nUsage:\n"
            f"  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] "
            "[--pe persistence_engine] [-b sched-flags]\n"
            f"  {p} -D virtual-service\n  {p} -C\n  {p} -R\n  {p} -S [-n]\n"
            f"  {p} -a|e virtual-service -r server-address [options]\n"
            f"  {p} -d virtual-service -r server-address\n"
            f"  {p} -L|l [virtual-service] [options]\n  {p} -Z [virtual-service]\n"
            f"  {p} --set tcp tcpfin udp\n"
            f"  {p} --start-daemon {{master|backup}} [daemon-options]\n"
            f"  {p} --stop-daemon {{master|backup}}\n  {p} -h\n\n"
            "Commands:\nEither long or short options are allowed.\n"
            "  --add-service     -A        add virtual service with options\n"
            "  --edit-service    -E        edit virtual service with options\n"
            "  --delete-service  -D        delete virtual service\n"
            "  --clear           -C        clear the whole table\n"
            "  --restore         -R        restore rules from stdin\n"
            "  --save            -S        save rules to stdout\n"
            "  --add-server      -a        add real server with options\n"
            "  --edit-server     -e        edit real server with options\n"
            "  --delete-server   -d        delete real server\n"
            "  --list            -L|-l     list the table\n"
            "  --zero            -Z        zero counters in a service or all services\n"
            "  --set tcp tcpfin udp        set connection timeout values\n"
            "  --start-daemon              start connection sync daemon\n"
            "  --stop-daemon               stop connection sync daemon\n"
            "  --help            -h        display this help message\n\n"
            "virtual-service:\n"
            "  --tcp-service|-t  service-address   service-address is host[:port]\n"
            "  --udp-service|-u  service-address   service-address is host[:port]\n"
            "  --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n\n"
            "Options:\n"
            "  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|"
            "nq|fo|ovf|mh,\n"
            "                                      the default scheduler is wlc.\n"
            "  --persistent   -p [timeout]         persistent service\n"
            "  --netmask      -M netmask           persistent granularity mask\n"
            "  --real-server  -r server-address    server-address is host (and port)\n"
            "  --gatewaying   -g                   gatewaying (direct routing) (default)\n"
            "  --ipip         -i                   ipip encapsulation (tunneling)\n"
            "  --masquerading -m                   masquerading (NAT)\n"
            "  --weight       -w weight            capacity of real server\n"
            "  --u-threshold  -x uthreshold        upper threshold of connections\n"
            "  --l-threshold  -y lthreshold        lower threshold of connections\n"
            "  --connection   -c                   output of current IPVS connections\n"
            "  --timeout                           output of timeout (tcp tcpfin udp)\n"
            "  --daemon                            output of daemon information\n"
            "  --stats                             output of statistics information\n"
            "  --rate                              output of rate information\n"
            "  --exact                             expand numbers (display exact values)\n"
            "  --thresholds                        output of thresholds information\n"
            "  --persistent-conn                   output of persistent connection info\n"
            "  --nosort                            disable sorting output of service/server "
            "entries\n"
            "  --sort                              does nothing, for backwards compatibility\n"
            "  --ops          -o                   one-packet scheduling\n"
            "  --numeric      -n                   numeric output of addresses and ports\n"
            "  --sched-flags  -b flags             scheduler flags (comma-separated)\n"
            "Daemon Options:\n"
            "  --syncid sid                        syncid for connection sync (default=0)\n"
            "  --sync-maxlen length                Max sync message length (default=1472)\n"
            "  --mcast-interface interface         multicast interface for connection sync\n"
            "  --mcast-group address               IPv4 group (default=224.0.0.81)\n"
            "  --mcast-port port                   UDP port (default=8848)\n"
            "  --mcast-ttl ttl                     Multicast TTL (default=1)\n")


def main(argv: list[str] | None = None, stdin: TextIO | None = None) -> int:
    argv = sys.argv if argv is None else argv
    prog = argv[0] if argv else "pyvsadm"
    out, err = sys.stdout, sys.stderr
    client = Client(default_socket(), prog)
    try:
        if len(argv) <= 1:
            out.write(list_all(client.snapshot(False), Fmt.NONE))
            return 0
        c = parse(argv[1:], prog)
        return run(c, client, out, err, stdin or sys.stdin)
    except Exit as exc:
        if exc.message:
            (out if exc.status == 0 else err).write(exc.message.rstrip("\n") + "\n")
        return exc.status
    except BrokenPipeError:
        return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
