"""Built-in scenarios and scenarios loaded from YAML.

A scenario is data: the lab (links, firewall, routing), the hosts' TCP settings, the
sessions the clients run, how long to watch, optionally the director's `--set` timeouts,
kernel profile and sysctls, and a timeline of events: control-plane changes (ipvsadm,
sysctl) and realserver faults.  The director's services come from the scenario's own
configuration, the built-in lab's (www and telnet round-robin, an all-ports persistent
service for ftp, two realservers: the classic LVS-HOWTO director), or `--config`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, ConfigFileError
from ..config import rules as rules_format
from ..config.events import EventError, parse_event, sysctl_commands
from ..config.yamlfile import Reader, parse, read_yaml
from ..core.commands import Event
from ..core.states import KERNELS
from .apps import ENDS, Session
from .cluster import (
    DIRECTOR_EVENTS,
    FRONTS,
    SYNC_MODES,
    Cluster,
    master_down_interval,
    startup_wait,
)
from .ecmp import SPREADS
from .network import LabParams
from .tcp import TcpParams

LAB_CONFIG = """\
# the classic LVS-HOWTO director: www and telnet round-robin, an all-ports persistent
# service (ftp control and passive data) on RS1, two realservers
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


FAULTS = ("crash", "recover", "blackhole", "refuse")


@dataclass(frozen=True)
class Fault:
    """Something happening to a realserver host at an instant (not a director change)."""

    at: float
    realserver: str               # rs1.. in address order, or an address
    kind: str                     # one of FAULTS


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
    events: list[Event] = field(default_factory=list)      # control-plane changes
    faults: list[Fault] = field(default_factory=list)      # realserver faults
    marks: list[tuple[float, str]] = field(default_factory=list)   # both, as written
    kernel: str | None = None       # the kernel profile, unless --kernel says otherwise
    # the director's services: ipvsadm rules, or a pyvs configuration as data (with health
    # checks, say); else the lab's
    config: str | dict[str, Any] | None = None
    reproduces: str = ""            # the public report it reproduces
    cluster: Cluster | None = None  # several directors (pyvs.sim.directors runs it)
    modes: tuple[str, ...] = ()     # the forwarding methods it runs in (empty: every one)
    modes_why: str = ""             # ... and why not the others

    def add_event(self, text: str) -> None:
        """`T ipvsadm ...` or `T sysctl NAME=VALUE`, as replay's --event takes it."""
        self.events.extend(parse_event(text))
        at, _, change = text.partition(" ")
        self.marks.append((float(at), change))

    def add_fault(self, at: float, realserver: str, kind: str) -> None:
        self.faults.append(Fault(at, realserver, kind))
        self.marks.append((at, f"{realserver} {kind}"))

    def director_config(self) -> Config | None:
        if isinstance(self.config, dict):
            return parse(self.config, f"{self.name}: config")
        return None if self.config is None else rules_format.parse(self.config, self.name)

    def all_sessions(self, rng: random.Random) -> list[Session]:
        return self.sessions + (self.mix.sessions(rng) if self.mix else [])

    def client_count(self) -> int:
        return max(self.clients, self.mix.clients if self.mix else 0,
                   1 + max((s.client for s in self.sessions), default=0))


def _telnet(**kw: Any) -> Session:
    """A telnet session: greeting, keystrokes echoed, logout makes the server close."""
    base: dict[str, Any] = dict(port=23, banner=80, requests=15, request_bytes=1,
                                response_bytes=1, think=20.0, hold=5.0, end="quit",
                                keepalive=True)
    base.update(kw)
    return Session(**base)


VIP = "192.0.2.110"
WWW = f"-A -t {VIP}:80 -s rr\n"
DESTS = "".join(f"-a -t {VIP}:{{port}} -r 192.0.2.{i}:{{port}} -g\n" for i in (11, 12))
TELNET = f"-A -t {VIP}:23 -s rr\n" + DESTS.format(port=23)
RS2_WWW = f"-t {VIP}:80 -r 192.0.2.12:80"


