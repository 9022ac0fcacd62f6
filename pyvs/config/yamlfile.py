"""pyvs's own configuration format (YAML) <-> the configuration model.

Defaults follow ipvsadm: scheduler wlc, forwarding route (DR), weight 1, `persistent: true`
(or `-p` with no value) = 360 s, netmask 255.255.255.255.  Health checks follow
keepalived: a realserver's `checks:` use keepalived's keyword names and defaults, a
service's `health:` gives the defaults for its checks (and its quorum, hysteresis,
inhibit_on_failure), `group:` makes one pool of several services (a
virtual_server_group).  Every error names the file, the field path and the reason in one
line, e.g.
``configs/x.yaml: services[0].realservers[1].forward: 'nat2' is not one of masq, route, tunnel``.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from ..core import commands as C
from ..core import health as H
from ..core.engine import Timeouts
from ..core.forwarding import BY_CODE, BY_WORD, CONFIG_WORDS, MASQ
from ..core.limits import (
    DEFAULT_SCHEDULER,
    MAX_FWMARK,
    MAX_PORT,
    MAX_THRESHOLD,
    MAX_TIMEOUT,
    MAX_WEIGHT,
    NETMASK_ALL,
    PERSISTENT_TIMEOUT,
)
from ..core.packet import IPPROTO_TCP, IPPROTO_UDP, int_to_ip, ip_to_int
from ..core.schedulers import SCHED_FLAG, SCHEDULERS, sched_flag_names
from ..core.service import SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED3
from ..core.states import DEFAULT_PROFILE, KERNELS
from ..core.sync import SYNC_GROUP_ADDR
from ..core.syncmsg import SYNC_PORT
from ..core.sysctls import KNOBS, Sysctls, threshold_problem
from ..core.sysctls import check as sysctl_problem
from .model import Config, ConfigFileError, Health, RealServer, VirtualService, quorum_problem

MAX_YAML_BYTES = 1 << 20       # a director's configuration is small; anything bigger is not one


class Reader:
    """Field checks that fail with one line naming the file and the field."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, reason: str) -> ConfigFileError:
        return ConfigFileError(f"{self.path}: {where}: {reason}" if where
                               else f"{self.path}: {reason}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(f"{where}.{key}" if where else str(key),
                                f"unknown field (known: {', '.join(allowed)})")
        return value

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"{_short(value)} is not an integer")
        if not low <= value <= high:
            raise self.fail(where, f"{value} is out of range {low}..{high}")
        return value

    def number(self, value: Any, where: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"{_short(value)} is not a number")
        if not low <= value <= high:
            raise self.fail(where, f"{value} is out of range {low:g}..{high:g}")
        return float(value)

    def ip(self, value: Any, where: str) -> int:
        text = str(value)
        try:
            addr = ip_to_int(text)
        except ValueError:
            raise self.fail(where, f"{_short(value)} is not an IPv4 address") from None
        if any(len(p) > 1 and p.startswith("0") for p in text.split(".")):
            raise self.fail(where, f"{text!r}: a leading zero is ambiguous (ipvsadm reads "
                            "it as octal); write the address without it")
        return addr

    def addr_port(self, value: Any, where: str, port_required: bool) -> tuple[int, int | None]:
        text = str(value)
        if ":" in text:
            host, _, port_text = text.rpartition(":")
            if not port_text.isdigit() or int(port_text) > MAX_PORT:
                raise self.fail(where, f"{_short(value)}: port {port_text!r} is not 0..65535")
            return self.ip(host, where), int(port_text)
        if port_required:
            raise self.fail(where, f"{_short(value)} needs a port (address:port)")
        return self.ip(text, where), None

    def choice(self, value: Any, where: str, options: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.fail(where, f"{_short(value)} is not one of {', '.join(options)}")
        return value

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"{_short(value)} is not true/false")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"{_short(value)} is not a non-empty string")
        return value

    def seq(self, value: Any, where: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "expected a list")
        return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


TOP = ("kernel", "timeouts", "sysctls", "services", "tunnel_source", "sync_daemon",
       "sync_daemons")
DAEMON = ("state", "interface", "syncid", "maxlen", "group", "port", "ttl")
SERVICE = ("protocol", "address", "fwmark", "group", "scheduler", "flags", "persistent",
           "netmask", "ops", "health", "sorry_server", "realservers")
REALSERVER = ("address", "forward", "weight", "uthreshold", "lthreshold",
              "inhibit_on_failure", "checks")
