"""Control-plane commands: every change a director accepts, as a value.

A command is what ipvsadm sends the kernel (-A -E -D -C -a -e -d -Z --set, --start-daemon,
--stop-daemon) or a write to /proc/sys/net/ipv4/vs.  Front ends only build commands: the
pyvsadm command line, ipvsadm rules files, YAML and keepalived configurations, replay and
scenario events, health checkers, the control socket.  :meth:`Director.apply` checks each
one (:func:`check`: the values no kernel would take, with ipvsadm's or libipvs's texts)
and makes the change at the instant it is given, so a change means the same thing whether
it comes from a live pyvsadm, a replayed timeline or a simulated health check.

The dict form (:func:`to_dict` / :func:`from_dict`) is the control socket's; it is strict:
an unknown op or field, a missing field or a wrong type is refused with one line.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, Final

from . import sysctls
from .forwarding import BY_CODE, DROUTE
from .limits import (
    DEFAULT_SCHEDULER,
    MAX_ADDR,
    MAX_FWMARK,
    MAX_PORT,
    MAX_THRESHOLD,
    MAX_TIMEOUT,
    MAX_WEIGHT,
    NETMASK_ALL,
)
from .packet import IPPROTO_TCP, IPPROTO_UDP, int_to_ip
from .service import SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3

SERVICE_FLAGS: Final = (SVC_F_PERSISTENT | SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2
                        | SVC_F_SCHED3)
PROTOCOLS: Final = (IPPROTO_TCP, IPPROTO_UDP)


class CommandError(ValueError):
    """A command no kernel would take, or a malformed one; the text says why."""


class ConfigError(ValueError):
    """A control-plane request the kernel (or ipvsadm) would refuse; the text says why.
    (Defined here, beside the commands, so that the engine and the sync daemons, which
    the engine holds, share it without importing each other.)"""


@dataclass(frozen=True)
class ServiceKey:
    """Which virtual service: protocol, address and port, or a firewall mark (whose
    protocol ipvsadm sends as TCP)."""

    protocol: int = IPPROTO_TCP
    addr: int = 0
    port: int = 0
    fwmark: int = 0


@dataclass(frozen=True)
class AddService:
    """ipvsadm -A."""

    service: ServiceKey
    scheduler: str = DEFAULT_SCHEDULER
    flags: int = 0
    timeout: int = 0                # persistence, seconds (with SVC_F_PERSISTENT)
    netmask: int = NETMASK_ALL


@dataclass(frozen=True)
class EditService(AddService):
    """ipvsadm -E: every field is set anew (an edit without -p ends persistence)."""


@dataclass(frozen=True)
class DelService:
    """ipvsadm -D."""

    service: ServiceKey


@dataclass(frozen=True)
class Flush:
    """ipvsadm -C."""


@dataclass(frozen=True)
class Zero:
    """ipvsadm -Z [service]: counters and rates of one service, or of everything."""

    service: ServiceKey | None = None


@dataclass(frozen=True)
class AddDest:
    """ipvsadm -a."""

    service: ServiceKey
    addr: int
    port: int
    fwd: int = DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0


@dataclass(frozen=True)
class EditDest(AddDest):
    """ipvsadm -e: forwarding, weight and thresholds set anew."""


@dataclass(frozen=True)
class DelDest:
    """ipvsadm -d."""

    service: ServiceKey
    addr: int
    port: int


@dataclass(frozen=True)
class SetTimeouts:
    """ipvsadm --set tcp tcpfin udp (0 leaves a value as it is)."""

    tcp: int = 0
    tcpfin: int = 0
    udp: int = 0


@dataclass(frozen=True)
class SetSysctl:
    """A write to /proc/sys/net/ipv4/vs/NAME.  sync_threshold's file holds two numbers,
    the knobs sync_threshold and sync_period: setting one keeps the other (a write of the
    file, both at once, is :class:`SetSyncThreshold`)."""

    name: str
    value: int


@dataclass(frozen=True)
class SetSyncThreshold:
    """A write of both numbers of /proc/sys/net/ipv4/vs/sync_threshold at once, checked
    as a pair (proc_do_sync_threshold()): `echo "60 100" > sync_threshold` is valid even
    though 60 is above the old period."""

    threshold: int
    period: int


DAEMON_STATES: Final = ("master", "backup")     # IP_VS_STATE_MASTER 1, IP_VS_STATE_BACKUP 2
IFNAME_MAXLEN: Final = 16                       # IP_VS_IFNAME_MAXLEN (NUL included)
MAX_SYNC_MAXLEN: Final = 65535 - 20 - 8         # ipvsadm's bound: IPv4 + UDP headers


@dataclass(frozen=True)
class StartDaemon:
    """ipvsadm --start-daemon master|backup (start_sync_thread()).  0 means the kernel's
    default: maxlen from the MTU (the master assumes 1500), group 224.0.0.81, port 8848,
    TTL 1.  `mcast_group` is an IPv4 address as an integer."""

    state: str
    mcast_ifn: str
    syncid: int = 0
    sync_maxlen: int = 0
    mcast_group: int = 0
    mcast_port: int = 0
    mcast_ttl: int = 0


@dataclass(frozen=True)
class StopDaemon:
    """ipvsadm --stop-daemon master|backup (stop_sync_thread())."""

    state: str


Command = (AddService | EditService | DelService | Flush | Zero | AddDest | EditDest | DelDest
           | SetTimeouts | SetSysctl | SetSyncThreshold | StartDaemon | StopDaemon)

@dataclass(frozen=True)
class Event:
    """A command at an instant: a replay timeline's or a scenario's change."""

    at: float
    command: Command


# the control socket's op names: ipvsadm's command names, plus sysctl
OPS: Final[dict[str, type]] = {
    "add-service": AddService, "edit-service": EditService, "delete-service": DelService,
    "flush": Flush, "zero": Zero, "add-server": AddDest, "edit-server": EditDest,
    "delete-server": DelDest, "set": SetTimeouts, "sysctl": SetSysctl,
    "sync-threshold": SetSyncThreshold, "start-daemon": StartDaemon,
    "stop-daemon": StopDaemon,
}
OP_NAMES: Final = {cls: op for op, cls in OPS.items()}


# ---------------------------------------------------------------------- value checks
def _service_problem(key: ServiceKey) -> str | None:
    if key.protocol not in PROTOCOLS:
        return f"invalid protocol {key.protocol} (tcp 6 or udp 17)"
    if key.fwmark:
        if not 1 <= key.fwmark <= MAX_FWMARK:
            return f"invalid fwmark value `{key.fwmark}' specified"
        return None
    if not 0 <= key.addr <= MAX_ADDR or not 0 <= key.port <= MAX_PORT:
        return "illegal virtual server address[:port] specified"
    return None


def _add_service_problem(c: AddService) -> str | None:
    if c.flags & ~SERVICE_FLAGS:
        return f"invalid service flags {c.flags:#x}"
    if c.flags & SVC_F_PERSISTENT:
        if not 1 <= c.timeout <= MAX_TIMEOUT:
            return f"invalid timeout value `{c.timeout}' specified"
    elif c.timeout:
        return f"a timeout ({c.timeout}) needs a persistent service"
    if not 0 <= c.netmask <= MAX_ADDR:
        return "illegal virtual server persistent mask specified"
    if not c.service.fwmark and not c.service.port and not c.flags & SVC_F_PERSISTENT:
        return "Zero port specified for non-persistent service"
    if (c.flags & SVC_F_ONEPACKET and not c.service.fwmark
            and c.service.protocol != IPPROTO_UDP):
        return "One-Packet Scheduling is only for UDP virtual services"
    return None


def _dest_problem(c: AddDest) -> str | None:
    if not 0 <= c.addr <= MAX_ADDR or not 0 <= c.port <= MAX_PORT:
        return "illegal real server address[:port] specified"
    if c.fwd not in BY_CODE:
        return f"illegal forwarding method {c.fwd}"
    if not 0 <= c.weight <= MAX_WEIGHT:
        return "illegal weight specified"
    if not 0 <= c.u_threshold <= MAX_THRESHOLD:
        return "illegal u_threshold specified"
    if not 0 <= c.l_threshold <= MAX_THRESHOLD:
        return "illegal l_threshold specified"
    if c.l_threshold > c.u_threshold:
        # ip_vs_add_dest() / ip_vs_edit_dest(): "lower threshold is higher than upper
        # threshold" -> -ERANGE, which libipvs leaves to strerror()
        return "Numerical result out of range"
    return None


def _start_daemon_problem(c: StartDaemon) -> str | None:
    """ipvsadm's checks of the daemon options (it never sends other values)."""
    if c.state not in DAEMON_STATES:
        return "illegal start-daemon parameter specified"
    if not 0 <= c.syncid <= 255:
        return "illegal syncid specified"
    if not 0 <= c.sync_maxlen <= MAX_SYNC_MAXLEN:
        return "illegal sync-maxlen specified"
    if c.mcast_group and not (0 <= c.mcast_group <= MAX_ADDR
                              and c.mcast_group >> 28 == 0xE):     # IN_MULTICAST()
        text = int_to_ip(c.mcast_group) if 0 <= c.mcast_group <= MAX_ADDR else c.mcast_group
        return f"invalid IPv4 mcast-group `{text}'"
    if not 0 <= c.mcast_port <= MAX_PORT:
        return "illegal mcast-port specified"
    if not 0 <= c.mcast_ttl <= 255:
        return "illegal mcast-ttl specified"
    if len(c.mcast_ifn.encode()) >= IFNAME_MAXLEN:
        return f"mcast-interface {c.mcast_ifn!r}: longer than {IFNAME_MAXLEN - 1} bytes"
    return None


