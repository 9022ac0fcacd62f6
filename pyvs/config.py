"""Director configuration files (YAML) -> a configured :class:`Director`.

Defaults follow ipvsadm: scheduler wlc, forwarding route (DR), weight 1, `persistent: true`
(or `-p` with no value) = 360 s, netmask 255.255.255.255.  Every error names the file, the
field path and the reason in one line, e.g.
``configs/x.yaml: services[0].realservers[1].forward: 'nat2' is not one of masq, route, tunnel``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .core.engine import ConfigError, Director, Sysctls, Timeouts
from .core.packet import ip_to_int
from .core.schedulers import SCHEDULERS
from .core.service import (
    FWD_BY_CONFIG,
    IPPROTO_TCP,
    IPPROTO_UDP,
    MASQ,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
)

DEFAULT_PERSISTENCE = 360          # IPVS_SVC_PERSISTENT_TIMEOUT
MAX_PERSISTENCE = 2678400
KERNELS = ("modern", "4.4", "2.6")
SCHED_FLAGS = {"flag-1": SVC_F_SCHED1, "flag-2": SVC_F_SCHED2, "flag-3": SVC_F_SCHED3,
               "sh-fallback": SVC_F_SCHED1, "sh-port": SVC_F_SCHED2,
               "mh-fallback": SVC_F_SCHED1, "mh-port": SVC_F_SCHED2}
SYSCTLS = tuple(f.name for f in fields(Sysctls))


class ConfigFileError(Exception):
    """One line: '<file>: <field>: <reason>'."""


@dataclass
class RealServer:
    address: int
    port: int
    forward: int
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0


@dataclass
class VirtualService:
    protocol: int
    address: int
    port: int
    fwmark: int
    scheduler: str
    flags: int
    timeout: int
    netmask: int
    realservers: list[RealServer] = field(default_factory=list)


@dataclass
class Config:
    path: str
    kernel: str = "modern"
    timeouts: Timeouts = field(default_factory=Timeouts)
    sysctls: Sysctls = field(default_factory=Sysctls)
    tunnel_source: int | None = None
    services: list[VirtualService] = field(default_factory=list)

    def with_forward(self, fwd: int) -> Config:
        """The same services with every realserver forwarded by `fwd` (the simulator's
        --mode); DR and TUN keep the service's port, as ipvsadm insists."""
        services = [
            replace(vs, realservers=[
                replace(rs, forward=fwd, port=rs.port if fwd == MASQ or vs.fwmark else vs.port)
                for rs in vs.realservers])
            for vs in self.services]
        return replace(self, services=services)

    def build(self, now: float = 0.0) -> Director:
        """A fresh director with these services, realservers added in file order."""
        director = Director(kernel=self.kernel, sysctls=replace(self.sysctls),
                            timeouts=self.timeouts, tunnel_source=self.tunnel_source,
                            start=now)
        for vs in self.services:
            svc = director.add_service(vs.protocol, vs.address, vs.port, vs.fwmark,
                                       vs.scheduler, vs.flags, vs.timeout, vs.netmask, now)
            for rs in vs.realservers:
                director.add_dest(svc, rs.address, rs.port, rs.forward, rs.weight,
                                  rs.u_threshold, rs.l_threshold, now)
        return director