# per-check parameters a service's `health:` may default (keepalived's virtual_server ones)
CHECK_DEFAULTS = ("delay_loop", "connect_timeout", "retry", "delay_before_retry", "warmup",
                  "alpha")
HEALTH = ("quorum", "hysteresis", "inhibit_on_failure", *CHECK_DEFAULTS)
SORRY = ("address", "forward", "inhibit")
CHECK_COMMON = ("type", *CHECK_DEFAULTS)
CHECK_CONNECT = ("connect_ip", "connect_port", "bindto", "bind_port", "fwmark")
CHECK_OWN = {H.TCP_CHECK: CHECK_CONNECT,
             H.HTTP_GET: (*CHECK_CONNECT, "url", "http_protocol", "virtualhost",
                          "fast_recovery"),
             H.MISC_CHECK: ("misc_path", "misc_timeout", "misc_dynamic")}
URL = ("path", "status_code", "digest", "virtualhost")
SYNC = ("interface", "instance", "syncid", "maxlen", "port", "ttl", "group")
MAX_SECONDS = float(2**32 // 10**6)       # keepalived's timers are micro-seconds in 32 bits


def parse(data: Any, path: str) -> Config:
    r = Reader(path)
    if data is None:
        raise r.fail("", "the file is empty (a configuration needs at least `services:`)")
    top = r.mapping(data, "", TOP)
    cfg = Config(path=path)
    cfg.kernel = r.choice(str(top.get("kernel", DEFAULT_PROFILE)), "kernel", KERNELS)
    if "timeouts" in top:
        t = r.mapping(top["timeouts"], "timeouts", ("tcp", "tcpfin", "udp"))
        base = Timeouts()
        cfg.timeouts = Timeouts(**{k: r.integer(t[k], f"timeouts.{k}", 1, MAX_TIMEOUT)
                                   if k in t else getattr(base, k)
                                   for k in ("tcp", "tcpfin", "udp")})
    if "sysctls" in top:
        cfg.sysctls = _sysctls(r, top["sysctls"], cfg)
    if top.get("tunnel_source") is not None:
        cfg.tunnel_source = r.ip(top["tunnel_source"], "tunnel_source")
    if top.get("sync_daemon") is not None:
        cfg.sync_daemon = _sync(r, top["sync_daemon"])
    seen: set[object] = set()
    groups: set[str] = set()
    for i, raw in enumerate(r.seq(top.get("services"), "services")):
        where = f"services[{i}]"
        members = _services(r, raw, where, cfg)
        if members[0].group:
            if members[0].group in groups:
                raise r.fail(f"{where}.group", f"{members[0].group!r} is used by an earlier "
                             "service (one entry per group)")
            groups.add(members[0].group)
        for vs in members:
            if vs.key in seen:
                raise r.fail(where, "service already defined earlier in the file")
            seen.add(vs.key)
        cfg.services.extend(members)
    for i, raw in enumerate(r.seq(top.get("sync_daemons"), "sync_daemons")):
        daemon = _daemon(r, raw, f"sync_daemons[{i}]")
        if any(d.state == daemon.state for d in cfg.daemons):
            raise r.fail(f"sync_daemons[{i}]", f"a {daemon.state} daemon is already defined "
                         "earlier in the file (one of each at most)")
        cfg.daemons.append(daemon)
    if cfg.daemons and cfg.sync_daemon is not None:
        raise r.fail("sync_daemons", "give sync_daemon (keepalived's lvs_sync_daemon, started "
                     "as the master) or sync_daemons, not both")
    return cfg


def _daemon(r: Reader, raw: Any, where: str) -> C.StartDaemon:
    """{state: master|backup, interface: IF, syncid, maxlen, group, port, ttl}: what
    ipvsadm --start-daemon takes, its checks and its defaults (0: the kernel's)."""
    d = r.mapping(raw, where, DAEMON)
    state = r.choice(d.get("state"), f"{where}.state", C.DAEMON_STATES)
    ifn = d.get("interface")
    if not isinstance(ifn, str) or not ifn:
        raise r.fail(f"{where}.interface", "the interface the daemon multicasts on, e.g. eth0")
    group = r.ip(d["group"], f"{where}.group") if "group" in d else 0
    cmd = C.StartDaemon(
        state, ifn, r.integer(d.get("syncid", 0), f"{where}.syncid", 0, 255),
        r.integer(d.get("maxlen", 0), f"{where}.maxlen", 0, C.MAX_SYNC_MAXLEN), group,
        r.integer(d.get("port", 0), f"{where}.port", 0, MAX_PORT),
        r.integer(d.get("ttl", 0), f"{where}.ttl", 0, 255))
    problem = C.check(cmd)
    if problem:
        raise r.fail(where, problem)
    return cmd


def _sync(r: Reader, raw: Any) -> dict[str, Any]:
    d = r.mapping(raw, "sync_daemon", SYNC)
    if "interface" not in d:
        raise r.fail("sync_daemon.interface", "required (the interface the sync daemon uses)")
    out: dict[str, Any] = {"interface": r.text(d["interface"], "sync_daemon.interface")}
    if "instance" in d:
        out["instance"] = r.text(d["instance"], "sync_daemon.instance")
    for k, low, high in (("syncid", 0, 255), ("maxlen", 1, 65507), ("port", 1, 65535),
                         ("ttl", 1, 255)):
        if k in d:
            out[k] = r.integer(d[k], f"sync_daemon.{k}", low, high)
    if "group" in d:
        if r.ip(d["group"], "sync_daemon.group") >> 28 != 0xE:
            raise r.fail("sync_daemon.group", f"{d['group']} is not a multicast address")
        out["group"] = str(d["group"])
    return out


def _sysctls(r: Reader, raw: Any, cfg: Config) -> Sysctls:
    sc = r.mapping(raw, "sysctls", tuple(KNOBS))
    values = Sysctls()
    for k, v in sc.items():
        value = r.integer(v, f"sysctls.{k}", -2**31, max(2**31 - 1, KNOBS[k].metadata["high"]))
        problem = sysctl_problem(k, value)
        if problem:
            raise r.fail(f"sysctls.{k}", problem.split(": ", 1)[-1])
        if not KNOBS[k].metadata["modelled"]:
            cfg.warnings.append(f"{r.path}: sysctls.{k}: kept, but pyvs does not model it "
                                f"({KNOBS[k].metadata['what']})")
        setattr(values, k, value)
    problem = threshold_problem(values.sync_threshold, values.sync_period)
    if problem:      # one file in the kernel (proc_do_sync_threshold): checked as a pair
        key = "sync_threshold" if "sync_threshold" in sc else "sync_period"
        raise r.fail(f"sysctls.{key}", problem.split(": ", 1)[-1])
    return values


def _address(r: Reader, s: dict, where: str) -> tuple[int, int, int, int]:
    """(protocol, address, port, fwmark) of a service entry."""
    proto = r.choice(s.get("protocol", "tcp"), f"{where}.protocol", ("tcp", "udp", "fwmark"))
    protocol = IPPROTO_UDP if proto == "udp" else IPPROTO_TCP
    if proto == "fwmark":
        if "address" in s:
            raise r.fail(f"{where}.address", "a fwmark service has `fwmark: N`, no address")
        if "fwmark" not in s:
            raise r.fail(f"{where}.fwmark", "required for protocol fwmark")
        return protocol, 0, 0, r.integer(s["fwmark"], f"{where}.fwmark", 1, MAX_FWMARK)
    if "fwmark" in s:
        raise r.fail(f"{where}.fwmark", "only for protocol fwmark (or with `group:`)")
    if "address" not in s:
        raise r.fail(f"{where}.address", "required (address:port)")
    addr, port = r.addr_port(s["address"], f"{where}.address", port_required=True)
    return protocol, addr, port or 0, 0


def _members(r: Reader, s: dict, where: str) -> tuple[int, list[tuple[int, int, int]]]:
    """A group's protocol and its services' (address, port, fwmark): the addresses in
    order, then the fwmarks, as keepalived adds a virtual_server_group's."""
    proto = r.choice(s.get("protocol", "tcp"), f"{where}.protocol", ("tcp", "udp", "fwmark"))
    addrs, marks = s.get("address", []), s.get("fwmark", [])
    keys = []
    for j, a in enumerate(addrs if isinstance(addrs, list) else [addrs]):
        if proto == "fwmark":
            raise r.fail(f"{where}.address", "a group's addresses need protocol tcp or udp")
        addr, port = r.addr_port(a, f"{where}.address[{j}]", True)
        keys.append((addr, port or 0, 0))
    for j, m in enumerate(marks if isinstance(marks, list) else [marks]):
        keys.append((0, 0, r.integer(m, f"{where}.fwmark[{j}]", 1, MAX_FWMARK)))
    if not keys:
        raise r.fail(f"{where}.group", "a group needs `address:` and/or `fwmark:` lists")
    return IPPROTO_UDP if proto == "udp" else IPPROTO_TCP, keys


def _sched_flags(r: Reader, s: dict, where: str, sched: str) -> int:
    flags = 0
    for j, name in enumerate(r.seq(s.get("flags"), f"{where}.flags")):
        fw = f"{where}.flags[{j}]"
        flag = SCHED_FLAG[r.choice(name, fw, tuple(SCHED_FLAG))]
        if flag.scheduler is not None and flag.scheduler != sched:
            raise r.fail(fw, f"{name!r} needs scheduler {flag.scheduler}")
        flags |= flag.bit
    return flags


def _persistence(r: Reader, s: dict, where: str) -> tuple[int, int]:
    """(timeout, netmask): `persistent: true` is 360 s, as -p with no value."""
    timeout = 0
    persistent = s.get("persistent")
    if persistent is True:
        timeout = PERSISTENT_TIMEOUT
    elif persistent not in (None, False):
        timeout = r.integer(persistent, f"{where}.persistent", 1, MAX_TIMEOUT)
    netmask = NETMASK_ALL
    if "netmask" in s:
        if not timeout:
            raise r.fail(f"{where}.netmask", "a netmask needs `persistent`")
        netmask = r.ip(s["netmask"], f"{where}.netmask")
    return timeout, netmask


def _ops(r: Reader, s: dict, where: str, protocol: int,
         keys: list[tuple[int, int, int]]) -> int:
    if "ops" not in s:
        return 0
    if not isinstance(s["ops"], bool):
        raise r.fail(f"{where}.ops", f"{_short(s['ops'])} is not true/false")
    if s["ops"] and protocol == IPPROTO_TCP and any(not mark for _, _, mark in keys):
        raise r.fail(f"{where}.ops", "one-packet scheduling is for udp or fwmark services")
    return SVC_F_ONEPACKET if s["ops"] else 0


def _services(r: Reader, raw: Any, where: str, cfg: Config) -> list[VirtualService]:
    """One entry: a service, or with `group:` a pool of them (address: [..], fwmark: [..])."""
    s = r.mapping(raw, where, SERVICE)
    group = r.text(s["group"], f"{where}.group") if "group" in s else ""
    if group:
        protocol, keys = _members(r, s, where)
    else:
        protocol, addr, port, fwmark = _address(r, s, where)
        keys = [(addr, port, fwmark)]
    sched = r.choice(s.get("scheduler", DEFAULT_SCHEDULER), f"{where}.scheduler",
                     tuple(SCHEDULERS))
    flags = _sched_flags(r, s, where, sched)
    timeout, netmask = _persistence(r, s, where)
    if timeout:
        flags |= SVC_F_PERSISTENT
    if any(port == 0 and not mark for _, port, mark in keys) and not timeout:
        raise r.fail(f"{where}.address", "Zero port specified for non-persistent service")
    flags |= _ops(r, s, where, protocol, keys)
    health_raw = r.mapping(s.get("health") or {}, f"{where}.health", HEALTH)
    members = [VirtualService(IPPROTO_TCP if mark else protocol, addr, port, mark, sched,
                              flags, timeout, netmask, group=group)
               for addr, port, mark in keys]
    for vs in members:
        _pool_members(r, s, where, vs, health_raw)
    checked = ("quorum" in health_raw or "hysteresis" in health_raw
               or members[0].health.sorry is not None
               or any(rs.checks for rs in members[0].realservers))
    problem = quorum_problem(members[0].health, members[0].realservers) if checked else None
    if problem:
        cfg.warnings.append(f"{r.path}: {where}.health: {problem}")
        for vs in members[1:]:
            vs.health = members[0].health
    return members


def _pool_members(r: Reader, s: dict, where: str, vs: VirtualService,
                  health_raw: dict[str, Any]) -> None:
    """A service's realservers and its health (quorum, hysteresis, sorry server)."""
    defaults = _check_defaults(r, health_raw, f"{where}.health")
    inhibit = r.flag(health_raw.get("inhibit_on_failure", False),
                     f"{where}.health.inhibit_on_failure")
    seen: set[tuple[int, int]] = set()
    for j, raw_rs in enumerate(r.seq(s.get("realservers"), f"{where}.realservers")):
        rs = _realserver(r, raw_rs, f"{where}.realservers[{j}]", vs, defaults, inhibit)
        if (rs.address, rs.port) in seen:
            raise r.fail(f"{where}.realservers[{j}]", "Destination already exists")
        seen.add((rs.address, rs.port))
        vs.realservers.append(rs)
    vs.health = Health(
        r.integer(health_raw.get("quorum", 1), f"{where}.health.quorum", 0, 2**32 - 1),
        r.integer(health_raw.get("hysteresis", 0), f"{where}.health.hysteresis", 0,
                  2**32 - 1),
        None if s.get("sorry_server") is None
        else _sorry(r, s["sorry_server"], f"{where}.sorry_server", vs))


def _sorry(r: Reader, raw: Any, where: str, vs: VirtualService) -> RealServer:
    d = r.mapping(raw, where, SORRY)
    if "address" not in d:
        raise r.fail(f"{where}.address", "required (address[:port])")
    addr, port = r.addr_port(d["address"], f"{where}.address", port_required=False)
    fwd = BY_WORD[r.choice(d.get("forward", "route"), f"{where}.forward", CONFIG_WORDS)].code
    if fwd != MASQ:
        port = vs.port                    # DR/TUN: the service's port (0 for fwmark)
    return RealServer(addr, port or 0, fwd, 1, 0, 0,
                      r.flag(d.get("inhibit", False), f"{where}.inhibit"))


def _realserver(r: Reader, raw: Any, where: str, vs: VirtualService,
                defaults: dict[str, Any], inhibit: bool) -> RealServer:
    d = r.mapping(raw, where, REALSERVER)
    if "address" not in d:
        raise r.fail(f"{where}.address", "required (address[:port])")
    addr, port = r.addr_port(d["address"], f"{where}.address", port_required=False)
    fwd = BY_WORD[r.choice(d.get("forward", "route"), f"{where}.forward", CONFIG_WORDS)].code
    if fwd != MASQ and (not vs.fwmark or vs.group):
        port = vs.port                    # ipvsadm: DR/TUN use the service's port
    elif port is None:
        port = 0 if vs.group or vs.fwmark else vs.port    # no port: the packet's
    weight = r.integer(d.get("weight", 1), f"{where}.weight", 0, MAX_WEIGHT)
    uthr = r.integer(d.get("uthreshold", 0), f"{where}.uthreshold", 0, MAX_THRESHOLD)
    lthr = r.integer(d.get("lthreshold", 0), f"{where}.lthreshold", 0, MAX_THRESHOLD)
    rs = RealServer(addr, port, fwd, weight, uthr, lthr,
                    r.flag(d.get("inhibit_on_failure", inhibit), f"{where}.inhibit_on_failure"))
    rs.checks = [_check(r, c, f"{where}.checks[{k}]", defaults)
                 for k, c in enumerate(r.seq(d.get("checks"), f"{where}.checks"))]
    return rs


def _seconds(r: Reader, value: Any, where: str, positive: bool) -> float:
    seconds = r.number(value, where, 0.0, MAX_SECONDS)
    if positive and not seconds:
        raise r.fail(where, "must be more than 0 seconds")
    return seconds


def _check_defaults(r: Reader, d: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in CHECK_DEFAULTS:
        if k not in d:
            continue
        w = f"{where}.{k}"
        if k == "retry":
            out[k] = r.integer(d[k], w, 0, 2**32 - 1)
        elif k == "alpha":
            out[k] = r.flag(d[k], w)
        else:
            out[k] = _seconds(r, d[k], w, k in ("delay_loop", "connect_timeout"))
    return out


def check_default(kind: str, name: str, delay_loop: float, given: dict[str, Any]) -> Any:
    """What a check's parameter is when its entry does not say: the service's `health:`,
    else keepalived's default (warmup: the check's delay_loop; misc_timeout: the
    service's delay_loop)."""
    if name == "misc_timeout":
        return given.get("delay_loop", H.DELAY_LOOP)
    if name in given:
        return given[name]
    return {"delay_loop": H.DELAY_LOOP, "connect_timeout": H.CONNECT_TIMEOUT,
            "retry": H.KINDS[kind].retry,
            "delay_before_retry": H.KINDS[kind].delay_before_retry,
            "warmup": delay_loop, "alpha": False}[name]


def _check(r: Reader, raw: Any, where: str, defaults: dict[str, Any]) -> H.Check:
    if not isinstance(raw, dict) or "type" not in raw:
        raise r.fail(f"{where}.type", f"required: one of {', '.join(H.KINDS)}")
    kind = r.choice(raw["type"], f"{where}.type", tuple(H.KINDS))
    d = r.mapping(raw, where, (*CHECK_COMMON, *CHECK_OWN[kind]))
    own = _check_defaults(r, d, where)
    delay_loop = own.get("delay_loop", check_default(kind, "delay_loop", 0, defaults))
    values = {k: own[k] if k in own else check_default(kind, k, delay_loop, defaults)
              for k in CHECK_DEFAULTS}
    extra: dict[str, Any] = {}
    for k in ("connect_ip", "bindto"):
        if k in d:
            extra[k] = r.ip(d[k], f"{where}.{k}")
    for k in ("connect_port", "bind_port"):
        if k in d:
            extra[k] = r.integer(d[k], f"{where}.{k}", 0, MAX_PORT)
    if "fwmark" in d:
        extra["fwmark"] = r.integer(d["fwmark"], f"{where}.fwmark", 0, 2**32 - 1)
    if kind == H.HTTP_GET:
        extra.update(_http_options(r, d, where))
    if kind == H.MISC_CHECK:
        extra.update(_misc_options(r, d, where, defaults))
    return H.Check(kind, **values, **extra)


def _http_options(r: Reader, d: dict[str, Any], where: str) -> dict[str, Any]:
    urls = r.seq(d.get("url"), f"{where}.url")
    if not urls:
        raise r.fail(f"{where}.url", "an HTTP_GET needs at least one url")
    out: dict[str, Any] = {"urls": tuple(_url(r, u, f"{where}.url[{k}]")
                                         for k, u in enumerate(urls))}
    if "http_protocol" in d:
        out["http_protocol"] = r.choice(str(d["http_protocol"]), f"{where}.http_protocol",
                                        H.HTTP_PROTOCOLS)
    if "virtualhost" in d:
        out["virtualhost"] = r.text(d["virtualhost"], f"{where}.virtualhost")
    if "fast_recovery" in d:
        out["fast_recovery"] = r.flag(d["fast_recovery"], f"{where}.fast_recovery")
    return out


def _misc_options(r: Reader, d: dict[str, Any], where: str,
                  defaults: dict[str, Any]) -> dict[str, Any]:
    if "misc_path" not in d:
        raise r.fail(f"{where}.misc_path", "required (the command: a list of words)")
    path = d["misc_path"]
    argv = shlex.split(path) if isinstance(path, str) else r.seq(path, f"{where}.misc_path")
    if not argv or not all(isinstance(a, str) for a in argv):
        raise r.fail(f"{where}.misc_path", "expected a command: a list of strings")
    out: dict[str, Any] = {"misc_path": tuple(argv)}
    out["misc_timeout"] = (_seconds(r, d["misc_timeout"], f"{where}.misc_timeout", False)
                           if "misc_timeout" in d
                           else check_default(H.MISC_CHECK, "misc_timeout", 0, defaults))
    if "misc_dynamic" in d:
        out["misc_dynamic"] = r.flag(d["misc_dynamic"], f"{where}.misc_dynamic")
    return out


def _url(r: Reader, raw: Any, where: str) -> H.Url:
    d = r.mapping(raw, where, URL)
    if "path" not in d:
        raise r.fail(f"{where}.path", "required")
    status: list[tuple[int, int]] = []
    for k, code in enumerate(r.seq(d.get("status_code"), f"{where}.status_code")):
        w = f"{where}.status_code[{k}]"
        text = str(code)
        lo_text, _, hi_text = text.partition("-")
        if not lo_text.isdigit() or not (hi_text or lo_text).isdigit():
            raise r.fail(w, f"{_short(code)} is not a status code or a range (200-299)")
        lo, hi = int(lo_text), int(hi_text or lo_text)
        if not 100 <= lo <= hi <= 599:
            raise r.fail(w, f"{text} is not within 100..599")
        status.append((lo, hi))
    digest = None
    if "digest" in d:
        digest = str(d["digest"]).lower()
        if len(digest) != 32 or any(ch not in "0123456789abcdef" for ch in digest):
            raise r.fail(f"{where}.digest", f"{_short(d['digest'])} is not an MD5 (32 hex "
                         "digits)")
    return H.Url(r.text(d["path"], f"{where}.path"), tuple(status) or H.STATUS_DEFAULT,
                 digest, r.text(d["virtualhost"], f"{where}.virtualhost")
                 if "virtualhost" in d else None)


class _NoAliases(yaml.SafeLoader):
    """A safe loader that refuses anchors and aliases: a director's configuration needs
    none, and a few hundred bytes of nested aliases would otherwise expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: YAML aliases (*name) "
                                 "are not accepted in pyvs files")
        return super().compose_node(parent, index)


def read_yaml(path: str, text: str | None = None) -> Any:
    """A YAML file's data, or one line naming the file and what is wrong."""
    if text is None:
        text = read_text(path)
    try:
        return yaml.load(text, Loader=_NoAliases)     # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigFileError(f"{path}: {where}: not valid YAML ({reason})") from None


def read_text(path: str) -> str:
    """A configuration file's text: bounded, UTF-8, or one line saying why not."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigFileError(f"{path}: larger than {MAX_YAML_BYTES >> 20} MiB: not a "
                              "configuration file")
    if b"\0" in data:
        raise ConfigFileError(f"{path}: binary data: not a configuration file")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: byte {exc.start}: not UTF-8 text") from None


def load(path: str, text: str | None = None) -> Config:
    return parse(read_yaml(path, text), path)


# ---------------------------------------------------------------------- writing
def to_data(cfg: Config) -> dict[str, Any]:
    """The configuration as pyvs YAML data (only what differs from the defaults)."""
    out: dict[str, Any] = {"kernel": cfg.kernel}
    base = Timeouts()
    if (cfg.timeouts.tcp, cfg.timeouts.tcpfin, cfg.timeouts.udp) != (
            base.tcp, base.tcpfin, base.udp):
        out["timeouts"] = {"tcp": cfg.timeouts.tcp, "tcpfin": cfg.timeouts.tcpfin,
                           "udp": cfg.timeouts.udp}
    changed = {k: getattr(cfg.sysctls, k) for k, f in KNOBS.items()
               if getattr(cfg.sysctls, k) != f.default}
    if changed:
        out["sysctls"] = changed
    if cfg.tunnel_source is not None:
        out["tunnel_source"] = int_to_ip(cfg.tunnel_source)
    if cfg.sync_daemon is not None:
        out["sync_daemon"] = {k: cfg.sync_daemon[k] for k in SYNC if k in cfg.sync_daemon}
    out["services"] = []
    entries: dict[str, dict[str, Any]] = {}
    for vs in cfg.services:
        if vs.group and vs.group in entries:
            entry = entries[vs.group]
            if vs.fwmark:
                entry["fwmark"].append(vs.fwmark)
            else:
                entry["address"].append(f"{int_to_ip(vs.address)}:{vs.port}")
            continue
        entry = _service_data(vs)
        if vs.group:
            entries[vs.group] = entry
        out["services"].append(entry)
    for entry in entries.values():
        for key in ("address", "fwmark"):
            if not entry[key]:
                del entry[key]
    if cfg.daemons:
        out["sync_daemons"] = [_daemon_data(d) for d in cfg.daemons]
    return out


def _daemon_data(d: C.StartDaemon) -> dict[str, Any]:
    """Only what differs from the kernel's defaults (group 224.0.0.81, port 8848, TTL 1)."""
    out: dict[str, Any] = {"state": d.state, "interface": d.mcast_ifn, "syncid": d.syncid}
    if d.sync_maxlen:
        out["maxlen"] = d.sync_maxlen
    if d.mcast_group and d.mcast_group != SYNC_GROUP_ADDR:
        out["group"] = int_to_ip(d.mcast_group)
    if d.mcast_port and d.mcast_port != SYNC_PORT:
        out["port"] = d.mcast_port
    if d.mcast_ttl and d.mcast_ttl != 1:
        out["ttl"] = d.mcast_ttl
    return out


def _service_data(vs: VirtualService) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if vs.group:
        s["group"] = vs.group
        s["protocol"] = "udp" if vs.protocol == IPPROTO_UDP and not vs.fwmark else "tcp"
        s["address"] = [] if vs.fwmark else [f"{int_to_ip(vs.address)}:{vs.port}"]
        s["fwmark"] = [vs.fwmark] if vs.fwmark else []
    elif vs.fwmark:
        s["protocol"], s["fwmark"] = "fwmark", vs.fwmark
    else:
        s["protocol"] = "udp" if vs.protocol == IPPROTO_UDP else "tcp"
        s["address"] = f"{int_to_ip(vs.address)}:{vs.port}"
    s["scheduler"] = vs.scheduler
    names = sched_flag_names(vs.scheduler, vs.flags)
    if vs.flags & SVC_F_SCHED3 and vs.scheduler in ("sh", "mh"):
        names.append("flag-3")          # which ipvsadm lists as nothing: kept by name here
    if names:
        s["flags"] = names
    if vs.flags & SVC_F_PERSISTENT:
        s["persistent"] = vs.timeout
        if vs.netmask != NETMASK_ALL:
            s["netmask"] = int_to_ip(vs.netmask)
    if vs.flags & SVC_F_ONEPACKET:
        s["ops"] = True
    health = _health_data(vs)
    if health:
        s["health"] = health
    if vs.health.sorry is not None:
        sorry = vs.health.sorry
        s["sorry_server"] = {"address": f"{int_to_ip(sorry.address)}:{sorry.port}",
                             "forward": BY_CODE[sorry.forward].word}
        if sorry.inhibit:
            s["sorry_server"]["inhibit"] = True
    s["realservers"] = [_realserver_data(rs, health) for rs in vs.realservers]
    return s


def _health_data(vs: VirtualService) -> dict[str, Any]:
    """The service's `health:`: its quorum and hysteresis, and each check parameter all
    its checks share (when that is not keepalived's default anyway)."""
    out: dict[str, Any] = {}
    if vs.health.quorum != 1:
        out["quorum"] = vs.health.quorum
    if vs.health.hysteresis:
        out["hysteresis"] = vs.health.hysteresis
    if vs.realservers and all(rs.inhibit for rs in vs.realservers):
        out["inhibit_on_failure"] = True
    checks = [c for rs in vs.realservers for c in rs.checks]
    for name in CHECK_DEFAULTS:
        values = {getattr(c, name) for c in checks}
        if len(values) == 1 and any(
                getattr(c, name) != check_default(c.kind, name, c.delay_loop, out)
                for c in checks):
            out[name] = _num(values.pop())
    return out


def _num(value: Any) -> Any:
    """Seconds as written: 10, not 10.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _realserver_data(rs: RealServer, health: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {"address": f"{int_to_ip(rs.address)}:{rs.port}",
                         "forward": BY_CODE[rs.forward].word, "weight": rs.weight}
    if rs.u_threshold:
        d["uthreshold"] = rs.u_threshold
    if rs.l_threshold:
        d["lthreshold"] = rs.l_threshold
    if rs.inhibit != health.get("inhibit_on_failure", False):
        d["inhibit_on_failure"] = rs.inhibit
    if rs.checks:
        d["checks"] = [_check_data(c, health) for c in rs.checks]
    return d


def _check_data(c: H.Check, health: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": c.kind}
    base = H.Check(c.kind)
    for name in CHECK_DEFAULTS:
        value = getattr(c, name)
        if value != check_default(c.kind, name, c.delay_loop, health):
            out[name] = _num(value)
    for name in ("connect_ip", "bindto"):
        if getattr(c, name) is not None:
            out[name] = int_to_ip(getattr(c, name))
    for name in ("connect_port", "bind_port"):
        if getattr(c, name) is not None:
            out[name] = getattr(c, name)
    if c.fwmark:
        out["fwmark"] = c.fwmark
    if c.kind == H.HTTP_GET:
        out["url"] = [_url_data(u) for u in c.urls]
        for name in ("http_protocol", "virtualhost", "fast_recovery"):
            if getattr(c, name) != getattr(base, name):
                out[name] = getattr(c, name)
    if c.kind == H.MISC_CHECK:
        out["misc_path"] = list(c.misc_path)
        if c.misc_timeout != check_default(c.kind, "misc_timeout", 0, health):
            out["misc_timeout"] = _num(c.misc_timeout)
        if c.misc_dynamic:
            out["misc_dynamic"] = True
    return out


def _url_data(u: H.Url) -> dict[str, Any]:
    out: dict[str, Any] = {"path": u.path}
    if u.status != H.STATUS_DEFAULT:
        out["status_code"] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in u.status]
    if u.digest is not None:
        out["digest"] = u.digest
    if u.virtualhost is not None:
        out["virtualhost"] = u.virtualhost
    return out


def dump(cfg: Config) -> str:
    """The configuration as a pyvs YAML file (loads back to the same model)."""
    return yaml.safe_dump(to_data(cfg), sort_keys=False, default_flow_style=None, width=100)