def check(c: Command) -> str | None:
    """Why the kernel (or ipvsadm, for values it never sends) refuses `c`; None if not."""
    if isinstance(c, StartDaemon):
        return _start_daemon_problem(c)
    if isinstance(c, StopDaemon):
        return None if c.state in DAEMON_STATES else "illegal start_daemon specified"
    if isinstance(c, SetSyncThreshold):
        return sysctls.threshold_problem(c.threshold, c.period)
    if isinstance(c, SetTimeouts):
        for value in (c.tcp, c.tcpfin, c.udp):
            if not 0 <= value <= MAX_TIMEOUT:
                return f"invalid timeout value `{value}' specified"
        return None
    if isinstance(c, SetSysctl):
        return sysctls.check(c.name, c.value)
    service = getattr(c, "service", None)
    if service is not None:
        problem = _service_problem(service)
        if problem:
            return problem
    if isinstance(c, AddService):
        return _add_service_problem(c)
    if isinstance(c, AddDest):
        return _dest_problem(c)
    if isinstance(c, DelDest) and not (0 <= c.addr <= MAX_ADDR and 0 <= c.port <= MAX_PORT):
        return "illegal real server address[:port] specified"
    return None


# ---------------------------------------------------------------------- dict form
def to_dict(c: Command) -> dict[str, Any]:
    out: dict[str, Any] = {"op": OP_NAMES[type(c)]}
    for f in fields(c):
        value = getattr(c, f.name)
        out[f.name] = vars(value) if isinstance(value, ServiceKey) else value
    return out


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise CommandError(f"{where}: {value!r} is not an integer")
    if kind is str and not isinstance(value, str):
        raise CommandError(f"{where}: {value!r} is not a string")
    return value