def _changing() -> list[Scenario]:
    """Directors that change: each reproduces a public report (Scenario.reproduces)."""
    drain = Scenario(
        "drain", "persistent www (-p 120); rs2 drained to weight 0 at 60 s; its clients keep "
        "reaching it (templates) until expire_quiescent_template=1 at 240 s", 480,
        [Session(start=1.0 + c + 10 * i, client=c, response_bytes=5000)
         for c in range(6) for i in range(46)], clients=6,
        config=f"-A -t {VIP}:80 -s rr -p 120\n" + DESTS.format(port=80),
        show=(58, 238, 300, 470),
        reproduces="kubernetes/kubernetes#57841 and alibaba/LVS#34: a quiesced realserver "
        "keeps its persistent clients")
    drain.add_event(f"60 ipvsadm -e {RS2_WWW} -g -w 0")
    drain.add_event("240 sysctl expire_quiescent_template=1")
    telnets = [_telnet(start=1.0 + i, client=i, requests=200, think=10.0) for i in range(4)]
    remove = Scenario(
        "remove-realserver", "four telnet sessions; rs2 removed at 60 s with "
        "expire_nodest_conn=0: its clients' packets are dropped until they give up", 1200,
        telnets, clients=4, config=TELNET, show=(50, 70, 600, 1100),
        reproduces="kubernetes/kubernetes#71358: connections to a removed realserver are "
        "blackholed until they time out")
    remove.add_event(f"60 ipvsadm -d -t {VIP}:23 -r 192.0.2.12:23")
    remove_expire = Scenario(
        "remove-realserver-expire", "the same with expire_nodest_conn=1: rs2's entries go "
        "at once (5.9+) and its clients' next keystroke is reset by the director", 1200,
        telnets, clients=4, config=TELNET, show=(50, 70, 600, 1100),
        reproduces="kubernetes/kubernetes#71358 with expire_nodest_conn=1, as alibaba/LVS#34 "
        "advises")
    remove_expire.add_event("0 sysctl expire_nodest_conn=1")
    remove_expire.add_event(f"60 ipvsadm -d -t {VIP}:23 -r 192.0.2.12:23")
    reusing = [Session(start=1.0 + 0.5 * c + 2 * i, client=c, cport=40000,
                       response_bytes=5000, end="server-close") for c in range(3)
               for i in range(15)]
    reuse = Scenario(
        "port-reuse", "each client reuses one port for 15 fetches 2 s apart (the server "
        "closes first): conn_reuse_mode=1 schedules each anew", 60, reusing, clients=3,
        config=WWW + DESTS.format(port=80), show=(4, 20, 40),
        reproduces="kubernetes/kubernetes#93297: conn_reuse_mode=1 is safe on 5.9+")
    reuse_ct = Scenario(
        "port-reuse-conntrack", "the same on a 4.9-5.8 kernel with conntrack=1: the first "
        "SYN of each reuse is dropped and the client waits 1 s", 60, reusing, clients=3,
        config=WWW + DESTS.format(port=80), show=(4, 20, 40), kernel="4.19",
        reproduces="kubernetes/kubernetes#70747 and cloudnativelabs/kube-router#544: "
        "1-second connection delays under load")
    reuse_ct.add_event("0 sysctl conntrack=1")
    reuse_0 = Scenario(
        "port-reuse-mode0", "the same with conn_reuse_mode=0 and rs2 drained at 10 s: reused "
        "ports keep reaching the drained realserver", 60, reusing, clients=3,
        config=WWW + DESTS.format(port=80), show=(8, 20, 40),
        reproduces="kubernetes/kubernetes#81775: with conn_reuse_mode=0 a weight-0 "
        "realserver never drains")
    reuse_0.add_event("0 sysctl conn_reuse_mode=0")
    reuse_0.add_event(f"10 ipvsadm -e {RS2_WWW} -g -w 0")
    timeout = Scenario(
        "timeout-change", "four telnet sessions, a keystroke every 300 s; --set 120 at 60 s: "
        "each entry keeps 900 s until its next packet, then 120 s, and expires between "
        "keystrokes", 900, [_telnet(start=1.0 + i, client=i, requests=3, think=300.0)
                            for i in range(4)], clients=4, config=TELNET,
        show=(50, 310, 430, 610),
        reproduces="kubernetes/kubernetes#84041 and kubermatic/kubelb#539: a tcp timeout "
        "below the applications' keepalive interval")
    timeout.add_event("60 ipvsadm --set 120 0 0")
    return [drain, remove, remove_expire, reuse, reuse_ct, reuse_0, timeout, _check_flap()]


