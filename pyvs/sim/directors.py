"""The simulator with several directors (a Scenario with a Cluster).

Each director is the engine, as everywhere else, with its own TCP (for packets to its
VIP that IPVS does not take) and its own sync daemons.  A master daemon's datagrams are
the kernel's bytes (SyncMaster: the encoder, the buffering and the master thread's
wake-ups on the timer wheel); the simulator carries them over the LAN to every other
director running a backup daemon, whose SyncBackup decodes and applies them, so a backup
knows at each instant exactly what a kernel backup would.

The table compared with the realservers' sockets is, for each connection, the one its
packets meet: the VIP holder's (a VRRP pair) or the director the router hashes the flow
to (ECMP); pyvs.sim.fronts has the hosts and the fronts.  Every client connection's fate
is kept (pyvs.sim.fates).  docs/failover.md derives what the kernel's rules make of them.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..config import Config, ConfigFileError
from ..config.model import describe
from ..core import commands as C
from ..core.conn import Conn
from ..core.engine import ConfigError, Director
from ..core.forwarding import BY_MODE
from ..core.packet import int_to_ip
from ..core.sync import SyncBackup, SyncMaster
from ..truth.tcpstates import STATE_NAMES
from ..views.snapshot import snapshot
from . import tcp
from .cluster import Cluster
from .events import Simulation
from .fates import Fate, Ledger, Tracked, outcomes
from .fronts import INF, EcmpFront, Node, VipFront
from .network import DIRECTOR_DIP, Lab, LabParams
from .run import (
    Result,
    Sample,
    _check_reached,
    _clients,
    _mode_of,
    _truth_hook,
    build_director,
    schedule_events,
    summarize,
)
from .scenarios import Scenario, lab_config
from .truth import EXPIRED_EARLY, NONE, Agreement, RealserverTruth, dominant, explain

_PORTS = struct.Struct("!HH")
_DST = struct.Struct("!16xI")


# ---------------------------------------------------------------------- the lab
class ClusterLab:
    """A Lab (its clients, realservers and links) with N directors behind a front, and
    the sync daemons' datagrams between them."""

    def __init__(self, sim: Simulation, cluster: Cluster, build: Callable[[float], Director],
                 params: LabParams, tcp_params: tcp.TcpParams, clients: int) -> None:
        self.sim = sim
        self.cluster = cluster
        self.build = build
        self.tcp_params = tcp_params
        self.nodes = [Node(cluster.name(i), i) for i in range(cluster.directors)]
        first = build(0.0)
        lab = self.lab = Lab(sim, first, params, tcp_params, clients)
        ledger = self.ledger = Ledger()
        lab.client_app = lambda sim, session, lab: Tracked(sim, session, lab, ledger.conns)
        lab.front = self._director
        self.blackholed = 0                  # packets sent to a director down or cut off
        self.applied: list[C.Command] = []   # the control-plane changes so far (a boot
                                             # replays them: the host's configuration)
        names = {addr: f"rs{i + 1}" for i, addr in enumerate(sorted(lab.realservers))}
        for addr, rs in lab.realservers.items():
            rs.send = self._tagged(rs.send, names[addr])
        self.front: VipFront | EcmpFront = (
            EcmpFront(self.nodes, cluster) if cluster.front == "ecmp" else VipFront(self.nodes))
        self.agreement = ClusterAgreement(self)
        for node in self.nodes:
            self._boot(node, first if node.index == 0 else None)

    # ------------------------------------------------------------------ hosts
    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.engine is not None]

    def role(self, node: Node) -> str:
        return "cut off" if node.cut else self.front.role(node)

    def _tagged(self, send: Callable[[bytes], None], who: str) -> Callable[[bytes], None]:
        """A host's sender that remembers who last sent an RST to which client port."""
        clients, rst_from = self.lab.clients, self.ledger.rst_from

        def out(pkt: bytes) -> None:
            if pkt[9] == 6 and pkt[33] & tcp.RST:
                dst = _DST.unpack_from(pkt)[0]
                if dst in clients:
                    rst_from[(dst, _PORTS.unpack_from(pkt, 20)[1])] = who
            send(pkt)
        return out

    def _boot(self, node: Node, engine: Director | None = None) -> None:
        """The host comes up: its configured services (and every change made so far),
        an empty table, its own TCP, its sync daemons."""
        now, lab = self.sim.now, self.lab
        if engine is None:
            engine = self.build(now)
            for cmd in self.applied:
                engine.apply(cmd, now)
        node.engine = engine
        send = self._tagged(lab._director_send, node.name)

        def director_send(pkt: bytes) -> None:
            if not node.cut:
                send(pkt)
        node.stack = tcp.Stack(self.sim, lab.vips | {DIRECTOR_DIP}, self.tcp_params,
                               director_send)
        node.marks = {mark: lab.rs_rx[addr] for mark, addr in engine.route_marks().items()
                      if addr in lab.rs_rx}
        engine.watch = self.agreement.watcher(node)
        sync = self.cluster.sync
        if sync == "both" or (sync == "vrrp" and self._holds(node)):
            self._start_master(node)
        if sync == "both" or (sync == "vrrp" and not self._holds(node)):
            node.backup = SyncBackup(engine, self.cluster.syncid)

    def _holds(self, node: Node) -> bool:
        return isinstance(self.front, VipFront) and self.front.holder is node

    def _crash(self, node: Node) -> None:
        if node.stack is not None:
            node.stack.crash()
        if node.master is not None:
            node.master.stop()
        node.engine = node.stack = node.master = node.backup = None
        node.sync_at = INF
        node.cut = False

    def _isolate(self, node: Node) -> None:
        """Cut off: with sync mode vrrp, keepalived on the holder goes to FAULT and leaves
        MASTER (stop the master daemon, start a backup daemon, which hears nothing)."""
        node.cut = True
        if self.cluster.sync == "vrrp" and self._holds(node) and node.engine is not None:
            self._stop_master(node)
            node.backup = SyncBackup(node.engine, self.cluster.syncid)

    def _take_vip(self, node: Node) -> None:
        """A VRRP transition to MASTER; with sync mode vrrp, keepalived swaps daemons on
        both sides (stop backup, start master; the old master: the reverse)."""
        assert isinstance(self.front, VipFront)
        old, self.front.holder = self.front.holder, node
        if self.cluster.sync != "vrrp" or old is node:
            return
        if old.engine is not None and old.master is not None:
            self._stop_master(old)
            old.backup = SyncBackup(old.engine, self.cluster.syncid)
        node.backup = None
        self._start_master(node)

    def director_event(self, node: Node, kind: str) -> None:
        now = self.sim.now
        for n in self.live():
            n.engine.handle_timers(now)                  # type: ignore[union-attr]
        if kind == "crash":
            self._crash(node)
        elif kind == "isolate":
            self._isolate(node)
        elif kind == "rejoin":
            node.cut = False
        elif kind == "boot":
            if node.engine is None:
                self._boot(node)
        elif kind == "master":
            self._take_vip(node)
        else:
            assert isinstance(self.front, EcmpFront)
            self.front.set_member(node, kind == "announce", now)
        self.agreement.rehome(now)

    def apply_all(self, cmd: C.Command) -> None:
        """A control-plane change, made on every director that is up (each host's
        configuration, as keepalived or a script keeps them alike)."""
        self.applied.append(cmd)
        for node in self.live():
            node.engine.apply(cmd, self.sim.now)        # type: ignore[union-attr]

    def fault(self, realserver: str, kind: str) -> None:
        try:
            self.lab.fault(realserver, kind)
        except KeyError as exc:
            raise ConfigFileError(f"the fault at {self.sim.now:g} s: {exc.args[0]}") from None

    # ------------------------------------------------------------------ sync
    def _start_master(self, node: Node) -> None:
        engine = node.engine
        assert engine is not None
        master = node.master = SyncMaster(engine, self.cluster.syncid, start=self.sim.now)
        hook = master.hook

        def synced(cp: Conn, now: float, from_packet: bool) -> None:
            hook(cp, now, from_packet)
            t = master.next_timer()
            if t is not None and t < node.sync_at:
                node.sync_at = t
                self.sim.at(max(t, self.sim.now), self._sync_wake, node, master, t)
        engine.sync = synced

    def _stop_master(self, node: Node) -> None:
        if node.master is not None:
            node.master.stop()
            if node.engine is not None:
                node.engine.sync = None
        node.master = None
        node.sync_at = INF

    def _sync_wake(self, node: Node, master: SyncMaster, when: float) -> None:
        """The master thread wakes: what it sends goes to every other director's backup
        daemon (UDP multicast on the LAN, loop off: not to itself)."""
        if node.master is not master or when != node.sync_at:
            return                               # stopped, or superseded
        node.sync_at = INF
        for _, datagram in master.due(self.sim.now):
            if node.cut:
                continue                         # sent into a dead link
            node.sent += 1
            node.records += datagram[4]
            for other in self.nodes:
                if other is not node and other.backup is not None:
                    self.sim.after(self.lab.params.lan_delay, self._sync_rx, other,
                                   other.backup, datagram)
        t = master.next_timer()
        if t is not None:
            node.sync_at = t
            self.sim.at(max(t, self.sim.now), self._sync_wake, node, master, t)

    def _sync_rx(self, node: Node, backup: SyncBackup, datagram: bytes) -> None:
        if node.backup is backup and not node.cut:
            node.received += 1
            backup.receive(datagram, self.sim.now)

    # ------------------------------------------------------------------ packets
    def _director(self, pkt: bytes, direction: int) -> None:
        """Lab.front: the front hands the packet to a director (a realserver's reply: to
        its gateway, the VIP holder)."""
        front = self.front
        version = front.version
        node = front.route(pkt, self.sim.now)
        if front.version != version:
            self.agreement.rehome(self.sim.now)
        if node is None or node.engine is None or node.stack is None or node.cut:
            self.blackholed += 1
            return
        self.lab._through(node.engine, node.stack, node.marks, pkt, direction)


