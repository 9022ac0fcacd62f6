"""Run one scenario in one forwarding mode: the simulator driver around the engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import Config, ConfigFileError
from ..config.model import describe, pool_name
from ..core import commands as C
from ..core.engine import ConfigError, Director
from ..core.forwarding import BY_CODE, BY_MODE, MASQ
from ..core.packet import IPPROTO_TCP, int_to_ip
from ..core.service import Dest
from ..truth import tcpstates
from ..views.snapshot import snapshot
from . import tcp
from .checks import SimChecks
from .events import Simulation
from .network import DIRECTOR_DIP, Lab
from .scenarios import Scenario, lab_config
from .truth import KINDS, Agreement, RealserverTruth, explain


@dataclass
class Sample:
    t: float
    dest: str
    active: int
    inactive: int
    truth_active: int
    truth_inactive: int


@dataclass
class Result:
    scenario: str
    mode: str
    kernel: str
    duration: float
    samples: list[Sample] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    cause: str = ""
    snapshots: list[tuple[dict[str, Any], dict[str, dict[str, int]]]] = field(
        default_factory=list)
    packets: int = 0
    lost: int = 0                   # on links (loss) or by routing (bad-routing)
    firewall_resets: int = 0
    events: int = 0
    wall: float = 0.0
    drops: dict[str, int] = field(default_factory=dict)
    clients: dict[str, float] = field(default_factory=dict)    # what the clients saw
    marks: list[tuple[float, str]] = field(default_factory=list)   # the timeline's changes
    checks: list[str] = field(default_factory=list)    # what the health checks did

    def as_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "mode": self.mode, "kernel": self.kernel,
                "samples": [vars(s) for s in self.samples], "summary": self.summary,
                "cause": self.cause, "clients": self.clients,
                "marks": [list(m) for m in self.marks], "checks": self.checks}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        samples = [Sample(**s) for s in data["samples"]]
        result = cls(data["scenario"], data["mode"], data["kernel"],
                     samples[-1].t if samples else 0.0, samples, dict(data["summary"]),
                     data["cause"])
        result.clients = dict(data.get("clients", {}))
        result.marks = [(float(t), str(text)) for t, text in data.get("marks", [])]
        result.checks = [str(c) for c in data.get("checks", [])]
        return result


def summarize(samples: list[Sample], seconds: dict[tuple[str, str, str], float],
              peaks: dict[str, int]) -> dict[str, float]:
    """The comparison's figures, for a simulated or a live run: absolute errors per
    realserver and sample, seconds in each disagreement kind, and each kind's peak."""
    da = [abs(s.active - s.truth_active) for s in samples] or [0]
    di = [abs(s.inactive - s.truth_inactive) for s in samples] or [0]
    totals = dict.fromkeys(KINDS, 0.0)
    for (k, _, _), sec in seconds.items():
        totals[k] += sec
    return {
        "active_mae": round(sum(da) / len(da), 3), "active_max": max(da),
        "inactive_mae": round(sum(di) / len(di), 3), "inactive_max": max(di),
        **{f"{k}_seconds": round(v, 1) for k, v in totals.items()},
        # the most connections in each disagreement at one instant
        **{f"{k}_peak": peaks[k] for k in KINDS},
    }


def build_director(scenario: Scenario, cfg: Config, now: float) -> Director:
    """A simulated director: `cfg` with the scenario's timeouts, routes that carry any
    size (the simulated links do: no tunnel needs a smaller packet)."""
    director = cfg.build(now)
    director.apply(C.SetRouteMtu(0, C.MAX_MTU), now)
    if scenario.timeouts:
        try:
            director.set_timeouts(scenario.timeouts.get("tcp", 0),
                                  scenario.timeouts.get("tcpfin", 0),
                                  scenario.timeouts.get("udp", 0))
        except ConfigError as exc:
            raise ConfigFileError(f"{scenario.name}: timeouts: {exc}") from None
    if not director.services or not any(svc.dests for svc in director.services):
        raise ConfigFileError(f"{cfg.path}: services: the simulator needs at least one "
                              "service with a realserver")
    return director


