"""pyvs's own configuration format (YAML) <-> the configuration model.

Defaults follow ipvsadm: scheduler wlc, forwarding route (DR), weight 1, `persistent: true`
(or `-p` with no value) = 360 s, netmask 255.255.255.255.  Every error names the file, the
field path and the reason in one line, e.g.
``configs/x.yaml: services[0].realservers[1].forward: 'nat2' is not one of masq, route, tunnel``.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..core import commands as C
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
from ..core.service import SVC_F_ONEPACKET, SVC_F_PERSISTENT
from ..core.states import DEFAULT_PROFILE, KERNELS
from ..core.sync import SYNC_GROUP_ADDR
from ..core.syncmsg import SYNC_PORT
from ..core.sysctls import KNOBS, Sysctls, threshold_problem
from ..core.sysctls import check as sysctl_problem
from .model import Config, ConfigFileError, RealServer, VirtualService

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

    def seq(self, value: Any, where: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "expected a list")
        return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


TOP = ("kernel", "timeouts", "sysctls", "services", "tunnel_source", "sync_daemons")
DAEMON = ("state", "interface", "syncid", "maxlen", "group", "port", "ttl")
SERVICE = ("protocol", "address", "fwmark", "scheduler", "flags", "persistent", "netmask",
           "ops", "realservers")
REALSERVER = ("address", "forward", "weight", "uthreshold", "lthreshold")


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
    seen: set[object] = set()
    for i, raw in enumerate(r.seq(top.get("services"), "services")):
        vs = _service(r, raw, f"services[{i}]")
        if vs.key in seen:
            raise r.fail(f"services[{i}]", "service already defined earlier in the file")
        seen.add(vs.key)
        cfg.services.append(vs)
    for i, raw in enumerate(r.seq(top.get("sync_daemons"), "sync_daemons")):
        daemon = _daemon(r, raw, f"sync_daemons[{i}]")
        if any(d.state == daemon.state for d in cfg.daemons):
            raise r.fail(f"sync_daemons[{i}]", f"a {daemon.state} daemon is already defined "
                         "earlier in the file (one of each at most)")
        cfg.daemons.append(daemon)
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


def _sysctls(r: Reader, raw: Any, cfg: Config) -> Sysctls:
    sc = r.mapping(raw, "sysctls", tuple(KNOBS))
    values = Sysctls()
    for k, v in sc.items():
        value = r.integer(v, f"sysctls.{k}", -2**31, 2**31 - 1)
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
        raise r.fail(f"{where}.fwmark", "only for protocol fwmark")
    if "address" not in s:
        raise r.fail(f"{where}.address", "required (address:port)")
    addr, port = r.addr_port(s["address"], f"{where}.address", port_required=True)
    return protocol, addr, port or 0, 0


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


def _service(r: Reader, raw: Any, where: str) -> VirtualService:
    s = r.mapping(raw, where, SERVICE)
    protocol, addr, port, fwmark = _address(r, s, where)
    sched = r.choice(s.get("scheduler", DEFAULT_SCHEDULER), f"{where}.scheduler",
                     tuple(SCHEDULERS))
    flags = _sched_flags(r, s, where, sched)
    timeout, netmask = _persistence(r, s, where)
    if timeout:
        flags |= SVC_F_PERSISTENT
    if port == 0 and not fwmark and not timeout:
        raise r.fail(f"{where}.address", "Zero port specified for non-persistent service")
    if "ops" in s:
        if not isinstance(s["ops"], bool):
            raise r.fail(f"{where}.ops", f"{_short(s['ops'])} is not true/false")
        if s["ops"] and protocol == IPPROTO_TCP and not fwmark:
            raise r.fail(f"{where}.ops", "one-packet scheduling is for udp or fwmark services")
        flags |= SVC_F_ONEPACKET if s["ops"] else 0
    vs = VirtualService(protocol, addr, port, fwmark, sched, flags, timeout, netmask)
    seen: set[tuple[int, int]] = set()
    for j, raw_rs in enumerate(r.seq(s.get("realservers"), f"{where}.realservers")):
        rs = _realserver(r, raw_rs, f"{where}.realservers[{j}]", vs)
        if (rs.address, rs.port) in seen:
            raise r.fail(f"{where}.realservers[{j}]", "Destination already exists")
        seen.add((rs.address, rs.port))
        vs.realservers.append(rs)
    return vs


def _realserver(r: Reader, raw: Any, where: str, vs: VirtualService) -> RealServer:
    d = r.mapping(raw, where, REALSERVER)
    if "address" not in d:
        raise r.fail(f"{where}.address", "required (address[:port])")
    addr, port = r.addr_port(d["address"], f"{where}.address", port_required=False)
    fwd = BY_WORD[r.choice(d.get("forward", "route"), f"{where}.forward", CONFIG_WORDS)].code
    if port is None or (fwd != MASQ and not vs.fwmark):
        port = vs.port                    # ipvsadm: no port, or DR/TUN: the service's port
    weight = r.integer(d.get("weight", 1), f"{where}.weight", 0, MAX_WEIGHT)
    uthr = r.integer(d.get("uthreshold", 0), f"{where}.uthreshold", 0, MAX_THRESHOLD)
    lthr = r.integer(d.get("lthreshold", 0), f"{where}.lthreshold", 0, MAX_THRESHOLD)
    return RealServer(addr, port, fwd, weight, uthr, lthr)


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
    out["services"] = [_service_data(vs) for vs in cfg.services]
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
    if vs.fwmark:
        s["protocol"], s["fwmark"] = "fwmark", vs.fwmark
    else:
        s["protocol"] = "udp" if vs.protocol == IPPROTO_UDP else "tcp"
        s["address"] = f"{int_to_ip(vs.address)}:{vs.port}"
    s["scheduler"] = vs.scheduler
    names = sched_flag_names(vs.scheduler, vs.flags)
    if names:
        s["flags"] = names
    if vs.flags & SVC_F_PERSISTENT:
        s["persistent"] = vs.timeout
        if vs.netmask != NETMASK_ALL:
            s["netmask"] = int_to_ip(vs.netmask)
    if vs.flags & SVC_F_ONEPACKET:
        s["ops"] = True
    s["realservers"] = [_realserver_data(rs) for rs in vs.realservers]
    return s


def _realserver_data(rs: RealServer) -> dict[str, Any]:
    d: dict[str, Any] = {"address": f"{int_to_ip(rs.address)}:{rs.port}",
                         "forward": BY_CODE[rs.forward].word, "weight": rs.weight}
    if rs.u_threshold:
        d["uthreshold"] = rs.u_threshold
    if rs.l_threshold:
        d["lthreshold"] = rs.l_threshold
    return d


def dump(cfg: Config) -> str:
    """The configuration as a pyvs YAML file (loads back to the same model)."""
    return yaml.safe_dump(to_data(cfg), sort_keys=False, default_flow_style=None, width=100)