# ---------------------------------------------------------------------- the comparison
class ClusterAgreement(Agreement):
    """Per connection, the entry on the director its packets reach, against the truth."""

    def __init__(self, lab: ClusterLab) -> None:
        super().__init__(lab.lab.director)
        self.lab = lab

    def watcher(self, node: Node) -> Callable[[Conn, float], None]:
        front, changed = self.lab.front, self.conn_changed

        def watch(cp: Conn, now: float) -> None:
            if front.owner(cp, now) is node:
                changed(cp, now)
        return watch

    def owned(self, now: float) -> dict[tuple[int, int, int], Conn]:
        """Every listed entry on the director its flow reaches now."""
        out: dict[tuple[int, int, int], Conn] = {}
        for node in self.lab.live():
            engine = node.engine
            assert engine is not None
            if node.cut:
                continue                         # its entries meet no packet
            listed = {id(d) for svc in engine.services for d in svc.dests}
            for cp in engine.connection_list():
                if id(cp.dest) in listed and self.lab.front.owner(cp, now) is node:
                    out[(cp.daddr, cp.caddr, cp.cport)] = cp
        return out

    def rehome(self, now: float) -> None:
        """The front changed (takeover, a director gone, the router's group): each
        connection is now measured against the entry on its new director, or none."""
        owned = self.owned(now)
        for key, entry in list(self.entries.items()):
            if key not in owned and entry[1] != NONE:
                self._update(key, entry, now, None, NONE, "-", None)
        for cp in owned.values():
            self.conn_changed(cp, now)

    def dests_changed(self, now: float) -> None:
        """A realserver removed (or back): its entries leave (or rejoin) the listing."""
        self.rehome(now)