def run(scenario: Scenario, mode: str | None = None, kernel: str | None = None,
        seed: int = 1, config: Config | None = None, at: tuple[float, ...] = (),
        sample: float | None = None) -> Result:
    """Simulate `scenario`; sample every `sample` s (default: the scenario's) and keep a
    full table snapshot (plus the realservers' socket states) at each time in `at`."""
    if scenario.cluster is not None:        # several directors
        from .directors import run_cluster
        return run_cluster(scenario, mode, kernel, seed, config, at, sample)
    wall = time.perf_counter()
    cfg = config or scenario.director_config() or lab_config()
    if mode is not None:
        cfg = cfg.with_forward(BY_MODE[mode].code)
    chosen = kernel or scenario.kernel
    if chosen:
        cfg = replace(cfg, kernel=chosen)
    director = build_director(scenario, cfg, 0.0)
    sim = Simulation(seed)
    lab = Lab(sim, director, scenario.lab, scenario.tcp, scenario.client_count())
    agreement = Agreement(director)
    director.watch = agreement.conn_changed
    truths = {addr: RealserverTruth(addr) for addr in lab.realservers}
    for addr, stack in lab.realservers.items():
        stack.on_state = _truth_hook(sim, truths[addr], agreement)
    _timeline(scenario, sim, lab, director, agreement, mode)
    checks = SimChecks(sim, lab, director, cfg, agreement) if cfg.has_checks() else None
    sessions = scenario.all_sessions(sim.random)
    _check_reached(scenario, sessions, director, cfg)
    for s in sessions:
        if s.start <= scenario.duration:
            sim.at(s.start, lab.start_session, s, s.client)

    step = sample or scenario.sample
    grid = [k * step for k in range(int(scenario.duration / step + 1e-9) + 1)]
    marks = sorted({*grid, *(t for t in at if 0 <= t)})
    wanted = set(at)
    on_grid = set(grid)
    mode_name = mode or _mode_of(cfg)
    result = Result(scenario.name, mode_name, director.profile.name, scenario.duration,
                    marks=list(scenario.marks))
    for t in marks:
        sim.run_until(t)
        director.handle_timers(t)
        if t in on_grid:
            listed = _listed_dests(director)
            for addr, truth in truths.items():
                dests = listed.get(addr, [])
                result.samples.append(Sample(
                    round(t, 6), int_to_ip(addr),
                    sum(d.activeconns for d in dests), sum(d.inactconns for d in dests),
                    truth.active, truth.inactive))
        if t in wanted:
            states = {int_to_ip(a): {tcpstates.STATE_NAMES[i]: n for i, n in enumerate(tr.by_state)
                                     if n}
                      for a, tr in sorted(truths.items())}
            result.snapshots.append((snapshot(director, t), states))
    agreement.finish(marks[-1] if marks else 0.0)
    result.summary = summarize(result.samples, agreement.seconds, agreement.worst)
    result.cause = explain(agreement.seconds, director.timeouts.tcp,
                           director.timeouts.tcpfin)
    result.packets = lab.packets
    result.lost = lab.lost
    result.firewall_resets = lab.firewall.resets if lab.firewall is not None else 0
    result.events = sim.events
    result.drops = dict(lab.drops)
    result.clients = _clients(lab)
    if checks is not None:
        result.checks = [f"{t.at:g} s {t.text()}" for t in checks.transitions] + checks.refused
    result.wall = time.perf_counter() - wall
    director.watch = None
    return result