CHECKED = {"services": [{
    "protocol": "tcp", "address": f"{VIP}:80", "scheduler": "rr",
    "health": {"delay_loop": 3, "connect_timeout": 1, "retry": 1, "delay_before_retry": 1},
    "realservers": [{"address": f"192.0.2.{i}:80", "forward": "route",
                     "checks": [{"type": "TCP_CHECK"}]} for i in (11, 12)]}]}


def _check_flap() -> Scenario:
    """keepalived's TCP_CHECK in the loop: what clients see while a check notices."""
    flap = Scenario(
        "check-flap", "www with keepalived's TCP_CHECK (delay_loop 3, retry 1): rs2 stops "
        "listening at 20 s and comes back at 50 s, crashes at 80 s and is back at 110 s; "
        "new connections reach it until the check removes it", 140,
        [Session(start=1.0 + 0.5 * c + 2 * i, client=c, response_bytes=5000)
         for c in range(4) for i in range(68)], clients=4, config=CHECKED,
        show=(19, 24, 60, 84, 120),
        reproduces="alibaba/LVS#34: without inhibit_on_failure keepalived deletes the "
        "failed realserver, and clients see errors until it does")
    flap.add_fault(20, "rs2", "refuse")
    flap.add_fault(50, "rs2", "recover")
    flap.add_fault(80, "rs2", "crash")
    flap.add_fault(110, "rs2", "recover")
    return flap


FAILOVER_AT = 60.0                   # d1 crashes
TAKEOVER_AT = FAILOVER_AT + master_down_interval()      # d2 takes the VIP: 63.609 s
FAILBACK_BOOT = 200.0                # d1 is back (keepalived started, empty table)


def _failover_sessions() -> list[Session]:
    """Telnet sessions around d1's crash at 60 s: six long-held (synced long before), one
    4 s old (its record just sent) and one 1 s old (its record still in d1's buffer), a
    pooled connection idle since its handshake (two packets: never synced; the server
    greets at 90 s), one whose handshake is under way at 60 s, two that start while
    nobody holds the VIP."""
    held = [_telnet(start=1.0 + i, client=i, requests=15, think=10.0) for i in range(6)]
    recent = [_telnet(start=FAILOVER_AT - 4.0, client=6, requests=10, think=10.0),
              _telnet(start=FAILOVER_AT - 1.0, client=7, requests=10, think=10.0)]
    pooled = _telnet(start=20.0, client=8, banner_delay=70.0, requests=3, think=10.0)
    opening = _telnet(start=FAILOVER_AT - 0.01, client=9, banner=0, requests=8, think=10.0)
    new = [_telnet(start=FAILOVER_AT + 1.0 + i, client=10 + i, requests=8, think=10.0)
           for i in range(2)]
    return held + recent + [pooled, opening] + new


def _failover(name: str, summary: str, sync: str, sloppy: bool, reproduces: str) -> Scenario:
    cluster = Cluster(sync=sync, pivot=FAILOVER_AT)
    cluster.add(FAILOVER_AT, 0, "crash")
    cluster.add(TAKEOVER_AT, 1, "master")
    sc = Scenario(name, summary, 240, _failover_sessions(), config=TELNET, cluster=cluster,
                  show=(FAILOVER_AT - 0.5, 65, 100), reproduces=reproduces)
    sc.marks += [(FAILOVER_AT, "d1 crash"), (TAKEOVER_AT, "d2 takes the VIP")]
    if sloppy:
        sc.add_event("0 sysctl sloppy_tcp=1")
    return sc


IDLE_FAILOVER_AT = 1000.0