def _owner_samples(lab: ClusterLab, agreement: ClusterAgreement, t: float,
                   truths: dict[int, RealserverTruth], out: list[Sample]) -> None:
    counts = {addr: [0, 0] for addr in truths}
    for cp in agreement.owned(t).values():
        c = counts.get(cp.daddr)
        if c is not None:
            c[1 if cp.inactive else 0] += 1
    for addr, truth in truths.items():
        out.append(Sample(round(t, 6), int_to_ip(addr), counts[addr][0], counts[addr][1],
                          truth.active, truth.inactive))


def _cause(agreement: ClusterAgreement, tcp_timeout: int, tcpfin: int) -> str:
    top = dominant(agreement.seconds)
    if top is not None and top[1] in ("-", EXPIRED_EARLY) and top[2] != "-":
        k, _, r, sec = top
        return (f"{k} {sec:.0f} s: the director the connection's packets reach has no entry "
                f"while the realserver's socket is {r} (the entry was on another director, "
                "not synced there, or lost with it)")
    return explain(agreement.seconds, tcp_timeout, tcpfin)


@dataclass
class ClusterResult(Result):
    connections: list[str] = field(default_factory=list)   # one line per client connection
    fates: list[Fate] = field(default_factory=list)        # ... and as data
    notes: list[str] = field(default_factory=list)         # the directors and their sync
    pivot: float = 0.0                  # connections established before it are "held" ...
    pivot_what: str = ""                # ... across this