class Reader:
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
            raise self.fail(where, f"{value!r} is not an integer")
        if not low <= value <= high:
            raise self.fail(where, f"{value} is out of range {low}..{high}")
        return value

    def number(self, value: Any, where: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"{value!r} is not a number")
        if not low <= value <= high:
            raise self.fail(where, f"{value} is out of range {low:g}..{high:g}")
        return float(value)

    def ip(self, value: Any, where: str) -> int:
        try:
            return ip_to_int(str(value))
        except ValueError:
            raise self.fail(where, f"{value!r} is not an IPv4 address") from None

    def addr_port(self, value: Any, where: str, port_required: bool) -> tuple[int, int]:
        text = str(value)
        if ":" in text:
            host, _, port_text = text.rpartition(":")
            if not port_text.isdigit() or int(port_text) > 65535:
                raise self.fail(where, f"{value!r}: port {port_text!r} is not 0..65535")
            return self.ip(host, where), int(port_text)
        if port_required:
            raise self.fail(where, f"{value!r} needs a port (address:port)")
        return self.ip(text, where), 0

    def choice(self, value: Any, where: str, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.fail(where, f"{value!r} is not one of {', '.join(options)}")
        return value


def parse(data: Any, path: str) -> Config:
    r = Reader(path)
    if data is None:
        data = {}
    top = r.mapping(data, "", ("kernel", "timeouts", "sysctls", "services", "tunnel_source"))
    cfg = Config(path=path)
    cfg.kernel = r.choice(str(top.get("kernel", "modern")), "kernel", KERNELS)
    if "timeouts" in top:
        t = r.mapping(top["timeouts"], "timeouts", ("tcp", "tcpfin", "udp"))
        cfg.timeouts = Timeouts(
            **{k: r.integer(t[k], f"timeouts.{k}", 1, 86400 * 31) if k in t
               else getattr(Timeouts(), k) for k in ("tcp", "tcpfin", "udp")})
    if "sysctls" in top:
        sc = r.mapping(top["sysctls"], "sysctls", SYSCTLS)
        limits = {"conn_reuse_mode": 3, "secure_tcp": 3}
        for k, v in sc.items():
            setattr(cfg.sysctls, k, r.integer(v, f"sysctls.{k}", 0, limits.get(k, 1)))
    if top.get("tunnel_source") is not None:
        cfg.tunnel_source = r.ip(top["tunnel_source"], "tunnel_source")
    services = top.get("services", [])
    if not isinstance(services, list):
        raise r.fail("services", "expected a list of services")
    seen: set[tuple] = set()
    for i, raw in enumerate(services):
        vs = _service(r, raw, f"services[{i}]")
        key = (vs.fwmark, vs.protocol, vs.address, vs.port)
        if key in seen:
            raise r.fail(f"services[{i}]", "service already defined earlier in the file")
        seen.add(key)
        cfg.services.append(vs)
    return cfg


def _service(r: Reader, raw: Any, where: str) -> VirtualService:
    s = r.mapping(raw, where, ("protocol", "address", "fwmark", "scheduler", "flags",
                               "persistent", "netmask", "ops", "realservers"))
    proto = r.choice(s.get("protocol", "tcp"), f"{where}.protocol", ("tcp", "udp", "fwmark"))
    fwmark = 0
    addr = port = 0
    protocol = IPPROTO_UDP if proto == "udp" else IPPROTO_TCP
    if proto == "fwmark":
        if "address" in s:
            raise r.fail(f"{where}.address", "a fwmark service has `fwmark: N`, no address")
        if "fwmark" not in s:
            raise r.fail(f"{where}.fwmark", "required for protocol fwmark")
        fwmark = r.integer(s["fwmark"], f"{where}.fwmark", 1, 0xFFFFFFFF)
    else:
        if "fwmark" in s:
            raise r.fail(f"{where}.fwmark", "only for protocol fwmark")
        if "address" not in s:
            raise r.fail(f"{where}.address", "required (address:port)")
        addr, port = r.addr_port(s["address"], f"{where}.address", port_required=True)
    sched = r.choice(s.get("scheduler", "wlc"), f"{where}.scheduler", tuple(SCHEDULERS))
    flags = 0
    for j, name in enumerate(s.get("flags", []) or []):
        fw = f"{where}.flags[{j}]"
        r.choice(name, fw, tuple(SCHED_FLAGS))
        if name.startswith(("sh-", "mh-")) and not name.startswith(sched + "-"):
            raise r.fail(fw, f"{name!r} needs scheduler {name[:2]}")
        flags |= SCHED_FLAGS[name]
    timeout = 0
    persistent = s.get("persistent")
    if persistent is True:
        timeout = DEFAULT_PERSISTENCE
    elif persistent not in (None, False):
        timeout = r.integer(persistent, f"{where}.persistent", 1, MAX_PERSISTENCE)
    if timeout:
        flags |= SVC_F_PERSISTENT
    netmask = 0xFFFFFFFF
    if "netmask" in s:
        if not timeout:
            raise r.fail(f"{where}.netmask", "a netmask needs `persistent`")
        netmask = r.ip(s["netmask"], f"{where}.netmask")
    if port == 0 and not fwmark and not timeout:
        raise r.fail(f"{where}.address", "Zero port specified for non-persistent service")
    if s.get("ops"):
        if proto == "tcp":
            raise r.fail(f"{where}.ops", "one-packet scheduling is for udp or fwmark services")
        flags |= SVC_F_ONEPACKET
    vs = VirtualService(protocol, addr, port, fwmark, sched, flags, timeout, netmask)
    rss = s.get("realservers", []) or []
    if not isinstance(rss, list):
        raise r.fail(f"{where}.realservers", "expected a list")
    seen: set[tuple[int, int]] = set()
    for j, raw_rs in enumerate(rss):
        rs = _realserver(r, raw_rs, f"{where}.realservers[{j}]", vs)
        if (rs.address, rs.port) in seen:
            raise r.fail(f"{where}.realservers[{j}]", "Destination already exists")
        seen.add((rs.address, rs.port))
        vs.realservers.append(rs)
    return vs


def _realserver(r: Reader, raw: Any, where: str, vs: VirtualService) -> RealServer:
    d = r.mapping(raw, where, ("address", "forward", "weight", "uthreshold", "lthreshold"))
    if "address" not in d:
        raise r.fail(f"{where}.address", "required (address[:port])")
    addr, port = r.addr_port(d["address"], f"{where}.address", port_required=False)
    fwd = FWD_BY_CONFIG[r.choice(d.get("forward", "route"), f"{where}.forward",
                                 tuple(FWD_BY_CONFIG))]
    if ":" not in str(d["address"]):
        port = vs.port                          # ipvsadm: no port = the service's port
    if fwd != MASQ and not vs.fwmark:
        port = vs.port                          # ipvsadm: DR/TUN cannot change the port
    weight = r.integer(d.get("weight", 1), f"{where}.weight", 0, 65535)
    uthr = r.integer(d.get("uthreshold", 0), f"{where}.uthreshold", 0, 2**31 - 1)
    lthr = r.integer(d.get("lthreshold", 0), f"{where}.lthreshold", 0, 2**31 - 1)
    return RealServer(addr, port, fwd, weight, uthr, lthr)


def read_yaml(path: str) -> Any:
    """A YAML file's data, or one line naming the file and what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise ConfigFileError(f"{path}: {where}: not valid YAML "
                              f"({getattr(exc, 'problem', None) or exc})") from None


def load(path: str | Path) -> Config:
    path = str(path)
    data = read_yaml(path)
    try:
        return parse(data, path)
    except ConfigError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