def _check_reached(scenario: Scenario, sessions: list, director: Director,
                   cfg: Config) -> None:
    """A scenario whose connections reach no service would compare an empty table with
    empty realservers: a perfect score that means nothing, so it is refused."""
    ports = sorted({s.port for s in sessions})
    tcp = [svc for svc in director.services if not svc.fwmark and svc.protocol == IPPROTO_TCP]
    if not any(svc.port in (0, p) for svc in tcp for p in ports):
        have = ", ".join(pool_name(vs.key) for vs in cfg.services) or "none"
        raise ConfigFileError(f"{cfg.path}: no service takes scenario {scenario.name}'s "
                              f"connections (TCP port {', '.join(map(str, ports))}); its "
                              f"services: {have}")


def _listed_dests(director: Director) -> dict[int, list[Dest]]:
    """The realservers ipvsadm -L lists now, by address (a removed one is not listed)."""
    out: dict[int, list[Dest]] = {}
    for svc in director.services:
        for d in svc.dests:
            out.setdefault(d.addr, []).append(d)
    return out


def _timeline(scenario: Scenario, sim: Simulation, lab: Lab, director: Director,
              agreement: Agreement, mode: str | None) -> None:
    """Schedule the scenario's control-plane changes and realserver faults; a change
    made for one forwarding method follows --mode, as the configuration does."""
    fwd = BY_MODE[mode].code if mode is not None else None

    def change(cmd: C.Command) -> None:
        try:
            director.apply(cmd, sim.now)
        except ConfigError as exc:
            raise ConfigFileError(f"{scenario.name}: the event at {sim.now:g} s "
                                  f"({describe(cmd)}) was refused: {exc}") from None
        agreement.dests_changed(sim.now)

    def fault(realserver: str, kind: str) -> None:
        try:
            lab.fault(realserver, kind)
        except KeyError as exc:
            raise ConfigFileError(f"{scenario.name}: the fault at {sim.now:g} s: "
                                  f"{exc.args[0]}") from None

    schedule_events(scenario, sim, fwd, change)
    for f in scenario.faults:
        sim.at(f.at, fault, f.realserver, f.kind)


def schedule_events(scenario: Scenario, sim: Simulation, fwd: int | None,
                    change: Callable[[C.Command], None]) -> None:
    """The scenario's control-plane events at their instants; a realserver added in a run
    of another mode forwards by that mode (DR/TUN on the service's own port)."""
    for e in scenario.events:
        cmd = e.command
        if fwd is not None and isinstance(cmd, C.AddDest):
            port = cmd.port if fwd == MASQ or cmd.service.fwmark else cmd.service.port
            cmd = replace(cmd, fwd=fwd, port=port)
        sim.at(e.at, change, cmd)


def _clients(lab: Lab) -> dict[str, float]:
    """How the client sessions ended, and how long their connections took to open."""
    delays = lab.connect_delays
    out: dict[str, float] = {"sessions": lab.started, **lab.ended}
    out["open"] = lab.started - sum(lab.ended.values())
    if delays:
        out["connect_max"] = round(max(delays), 3)
        out["connect_mean"] = round(sum(delays) / len(delays), 3)
        out["connect_over_1s"] = sum(d >= 1.0 for d in delays)
    return out


def _mode_of(cfg: Config) -> str:
    kinds = {BY_CODE[rs.forward].mode for vs in cfg.services for rs in vs.realservers}
    mode = kinds.pop() if len(kinds) == 1 else None
    return mode or "mixed"


def _truth_hook(sim: Simulation, truth: RealserverTruth, agreement: Agreement):
    by_state = truth.by_state
    addr = truth.addr
    uncounted = (tcpstates.CLOSED, tcpstates.LISTEN)

    def changed(sock: tcp.Socket, old: int, new: int) -> None:
        if not sock.passive or sock.raddr == DIRECTOR_DIP:     # a client's, not a check's
            return
        if old not in uncounted:
            by_state[old] -= 1
        if new not in uncounted:
            by_state[new] += 1
        agreement.socket_changed(addr, sock, sim.now)
    return changed