# ---------------------------------------------------------------------- the run
def _config(scenario: Scenario, mode: str | None, kernel: str | None,
            config: Config | None) -> Config:
    if mode is not None and scenario.modes and mode not in scenario.modes:
        raise ConfigFileError(f"{scenario.name}: runs in {', '.join(scenario.modes)} only "
                              f"({scenario.modes_why})")
    cfg = config or scenario.director_config() or lab_config()
    if mode is not None:
        cfg = cfg.with_forward(BY_MODE[mode].code)
    chosen = kernel or scenario.kernel
    return replace(cfg, kernel=chosen) if chosen else cfg


def _builder(scenario: Scenario, cfg: Config) -> Callable[[float], Director]:
    return lambda now: build_director(scenario, cfg, now)


def _timeline(scenario: Scenario, sim: Simulation, lab: ClusterLab, fwd: int | None) -> None:
    cluster = scenario.cluster
    assert cluster is not None

    def change(cmd: C.Command) -> None:
        try:
            lab.apply_all(cmd)
        except ConfigError as exc:
            raise ConfigFileError(f"{scenario.name}: the event at {sim.now:g} s "
                                  f"({describe(cmd)}) was refused: {exc}") from None
        lab.agreement.dests_changed(sim.now)

    schedule_events(scenario, sim, fwd, change)
    for f in scenario.faults:
        sim.at(f.at, lab.fault, f.realserver, f.kind)
    for d in cluster.events:
        sim.at(d.at, lab.director_event, lab.nodes[d.director], d.kind)


def _notes(lab: ClusterLab) -> list[str]:
    out = []
    for node in lab.nodes:
        state = lab.role(node) if node.up else "down"
        line = (f"{node.name} ({state} at the end): sent {node.sent} sync datagrams "
                f"({node.records} records), received {node.received}")
        counts = node.backup.counts if node.backup is not None else {}
        if counts:
            line += " (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"
        out.append(line)
    if lab.blackholed:
        out.append(f"{lab.blackholed} packets went to a director that was down or cut off")
    return out


