"""Built-in scenarios (the seeds' examples) and scenarios loaded from YAML.

A scenario is data: the lab (links, firewall, routing), the hosts' TCP settings, the
sessions the clients run, how long to watch, and optionally the director's `--set`
timeouts.  The director's services come from the built-in lab config (seed article 000's
director: www and telnet round-robin, an all-ports persistent service for ftp, two
realservers) or from `--config`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, ConfigFileError
from ..config.yamlfile import Reader, parse, read_yaml
from .apps import ENDS, Session
from .network import LabParams
from .tcp import TcpParams

LAB_CONFIG = """\
# seed article 000's director: www and telnet round-robin, an all-ports persistent service
# (ftp control and passive data) on RS1, two realservers
kernel: modern
timeouts: {tcp: 900, tcpfin: 120, udp: 300}
services:
  - {protocol: tcp, address: 192.0.2.110:80, scheduler: rr, realservers: [
      {address: 192.0.2.11:80, forward: route}, {address: 192.0.2.12:80, forward: route}]}
  - {protocol: tcp, address: 192.0.2.110:0, scheduler: rr, persistent: 360, realservers: [
      {address: 192.0.2.11:0, forward: route}]}
  - {protocol: tcp, address: 192.0.2.110:23, scheduler: rr, realservers: [
      {address: 192.0.2.11:23, forward: route}, {address: 192.0.2.12:23, forward: route}]}
