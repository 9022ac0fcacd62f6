"""Virtual services and their realservers (struct ip_vs_service / struct ip_vs_dest).

Per-realserver ActiveConn / InActConn / PersistConn are plain integers changed only where
the kernel changes them (bind, unbind, state change), never recounted.  Traffic counters
are bumped on the destination only; service and global totals are derived from the
destinations plus what departed destinations left behind (``base``), which is exact
because traffic to an unavailable destination is never counted (``ip_vs_in_stats``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .forwarding import MASQ
from .stats import Counters, Estimator
from .verdict import R_FORWARD, Verdict, accept

if TYPE_CHECKING:
    from .schedulers import Scheduler

# Service flags (include/uapi/linux/ip_vs.h)
SVC_F_PERSISTENT: Final = 0x1
SVC_F_ONEPACKET: Final = 0x4
SVC_F_SCHED1: Final = 0x8     # sh-fallback / mh-fallback / flag-1
SVC_F_SCHED2: Final = 0x10    # sh-port / mh-port / flag-2
SVC_F_SCHED3: Final = 0x20    # flag-3

FTPPORT: Final = 21
FTPDATA: Final = 20


class Dest:
    """One realserver of one virtual service."""

    __slots__ = (
        "svc", "addr", "port", "fwd", "weight", "last_weight", "u_threshold", "l_threshold",
        "activeconns", "inactconns", "persistconns", "available", "overload", "noout",
        "conns", "inpkts", "outpkts", "inbytes", "outbytes", "svc_offset", "est",
        "mark", "route_verdict", "idle_since", "idle_start",
    )

    def __init__(self, svc: Service, addr: int, port: int, fwd: int, weight: int,
                 u_threshold: int = 0, l_threshold: int = 0) -> None:
        self.svc = svc
        self.addr = addr
        self.port = port
        self.fwd = fwd
        self.weight = weight
        self.last_weight = weight
        self.u_threshold = u_threshold
        self.l_threshold = l_threshold
        self.activeconns = 0
        self.inactconns = 0
        self.persistconns = 0
        self.available = True
        self.overload = False
        self.noout = fwd != MASQ
        self.conns = self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0
        self.svc_offset = Counters()
        self.est = Estimator()
        self.mark = 0
        self.route_verdict: Verdict = accept(R_FORWARD)     # Route: with the dest's mark
        self.idle_since: float | None = None    # in the trash: when it last lost its entries
        self.idle_start: int | None = None      # dest->idle_start: the trash run (jiffy) that
                                                # first found it idle

    def counters(self) -> Counters:
        return Counters(self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def check_overload_on_bind(self) -> None:
        if self.u_threshold and self.activeconns + self.inactconns >= self.u_threshold:
            self.overload = True

    def check_overload_on_unbind(self) -> None:
        """ip_vs_unbind_dest(): clear OVERLOAD with the lower threshold, or at 3/4 of upper."""
        if not self.overload:
            return
        total = self.activeconns + self.inactconns
        if self.l_threshold:
            if total < self.l_threshold:
                self.overload = False
        elif self.u_threshold:
            if total * 4 < self.u_threshold * 3:
                self.overload = False
        else:
            self.overload = False


class Service:
    """One virtual service: TCP/UDP address:port, or a firewall mark."""

    __slots__ = (
        "protocol", "addr", "port", "fwmark", "sched_name", "scheduler", "flags", "timeout",
        "netmask", "dests", "base", "est",
    )

    def __init__(self, protocol: int, addr: int, port: int, fwmark: int, sched_name: str,
                 scheduler: Scheduler, flags: int, timeout: int, netmask: int) -> None:
        self.protocol = protocol
        self.addr = addr
        self.port = port
        self.fwmark = fwmark
        self.sched_name = sched_name
        self.scheduler = scheduler
        self.flags = flags
        self.timeout = timeout
        self.netmask = netmask
        self.dests: list[Dest] = []      # kernel list order: newest-added first
        self.base = Counters()           # traffic of destinations that have left
        self.est = Estimator()

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SVC_F_PERSISTENT)

    @property
    def ops(self) -> bool:
        return bool(self.flags & SVC_F_ONEPACKET)

    def find_dest(self, addr: int, port: int) -> Dest | None:
        for d in self.dests:
            if d.addr == addr and d.port == port:
                return d
        return None

    def live_counters(self) -> Counters:
        total = Counters(*self.base.as_tuple())
        for d in self.dests:
            total.add(d.counters())
            off = d.svc_offset
            total.conns -= off.conns
            total.inpkts -= off.inpkts
            total.outpkts -= off.outpkts
            total.inbytes -= off.inbytes
            total.outbytes -= off.outbytes
        return total