def run_cluster(scenario: Scenario, mode: str | None = None, kernel: str | None = None,
                seed: int = 1, config: Config | None = None, at: tuple[float, ...] = (),
                sample: float | None = None) -> ClusterResult:
    """Simulate a scenario with several directors (see run.run())."""
    wall = time.perf_counter()
    cluster = scenario.cluster
    assert cluster is not None
    problem = cluster.problem()
    if problem:
        raise ConfigFileError(f"{scenario.name}: cluster: {problem}")
    cfg = _config(scenario, mode, kernel, config)
    if cfg.has_checks():
        raise ConfigFileError(f"{scenario.name}: health checks are not simulated with several "
                              "directors (each would run its own checker)")
    sim = Simulation(seed)
    lab = ClusterLab(sim, cluster, _builder(scenario, cfg), scenario.lab, scenario.tcp,
                     scenario.client_count())
    agreement = lab.agreement
    truths = {addr: RealserverTruth(addr) for addr in lab.lab.realservers}
    for addr, stack in lab.lab.realservers.items():
        stack.on_state = _accepting(lab, addr, _truth_hook(sim, truths[addr], agreement))
    _timeline(scenario, sim, lab, BY_MODE[mode].code if mode is not None else None)
    sessions = scenario.all_sessions(sim.random)
    _check_reached(scenario, sessions, lab.lab.director, cfg)
    for s in sessions:
        if s.start <= scenario.duration:
            sim.at(s.start, lab.lab.start_session, s, s.client)

    step = sample or scenario.sample
    grid = [k * step for k in range(int(scenario.duration / step + 1e-9) + 1)]
    marks = sorted({*grid, *(t for t in at if 0 <= t)})
    wanted, on_grid = set(at), set(grid)
    director = lab.lab.director
    result = ClusterResult(scenario.name, mode or _mode_of(cfg), director.profile.name,
                           scenario.duration, marks=list(scenario.marks))
    for t in marks:
        sim.run_until(t)
        for node in lab.live():
            node.engine.handle_timers(t)                 # type: ignore[union-attr]
        if t in on_grid:
            _owner_samples(lab, agreement, t, truths, result.samples)
        if t in wanted:
            _snapshots(lab, t, truths, result)
    agreement.finish(marks[-1] if marks else 0.0)
    result.summary = summarize(result.samples, agreement.seconds, agreement.worst)
    result.cause = _cause(agreement, director.timeouts.tcp, director.timeouts.tcpfin)
    result.packets, result.lost, result.events = lab.lab.packets, lab.lab.lost, sim.events
    result.drops = {}
    for node in lab.live():
        for k, v in node.engine.drops.items():           # type: ignore[union-attr]
            result.drops[k] = result.drops.get(k, 0) + v
    counts, result.fates, result.connections = outcomes(lab.ledger, lab.lab.client_list,
                                                        cluster.pivot)
    result.clients = {**_clients(lab.lab), **counts}
    for how in lab.lab.ended:                                # the fates say it per phase
        result.clients.pop(how, None)
    result.clients.pop("open", None)
    result.notes = _notes(lab)
    result.pivot = cluster.pivot
    result.pivot_what = ", ".join(text for t, text in scenario.marks if t == cluster.pivot)
    result.wall = time.perf_counter() - wall
    return result


SocketHook = Callable[[tcp.Socket, int, int], None]


def _accepting(lab: ClusterLab, addr: int, hook: SocketHook) -> SocketHook:
    """The truth hook, also noting which realserver accepted each client connection."""
    accepted = lab.ledger.accepted_by

    def changed(sock: tcp.Socket, old: int, new: int) -> None:
        if sock.passive and new == tcp.SYN_RECV:
            accepted.setdefault((sock.raddr, sock.rport), addr)
        hook(sock, old, new)
    return changed


def _snapshots(lab: ClusterLab, t: float, truths: dict[int, RealserverTruth],
               result: Result) -> None:
    """Each live director's table at `t`, then (with the last) the realservers' sockets."""
    states = {int_to_ip(a): {STATE_NAMES[i]: n for i, n in enumerate(tr.by_state) if n}
              for a, tr in sorted(truths.items())}
    live = lab.live()
    for node in lab.nodes:
        if node.engine is None:
            continue
        snap = snapshot(node.engine, t)
        snap["director"], snap["role"] = node.name, lab.role(node)
        result.snapshots.append((snap, states if node is live[-1] else None))  # type: ignore[arg-type]