"""


def lab_config() -> Config:
    return parse(yaml.safe_load(LAB_CONFIG), "<built-in lab>")


@dataclass
class Mix:
    """Poisson arrivals of short, keep-alive and long-held web connections."""

    connections: int = 2000
    rate: float = 10.0              # new connections per second
    clients: int = 50
    keepalive: float = 0.12         # share of HTTP/1.1 keep-alive sessions
    long: float = 0.03              # share of long-held sessions (30-600 s)

    def sessions(self, rng: random.Random, start: float = 1.0) -> list[Session]:
        out, t = [], start
        for _ in range(self.connections):
            t += rng.expovariate(self.rate)
            client = rng.randrange(self.clients)
            kind = rng.random()
            size = int(math.exp(rng.uniform(math.log(2000), math.log(200000))))
            if kind < self.long:
                out.append(Session(start=t, client=client, requests=rng.randint(2, 20),
                                   response_bytes=2000, think=rng.uniform(5, 30),
                                   hold=rng.uniform(30, 600)))
            elif kind < self.long + self.keepalive:
                out.append(Session(start=t, client=client, requests=rng.randint(2, 8),
                                   response_bytes=size, think=rng.uniform(0.2, 3),
                                   hold=5.0, end="server-close",
                                   peer_close_delay=rng.uniform(0, 30)))
            else:
                out.append(Session(start=t, client=client, response_bytes=size))
        return out


@dataclass
class Scenario:
    name: str
    summary: str
    duration: float
    sessions: list[Session] = field(default_factory=list)
    clients: int = 1
    sample: float = 1.0
    lab: LabParams = field(default_factory=LabParams)
    tcp: TcpParams = field(default_factory=TcpParams)
    timeouts: dict[str, int] = field(default_factory=dict)
    mix: Mix | None = None
    show: tuple[float, ...] = ()    # when `pyvs simulate` lists the table by default

    def all_sessions(self, rng: random.Random) -> list[Session]:
        return self.sessions + (self.mix.sessions(rng) if self.mix else [])

    def client_count(self) -> int:
        return max(self.clients, self.mix.clients if self.mix else 0,
                   1 + max((s.client for s in self.sessions), default=0))


def _telnet(**kw: Any) -> Session:
    """A telnet session: greeting, keystrokes echoed, logout makes the server close."""
    base = dict(port=23, banner=80, requests=15, request_bytes=1, response_bytes=1, think=20.0,
                hold=5.0, end="quit", keepalive=True)
    base.update(kw)
    return Session(**base)


def _builtins() -> dict[str, Scenario]:
    ftp_data = Session(port=30001, banner=100_000, requests=0, end="server-close")
    scenarios = [
        Scenario("telnet", "a telnet session held open 5 min (keystrokes every 20 s), then "
                 "logout: the server closes", 600, [_telnet(start=1.0)], show=(30, 290, 350, 450)),
        Scenario("ftp", "ftp on the port-0 persistent service: control held 5 min, one "
                 "passive data connection the server closes, then QUIT", 900,
                 [Session(start=1.0, port=21, banner=60, requests=3, request_bytes=20,
                          response_bytes=40, think=2.0, hold=300.0, end="quit",
                          data=ftp_data)], show=(20, 200, 400, 800)),
        Scenario("http10", "HTTP/1.0: ten fetches 3 s apart, one request per connection, "
                 "the client closes", 200,
                 [Session(start=1.0 + 3 * i, response_bytes=10_000) for i in range(10)],
                 show=(1.5, 30, 150)),
        Scenario("http11-keepalive", "HTTP/1.1 keep-alive: 5 requests per connection, the "
                 "server closes after KeepAliveTimeout 5 s, the pooled client 30 s later", 300,
                 [Session(start=1.0 + 2 * i, client=i, requests=5, response_bytes=20_000,
                          think=1.0, hold=5.0, end="server-close", peer_close_delay=30.0)
                  for i in range(5)], clients=5, show=(5, 20, 60, 200)),
        Scenario("client-rst", "the client aborts each fetch with an RST (SO_LINGER 0)", 120,
                 [Session(start=1.0 + 3 * i, response_bytes=10_000, end="client-rst")
                  for i in range(5)], show=(1.5, 20, 60)),
        Scenario("identd-delay", "telnet whose server first does an ident lookup that "
                 "times out (greeting 10 s late)", 300,
                 [_telnet(start=1.0, banner_delay=10.0, requests=3, think=5.0)], show=(5, 12, 100)),
        Scenario("bad-routing", "realservers' replies are lost (wrong default gateway): "
                 "the handshake never completes", 300,
                 [Session(start=1.0 + 10 * i, client=i) for i in range(5)], clients=5,
                 lab=LabParams(bad_routing=True), show=(2, 30, 70, 200)),
        Scenario("client-crash", "a telnet client crashes 60 s in; the realserver's "
                 "keepalive (7200/75/9) finds it after 2 h 11 min", 8200,
                 [_telnet(start=1.0, requests=3, hold=100_000.0, crash=60.0)],
                 show=(30, 600, 1000, 7500, 8000)),
        Scenario("firewall-idle", "telnet idle behind a firewall that forgets flows after "
                 "600 s; the user returns at 30 min and gets an RST", 8200,
                 [_telnet(start=1.0, requests=3, hold=1800.0)],
                 lab=LabParams(firewall_idle=600.0), show=(30, 700, 1000, 2000, 7300, 8000)),
        Scenario("idle-past-timeout", "telnet idle 20 min, past the director's 900 s "
                 "ESTABLISHED timeout, then logout", 8200,
                 [_telnet(start=1.0, requests=3, hold=1200.0)], show=(30, 1000, 1300, 7300, 8000)),
        Scenario("web-mix", "Poisson web load: 2000 connections at 10/s from 50 clients, "
                 "mostly HTTP/1.0, some keep-alive and long-held", 500, mix=Mix(),
                 show=(100, 250, 400)),
    ]
    return {s.name: s for s in scenarios}


BUILTIN = _builtins()


def get(name: str) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name.endswith((".yaml", ".yml")) or Path(name).exists():
        return load(name)
    raise ConfigFileError(f"{name}: unknown scenario (built-in: {', '.join(BUILTIN)}; "
                          "or a .yaml file)")


# ---------------------------------------------------------------------- YAML
def _fields(cls: type) -> dict[str, Any]:
    return {f.name: f.type for f in fields(cls)}


def _numbers(r: Reader, raw: Any, where: str, cls: type, base: Any) -> Any:
    """Fill a dataclass of numbers/bools from a mapping, validating each field."""
    known = tuple(_fields(cls))
    d = r.mapping(raw, where, known)
    values = {}
    for key, value in d.items():
        current = getattr(base, key)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise r.fail(f"{where}.{key}", f"{value!r} is not true/false")
            values[key] = value
        elif isinstance(current, int):
            values[key] = r.integer(value, f"{where}.{key}", 0, 2**31 - 1)
        else:
            values[key] = r.number(value, f"{where}.{key}", 0, 1e7)
    return replace(base, **values)


def _session(r: Reader, raw: Any, where: str) -> list[Session]:
    d = dict(r.mapping(raw, where, (*Session.field_names(), "repeat", "every")))
    repeat = r.integer(d.pop("repeat", 1), f"{where}.repeat", 1, 1_000_000)
    every = r.number(d.pop("every", 0.0), f"{where}.every", 0, 1e7)
    data = d.pop("data", None)
    end = r.choice(d.pop("end", "client-close"), f"{where}.end", ENDS)
    crash = d.pop("crash", None)
    base = _numbers(r, d, where, Session, Session())
    base.end = end
    if crash is not None:
        base.crash = r.number(crash, f"{where}.crash", 0, 1e7)
    if data is not None:
        base.data = _session(r, data, f"{where}.data")[0]
    return [replace(base, start=base.start + i * every) for i in range(repeat)]


def parse_scenario(data: Any, path: str) -> Scenario:
    r = Reader(path)
    d = r.mapping(data, "", ("name", "summary", "duration", "sample", "clients", "lab", "tcp",
                             "timeouts", "sessions", "mix"))
    if "duration" not in d:
        raise r.fail("duration", "required (seconds to simulate)")
    name = str(d.get("name", Path(path).stem))
    sc = Scenario(name, str(d.get("summary", f"from {path}")),
                  r.number(d["duration"], "duration", 1, 1e7))
    sc.sample = r.number(d.get("sample", 1.0), "sample", 0.01, 1e6)
    sc.clients = r.integer(d.get("clients", 1), "clients", 1, 60000)
    if "lab" in d:
        sc.lab = _numbers(r, d["lab"], "lab", LabParams, LabParams())
    if "tcp" in d:
        sc.tcp = _numbers(r, d["tcp"], "tcp", TcpParams, TcpParams())
    if "timeouts" in d:
        t = r.mapping(d["timeouts"], "timeouts", ("tcp", "tcpfin", "udp"))
        sc.timeouts = {k: r.integer(v, f"timeouts.{k}", 0, 31 * 24 * 3600) for k, v in t.items()}
    raw_sessions = d.get("sessions", [])
    if not isinstance(raw_sessions, list):
        raise r.fail("sessions", "expected a list")
    for i, raw in enumerate(raw_sessions):
        sc.sessions.extend(_session(r, raw, f"sessions[{i}]"))
    if "mix" in d:
        sc.mix = _numbers(r, d["mix"], "mix", Mix, Mix())
    if not sc.sessions and sc.mix is None:
        raise r.fail("sessions", "no sessions and no mix: nothing would happen")
    return sc


def load(path: str) -> Scenario:
    return parse_scenario(read_yaml(path), path)
