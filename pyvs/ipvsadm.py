"""`pyvsadm`: ipvsadm 1.31's command line against a running pyvs director.

The parsing follows ipvsadm.c: popt-style options (combined short flags such as -Ln,
-Lnc, -At; `-p` with an optional argument), the commands_v_options legality table and its
error texts, the same exit statuses (2 for a usage error, 255 when the director refuses a
change, with libipvs's message), `-S` in ipvsadm-save format and `-R` reading it back.
Listings are rendered from a snapshot fetched over the control socket.
"""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from .control import ControlError, NoDirector, default_socket, request
from .core.engine import Director
from .core.service import DROUTE, MASQ, SVC_F_ONEPACKET, SVC_F_PERSISTENT, TUNNEL
from .views.ipvsadm import Fmt, list_all, list_conn, list_timeout, service_entry, title

VERSION = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)"
MAX_TIMEOUT = 86400 * 31
PERSISTENT_TIMEOUT = 360
IPPROTO = {"t": 6, "u": 17}

CMDS = ("add-service", "edit-service", "delete-service", "flush", "list", "add-server",
        "delete-server", "edit-server", "set", "start-daemon", "stop-daemon", "restore",
        "save", "zero")
OPTS = ("numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
        "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
        "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
        "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
        "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
        "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
# ipvsadm.c's commands_v_options: '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional
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

# option spelling -> (tag, takes an argument: 0 no, 1 yes, 2 optional)
_COMMANDS = {"A": "add-service", "E": "edit-service", "D": "delete-service", "C": "flush",
             "L": "list", "l": "list", "Z": "zero", "a": "add-server", "e": "edit-server",
             "d": "delete-server", "R": "restore", "S": "save", "set": "set"}
_SHORT = {"A": ("A", 0), "E": ("E", 0), "D": ("D", 0), "C": ("C", 0), "L": ("L", 0),
          "l": ("l", 0), "Z": ("Z", 0), "a": ("a", 0), "e": ("e", 0), "d": ("d", 0),
          "h": ("h", 0), "v": ("v", 0), "R": ("R", 0), "S": ("S", 0), "t": ("t", 1),
          "u": ("u", 1), "f": ("f", 1), "s": ("s", 1), "p": ("p", 2), "M": ("M", 1),
          "r": ("r", 1), "m": ("m", 0), "i": ("i", 0), "g": ("g", 0), "w": ("w", 1),
          "x": ("x", 1), "y": ("y", 1), "n": ("n", 0), "c": ("c", 0), "X": ("X", 0),
          "6": ("6", 0), "o": ("o", 0), "b": ("b", 1)}
_LONG = {"add-service": "A", "edit-service": "E", "delete-service": "D", "clear": "C",
         "list": "L", "zero": "Z", "add-server": "a", "edit-server": "e",
         "delete-server": "d", "set": "set", "help": "h", "version": "v", "restore": "R",
         "save": "S", "start-daemon": "start-daemon", "stop-daemon": "stop-daemon",
         "tcp-service": "t", "udp-service": "u", "sctp-service": "sctp", "fwmark-service": "f",
         "scheduler": "s", "persistent": "p", "netmask": "M", "real-server": "r",
         "masquerading": "m", "ipip": "i", "gatewaying": "g", "weight": "w",
         "u-threshold": "x", "l-threshold": "y", "numeric": "n", "connection": "c",
         "mcast-interface": "mcast-interface", "syncid": "syncid", "timeout": "timeout",
         "daemon": "daemon", "stats": "stats", "rate": "rate", "thresholds": "thresholds",
         "persistent-conn": "persistent-conn", "nosort": "nosort", "sort": "sort",
         "exact": "X", "ipv6": "6", "ops": "o", "pe": "pe", "sched-flags": "b",
         "mcast-group": "mcast-group", "mcast-port": "mcast-port", "mcast-ttl": "mcast-ttl",
         "sync-maxlen": "sync-maxlen", "tun-info": "tun-info", "tun-type": "tun-type",
         "tun-port": "tun-port", "tun-nocsum": "tun-nocsum", "tun-csum": "tun-csum",
         "tun-remcsum": "tun-remcsum"}
_ARG = {"t", "u", "sctp", "f", "s", "M", "r", "w", "x", "y", "b", "start-daemon", "stop-daemon",
        "mcast-interface", "syncid", "pe", "mcast-group", "mcast-port", "mcast-ttl",
        "sync-maxlen", "tun-type", "tun-port"}


class Exit(Exception):
    """Stop with this status after printing `message` (to stderr unless status is 0)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fail(message: str) -> Exit:
    return Exit(2, message)


@dataclass
class Command:
    """One parsed ipvsadm invocation (or -R line)."""

    cmd: str = ""
    options: set[str] = field(default_factory=set)
    fmt: Fmt = Fmt.NONE
    protocol: int = 6
    addr: int = 0
    port: int = 0
    fwmark: int = 0
    sched: str = ""
    flags: int = 0
    timeout: int = 0
    netmask: int = 0xFFFFFFFF
    daddr: int = 0
    dport: int = 0
    fwd: int = DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    timeouts: tuple[int, int, int] = (0, 0, 0)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k not in ("options", "fmt")}
        d["has_service"] = "service-address" in self.options
        return d


# ---------------------------------------------------------------------- parsing
_STRTOL = re.compile(r"\s*[+-]?[0-9]+")


def _number(text: str, low: int, high: int) -> int:
    """string_to_number(): strtol over the whole string, in range, else -1."""
    if not _STRTOL.fullmatch(text):
        return -1
    value = int(text)
    return value if low <= value <= high else -1


def _host(name: str) -> int | None:
    try:
        return int.from_bytes(socket.inet_aton(name), "big")
    except OSError:
        pass
    try:
        return int.from_bytes(socket.inet_aton(socket.gethostbyname(name)), "big")
    except (OSError, UnicodeError):
        return None


def _service(text: str, protocol: int) -> tuple[int, int, int | None]:
    """parse_service(): (result bits, addr, port); bit 1 = address, bit 2 = port."""
    if not text or text.isdigit():
        return 0, 0, None
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, None
    addr = _host(host)
    if addr is None:
        return 0, 0, None
    if port_text is None:
        return 1, addr, None
    port = _number(port_text, 0, 65535)
    if port == -1:
        try:
            port = socket.getservbyname(port_text, {6: "tcp", 17: "udp"}.get(protocol, "tcp"))
        except OSError:
            return 0, 0, None
    return 3, addr, port


def _timeout(text: str | None, low: int, high: int) -> int:
    if text is None:
        return PERSISTENT_TIMEOUT
    value = _number(text, low, high)
    if value == -1:
        raise fail(f"invalid timeout value `{text}' specified")
    return value


def _tokens(argv: list[str]):
    """popt-like: yield (tag, argument, spelling) for options, (None, arg, arg) for args."""
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
            if tag is None:
                yield "?", None, tok
                continue
            needs = 2 if tag == "p" else (1 if tag in _ARG else 0)
            if needs and not eq:
                if i < len(argv) and (needs == 1 or not argv[i].startswith("-")):
                    value = argv[i]
                    i += 1
                elif needs == 1:
                    yield "!", None, tok
                    continue
                else:
                    value = None
            yield tag, (value if needs else None), tok
        elif tok.startswith("-") and len(tok) > 1:
            j = 1
            while j < len(tok):
                ch = tok[j]
                j += 1
                if ch not in _SHORT:
                    yield "?", None, tok
                    break
                tag, needs = _SHORT[ch]
                if not needs:
                    yield tag, None, tok
                    continue
                value: str | None = tok[j:] or None
                if value is None and i < len(argv) and (
                        needs == 1 or not argv[i].startswith("-")):
                    value = argv[i]
                    i += 1
                if value is None and needs == 1:
                    yield "!", None, tok
                else:
                    yield tag, value, tok
                break
        else:
            yield None, tok, tok


def parse(argv: list[str], prog: str = "ipvsadm", reading_stdin: bool = False) -> Command:
    """process_options() up to the point where the kernel would be called."""
    c = Command()
    args: list[str] = []
    sched_flags = ""
    tokens = _tokens(argv)
    first = next((t for t in tokens if t[0] is not None), None)
    tryhelp = Exit(255, f"Try `{prog} -h' or '{prog} --help' for more information.")
    if first is None or first[0] in ("?", "!"):
        raise tryhelp
    tag, value, _ = first
    if tag == "h":
        raise Exit(0, usage(prog))
    if tag == "v":
        raise Exit(0, VERSION)
    if tag in ("start-daemon", "stop-daemon"):
        raise Exit(255, "pyvs has no connection sync daemon")
    if tag not in _COMMANDS:
        raise tryhelp
    c.cmd = _COMMANDS[tag]

    def option(name: str) -> None:
        if name in c.options:
            raise fail(f"multiple '{name}' options specified")
        c.options.add(name)

    for tag, value, spelling in tokens:
        if tag is None:
            args.append(value)
        elif tag == "?":
            raise Exit(255, f"{spelling}: unknown option")
        elif tag == "!":
            raise Exit(255, f"{spelling}: missing argument")
        elif tag in ("t", "u", "sctp"):
            option("service-address")
            if tag == "sctp":
                raise Exit(255, "pyvs does not do SCTP services")
            c.protocol = IPPROTO[tag]
            bits, c.addr, port = _service(value, c.protocol)
            if not bits & 1:
                raise fail("illegal virtual server address[:port] specified")
            c.port = port or 0
        elif tag == "f":
            option("service-address")
            mark = _number(value, 1, 0xFFFFFFFF)
            if mark == -1:
                raise fail(f"invalid fwmark value `{value}' specified")
            c.protocol, c.fwmark = 6, mark
        elif tag == "s":
            option("scheduler")
            c.sched = value[:15]
        elif tag == "p":
            option("persistent")
            c.flags |= SVC_F_PERSISTENT
            c.timeout = _timeout(value, 1, MAX_TIMEOUT)
        elif tag == "M":
            option("netmask")
            mask = _host(value)
            if mask is None:
                raise fail("illegal virtual server persistent mask specified")
            c.netmask = mask
        elif tag == "r":
            option("real-server")
            bits, c.daddr, port = _service(value, c.protocol)
            if not bits & 1:
                raise fail("illegal real server address[:port] specified")
            c.dport = c.port if bits == 1 else port or 0
        elif tag in ("i", "g", "m"):
            option("forwarding-method")
            c.fwd = {"i": TUNNEL, "g": DROUTE, "m": MASQ}[tag]
        elif tag in ("w", "x", "y"):
            name, high = {"w": ("weight", 65535), "x": ("u-threshold", 2**31 - 1),
                          "y": ("l-threshold", 2**31 - 1)}[tag]
            option(name)
            number = _number(value, 0, high)
            if number == -1:
                raise fail(f"illegal {name.replace('-', '_')} specified")
            setattr(c, {"w": "weight", "x": "u_threshold", "y": "l_threshold"}[tag], number)
        elif tag == "c":
            option("connection")
        elif tag == "n":
            option("numeric")
            c.fmt |= Fmt.NUMERIC
        elif tag in ("timeout", "daemon", "stats", "rate", "thresholds", "persistent-conn",
                     "nosort", "tun-info", "tun-nocsum", "tun-csum", "tun-remcsum"):
            option(tag)
            c.fmt |= {"stats": Fmt.STATS, "rate": Fmt.RATE, "thresholds": Fmt.THRESHOLDS,
                      "persistent-conn": Fmt.PERSISTENTCONN, "nosort": Fmt.NOSORT}.get(
                          tag, Fmt.NONE)
        elif tag == "sort":
            pass
        elif tag == "X":
            option("exact")
            c.fmt |= Fmt.EXACT
        elif tag == "6":
            raise fail("-6 used before -f\n" if not c.fwmark else "pyvs does not do IPv6")
        elif tag == "o":
            option("ops")
            c.flags |= SVC_F_ONEPACKET
        elif tag == "b":
            option("sched-flags")
            sched_flags = value
        elif tag in ("mcast-interface", "syncid", "pe", "mcast-group", "mcast-port",
                     "mcast-ttl", "sync-maxlen", "tun-type", "tun-port"):
            option({"pe": "pe"}.get(tag, tag))
        else:                                   # a second command
            raise fail(f"invalid option `{spelling}'")
    if c.cmd == "set":
        if len(args) < 3:
            raise fail("--set option requires 3 timeout values")
        c.timeouts = tuple(_timeout(a, 0, MAX_TIMEOUT) for a in args[:3])   # type: ignore
        args = args[3:]
    if args:
        raise fail(f"unexpected argument {args[0]}")
    if sched_flags:
        c.flags |= _sched_flags(c.sched or "wlc", sched_flags)
    if c.cmd == "restore" and reading_stdin:
        raise tryhelp
    _check(c)
    return c


def _sched_flags(sched: str, text: str) -> int:
    bits = {"flag-1": 0x8, "flag-2": 0x10, "flag-3": 0x20, "sh-fallback": 0x8,
            "sh-port": 0x10, "mh-fallback": 0x8, "mh-port": 0x10}
    flags = 0
    for flag in [f for f in text.split(",") if f] or [""]:
        if flag not in bits:
            raise fail(f"invalid scheduler flag `{flag}'")
        if flag[:3] in ("sh-", "mh-") and sched != flag[:2]:
            raise fail(f"incompatible scheduler flag `{flag}'")
        flags |= bits[flag]
    return flags


def _check(c: Command) -> None:
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
        if c.flags & SVC_F_ONEPACKET and not c.fwmark and c.protocol != 17:
            raise fail("One-Packet Scheduling is only for UDP virtual services")
        if not c.sched:
            c.sched = "wlc"
    if c.cmd in ("add-server", "edit-server"):
        if not c.fwmark and c.fwd in (TUNNEL, DROUTE):
            c.dport = c.port
        if c.options & {"tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"} \
                and c.fwd != TUNNEL:
            raise fail("Tunnel options conflict with forward method")
    if c.cmd == "list":
        o = c.options
        if (o & {"connection", "timeout", "daemon"} and o & {"stats", "rate", "thresholds"}) \
                or (o & {"timeout", "daemon"} and "persistent-conn" in o):
            raise fail("options conflicts in the list command")


# ---------------------------------------------------------------------- the director side
def apply(director: Director, cmd: dict[str, Any], now: float) -> None:
    """Run one change on the director, failing with libipvs's message as ipvsadm would."""
    kind = cmd["cmd"]
    if kind == "flush":
        director.clear(now)
        return
    if kind == "set":
        director.set_timeouts(*cmd["timeouts"])
        return
    svc = director.find_service(cmd["protocol"], cmd["addr"], cmd["port"], cmd["fwmark"])
    if kind == "add-service":
        if svc is not None:
            raise ControlError("Service already exists")
        director.add_service(cmd["protocol"], cmd["addr"], cmd["port"], cmd["fwmark"],
                             cmd["sched"], cmd["flags"], cmd["timeout"], cmd["netmask"], now)
    elif kind == "zero":
        if cmd["has_service"] and svc is None:
            raise ControlError("No such service")
        director.zero(svc if cmd["has_service"] else None)
    elif kind in ("edit-service", "delete-service"):
        if svc is None:
            raise ControlError("No such service")
        if kind == "delete-service":
            director.del_service(svc, now)
        else:
            director.edit_service(svc, cmd["sched"], cmd["flags"], cmd["timeout"],
                                  cmd["netmask"], now)
    else:
        if svc is None:
            raise ControlError("Service not defined")
        dest = svc.find_dest(cmd["daddr"], cmd["dport"])
        if kind == "add-server":
            director.add_dest(svc, cmd["daddr"], cmd["dport"], cmd["fwd"], cmd["weight"],
                              cmd["u_threshold"], cmd["l_threshold"], now)
        elif dest is None:
            raise ControlError("No such destination")
        elif kind == "edit-server":
            director.edit_dest(dest, cmd["fwd"], cmd["weight"], cmd["u_threshold"],
                               cmd["l_threshold"])
        else:
            director.del_dest(dest, now)


# ---------------------------------------------------------------------- the client side
def render_list(c: Command, snap: dict[str, Any]) -> str:
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
        return ""
    return list_all(snap, c.fmt)


def find_service(snap: dict[str, Any], c: Command) -> dict[str, Any] | None:
    from .core.packet import int_to_ip
    for svc in snap["services"]:
        if c.fwmark:
            if svc["fwmark"] == c.fwmark:
                return svc
        elif (not svc["fwmark"] and svc["proto"] == {6: "TCP", 17: "UDP"}[c.protocol]
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

    def apply(self, commands: list[Command], err: TextIO) -> int:
        reply = self.call({"op": "apply", "commands": [c.as_dict() for c in commands]})
        result = 0
        for error in reply.get("errors", []):
            if error:
                err.write(error + "\n")
            result = 255 if error else 0
        return result


def run(c: Command, client: Client, out: TextIO, err: TextIO, stdin: TextIO) -> int:
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
    """ipvsadm -R: every line parsed first, then applied as one batch (no packet sees a
    half-restored table).  Lines starting with '#' are comments, as ipvsadm-restore drops
    them; a leading 'ipvsadm' token is skipped."""
    commands: list[Command] = []
    for line in stdin:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "ipvsadm":
            words = words[1:]
        if not words:
            continue
        commands.append(parse(words, client.prog, reading_stdin=True))
    result = 0
    batch: list[Command] = []
    for c in [*commands, None]:
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
            "  --sched-flags  -b flags             scheduler flags (comma-separated)\n")


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

