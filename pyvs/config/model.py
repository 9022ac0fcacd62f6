"""The one configuration model every format translates into: a director's kernel profile,
timeouts, sysctls and its services with their realservers, in the order they are added,
keepalived's health checking (each realserver's checkers, each virtual server's quorum,
hysteresis and sorry server), and its connection sync daemons.

YAML files, ipvsadm rules files and keepalived.conf all produce a :class:`Config`; a
running director's table gives one back (:func:`from_snapshot`), so YAML -> director ->
YAML is lossless.  A Config becomes a director through control-plane commands
(:meth:`Config.commands`), the same ones pyvsadm sends, so a configuration file and a
live `ipvsadm -R` build identical tables.  With health checks the table is the one
keepalived builds before its first check (pyvs.core.health: alpha realservers out, a
sorry server in while the quorum is short).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..core import commands as C
from ..core import health as H
from ..core.engine import ConfigError, Director, Timeouts
from ..core.forwarding import BY_WORD, DROUTE, MASQ
from ..core.limits import DEFAULT_SCHEDULER, NETMASK_ALL
from ..core.packet import IPPROTO_TCP, IPPROTO_UDP, int_to_ip, ip_to_int
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
    inhibit: bool = False             # inhibit_on_failure: a failed check sets weight 0
    checks: list[H.Check] = field(default_factory=list)


@dataclass
class Health:
    """A virtual server's pool: its quorum (the sum of the alive realservers' weights it
    needs), hysteresis, and the sorry server that stands in while the quorum is lost."""

    quorum: int = 1
    hysteresis: int = 0
    sorry: RealServer | None = None   # weight 1; `inhibit` is sorry_server_inhibit


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
    health: Health = field(default_factory=Health)
    group: str = ""      # a virtual_server_group's services share one pool of checks

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
    # the sync daemons ipvsadm --start-daemon would start, after the services
    daemons: list[C.StartDaemon] = field(default_factory=list)
    # keepalived's lvs_sync_daemon: interface, instance, syncid, maxlen, port, ttl, group;
    # started as a master daemon (daemon_commands())
    sync_daemon: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)   # what the source said pyvs ignores

    def with_forward(self, fwd: int) -> Config:
        """The same services with every realserver forwarded by `fwd` (the simulator's
        --mode); DR and TUN keep the service's port, as ipvsadm insists."""
        def moved(vs: VirtualService, rs: RealServer) -> RealServer:
            return replace(rs, forward=fwd, port=rs.port if fwd == MASQ or vs.fwmark
                           else vs.port)
        services = [
            replace(vs, realservers=[moved(vs, rs) for rs in vs.realservers],
                    health=replace(vs.health, sorry=None if vs.health.sorry is None
                                   else moved(vs, vs.health.sorry)))
            for vs in self.services]
        return replace(self, services=services)

    def commands(self) -> list[C.Command]:
        """The control-plane commands that build this configuration, in order: the
        services, then the realservers keepalived puts in before its first check (all of
        them when there are no checks), then the sync daemons."""
        out: list[C.Command] = [C.AddService(vs.key, vs.scheduler, vs.flags, vs.timeout,
                                             vs.netmask) for vs in self.services]
        return out + H.Monitor(self.pools()).initial + self.daemon_commands()

    def daemon_commands(self) -> list[C.Command]:
        """The sync daemons to start.  keepalived's lvs_sync_daemon follows its VRRP
        instance: it starts the master daemon when the instance becomes MASTER and the
        backup daemon when it becomes BACKUP (ipvs_syncd_master() / ipvs_syncd_backup(),
        keepalived's check/ipvswrapper.c).  pyvs runs no VRRP and a director is always the
        master, so a `sync_daemon` starts the master daemon."""
        if self.daemons or self.sync_daemon is None:
            return list(self.daemons)
        d = self.sync_daemon
        group = d.get("group")
        return [C.StartDaemon("master", d["interface"], d.get("syncid", 0), d.get("maxlen", 0),
                              ip_to_int(group) if group else 0, d.get("port", 0),
                              d.get("ttl", 0))]

    def pools(self) -> list[H.Pool]:
        """The health checker's view: one pool per virtual server (a group's services
        together), realservers in order, each in every service of its pool."""
        members: dict[str, list[VirtualService]] = {}
        order: list[list[VirtualService]] = []
        for vs in self.services:
            if not vs.group:
                order.append([vs])
            elif vs.group in members:
                members[vs.group].append(vs)
            else:
                members[vs.group] = [vs]
                order.append(members[vs.group])
        return [_pool(vss) for vss in order]

    def has_checks(self) -> bool:
        return any(rs.checks for vs in self.services for rs in vs.realservers)

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


def _pool(members: list[VirtualService]) -> H.Pool:
    first = members[0]

    def server(rs: RealServer, ports: tuple[int, ...]) -> H.Server:
        return H.Server(rs.address, ports, rs.forward, rs.weight, rs.u_threshold,
                        rs.l_threshold, rs.inhibit, tuple(rs.checks), rs.port)
    servers = tuple(server(rs, tuple(vs.realservers[i].port for vs in members))
                    for i, rs in enumerate(first.realservers))
    sorry = first.health.sorry
    name = f"group {first.group}" if first.group else pool_name(first.key)
    return H.Pool(name, tuple(vs.key for vs in members), servers, first.health.quorum,
                  first.health.hysteresis,
                  None if sorry is None else server(sorry, tuple(
                      vs.health.sorry.port if vs.health.sorry else 0 for vs in members)))


def pool_name(key: C.ServiceKey) -> str:
    """A service as keepalived's log names it, in ipvsadm's words: `TCP 10.0.0.1:80`."""
    if key.fwmark:
        return f"FWM {key.fwmark}"
    proto = "UDP" if key.protocol == IPPROTO_UDP else "TCP"
    return f"{proto} {int_to_ip(key.addr)}:{key.port}"


def quorum_problem(health: Health, realservers: list[RealServer]) -> str | None:
    """validate_check_config(): a quorum above the realservers' total weight can never be
    met, so keepalived lowers it (and a hysteresis >= the quorum) and says so; this
    lowers them too and returns what to warn."""
    total = sum(rs.weight for rs in realservers)
    said = []
    if health.quorum > total:
        said.append(f"quorum {health.quorum} exceeds the realservers' total weight {total}: "
                    f"lowered to {total}")
        health.quorum = total
    if health.hysteresis and health.hysteresis >= health.quorum:
        low = max(0, health.quorum - 1)
        said.append(f"hysteresis {health.hysteresis} >= quorum {health.quorum}: lowered to "
                    f"{low}")
        health.hysteresis = low
    return "; ".join(said) or None


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
        flags = s["sched_flags"]
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