def failover_idle(name: str, summary: str, refresh: bool, reproduces: str = "") -> Scenario:
    """Four telnet sessions with a keystroke a minute, synced at their 3rd packet; d1
    crashes at 1000 s.  `refresh`: sync_threshold 3 0 and sync_refresh_period 300."""
    cluster = Cluster(sync="vrrp", pivot=IDLE_FAILOVER_AT)
    cluster.add(IDLE_FAILOVER_AT, 0, "crash")
    cluster.add(IDLE_FAILOVER_AT + master_down_interval(), 1, "master")
    sessions = [_telnet(start=1.0 + i, client=i, requests=20, think=60.0) for i in range(4)]
    sc = Scenario(name, summary, 1400, sessions, config=TELNET, cluster=cluster,
                  show=(899, 999, 1010), reproduces=reproduces)
    sc.marks += [(IDLE_FAILOVER_AT, "d1 crash"),
                 (IDLE_FAILOVER_AT + master_down_interval(), "d2 takes the VIP")]
    if refresh:
        sc.add_event("0 sysctl sync_threshold=3 0")
        sc.add_event("0 sysctl sync_refresh_period=300")
    return sc


def _failback(name: str, summary: str, sync: str, preempt: float, refresh: bool,
              reproduces: str, cut: bool = False) -> Scenario:
    """d1 crashes at 60 s (`cut`: loses its network), d2 takes over; d1 is back at 200 s
    and takes the VIP again."""
    back = FAILBACK_BOOT + preempt
    cluster = Cluster(sync=sync, pivot=back)
    down, up = ("isolate", "rejoin") if cut else ("crash", "boot")
    cluster.add(FAILOVER_AT, 0, down)
    cluster.add(TAKEOVER_AT, 1, "master")
    cluster.add(FAILBACK_BOOT, 0, up)
    cluster.add(back, 0, "master")
    sessions = ([_telnet(start=1.0 + i, client=i, requests=30, think=10.0) for i in range(6)]
                + [_telnet(start=100.0 + 10 * i, client=6 + i, requests=25, think=10.0)
                   for i in range(2)])
    sc = Scenario(name, summary, 420, sessions, config=TELNET, cluster=cluster,
                  show=(FAILOVER_AT - 1, FAILBACK_BOOT - 1, back + 1), reproduces=reproduces)
    sc.marks += [(FAILOVER_AT, "d1 cut off" if cut else "d1 crash"),
                 (TAKEOVER_AT, "d2 takes the VIP"),
                 (FAILBACK_BOOT, "d1 back" if cut else "d1 boots"),
                 (back, "d1 takes the VIP back")]
    if refresh:
        sc.add_event("0 sysctl sync_threshold=3 0")
        sc.add_event("0 sysctl sync_refresh_period=10")
    return sc


def _failovers() -> list[Scenario]:
    """A keepalived pair: d1 holds the VIP, crashes at 60 s; d2 takes it 3.609 s later
    (advert_int 1 s x 3 + skew)."""
    return [
        _failover("failover", "d1 crashes at 60 s, d2 takes the VIP 3.6 s later; no sync: "
                  "every connection that sends after the takeover is lost", "none", False,
                  "keepalived#1138: the backup takes over without the master's connections"),
        _failover("failover-sloppy", "the same with sloppy_tcp=1: d2 schedules a held "
                  "connection's next packet anew (rr); it survives where rr picks its "
                  "realserver", "none", True, "google/seesaw#89: sloppy_tcp lets a "
                  "director without the entry carry an established connection"),
        _failover("failover-sync", "the same with the sync daemon (keepalived "
                  "lvs_sync_daemon IF VI_1): what d1 had sent at 60 s survives; a "
                  "handshake, an idle pooled connection and the last second's do not",
                  "vrrp", False, "keepalived#98: SYN_RECV is never synced; "
                  "keepalived#1819: a connection reaches the backup only at its 3rd packet "
                  "or a state change"),
        _failover("failover-sync-sloppy", "sync and sloppy_tcp=1: what sync missed is "
                  "rescheduled", "vrrp", True, "keepalived#98 with sloppy_tcp"),
        failover_idle("failover-sync-idle", "sync, telnet with a keystroke a minute: "
                      "d2's entries expire 900 s after d1's only message about them (the "
                      "3rd packet; the 53rd comes after 25 min); d1 crashes at 1000 s",
                      False, "keepalived#1819: the backup lacks connections the master "
                      "holds"),
        _failback("failback", "sync following VRRP: d1 back at 200 s takes the VIP again "
                  "with an empty table (it ran no backup daemon while down)", "vrrp",
                  startup_wait(), False, "keepalived#1966, keepalived#1076, "
                  "keepalived#237: connections are lost when the master comes back"),
        _failback("failback-stale", "the same, but d1 only lost its network (60-200 s): it "
                  "takes the VIP back with its own table of 60 s, still valid for the "
                  "connections it had", "vrrp", startup_wait(), False, "keepalived#237: "
                  "the master comes back without the connections made meanwhile",
                  cut=True),
        _failback("failback-both-daemons", "both daemons on both directors, "
                  "sync_refresh_period=10 (sync_threshold 3 0), d1 preempts 30 s after its "
                  "boot: d2 resends every active connection and d1 keeps them", "both",
                  30.0, True, "keepalived#1819 and #1076: a backup daemon on the master "
                  "too, as keepalived 2.1+ runs it without a VRRP instance"),
    ]


