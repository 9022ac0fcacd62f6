"""`pyvs compare --capture`: what a director in each mode would have shown for captured
traffic, against the realservers' sockets inferred from the same capture.

Two passes over the files.  The first infers the truth alone, to learn which connections
the capture shows from one side only (a SYN never answered in the capture: the server may
hold a half-open socket, or none) -- those are left out of both sides of the comparison,
their packets withheld from the directors too.  The second feeds every mode's director (a
NAT director gets both directions, a DR/TUN director only what reaches it, as in `pyvs
replay`) and the inferred truth together, and compares them with the simulator's own code:
per-connection Agreement from every entry change (Director.watch) and every socket change,
samples every second (or at each --at; a sample is taken before the packets of its
instant, so it never falls between a SYN and the answer that shows the server's socket),
summarize() and explain().  Memory stays bounded
by the live connections, plus a record of each one-way connection.

Each inferred connection counts for the realserver the mode's director gave it (its entry
when the truth first shows the connection), else for the realserver the capture shows
(NAT director captures name it), else it is left out for that mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..core.engine import Director
from ..core.forwarding import BY_MODE
from ..core.packet import IPPROTO_TCP, int_to_ip
from ..sim.run import Result, Sample, summarize
from ..sim.tcp import TcpParams
from ..sim.truth import Agreement, RealserverTruth, explain
from ..truth.capture import CaptureTruth, ServerEnd
from ..truth.tcpstates import CLOSED, LISTEN
from .pcap import NS, ReadStats, read_captures
from .replay import NEVER, REPLY_RS, REQUEST, Classifier, Replayer, ReplayStats, TimeOrder


class CompareError(Exception):
    """The capture cannot give a truth; the text says why."""


@dataclass
class Basis:
    """What the inferred truth rests on."""

    connections: int = 0
    confirmed: int = 0
    one_way: int = 0
    already_open: int = 0
    refused: int = 0
    unattributed: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        parts = [f"truth inferred from both directions of {self.confirmed:,} connections"]
        if self.one_way:
            parts.append(f"{self.one_way:,} seen one-way only, left out")
        if self.already_open:
            parts.append(f"{self.already_open:,} already open when the capture began, "
                         "left out")
        if self.refused:
            parts.append(f"{self.refused:,} refused with an RST (no socket)")
        for mode, n in self.unattributed.items():
            parts.append(f"{n:,} with no {mode.upper()} entry to tell their realserver, "
                         "left out there")
        return "; ".join(parts)


class _Mode:
    """One forwarding mode's director, its feed, and its view of the truth."""

    def __init__(self, mode: str, director: Director) -> None:
        self.mode = mode
        self.director = director
        self.feed = Replayer(director)
        self.agreement = Agreement(director)
        director.watch = self.agreement.conn_changed
        self.dests: dict[int, list] = {}
        for svc in director.services:
            for d in svc.dests:
                self.dests.setdefault(d.addr, []).append(d)
        self.truths = {addr: RealserverTruth(addr) for addr in self.dests}
        self.samples: list[Sample] = []
        self.unattributed = 0

    def sample(self, t: float) -> None:
        for addr, truth in self.truths.items():
            dests = self.dests[addr]
            self.samples.append(Sample(
                round(t, 6), int_to_ip(addr), sum(d.activeconns for d in dests),
                sum(d.inactconns for d in dests), truth.active, truth.inactive))


def _one_way(paths: list[str], classifier: Classifier, params: TcpParams
             ) -> tuple[set[tuple[bytes, int]], CaptureTruth]:
    """First pass: the incarnations (key, SYN time) never seen from the server side."""
    one_way: set[tuple[bytes, int]] = set()

    def finished(end: ServerEnd) -> None:
        if not end.confirmed:
            one_way.add((end.key, end.start))

    truth = CaptureTruth(params, on_finished=finished)
    order = TimeOrder(ReplayStats())
    for ns, pkt in read_captures(paths, ReadStats()):
        now = order(ns) / NS
        truth.handle_timers(now)
        kind = classifier.classify(ns, pkt)
        if kind >= 0 and pkt[9] == IPPROTO_TCP:
            _truth_feed(truth, kind, ns, now, pkt, classifier.ihl)
    truth.finish()
    return one_way, truth


def _truth_feed(truth: CaptureTruth, kind: int, ns: int, now: float, pkt: bytes, ihl: int
                ) -> ServerEnd | None:
    if kind == REQUEST:
        return truth.request(ns, now, pkt, ihl)
    return truth.reply(now, pkt, ihl, kind == REPLY_RS)


