"""The one configuration model every format translates into: a director's kernel profile,
timeouts, sysctls, its services with their realservers, in the order they are added, and
its connection sync daemons.

YAML files, ipvsadm rules files and keepalived.conf all produce a :class:`Config`; a
running director's table gives one back (:func:`from_snapshot`), so YAML -> director ->
YAML is lossless.  A Config becomes a director through control-plane commands
(:meth:`Config.commands`), the same ones pyvsadm sends, so a configuration file and a
live `ipvsadm -R` build identical tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..core import commands as C
from ..core.engine import ConfigError, Director, Timeouts
from ..core.forwarding import BY_WORD, DROUTE, MASQ
from ..core.limits import DEFAULT_SCHEDULER, NETMASK_ALL
from ..core.packet import IPPROTO_TCP, IPPROTO_UDP, int_to_ip, ip_to_int
from ..core.schedulers import SCHED_FLAG
from ..core.service import SVC_F_ONEPACKET, SVC_F_PERSISTENT
from ..core.states import DEFAULT_PROFILE
from ..core.sysctls import Sysctls


class ConfigFileError(Exception):
    """One line: '<file>: <field or line>: <reason>'."""


@dataclass
class RealServer:
    address: int
    port: int
    forward: int = DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0


@dataclass
class VirtualService:
    protocol: int
    address: int
    port: int
    fwmark: int = 0
    scheduler: str = DEFAULT_SCHEDULER
    flags: int = 0
    timeout: int = 0
    netmask: int = NETMASK_ALL
    realservers: list[RealServer] = field(default_factory=list)

    @property
    def key(self) -> C.ServiceKey:
        return C.ServiceKey(self.protocol, self.address, self.port, self.fwmark)


@dataclass
class Config:
    path: str
    kernel: str = DEFAULT_PROFILE
    timeouts: Timeouts = field(default_factory=Timeouts)
    sysctls: Sysctls = field(default_factory=Sysctls)
    tunnel_source: int | None = None
    services: list[VirtualService] = field(default_factory=list)
    daemons: list[C.StartDaemon] = field(default_factory=list)   # started after the services
    warnings: list[str] = field(default_factory=list)   # what the source said pyvs ignores

    def with_forward(self, fwd: int) -> Config:
        """The same services with every realserver forwarded by `fwd` (the simulator's
        --mode); DR and TUN keep the service's port, as ipvsadm insists."""
        services = [
            replace(vs, realservers=[
                replace(rs, forward=fwd, port=rs.port if fwd == MASQ or vs.fwmark else vs.port)
                for rs in vs.realservers])
            for vs in self.services]
        return replace(self, services=services)

    def commands(self) -> list[C.Command]:
        """The control-plane commands that build this configuration, in order."""
        out: list[C.Command] = []
        for vs in self.services:
            out.append(C.AddService(vs.key, vs.scheduler, vs.flags, vs.timeout, vs.netmask))
            out.extend(C.AddDest(vs.key, rs.address, rs.port, rs.forward, rs.weight,
                                 rs.u_threshold, rs.l_threshold) for rs in vs.realservers)
        out.extend(self.daemons)
        return out

    def build(self, now: float = 0.0, links: dict[str, int] | None = None) -> Director:
        """A fresh director with this configuration; `links`: the interfaces a sync daemon
        may use (Director.links; None: any)."""
        director = Director(kernel=self.kernel, sysctls=replace(self.sysctls),
                            timeouts=self.timeouts, tunnel_source=self.tunnel_source,
                            start=now)
        director.links = links
        for cmd in self.commands():
            try:
                director.apply(cmd, now)
            except ConfigError as exc:
                raise ConfigFileError(f"{self.path}: {describe(cmd)}: {exc}") from None
        return director


def describe(cmd: C.Command) -> str:
    """A command as a person reads it, for error messages: `service tcp 10.0.0.1:80`."""
    if isinstance(cmd, C.StartDaemon):
        return f"{cmd.state} sync daemon on {cmd.mcast_ifn}"
    key = getattr(cmd, "service", None)
    if key is None:
        return type(cmd).__name__
    text = service_text(key)
    addr = getattr(cmd, "addr", None)
    if addr is not None:
        text += f" realserver {int_to_ip(addr)}:{getattr(cmd, 'port', 0)}"
    return text


def service_text(key: C.ServiceKey) -> str:
    if key.fwmark:
        return f"service fwmark {key.fwmark}"
    proto = "udp" if key.protocol == IPPROTO_UDP else "tcp"
    return f"service {proto} {int_to_ip(key.addr)}:{key.port}"


def from_snapshot(snap: dict[str, Any], path: str = "<director>") -> Config:
    """A director's configuration from its snapshot (pyvs list --json): what -S saves,
    plus the kernel profile, timeouts and sysctls; realservers in the order they were
    added (the kernel lists them newest first)."""
    cfg = Config(path=path, kernel=snap["kernel"])
    t = snap["timeouts"]
    cfg.timeouts = Timeouts(t["tcp"], t["tcpfin"], t["udp"])
    known = {f.name for f in fields(Sysctls)}
    cfg.sysctls = Sysctls(**{k: v for k, v in snap.get("sysctls", {}).items() if k in known})
    if snap.get("tunnel_source"):
        cfg.tunnel_source = ip_to_int(snap["tunnel_source"])
    for s in snap["services"]:
        flags = sum(SCHED_FLAG[name].bit for name in s["flags"])
        if s["persistent"] is not None:
            flags |= SVC_F_PERSISTENT
        if s["ops"]:
            flags |= SVC_F_ONEPACKET
        vs = VirtualService(
            IPPROTO_UDP if s["proto"] == "UDP" else IPPROTO_TCP,
            0 if s["fwmark"] else ip_to_int(s["address"]), s["port"], s["fwmark"],
            s["scheduler"], flags, s["persistent"] or 0, ip_to_int(s["netmask"]))
        for d in reversed(s["dests"]):
            vs.realservers.append(RealServer(ip_to_int(d["address"]), d["port"],
                                             BY_WORD[d["forward"]].code, d["weight"],
                                             d["uthreshold"], d["lthreshold"]))
        cfg.services.append(vs)
    for d in snap.get("daemons", []):
        cfg.daemons.append(C.StartDaemon(d["state"], d["mcast_ifn"], d["syncid"],
                                         d["sync_maxlen"], ip_to_int(d["mcast_group"]),
                                         d["mcast_port"], d["mcast_ttl"]))
    return cfg