ECMP_WITHDRAW_AT = 60.0
ECMP_WHY = ("NAT needs each reply back through the director holding its entry, and "
            "behind an ECMP router a realserver has one gateway")


def _ecmp(name: str, summary: str, scheduler: str, sync: str, sloppy: bool,
          spread: str = "hash-threshold", reproduces: str = "") -> Scenario:
    """Three directors behind a Linux ECMP router (L4 hash); d3 leaves the group at 60 s."""
    cluster = Cluster(directors=3, front="ecmp", sync=sync, spread=spread,
                      pivot=ECMP_WITHDRAW_AT)
    cluster.add(ECMP_WITHDRAW_AT, 2, "withdraw")
    sessions = ([_telnet(start=1.0 + i, client=i, requests=30, think=5.0)
                 for i in range(18)]
                + [_telnet(start=80.0 + i, client=18 + i, requests=10, think=5.0)
                   for i in range(3)])
    config = f"-A -t {VIP}:23 -s {scheduler}\n" + DESTS.format(port=23)
    sc = Scenario(name, summary, 240, sessions, config=config, cluster=cluster,
                  modes=("dr", "tun"), modes_why=ECMP_WHY,
                  show=(ECMP_WITHDRAW_AT - 1, ECMP_WITHDRAW_AT + 30), reproduces=reproduces)
    sc.marks.append((ECMP_WITHDRAW_AT, "d3 leaves the ECMP group"))
    if sloppy:
        sc.add_event("0 sysctl sloppy_tcp=1")
    return sc


def _ecmps() -> list[Scenario]:
    return [
        _ecmp("ecmp", "18 telnet sessions over d1-d3 (rr, hash-threshold ECMP); d3 leaves "
              "at 60 s: its flows and a share of d2's move, and are reset", "rr", "none",
              False),
        _ecmp("ecmp-mh", "the same with mh: every director would pick the same realserver, "
              "but without sloppy_tcp a moved flow's packet still finds no entry", "mh",
              "none", False),
        _ecmp("ecmp-mh-sloppy", "mh and sloppy_tcp=1: a moved flow is scheduled anew to the "
              "same realserver and survives, with no shared state", "mh", "none", True,
              reproduces="google/seesaw#89 and kube-router#554: mh + sloppy_tcp instead "
              "of the sync daemon"),
        _ecmp("ecmp-sloppy", "rr and sloppy_tcp=1: a moved flow survives only where the "
              "new director's rr picks its realserver", "rr", "none", True),
        _ecmp("ecmp-sync", "rr with every director running both daemons: moved flows find "
              "the synced entry", "rr", "both", False, reproduces="keepalived#1819: "
              "every node a master and a backup"),
        _ecmp("ecmp-resilient", "rr, no sync, a resilient nexthop group: only d3's own "
              "flows move", "rr", "none", False, spread="resilient"),
    ]


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
        *_changing(),
        *_failovers(),
        *_ecmps(),
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
    values: dict[str, Any] = {}
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
                             "timeouts", "sessions", "mix", "events", "kernel", "config",
                             "reproduces", "cluster"))
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
    if "kernel" in d:
        sc.kernel = r.choice(str(d["kernel"]), "kernel", KERNELS)
    if "config" in d:
        if not isinstance(d["config"], (str, dict)):
            raise r.fail("config", "expected ipvsadm rules, one per line (as ipvsadm -S "
                         "writes them), or a pyvs configuration (services: ...)")
        sc.config = d["config"]
        try:
            sc.director_config()
        except ConfigFileError as exc:
            raise r.fail("config", str(exc).split(": ", 1)[-1]) from None
    sc.reproduces = str(d.get("reproduces", ""))
    for i, raw in enumerate(r.seq(d.get("events"), "events")):
        _event(r, raw, f"events[{i}]", sc)
    if "cluster" in d:
        sc.cluster = _cluster(r, d["cluster"], sc)
    return sc


