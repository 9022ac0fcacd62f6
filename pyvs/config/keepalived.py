"""keepalived.conf -> the configuration model.

The file is read as keepalived's parser reads it (lib/parser.c): `#` and `!` start a
comment outside double quotes (`\\#` and `\\!` are literal), a trailing `\\` continues
the line, `{` and `}` split lines wherever they stand outside quotes, words are split at
blanks with `"..."` one word, `include GLOB` (at any level) reads the matching files in
order, each relative to the directory of the file that includes it, `$NAME=VALUE`
defines a parameter that `$NAME` / `${NAME}` then stands for, and a line starting
`@ID` (`@^ID`) is read only on (off) the host whose short name is ID, keepalived's
default config id.

The LVS part maps onto the model as keepalived's checker process maps it onto IPVS
(keepalived/check/check_parser.c, check_data.c validate_check_config(), ipvswrapper.c):
virtual_server IP PORT | fwmark N | group NAME, virtual_server_group (addresses, ranges
`10.0.0.1-10`, CIDR blocks, fwmark entries), lvs_sched/lb_algo, lvs_method/lb_kind (NAT
unless given), persistence, protocol, scheduler flags, real_server and its checkers
(TCP_CHECK, HTTP_GET, MISC_CHECK), quorum, hysteresis, sorry_server, and global_defs'
lvs_timeouts and lvs_sync_daemon.  What keepalived itself corrects with a message (no
protocol: UDP; a realserver port that DR cannot use: the service's; a quorum above the
total weight: lowered) is corrected the same way, with keepalived's reason as a warning.
A keyword that changes what IPVS or the checks do and that pyvs does not model gets one
warning naming its file:line; VRRP, BFD and static address/route blocks are read and
set aside with one note.  A value keepalived would log and skip (a bad address, an
unknown scheduler) stops pyvs instead: one line, `file:line: reason`.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core import health as H
from ..core.engine import Timeouts
from ..core.forwarding import BY_CODE, FORWARDING, MASQ
from ..core.limits import DEFAULT_SCHEDULER, MAX_FWMARK, MAX_TIMEOUT, MAX_WEIGHT, NETMASK_ALL
from ..core.limits import PERSISTENT_TIMEOUT as IPVS_SVC_PERSISTENT_TIMEOUT
from ..core.packet import IPPROTO_TCP, IPPROTO_UDP, int_to_ip, ip_to_int
from ..core.schedulers import SCHED_FLAG, SCHEDULERS
from ..core.service import SVC_F_ONEPACKET, SVC_F_PERSISTENT
from .model import (
    Config,
    ConfigFileError,
    Health,
    RealServer,
    VirtualService,
    pool_name,
    quorum_problem,
)

MAX_INCLUDE_DEPTH = 16
MAX_FILES = 256
MAX_GROUP_SERVICES = 65536
UINT_MAX = 2**32 - 1
KEEPALIVED_METHODS = {f.keepalived: f.code for f in FORWARDING if f.keepalived}
SCHEDULER_NAMES = ("rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr",
                   "sed", "nq", "twos")          # check_parser.c lvs_schedulers[]
TOP_LEVEL = ("global_defs", "virtual_server", "virtual_server_group", "vrrp_instance",
             "vrrp_sync_group", "vrrp_script", "include", "static_ipaddress", "static_routes",
             "static_rules", "linkbeat_interfaces", "SSL", "bfd_instance", "vrrp_track_process",
             "track_file", "garp_group", "net_namespace")
# blocks of the other keepalived processes: read, set aside with one note
OTHER_BLOCKS = ("vrrp_instance", "vrrp_sync_group", "vrrp_script", "vrrp_track_process",
                "static_ipaddress", "static_routes", "static_rules", "linkbeat_interfaces",
                "bfd_instance", "track_file", "garp_group", "track_group", "vrrp_track_file")
# global_defs keywords that touch IPVS; the rest (mail, SNMP, VRRP, process tuning) do not
GLOBAL_WARN = {
    "net_namespace_ipvs": "IPVS in another network namespace: pyvs's director is its own "
                          "table",
    "nftables_ipvs": "fwmark services built from nftables for virtual server groups: pyvs "
                     "adds the group's addresses as services",
    "nftables_ipvs_priority": None, "nftables_ipvs_start_fwmark": None,
}
UNSUPPORTED_CHECKS = ("SSL_GET", "SMTP_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK",
                      "BFD_CHECK", "FILE_CHECK")
HTTP_VERSIONS = {"1.0": "1.0", "1.1": "1.1", "1.0C": "1.0C", "1.0c": "1.0C"}
BOOL_WORDS = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
VS_NUMBERS = {"weight": ("weight", 1, MAX_WEIGHT), "quorum": ("quorum", 1, UINT_MAX),
              "hysteresis": ("hysteresis", 0, UINT_MAX)}
RS_NUMBERS = {"weight": (0, MAX_WEIGHT), "uthreshold": (0, 2**31 - 1),
              "lthreshold": (0, 2**31 - 1)}
# keyword -> (warning key, what pyvs does not do)
VS_UNMODELLED = {
    "persistence_engine": ("persistence_engine", "persistence engines (sip) are not modelled"),
    "ha_suspend": ("ha_suspend", "checks are not suspended while the VIP is absent"),
    "quorum_up": ("quorum scripts", "quorum scripts are not run"),
    "quorum_down": ("quorum scripts", "quorum scripts are not run"),
}
NOTIFY_ONLY = ("omega", "smtp_alert", "snmp_name")      # mail and SNMP: nothing to model
TIMERS = {"delay_loop": ("delay_loop", True), "connect_timeout": ("connect_timeout", True),
          "delay_before_retry": ("delay_before_retry", False), "warmup": ("warmup", False)}
# a connecting checker's options: None an address, else the integer range
CONNECT_OPTIONS: dict[str, tuple[int, int] | None] = {
    "connect_ip": None, "bindto": None, "connect_port": (1, 65535), "bind_port": (1, 65535),
    "fwmark": (0, UINT_MAX)}
# the checker-level defaults each kind has (MISC_CHECK: no connection options)
CHECK_DEFAULTS_OF = {"TCP_CHECK": ("connect_timeout",),
                     "HTTP_GET": ("connect_timeout", "virtualhost"), "MISC_CHECK": ()}


# ---------------------------------------------------------------------- reading
@dataclass
class Node:
    """One keyword line and, if a `{` followed it, its block."""

    words: list[str]
    where: str                          # file:line
    raw: str                            # the line as written, comments removed
    block: list[Node] | None = None

    @property
    def kw(self) -> str:
        return self.words[0]

    @property
    def args(self) -> list[str]:
        return self.words[1:]


def _fail(where: str, reason: str) -> ConfigFileError:
    return ConfigFileError(f"{where}: {reason}")


def _decomment(text: str, where: str) -> tuple[str, bool]:
    """parser.c decomment(): the line without its comment, and whether it continues."""
    out: list[str] = []
    quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quote = not quote
        elif ch == "\\":
            if i + 1 == len(text):
                return "".join(out).strip(), True
            if not quote and text[i + 1] in "#!":
                out.append(text[i + 1])
                i += 2
                continue
            out.append(text[i:i + 2])
            i += 2
            continue
        elif not quote and ch in "#!":
            break
        out.append(ch)
        i += 1
    if quote:
        raise _fail(where, "unterminated quote")
    return "".join(out).strip(), False


def _split_braces(text: str) -> Iterator[str]:
    """read_line(): `{` and `}` outside quotes end a line and stand alone."""
    while text:
        if text[0] in "{}":
            yield text[0]
            text = text[1:].strip()
            continue
        i, quote = 0, False
        while i < len(text) and (quote or text[i] not in "{}"):
            if text[i] == '"':
                quote = not quote
            i += 1
        yield text[:i].strip()
        text = text[i:]


def _words(text: str, where: str) -> list[str]:
    """alloc_strvec(): blank-separated words; a word starting with `"` runs to the next
    `"` (quotes removed); an unquoted word ends at a blank or a quote."""
    out = []
    i = 0
    while i < len(text):
        if text[i] in " \t\f\v\r\n":
            i += 1
            continue
        if text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _fail(where, f"unmatched quote: {text!r}")
            out.append(text[i + 1:end])
            i = end + 1
            continue
        j = i
        while j < len(text) and text[j] not in ' \t\f\v\r\n"':
            j += 1
        out.append(text[i:j])
        i = j
    return out


def _braces(pattern: str) -> list[str]:
    """GLOB_BRACE: `a{b,c}d` -> abd, acd (nested braces too)."""
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                parts, level, last = [], 0, start + 1
                for j in range(start + 1, i):
                    if pattern[j] == "{":
                        level += 1
                    elif pattern[j] == "}":
                        level -= 1
                    elif pattern[j] == "," and level == 0:
                        parts.append(pattern[last:j])
                        last = j + 1
                parts.append(pattern[last:i])
                if len(parts) == 1:
                    return [pattern]
                head, tail = pattern[:start], pattern[i + 1:]
                return [x for p in parts for x in _braces(head + p + tail)]
    return [pattern]


class Source:
    """The logical lines of a configuration and the files it includes."""

    def __init__(self, path: str, read: Any) -> None:
        self.read = read                  # path -> text (bounded, one-line errors)
        self.lines: list[tuple[str, str]] = []     # (file:line, text)
        self.files = 0
        self.defs: dict[str, str] = {}
        self.notes: list[str] = []
        self.host = socket.gethostname().split(".")[0]
        self._said_host = False
        self._file(path, [], "")

    def _file(self, path: str, stack: list[str], where: str) -> None:
        real = os.path.realpath(path)
        if real in stack:
            raise _fail(where, f"include {path}: includes itself")
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise _fail(where, f"include {path}: more than {MAX_INCLUDE_DEPTH} levels")
        self.files += 1
        if self.files > MAX_FILES:
            raise _fail(where, f"include {path}: more than {MAX_FILES} files")
        text = self.read(path)
        pending = ""
        for no, line in enumerate(text.splitlines(), 1):
            here = f"{path}:{no}"
            body, more = _decomment(pending + line, here)
            if more:
                pending = body + " "
                continue
            pending = ""
            self._line(body, here, path, stack + [real])

    def _line(self, body: str, where: str, path: str, stack: list[str]) -> None:
        if not body:
            return
        if body.startswith("@"):
            m = re.match(r"@(\^?)(\S*)\s*(.*)", body)
            assert m is not None
            reverse, want, rest = m.group(1) == "^", m.group(2), m.group(3)
            if not self._said_host:
                self._said_host = True
                self.notes.append(f"{where}: @{m.group(1)}{want}: conditional lines are read "
                                  f"as on host {self.host!r} (keepalived's default config "
                                  "id is the host's short name)")
            if (want == self.host) == reverse or not rest:
                return
            body = rest
        if body.startswith("$"):
            m = re.fullmatch(r"\$(\w+)\s*=\s*(.*)", body)
            if m:
                self.defs[m.group(1)] = m.group(2)
                return
        if body.startswith(("~SEQ", "~LST")):
            raise _fail(where, f"{body.split('(')[0]}: keepalived's sequence blocks are not "
                        "supported by pyvs; write the blocks out")
        if "$" in body and self.defs:
            body = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.defs.get(
                m.group(1) or m.group(2), m.group(0)), body)
            body, _ = _decomment(body, where)
        m = re.match(r"include[rmwab]?\s+(.*)", body)
        if m:
            self._include(m.group(1).strip(), where, path, stack)
            return
        for piece in _split_braces(body):
            if piece:
                self.lines.append((where, piece))

    def _include(self, pattern: str, where: str, path: str, stack: list[str]) -> None:
        base = os.path.dirname(path)
        found, wild = [], False
        for pat in _braces(pattern):
            full = pat if os.path.isabs(pat) else os.path.join(base, pat)
            if glob.has_magic(pat):
                wild = True
                found.extend(sorted(p for p in glob.glob(full) if not os.path.isdir(p)))
            elif os.path.isfile(full):
                found.append(full)
            else:
                raise _fail(where, f"include {pattern}: {full}: no such file")
        if not found and wild:
            self.notes.append(f"{where}: include {pattern}: no file matches")
        for p in found:
            self._file(p, stack, where)


def tree(source: Source) -> list[Node]:
    """The lines as nested blocks: a line followed by `{` owns the lines up to its `}`."""
    root: list[Node] = []
    stack: list[tuple[list[Node], str]] = [(root, "")]
    last: Node | None = None
    for where, text in source.lines:
        if text == "{":
            if last is None or last.block is not None:
                raise _fail(where, "'{' without a keyword before it")
            last.block = []
            stack.append((last.block, where))
            last = None
            continue
        if text == "}":
            if len(stack) == 1:
                raise _fail(where, "'}' closes no block")
            stack.pop()
            last = None
            continue
        words = _words(text, where)
        if not words:
            continue
        last = Node(words, where, text)
        stack[-1][0].append(last)
    if len(stack) > 1:
        raise _fail(stack[-1][1], "block not closed: '}' missing")
    return root


# ---------------------------------------------------------------------- values
def _ip(text: str, where: str, what: str) -> int:
    try:
        addr = ip_to_int(text)
    except ValueError:
        raise _fail(where, f"{what} {text!r} is not an IPv4 address") from None
    if any(len(p) > 1 and p.startswith("0") for p in text.split(".")):
        raise _fail(where, f"{what} {text!r}: inet_pton refuses leading zeros")
    return addr


def _int(text: str, where: str, what: str, low: int, high: int) -> int:
    if not text:
        raise _fail(where, f"{what}: a value is missing")
    if not text.isdigit() or not low <= int(text) <= high:
        raise _fail(where, f"{what} {text!r} is not an integer in {low}..{high}")
    return int(text)


def _timer(text: str, where: str, what: str, positive: bool) -> float:
    """read_timer(): seconds, with up to 6 decimals (micro-seconds)."""
    if not text:
        raise _fail(where, f"{what}: a value is missing")
    if not re.fullmatch(r"\d+(\.\d{1,6})?", text) or (positive and float(text) == 0):
        raise _fail(where, f"{what} {text!r} is not a {'positive ' if positive else ''}"
                    "number of seconds")
    return float(text)


def _bool(node: Node) -> bool:
    """A keyword with an optional on|off|true|false|yes|no."""
    if not node.args:
        return True
    value = BOOL_WORDS.get(node.args[0])
    if value is None:
        raise _fail(node.where, f"{node.kw} {node.args[0]!r} is not one of "
                    "on, off, true, false, yes, no")
    return value


def _port(text: str | None, where: str, what: str) -> int:
    """inet_stosockaddr(): no port or 0 is port 0."""
    if text is None or text.strip("0") == "":
        return 0
    return _int(text, where, f"{what} port", 1, 65535)


def _need(node: Node, n: int, usage: str) -> None:
    if len(node.args) < n:
        raise _fail(node.where, f"{node.kw}: expected {usage}")


# ---------------------------------------------------------------------- mapping
@dataclass
class _Defaults:
    """Checker parameters not yet resolved: None means "take the level above's"."""

    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    alpha: bool | None = None
    inhibit: bool | None = None
    virtualhost: str | None = None


@dataclass
class _RS:
    where: str
    addr: int
    port: int                           # as written (0: none)
    weight: int | None = None
    forward: int | None = None
    uthreshold: int = 0
    lthreshold: int = 0
    defaults: _Defaults = field(default_factory=_Defaults)
    checks: list[tuple[str, _Defaults, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _VS:
    where: str
    addr: int = 0
    port: int = 0
    fwmark: int = 0
    group: str = ""
    protocol: int | None = None
    scheduler: str = ""
    forward: int | None = None
    flags: int = 0
    timeout: int = 0
    netmask: int = NETMASK_ALL
    weight: int = 1
    quorum: int = 1
    hysteresis: int = 0
    defaults: _Defaults = field(default_factory=_Defaults)
    sorry: _RS | None = None
    sorry_inhibit: bool = False
    realservers: list[_RS] = field(default_factory=list)


class Builder:
    def __init__(self, path: str, nodes: list[Node], notes: list[str]) -> None:
        self.cfg = Config(path=path)
        self._warned: dict[str, list[str]] = {}
        self._order: list[str] = []
        # virtual_server_group name -> (address ranges with their port, fwmarks)
        self.groups: dict[str, tuple[list[tuple[int, int, int]], list[int]]] = {}
        self.group_users: dict[str, int] = {}
        self.vrrp: dict[str, int] = {}          # vrrp_instance name -> virtual_router_id
        self.old_sync: tuple[str, str, str] | None = None   # lvs_sync_daemon_interface
        self.other: Node | None = None
        self.defined: dict[Any, str] = {}
        self.notes = notes
        for node in nodes:
            self._top(node)

    # ------------------------------------------------------------------ warnings
    def warn(self, node: Node, text: str, key: str | None = None) -> None:
        """One warning per keyword (or key), naming its first place and the count."""
        key = key or node.kw
        if key not in self._warned:
            self._warned[key] = [f"{node.where}: {text}"]
            self._order.append(key)
        else:
            self._warned[key].append(node.where)

    def warnings(self) -> list[str]:
        out = list(self.notes)
        if self.other is not None:
            out.append(f"{self.other.where}: {self.other.kw} (and any other VRRP, BFD, "
                       "static address/route blocks): read and ignored; pyvs models the "
                       "LVS part")
        for key in self._order:
            first, *more = self._warned[key]
            out.append(first + (f" (and {len(more)} more: {', '.join(more[:3])}"
                                f"{', ...' if len(more) > 3 else ''})" if more else ""))
        return out

    # ------------------------------------------------------------------ top level
    def _top(self, node: Node) -> None:
        kw = node.kw
        if kw == "global_defs":
            for n in node.block or []:
                self._global(n)
        elif kw == "virtual_server_group":
            self._group(node)
        elif kw == "virtual_server":
            self._virtual_server(node)
        elif kw in OTHER_BLOCKS or kw.startswith("vrrp_"):
            if self.other is None:
                self.other = node
            if kw == "vrrp_instance":
                self._vrrp_instance(node)
        elif kw == "SSL":
            self.warn(node, "SSL: the SSL_GET context; pyvs does not perform SSL_GET")
        elif kw == "net_namespace":
            self.warn(node, "net_namespace: keepalived runs in another network namespace; "
                      "pyvs reads the configuration as is")
        else:
            self.warn(node, f"unknown keyword {kw!r} (keepalived ignores it too)",
                      key=f"unknown {kw}")

    def _vrrp_instance(self, node: Node) -> None:
        name = node.args[0] if node.args else ""
        for n in node.block or []:
            if n.kw == "virtual_router_id" and n.args and n.args[0].isdigit():
                self.vrrp[name] = int(n.args[0])
            elif n.kw == "lvs_sync_daemon_interface" and n.args and self.old_sync is None:
                self.old_sync = (n.args[0], name, n.where)

    def _global(self, node: Node) -> None:
        kw = node.kw
        if kw == "lvs_timeouts":
            self._timeouts(node)
        elif kw == "lvs_sync_daemon":
            self._sync(node)
        elif kw in GLOBAL_WARN:
            self.warn(node, f"{kw}: not modelled ({GLOBAL_WARN[kw] or 'nftables_ipvs'})",
                      key="nftables_ipvs" if kw.startswith("nftables_ipvs") else kw)

    def _timeouts(self, node: Node) -> None:
        """lvs_timeouts [tcp S] [tcpfin S] [udp S] = ipvsadm --set (0: unchanged)."""
        if len(node.args) < 2 or len(node.args) % 2:
            raise _fail(node.where, "lvs_timeouts: expected [tcp SECS] [tcpfin SECS] "
                        "[udp SECS]")
        t = self.cfg.timeouts
        values = {"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp}
        for name, value in zip(node.args[::2], node.args[1::2]):
            if name not in values:
                raise _fail(node.where, f"lvs_timeouts: unknown option {name!r} "
                            "(tcp, tcpfin, udp)")
            seconds = _int(value, node.where, f"lvs_timeouts {name}", 0, MAX_TIMEOUT)
            if seconds:
                values[name] = seconds
        self.cfg.timeouts = Timeouts(values["tcp"], values["tcpfin"], values["udp"])

    def _sync(self, node: Node) -> None:
        """global_parser.c lvs_syncd_handler()."""
        if self.cfg.sync_daemon is not None:
            self.warn(node, "lvs_sync_daemon given twice: the first one counts",
                      key="lvs_sync_daemon twice")
            return
        _need(node, 1, "an interface")
        sync: dict[str, Any] = {"interface": node.args[0]}
        if len(node.args[0]) >= 16:
            raise _fail(node.where, f"lvs_sync_daemon: interface name {node.args[0]!r} "
                        "is too long (15 characters at most)")
        args = node.args[1:]
        i = 0
        limits = {"id": ("syncid", 0, 255), "maxlen": ("maxlen", 1, 65535 - 20 - 8),
                  "port": ("port", 1, 65535), "ttl": ("ttl", 1, 255)}
        while i < len(args):
            word = args[i]
            value = args[i + 1] if i + 1 < len(args) else None
            if word in limits or word in ("inst", "group"):
                if value is None:
                    raise _fail(node.where, f"lvs_sync_daemon {word}: no value")
                if word == "inst":
                    sync["instance"] = value
                elif word == "group":
                    addr = _ip(value, node.where, "lvs_sync_daemon group")
                    if addr >> 28 != 0xE:
                        raise _fail(node.where, f"lvs_sync_daemon group {value} is not "
                                    "multicast")
                    sync["group"] = value
                else:
                    name, low, high = limits[word]
                    sync[name] = _int(value, node.where, f"lvs_sync_daemon {word}", low, high)
                i += 2
            elif i == 0:                        # the old form: IFACE VRRP_INSTANCE [SYNCID]
                sync["instance"] = word
                i += 1
            elif i == 1 and word.isdigit():
                sync["syncid"] = _int(word, node.where, "lvs_sync_daemon syncid", 0, 255)
                i += 1
            else:
                raise _fail(node.where, f"lvs_sync_daemon: unknown option {word!r}")
        self.cfg.sync_daemon = sync

    # ------------------------------------------------------------------ groups
    def _group(self, node: Node) -> None:
        """check_data.c alloc_vsg_entry(): addresses, ranges, CIDR blocks, fwmarks."""
        _need(node, 1, "a group name")
        name = node.args[0]
        ranges: list[tuple[int, int, int]] = []
        marks: list[int] = []
        for n in node.block or []:
            w = n.words
            if w[0] == "fwmark":
                _need(n, 1, "fwmark N [inet|inet6]")
                if len(w) > 2 and w[2] == "inet6":
                    self.warn(n, "fwmark ... inet6: IPv6 is not modelled; entry skipped",
                              key="ipv6")
                    continue
                marks.append(_int(w[1], n.where, "fwmark", 0, MAX_FWMARK))
                continue
            if ":" in w[0]:
                self.warn(n, f"{w[0]}: IPv6 is not modelled; entry skipped", key="ipv6")
                continue
            port = _port(w[1] if len(w) > 1 else None, n.where, "virtual server group")
            start, end = self._range(w[0], n.where)
            ranges.append((start, end, port))
        if not ranges and not marks:
            self.warn(node, f"virtual_server_group {name} has no entries: keepalived drops "
                      "it", key=f"empty group {name}")
            return
        self.groups[name] = (ranges, marks)

    def _range(self, text: str, where: str) -> tuple[int, int]:
        if "/" in text:
            base, _, bits = text.partition("/")
            addr = _ip(base, where, "address")
            n = _int(bits, where, "prefix length", 1, 32)
            host = (1 << (32 - n)) - 1
            if addr & host:
                raise _fail(where, f"{text}: address mask bits not empty")
            return addr, addr | host
        if "-" in text:
            start_text, _, end_text = text.partition("-")
            start = _ip(start_text, where, "address")
            if "." in end_text:
                end = _ip(end_text, where, "range end")
                if end < start:
                    raise _fail(where, f"{text}: range end is less than its start")
            else:
                last = _int(end_text, where, "range end", 0, 255)
                if start & 255 >= last:
                    raise _fail(where, f"{text}: range end is not greater than its start")
                end = (start & ~255) | last
            return start, end
        addr = _ip(text, where, "address")
        return addr, addr

    # ------------------------------------------------------------------ virtual servers
    def _virtual_server(self, node: Node) -> None:
        """check_data.c alloc_vs(), then the block in order (order matters: lb_kind before
        a real_server is its default, lvs_sched before sh-port makes it count)."""
        _need(node, 1, "IP [PORT], fwmark N or group NAME")
        vs = _VS(node.where)
        a = node.args
        if a[0] == "group":
            _need(node, 2, "group NAME")
            vs.group = a[1]
        elif a[0] == "fwmark":
            _need(node, 2, "fwmark N")
            vs.fwmark = _int(a[1], node.where, "virtual server fwmark", 1, MAX_FWMARK)
        elif ":" in a[0]:
            self.warn(node, f"virtual_server {a[0]}: IPv6 is not modelled; virtual server "
                      "skipped", key="ipv6")
            return
        else:
            vs.addr = _ip(a[0], node.where, "virtual server address")
            vs.port = _port(a[1] if len(a) > 1 else None, node.where, "virtual server")
        if node.block is None:
            raise _fail(node.where, "virtual_server: '{' missing")
        for n in node.block:
            if not self._vs_keyword(vs, n):
                return
        self._finish(vs, node)

    def _vs_keyword(self, vs: _VS, n: Node) -> bool:
        """One keyword of a virtual_server block; False: the virtual server is skipped."""
        handler = VS_KEYWORDS.get(n.kw)
        if handler is not None:
            return handler(self, vs, n) is not False
        if n.kw in SCHED_FLAG or n.kw == "ops":
            self._flag(vs, n)
        elif n.kw in VS_UNMODELLED:
            key, what = VS_UNMODELLED[n.kw]
            self.warn(n, f"{n.kw}: {what}", key=key)
        elif n.kw not in NOTIFY_ONLY and not self._defaults(vs.defaults, n, "virtual server"):
            self.warn(n, f"unknown keyword {n.kw!r} in virtual_server (keepalived ignores it "
                      "too)", key=f"unknown {n.kw}")
        return True

    def _vs_sched(self, vs: _VS, n: Node) -> None:
        _need(n, 1, "a scheduler")
        name = n.args[0]
        if name not in SCHEDULER_NAMES:
            raise _fail(n.where, f"{n.kw} {name!r} is not one of {', '.join(SCHEDULER_NAMES)}")
        if name not in SCHEDULERS:
            raise _fail(n.where, f"{n.kw} {name}: pyvs has no {name} scheduler")
        vs.scheduler = name

    def _vs_method(self, vs: _VS, n: Node) -> None:
        vs.forward = self._method(n)

    def _vs_timeout(self, vs: _VS, n: Node) -> None:
        """pto_handler(): no value is 360 s."""
        vs.timeout = (_int(n.args[0], n.where, n.kw, 1, MAX_TIMEOUT) if n.args
                      else IPVS_SVC_PERSISTENT_TIMEOUT)

    def _vs_granularity(self, vs: _VS, n: Node) -> None:
        vs.netmask = self._granularity(n)
        vs.timeout = vs.timeout or IPVS_SVC_PERSISTENT_TIMEOUT

    def _vs_protocol(self, vs: _VS, n: Node) -> bool:
        _need(n, 1, "TCP, UDP or SCTP")
        proto = n.args[0].upper()
        if proto == "SCTP":
            self.warn(n, "protocol SCTP: pyvs has no SCTP; virtual server skipped", key="SCTP")
            return False
        if proto not in ("TCP", "UDP"):
            raise _fail(n.where, f"protocol {n.args[0]!r} is not one of TCP, UDP, SCTP")
        vs.protocol = IPPROTO_UDP if proto == "UDP" else IPPROTO_TCP
        return True

    def _vs_family(self, vs: _VS, n: Node) -> bool:
        _need(n, 1, "inet or inet6")
        if n.args[0] == "inet6":
            self.warn(n, "ip_family inet6: IPv6 is not modelled; virtual server skipped",
                      key="ipv6")
            return False
        if n.args[0] != "inet":
            raise _fail(n.where, f"ip_family {n.args[0]!r} is not inet or inet6")
        return True

    def _vs_number(self, vs: _VS, n: Node) -> None:
        attr, low, high = VS_NUMBERS[n.kw]
        setattr(vs, attr, _int(n.args[0] if n.args else "", n.where, n.kw, low, high))

    def _vs_sorry(self, vs: _VS, n: Node) -> None:
        """alloc_ssvr(): weight 1, the forwarding method in force."""
        _need(n, 1, "IP [PORT]")
        vs.sorry = _RS(n.where, _ip(n.args[0], n.where, "sorry server address"),
                       _port(n.args[1] if len(n.args) > 1 else None, n.where, "sorry server"),
                       weight=1, forward=vs.forward)

    def _vs_sorry_inhibit(self, vs: _VS, n: Node) -> None:
        if vs.sorry is None:
            self.warn(n, "sorry_server_inhibit before or without sorry_server: ignored (as "
                      "keepalived does)")
        else:
            vs.sorry_inhibit = True

    def _vs_sorry_method(self, vs: _VS, n: Node) -> None:
        if vs.sorry is None:
            self.warn(n, "sorry_server_lvs_method without sorry_server: ignored")
        else:
            vs.sorry.forward = self._method(n)

    def _vs_real_server(self, vs: _VS, n: Node) -> None:
        rs = self._realserver(vs, n)
        if rs is not None:
            vs.realservers.append(rs)

    def _vs_alpha(self, vs: _VS, n: Node) -> None:
        vs.defaults.alpha = True

    def _vs_inhibit(self, vs: _VS, n: Node) -> None:
        vs.defaults.inhibit = True

    def _vs_nothing(self, vs: _VS, n: Node) -> None:
        """hashed: still accepted, sets nothing (lbflags_handler)."""

    def _defaults(self, d: _Defaults, n: Node, level: str) -> bool:
        """The checker parameters a virtual server, realserver or checker may give."""
        kw = n.kw
        arg = n.args[0] if n.args else ""
        if kw in TIMERS:
            attr, positive = TIMERS[kw]
            setattr(d, attr, _timer(arg, n.where, kw, positive))
        elif kw in ("retry", "nb_get_retry"):
            # a virtual server's or realserver's retry is 1.., a checker's 0..
            d.retry = _int(arg, n.where, "retry", 0 if level == "checker" else 1, UINT_MAX)
        elif kw == "virtualhost":
            _need(n, 1, "a host name")
            d.virtualhost = n.args[0]
        else:
            return False
        return True

    def _method(self, n: Node) -> int:
        """svr_forwarding_handler(): NAT | DR | TUN [type ipip|gue port N|gre] [csum...]."""
        _need(n, 1, "NAT, DR or TUN")
        word = n.args[0]
        if word not in KEEPALIVED_METHODS:
            raise _fail(n.where, f"{n.kw} {word!r} is not one of NAT, DR, TUN")
        rest = n.args[1:]
        if rest and word != "TUN":
            raise _fail(n.where, f"{n.kw} {word}: tunnel options need TUN")
        if rest and rest[:2] != ["type", "ipip"]:
            self.warn(n, f"{n.kw} TUN {' '.join(rest)}: pyvs tunnels with IPIP only",
                      key="tunnel type")
        return KEEPALIVED_METHODS[word]

    def _flag(self, vs: _VS, n: Node) -> None:
        """lbflags_handler(): sh-*/mh-* count only after `lvs_sched sh|mh` in the block."""
        kw = n.kw
        if kw == "ops":
            vs.flags |= SVC_F_ONEPACKET
            return
        flag = SCHED_FLAG[kw]
        if flag.scheduler is not None and flag.scheduler != vs.scheduler:
            self.warn(n, f"{kw}: ignored, as keepalived ignores it, because `lvs_sched "
                      f"{flag.scheduler}` does not come before it in the block",
                      key=f"flag {kw}")
            return
        vs.flags |= flag.bit

    def _granularity(self, n: Node) -> int:
        """pgr_handler(): a netmask (an IPv4 service reads it as an address)."""
        _need(n, 1, "a netmask")
        text = n.args[0]
        if "." in text:
            return _ip(text, n.where, "persistence_granularity")
        bits = _int(text, n.where, "persistence_granularity", 0, 32)
        mask = (NETMASK_ALL << (32 - bits)) & NETMASK_ALL
        self.warn(n, f"persistence_granularity {text}: a prefix length; keepalived reads "
                  f"it as the address {int_to_ip(bits)} for an IPv4 service, pyvs as "
                  f"/{bits} ({int_to_ip(mask)})", key="granularity prefix")
        return mask

    # ------------------------------------------------------------------ realservers
    def _realserver(self, vs: _VS, node: Node) -> _RS | None:
        _need(node, 1, "IP [PORT]")
        if ":" in node.args[0]:
            self.warn(node, f"real_server {node.args[0]}: IPv6 is not modelled; skipped",
                      key="ipv6")
            return None
        rs = _RS(node.where, _ip(node.args[0], node.where, "real server address"),
                 _port(node.args[1] if len(node.args) > 1 else None, node.where,
                       "real server"), forward=vs.forward)
        for n in node.block or []:
            self._rs_keyword(rs, n)
        return rs

    def _rs_keyword(self, rs: _RS, n: Node) -> None:
        kw = n.kw
        if kw in H.KINDS:
            check = self._checker(n)
            if check is not None:
                rs.checks.append(check)
        elif kw in UNSUPPORTED_CHECKS:
            self.warn(n, f"{kw}: not performed by pyvs; a realserver whose checks are all "
                      "of this kind stays in service", key=kw)
        elif kw in RS_NUMBERS:
            setattr(rs, kw, _int(n.args[0] if n.args else "", n.where, kw, *RS_NUMBERS[kw]))
        elif kw == "lvs_method":
            rs.forward = self._method(n)
        elif kw in ("inhibit_on_failure", "alpha"):
            setattr(rs.defaults, "alpha" if kw == "alpha" else "inhibit", _bool(n))
        elif kw in ("notify_up", "notify_down"):
            self.warn(n, f"{kw}: notify scripts are not run", key="notify scripts")
        elif kw not in NOTIFY_ONLY and not self._defaults(rs.defaults, n, "realserver"):
            self.warn(n, f"unknown keyword {kw!r} in real_server (keepalived ignores it "
                      "too)", key=f"unknown {kw}")

    def _checker(self, node: Node) -> tuple[str, _Defaults, dict[str, Any]] | None:
        """check_api.c install_checker_common_keywords() and each checker's own."""
        kind = node.kw
        d = _Defaults()
        own: dict[str, Any] = {"where": node.where}
        for n in node.block or []:
            if not self._checker_keyword(kind, d, own, n):
                self.warn(n, f"unknown keyword {n.kw!r} in {kind} (keepalived ignores it "
                          "too)", key=f"unknown {n.kw}")
        needed = {"HTTP_GET": ("urls", "a url"), "MISC_CHECK": ("misc_path", "misc_path")}
        if kind in needed and not own.get(needed[kind][0]):
            self.warn(node, f"{kind} without {needed[kind][1]}: keepalived drops the "
                      "checker", key=f"{kind} empty")
            return None
        return kind, d, own

    def _checker_keyword(self, kind: str, d: _Defaults, own: dict[str, Any],
                         n: Node) -> bool:
        """One keyword of a checker block; False if the checker has no such keyword."""
        kw, connects = n.kw, H.KINDS[kind].connects
        own_keywords = CHECKER_KEYWORDS.get(kind, {})
        if connects and kw in CONNECT_OPTIONS:
            limits = CONNECT_OPTIONS[kw]
            arg = n.args[0] if n.args else ""
            own[kw] = _ip(arg, n.where, kw) if limits is None else _int(arg, n.where, kw,
                                                                       *limits)
        elif connects and kw == "bind_if":
            self.warn(n, "bind_if: checks are not bound to an interface", key=kw)
        elif kw in ("alpha", "log_all_failures"):
            value = _bool(n)
            d.alpha = value if kw == "alpha" else d.alpha
        elif kw in own_keywords:
            own_keywords[kw](self, n, own)
        elif kw in ("virtualhost", "connect_timeout") and kw not in CHECK_DEFAULTS_OF[kind]:
            return False
        elif kw not in ("enable_sni", "sni_name", "tls_compliant"):
            return self._defaults(d, n, "checker")
        return True

    def _http_url(self, n: Node, own: dict[str, Any]) -> None:
        own.setdefault("urls", []).append(self._url(n))

    def _http_protocol(self, n: Node, own: dict[str, Any]) -> None:
        arg = n.args[0] if n.args else ""
        if arg not in HTTP_VERSIONS:
            raise _fail(n.where, f"http_protocol {arg!r} is not one of 1.0, 1.0C, 1.1")
        own["http_protocol"] = HTTP_VERSIONS[arg]

    def _http_fast_recovery(self, n: Node, own: dict[str, Any]) -> None:
        own["fast_recovery"] = _bool(n)

    def _misc_path_keyword(self, n: Node, own: dict[str, Any]) -> None:
        own["misc_path"] = self._misc_path(n)

    def _misc_timeout(self, n: Node, own: dict[str, Any]) -> None:
        """misc_timeout_handler(): whole seconds."""
        arg = n.args[0] if n.args else ""
        own["misc_timeout"] = float(_int(arg, n.where, n.kw, 0, UINT_MAX // 1000000))

    def _misc_dynamic(self, n: Node, own: dict[str, Any]) -> None:
        own["misc_dynamic"] = True

    def _misc_user(self, n: Node, own: dict[str, Any]) -> None:
        self.warn(n, "user: scripts run as the user running pyvs", key="misc user")

    def _url(self, node: Node) -> H.Url:
        path = None
        status: list[tuple[int, int]] = []
        digest = vhost = None
        for n in node.block or []:
            if n.kw == "path":
                _need(n, 1, "a path")
                path = n.args[0]
                if path.endswith(";"):
                    self.warn(n, f"path {path}: keepalived has no ';' separator, so the ';' "
                              "is part of the path", key="semicolon")
            elif n.kw == "status_code":
                status.extend(_status_codes(n))
            elif n.kw == "digest":
                _need(n, 1, "an MD5 digest")
                if not re.fullmatch(r"[0-9a-fA-F]{32}", n.args[0]):
                    raise _fail(n.where, f"digest {n.args[0]!r} is not 32 hex digits")
                digest = n.args[0].lower()
            elif n.kw == "virtualhost":
                _need(n, 1, "a host name")
                vhost = n.args[0]
            elif n.kw.startswith("regex"):
                self.warn(n, f"{n.kw}: regex matching of the body is not performed",
                          key="regex")
            elif n.kw != "tls_compliant":
                self.warn(n, f"unknown keyword {n.kw!r} in url (keepalived ignores it too)",
                          key=f"unknown {n.kw}")
        if path is None:
            raise _fail(node.where, "url without a path")
        return H.Url(path, tuple(status) or H.STATUS_DEFAULT, digest, vhost)

    def _misc_path(self, n: Node) -> tuple[str, ...]:
        """misc_path_handler(): the line's second word, re-read with quotes kept, split
        like a shell command (quotes, backslash escapes); further words are not used."""
        raw = n.raw.split(None, 1)[1] if len(n.raw.split(None, 1)) > 1 else ""
        words = _shell_words(raw, n.where)
        if not words:
            raise _fail(n.where, "misc_path: no command")
        if len(words) > 1:
            self.warn(n, f"misc_path: only {words[0]!r} is the command (keepalived "
                      "ignores the words after it; quote the whole command line)",
                      key="misc_path words")
        argv = _shell_words(words[0], n.where, escapes=True)
        if not argv:
            raise _fail(n.where, "misc_path: no command")
        return tuple(argv)

    # ------------------------------------------------------------------ validation
    def _finish(self, vs: _VS, node: Node) -> None:
        """validate_check_config() for one virtual server, then its services."""
        name = node.raw.split("{")[0].strip()
        if not vs.realservers:
            self.warn(node, f"{name} has no real servers: ignored, as keepalived does",
                      key=f"no rs {node.where}")
            return
        members = self._members(vs, node)
        self._validate(vs, node, name, members)
        services = self._services(vs, node, name, members, self._unique(vs.realservers))
        for svc in services:
            if svc.key in self.defined:
                raise _fail(node.where, f"{name}: service {pool_name(svc.key)} is already "
                            f"defined at {self.defined[svc.key]}")
            self.defined[svc.key] = node.where
        self.cfg.services.extend(services)

    def _members(self, vs: _VS, node: Node) -> list[tuple[int, int, int]]:
        """(address, port, fwmark) of each service: a group's addresses in order, then its
        fwmarks, as ipvs_group_cmd() adds them."""
        if vs.fwmark:
            return [(0, 0, vs.fwmark)]
        if not vs.group:
            return [(vs.addr, vs.port, 0)]
        group = self.groups.get(vs.group)
        if group is None:
            raise _fail(node.where, f"virtual_server group {vs.group}: no "
                        "virtual_server_group of that name before it")
        ranges, marks = group
        members: list[tuple[int, int, int]] = []
        for start, end, port in ranges:
            members.extend((a, port, 0) for a in range(start, end + 1))
            if len(members) > MAX_GROUP_SERVICES:
                raise _fail(node.where, f"group {vs.group}: more than {MAX_GROUP_SERVICES} "
                            "services")
        return members + [(0, 0, m) for m in marks]

    def _validate(self, vs: _VS, node: Node, name: str,
                  members: list[tuple[int, int, int]]) -> None:
        """What validate_check_config() corrects, corrected the same way, with its word."""
        if not any(not mark for _, _, mark in members):
            if vs.protocol is not None:
                self.warn(node, f"{name}: protocol specified for fwmark: ignored",
                          key="fwmark protocol")
        else:
            if vs.protocol is None:
                self.warn(node, f"{name}: no protocol set: UDP, as keepalived defaults it "
                          "(the kernel's 0)", key="no protocol")
                vs.protocol = IPPROTO_UDP
            if vs.flags & SVC_F_ONEPACKET and vs.protocol != IPPROTO_UDP:
                self.warn(node, f"{name}: one packet scheduling requires UDP: reset, as "
                          "keepalived does", key="ops tcp")
                vs.flags &= ~SVC_F_ONEPACKET
            if not vs.timeout and any(not mark and not port for _, port, mark in members):
                self.warn(node, f"{name}: zero port only valid for persistent services: "
                          "persistence_timeout 360 set, as keepalived does", key="zero port")
                vs.timeout = IPVS_SVC_PERSISTENT_TIMEOUT
        if not vs.scheduler:
            self.warn(node, f"{name}: no scheduler set: {DEFAULT_SCHEDULER}, keepalived's "
                      "default", key="no scheduler")
            vs.scheduler = DEFAULT_SCHEDULER
        unset = [r for r in vs.realservers if r.forward is None] + (
            [vs.sorry] if vs.sorry is not None and vs.sorry.forward is None else [])
        if vs.forward is None and unset:
            self.warn(node, f"{name}: no forwarding method set: NAT, keepalived's default",
                      key="no method")
            vs.forward = MASQ
        if vs.timeout:
            vs.flags |= SVC_F_PERSISTENT

    def _unique(self, realservers: list[_RS]) -> list[_RS]:
        """A realserver given twice: the second is dropped, as keepalived drops it."""
        seen: set[tuple[int, int]] = set()
        out = []
        for rs in realservers:
            if (rs.addr, rs.port) in seen:
                self.warn(Node(["real_server"], rs.where, ""), f"real server "
                          f"{int_to_ip(rs.addr)}:{rs.port} is duplicated: the second is "
                          "removed, as keepalived does", key=f"dup {rs.where}")
                continue
            seen.add((rs.addr, rs.port))
            out.append(rs)
        return out

    def _services(self, vs: _VS, node: Node, name: str, members: list[tuple[int, int, int]],
                  realservers: list[_RS]) -> list[VirtualService]:
        protocol = vs.protocol or IPPROTO_TCP
        group = self._group_id(vs)
        services = [VirtualService(IPPROTO_TCP if mark else protocol, addr, port, mark,
                                   vs.scheduler, vs.flags, vs.timeout, vs.netmask,
                                   group=group) for addr, port, mark in members]
        # one set of checkers per realserver, shared by a group's services (the address
        # a checker connects to is the realserver's as written, whatever the service)
        first = services[0]
        checks = [[self._resolve(vs, rs, kind, d, own, self._port_for(vs, rs, first))
                   for kind, d, own in rs.checks] for rs in realservers]
        for rs in realservers:
            self._port_warning(vs, rs, services, "real server")
        if vs.sorry is not None:
            self._port_warning(vs, vs.sorry, services, "sorry server")
        for svc in services:
            svc.realservers = [self._rs(vs, rs, svc, c) for rs, c in zip(realservers, checks)]
            svc.health = Health(vs.quorum, vs.hysteresis, None if vs.sorry is None else
                                self._sorry(vs, svc))
        problem = quorum_problem(first.health, first.realservers)
        if problem:
            self.warn(node, f"{name}: {problem}, as keepalived does", key=f"q {node.where}")
            for svc in services[1:]:
                svc.health.quorum = first.health.quorum
                svc.health.hysteresis = first.health.hysteresis
        return services

    def _group_id(self, vs: _VS) -> str:
        """The group's name, made unique when two virtual servers (TCP and UDP) use it."""
        if not vs.group:
            return ""
        n = self.group_users[vs.group] = self.group_users.get(vs.group, 0) + 1
        return vs.group if n == 1 else f"{vs.group}#{n}"

    @staticmethod
    def _port_for(vs: _VS, rs: _RS, svc: VirtualService, sorry: bool = False) -> int:
        """The dest's port, as ipvs_cmd() sends it: NAT keeps its own (a realserver
        outside groups the service's if it has none); DR and TUN get the service's (0
        for fwmark services)."""
        fwd = rs.forward if rs.forward is not None else vs.forward
        if fwd == MASQ:
            if not rs.port and not vs.group and not vs.fwmark and not sorry:
                return svc.port
            return rs.port
        return svc.port

    def _port_warning(self, vs: _VS, rs: _RS, services: list[VirtualService],
                      what: str) -> None:
        """keepalived's messages for a port that DR or TUN cannot use."""
        fwd = rs.forward if rs.forward is not None else vs.forward
        if fwd is None or fwd == MASQ or not rs.port:
            return
        node = Node([what], rs.where, "")
        for svc in services:
            if svc.fwmark and not vs.group:
                self.warn(node, f"fwmark virtual server: {what} {int_to_ip(rs.addr)} has "
                          f"port {rs.port}: cleared, as keepalived does",
                          key=f"port {rs.where}")
            elif not svc.fwmark and rs.port != svc.port:
                self.warn(node, f"{what} {int_to_ip(rs.addr)}:{rs.port} and its virtual "
                          f"server's port {svc.port} differ: {BY_CODE[fwd].keepalived} "
                          "uses the service's port, as keepalived does",
                          key=f"port {rs.where}")
            else:
                continue
            return

    def _rs(self, vs: _VS, rs: _RS, svc: VirtualService, checks: list[H.Check]
            ) -> RealServer:
        port = self._port_for(vs, rs, svc)
        fwd = rs.forward if rs.forward is not None else vs.forward
        inhibit = _first(rs.defaults.inhibit, vs.defaults.inhibit, False)
        weight = rs.weight if rs.weight is not None else vs.weight
        return RealServer(rs.addr, port, fwd if fwd is not None else MASQ, weight,
                          rs.uthreshold, rs.lthreshold, inhibit, list(checks))

    def _sorry(self, vs: _VS, svc: VirtualService) -> RealServer:
        sorry = vs.sorry
        assert sorry is not None
        port = self._port_for(vs, sorry, svc, sorry=True)
        fwd = sorry.forward if sorry.forward is not None else vs.forward
        return RealServer(sorry.addr, port, fwd if fwd is not None else MASQ, 1, 0, 0,
                          vs.sorry_inhibit)

    def _resolve(self, vs: _VS, rs: _RS, kind: str, d: _Defaults, own: dict[str, Any],
                 port: int) -> H.Check:
        """Each parameter from the checker, else the realserver, else the virtual server,
        else keepalived's default (validate_check_config())."""
        v, r = vs.defaults, rs.defaults
        delay_loop = _first(d.delay_loop, r.delay_loop, v.delay_loop, H.DELAY_LOOP)
        own = dict(own)
        where = own.pop("where")
        if "connect_port" not in own and rs.port != port:
            own["connect_port"] = rs.port   # the checker copied the address as written
        if kind != "MISC_CHECK" and not own.get("connect_port", port):
            self.warn(Node([kind], where, ""), f"{kind} of real server "
                      f"{int_to_ip(rs.addr)} (no port) connects to port 0, as "
                      "keepalived's does: give connect_port", key=f"port0 {where}")
        if kind == "MISC_CHECK":
            own.setdefault("misc_timeout", 0.0)
            if not own["misc_timeout"]:
                own["misc_timeout"] = _first(v.delay_loop, H.DELAY_LOOP)
        if "urls" in own:
            own["urls"] = tuple(own["urls"])
        return H.Check(
            kind, delay_loop=delay_loop,
            retry=_first(d.retry, r.retry, v.retry, H.KINDS[kind].retry),
            delay_before_retry=_first(d.delay_before_retry, r.delay_before_retry,
                                      v.delay_before_retry, H.KINDS[kind].delay_before_retry),
            warmup=_first(d.warmup, r.warmup, v.warmup, delay_loop),
            alpha=_first(d.alpha, r.alpha, v.alpha, False),
            connect_timeout=_first(d.connect_timeout, r.connect_timeout, v.connect_timeout,
                                   H.CONNECT_TIMEOUT),
            virtualhost=_first(d.virtualhost, r.virtualhost, v.virtualhost, None)
            if kind == "HTTP_GET" else None, **own)

    def finish(self) -> Config:
        cfg = self.cfg
        if cfg.sync_daemon is None and self.old_sync is not None:
            iface, inst, where = self.old_sync
            cfg.sync_daemon = {"interface": iface, "instance": inst}
            self.warn(Node(["lvs_sync_daemon_interface"], where, ""),
                      "lvs_sync_daemon_interface in a vrrp_instance is deprecated: read as "
                      f"lvs_sync_daemon {iface} {inst}")
        sync = cfg.sync_daemon
        if sync is not None and "syncid" not in sync:
            if sync.get("instance") in self.vrrp:
                sync["syncid"] = self.vrrp[sync["instance"]]   # the VRRP instance's vrid
            elif "instance" not in sync:
                sync["syncid"] = 0
        cfg.warnings = self.warnings()
        return cfg


VsHandler = Callable[[Builder, _VS, Node], "bool | None"]
VS_KEYWORDS: dict[str, VsHandler] = {
    "lvs_sched": Builder._vs_sched, "lb_algo": Builder._vs_sched,
    "lvs_method": Builder._vs_method, "lb_kind": Builder._vs_method,
    "persistence_timeout": Builder._vs_timeout,
    "persistence_granularity": Builder._vs_granularity,
    "protocol": Builder._vs_protocol, "ip_family": Builder._vs_family,
    "weight": Builder._vs_number, "quorum": Builder._vs_number,
    "hysteresis": Builder._vs_number,
    "sorry_server": Builder._vs_sorry, "sorry_server_inhibit": Builder._vs_sorry_inhibit,
    "sorry_server_lvs_method": Builder._vs_sorry_method,
    "real_server": Builder._vs_real_server, "alpha": Builder._vs_alpha,
    "inhibit_on_failure": Builder._vs_inhibit, "hashed": Builder._vs_nothing,
}
CheckHandler = Callable[[Builder, Node, dict[str, Any]], None]
CHECKER_KEYWORDS: dict[str, dict[str, CheckHandler]] = {
    "HTTP_GET": {"url": Builder._http_url, "http_protocol": Builder._http_protocol,
                 "fast_recovery": Builder._http_fast_recovery},
    "MISC_CHECK": {"misc_path": Builder._misc_path_keyword,
                   "misc_timeout": Builder._misc_timeout,
                   "misc_dynamic": Builder._misc_dynamic, "user": Builder._misc_user},
}


def _status_codes(n: Node) -> list[tuple[int, int]]:
    """status_code_handler(): codes and ranges (200-299) in 100..599."""
    out = []
    for word in n.args:
        m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", word)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
        if not m or not 100 <= lo <= hi <= 599:
            raise _fail(n.where, f"status_code {word!r} is not a code or a range in 100..599")
        out.append((lo, hi))
    return out


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _shell_words(text: str, where: str, escapes: bool = False) -> list[str]:
    """alloc_strvec_quoted_escaped(): words with '...' and "..." quoting; `\\C` escapes
    (\\n, \\t, \\xHH, \\NNN octal ... with `escapes`, else the backslash is kept)."""
    out: list[str] = []
    i, n = 0, len(text)
    simple = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
              "v": "\v"}
    while i < n:
        while i < n and text[i] in " \t\f\v\r\n":
            i += 1
        if i >= n:
            break
        word: list[str] = []
        quote = ""
        while i < n:
            ch = text[i]
            if ch == "\\":
                if i + 1 >= n:
                    raise _fail(where, "misc_path: a '\\' ends the line")
                nxt = text[i + 1]
                if not escapes:
                    word.append(text[i:i + 2])
                    i += 2
                    continue
                m = re.match(r"x([0-9a-fA-F]{1,2})|([0-7]{1,3})", text[i + 1:])
                if m and (m.group(1) or m.group(2)):
                    word.append(chr(int(m.group(1), 16) if m.group(1) else
                                    int(m.group(2), 8) & 255))
                    i += 1 + m.end()
                elif nxt == "c" and i + 2 < n:
                    word.append(chr(ord(text[i + 2]) & 0x1F))
                    i += 3
                else:
                    word.append(simple.get(nxt, nxt))
                    i += 2
                continue
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    word.append(ch)
                i += 1
                continue
            if ch in "'\"":
                quote = ch
                i += 1
                continue
            if ch in " \t\f\v\r\n":
                break
            word.append(ch)
            i += 1
        if quote:
            raise _fail(where, f"misc_path: missing terminating {quote}")
        out.append("".join(word))
    return out


def parse(path: str, read: Any) -> Config:
    source = Source(path, read)
    builder = Builder(path, tree(source), source.notes)
    return builder.finish()


def looks_like(text: str) -> bool:
    """A keepalived.conf: its first keyword (after # and ! comments) is one of
    keepalived's top-level blocks."""
    for line in text.splitlines():
        words = line.split()
        if words and words[0].startswith("@"):
            words = words[1:]               # a conditional line: @ID keyword ...
        if not words or words[0][0] in "#!$":    # comments, parameter definitions
            continue
        word = re.split(r"[{\s]", words[0])[0]
        return word in TOP_LEVEL or word.startswith(("vrrp_", "include"))
    return False