def compare(paths: list[str], config: Config, modes: list[str], at: list[float] | None = None,
            params: TcpParams | None = None, every: float = 1.0
            ) -> tuple[list[Result], Basis, ReadStats, ReplayStats]:
    """Replay the capture through a director per mode; each mode's Result against the
    inferred truth.  CompareError when no connection is seen both ways."""
    wall = time.perf_counter()
    params = params or TcpParams()
    probe = config.build(0.0)
    vips = [svc.addr for svc in probe.services if not svc.fwmark]
    rss = [d.addr for svc in probe.services for d in svc.dests]
    one_way, first = _one_way(paths, Classifier(vips, rss), params)
    if not first.stats.confirmed:
        raise CompareError(
            f"{', '.join(paths)}: no connection is seen in both directions, so the "
            "realservers' sockets cannot be inferred; capture on a client, a span port, a "
            "realserver or a NAT director (a DR/TUN director sees only client -> VIP)")
    run = _Comparison(config, modes, params, one_way, Classifier(vips, rss))
    last = run.replay(paths, at, every)
    name = Path(paths[0]).name + (f" +{len(paths) - 1}" if len(paths) > 1 else "")
    basis = Basis(first.stats.connections, first.stats.confirmed, first.stats.one_way,
                  first.stats.already_open, first.stats.refused)
    results = []
    for mode in run.modes:
        d = mode.director
        mode.agreement.finish(last)
        d.watch = None
        result = Result(name, mode.mode, d.profile.name, last, mode.samples,
                        summarize(mode.samples, mode.agreement.seconds, mode.agreement.worst),
                        explain(mode.agreement.seconds, d.timeouts.tcp, d.timeouts.tcpfin))
        result.packets = mode.feed.stats.inbound + mode.feed.stats.outbound
        result.drops = dict(d.drops)
        result.wall = time.perf_counter() - wall
        results.append(result)
        if mode.unattributed:
            basis.unattributed[mode.mode] = mode.unattributed
    return results, basis, run.reader, run.stats


class _Comparison:
    """The second pass: every mode's director and the truth, fed together."""

    def __init__(self, config: Config, modes: list[str], params: TcpParams,
                 one_way: set[tuple[bytes, int]], classifier: Classifier) -> None:
        self.modes = [_Mode(m, config.with_forward(BY_MODE[m].code).build(0.0))
                      for m in modes]
        self.directors = [m.director for m in self.modes]
        self.truth = CaptureTruth(params, self.changed, one_way)
        self.reader = ReadStats()
        self.stats = classifier.stats
        self.classifier = classifier

    def changed(self, end: ServerEnd, old: int, new: int, now: float) -> None:
        """A socket changed: each mode counts it for the realserver it gave it."""
        if end.attribution is None:
            end.attribution = [self._realserver(m, end) for m in self.modes]
        for mode, rs in zip(self.modes, end.attribution):
            if not rs:
                continue
            by_state = mode.truths[rs].by_state
            if old != CLOSED and old != LISTEN:
                by_state[old] -= 1
            if new != CLOSED and new != LISTEN:
                by_state[new] += 1
            mode.agreement.socket_changed(rs, end, now)

    @staticmethod
    def _realserver(mode: _Mode, end: ServerEnd) -> int:
        cp = mode.director.find_conn(IPPROTO_TCP, end.raddr, end.rport, end.vaddr, end.vport)
        rs = cp.daddr if cp is not None else end.rip
        if rs in mode.truths:
            return rs
        mode.unattributed += 1
        return 0

    def advance(self, t: float) -> None:
        """Every timer up to t, the truth's and each director's in time order."""
        truth = self.truth
        while True:
            due = truth.next_timer()
            if due is None or due > t:
                break
            for d in self.directors:
                d.handle_timers(due)
            truth.handle_timers(due)
        for d in self.directors:
            d.handle_timers(t)

    def idle(self) -> bool:
        return not self.truth.conns and not any(d.connection_count() for d in self.directors)

    def sample(self, t_ns: int) -> None:
        self.advance(t_ns / NS)
        for mode in self.modes:
            mode.sample(t_ns / NS)

    def replay(self, paths: list[str], at: list[float] | None, every: float) -> float:
        """Feed the capture; the end time (the last packet, or the last --at if later)."""
        classifier, truth = self.classifier, self.truth
        order = TimeOrder(self.stats)
        marks = _Marks(at, every)
        rel = -1
        for ns, pkt in read_captures(paths, self.reader):
            rel = order(ns)
            for t in marks.before(rel, self.idle, True):
                self.sample(t)
            now = rel / NS
            self.advance(now)
            kind = classifier.classify(ns, pkt)
            if kind < 0:
                continue
            if pkt[9] == IPPROTO_TCP:
                end = _truth_feed(truth, kind, ns, now, pkt, classifier.ihl)
                if end is not None and end.excluded:
                    continue
            for mode in self.modes:
                mode.feed.deliver(kind, now, pkt, classifier)
        last = max(rel, round(max(at) * NS) if at else 0)
        for t in marks.before(last, self.idle, True):
            self.sample(t)
        self.advance(last / NS)
        truth.finish()
        return last / NS


class _Marks:
    """Sample instants in nanoseconds: each --at, or every `every` s from 0; every-second
    samples jump over idle spans (nothing anywhere to change) to just before the next
    packet."""

    def __init__(self, at: list[float] | None, every: float) -> None:
        self.at = sorted(round(t * NS) for t in at) if at else None
        self.i = 0
        self.step = round(every * NS)
        self.next = self.at[0] if self.at else 0

    def before(self, limit: int, idle: Callable[[], bool], inclusive: bool
               ) -> Iterator[int]:
        while self.next < limit or (inclusive and self.next == limit):
            t = self.next
            yield t
            if self.at is not None:
                self.i += 1
                self.next = self.at[self.i] if self.i < len(self.at) else NEVER
            else:
                self.next = t + self.step
                if idle() and self.next < limit:
                    self.next += (limit - self.next) // self.step * self.step