def _cluster(r: Reader, raw: Any, sc: Scenario) -> Cluster:
    """{directors: 2, front: vrrp|ecmp, sync: none|vrrp|both, spread: hash-threshold|
    resilient|modulo, hash_policy: 0|1, pivot: T, events: [{at: T, director: d1,
    event: crash|boot|isolate|rejoin|master|withdraw|announce}]}."""
    d = dict(r.mapping(raw, "cluster", ("directors", "front", "sync", "spread",
                                        "hash_policy", "buckets", "idle_timer", "syncid",
                                        "pivot", "events")))
    events = d.pop("events", None)
    chosen = {key: r.choice(d.pop(key), f"cluster.{key}", tuple(options))
              for key, options in _CLUSTER_CHOICES.items() if key in d}
    cluster = replace(_numbers(r, d, "cluster", Cluster, Cluster()), events=[], **chosen)
    problem = cluster.problem()          # the counts first: the names below need them
    if problem:
        raise r.fail("cluster", problem)
    names = [cluster.name(i) for i in range(cluster.directors)]
    for i, ev in enumerate(r.seq(events, "cluster.events")):
        where = f"cluster.events[{i}]"
        e = r.mapping(ev, where, ("at", "director", "event"))
        at = r.number(e.get("at"), f"{where}.at", 0, 1e7)
        index = names.index(r.choice(e.get("director"), f"{where}.director", tuple(names)))
        kind = r.choice(e.get("event"), f"{where}.event", tuple(DIRECTOR_EVENTS))
        cluster.add(at, index, kind)
        sc.marks.append((at, f"{names[index]} {kind}"))
    problem = cluster.problem()
    if problem:
        raise r.fail("cluster", problem)
    if cluster.front == "ecmp":
        sc.modes, sc.modes_why = ("dr", "tun"), ECMP_WHY
    return cluster


def _event(r: Reader, raw: Any, where: str, sc: Scenario) -> None:
    """{at: T, ipvsadm: ARGS} | {at: T, sysctl: {NAME: VALUE}} |
    {at: T, realserver: rs2, fault: crash|recover|blackhole|refuse}."""
    e = r.mapping(raw, where, ("at", "ipvsadm", "sysctl", "realserver", "fault"))
    at = r.number(e.get("at"), f"{where}.at", 0, 1e7)
    kinds = [k for k in ("ipvsadm", "sysctl", "realserver") if k in e]
    if len(kinds) != 1:
        raise r.fail(where, "one of ipvsadm, sysctl or realserver (with fault)")
    try:
        if "ipvsadm" in e:
            sc.add_event(f"{at:g} ipvsadm {e['ipvsadm']}")
        elif "sysctl" in e:
            values = r.mapping(e["sysctl"], f"{where}.sysctl", tuple(e["sysctl"] or ()))
            for name, value in values.items():
                sysctl_commands(f"{name}={value}")       # checked here, applied at `at`
                sc.add_event(f"{at:g} sysctl {name}={value}")
        else:
            kind = r.choice(e.get("fault"), f"{where}.fault", FAULTS)
            sc.add_fault(at, str(e["realserver"]), kind)
    except EventError as exc:
        raise r.fail(where, str(exc)) from None


_CLUSTER_CHOICES = {"front": FRONTS, "sync": SYNC_MODES, "spread": SPREADS}


def load(path: str) -> Scenario:
    return parse_scenario(read_yaml(path), path)