def _service_key(value: Any, where: str) -> ServiceKey:
    if not isinstance(value, dict):
        raise CommandError(f"{where}: expected an object with protocol, addr, port, fwmark")
    unknown = set(value) - {"protocol", "addr", "port", "fwmark"}
    if unknown:
        raise CommandError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    return ServiceKey(**{k: _typed(v, int, f"{where}.{k}") for k, v in value.items()})


def from_dict(d: Any) -> Command:
    """The command a control-socket request names; CommandError if malformed."""
    if not isinstance(d, dict):
        raise CommandError("a command is an object with an 'op'")
    op = d.get("op")
    cls = OPS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise CommandError(f"unknown op {op!r} (known: {', '.join(OPS)})")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known) - {"op"}
    if unknown:
        raise CommandError(f"{op}: unknown field {sorted(unknown)[0]!r}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        if name == "op":
            continue
        where = f"{op}.{name}"
        if name == "service":
            kwargs[name] = None if value is None and cls is Zero else _service_key(value, where)
        else:
            kwargs[name] = _typed(value, str if known[name].type == "str" else int, where)
    try:
        return cls(**kwargs)
    except TypeError:
        missing = [n for n, f in known.items() if n not in kwargs
                   and f.default is MISSING and f.default_factory is MISSING]
        raise CommandError(f"{op}: missing field {missing[0]!r}" if missing
                           else f"{op}: malformed") from None
