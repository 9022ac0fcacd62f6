"""A plain-data picture of the director's table at one instant.

Every text view renders from this, so a table captured to JSON (a bug report, a CI artefact)
lists exactly as the live one did.  Taking it is O(services + realservers), plus
O(connections) only when the connection list is asked for.
"""

from __future__ import annotations

import math
from typing import Any

from ..core.engine import Director
from ..core.packet import int_to_ip
from ..core.service import (
    FWD_CONFIG_NAMES,
    PROTO_NAMES,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    Service,
)

RATE_FIELDS = ("cps", "inpps", "outpps", "inbps", "outbps")


def sched_flag_names(sched: str, flags: int) -> list[str]:
    """print_sched_flags(): the names ipvsadm prints for the scheduler flag bits."""
    if sched in ("sh", "mh"):
        names = (f"{sched}-fallback", f"{sched}-port", "flag-3")
    else:
        names = ("flag-1", "flag-2", "flag-3")
    return [n for n, bit in zip(names, (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3))
            if flags & bit]


def expires_in(expires: float, now: float) -> int:
    """Whole seconds left, truncated as /proc/net/ip_vs_conn shows them."""
    return max(0, math.floor(expires - now + 1e-6))


def _service(svc: Service) -> dict[str, Any]:
    dests = []
    for d in svc.dests:
        dests.append({
            "address": int_to_ip(d.addr), "port": d.port,
            "forward": FWD_CONFIG_NAMES.get(d.fwd, "local"), "weight": d.weight,
            "active": d.activeconns, "inactive": d.inactconns, "persistent": d.persistconns,
            "uthreshold": d.u_threshold, "lthreshold": d.l_threshold,
            "stats": d.est.shown().as_dict(), "rate": dict(zip(RATE_FIELDS, d.est.rates())),
        })
    return {
        "proto": "FWM" if svc.fwmark else PROTO_NAMES[svc.protocol],
        "address": None if svc.fwmark else int_to_ip(svc.addr),
        "port": svc.port, "fwmark": svc.fwmark, "scheduler": svc.sched_name,
        "flags": sched_flag_names(svc.sched_name, svc.flags),
        "persistent": svc.timeout if svc.persistent else None,
        "netmask": int_to_ip(svc.netmask), "ops": svc.ops,
        "stats": svc.est.shown().as_dict(), "rate": dict(zip(RATE_FIELDS, svc.est.rates())),
        "dests": dests,
    }


def snapshot(director: Director, now: float, connections: bool = True,
             time_label: float | None = None) -> dict[str, Any]:
    """The table at `now`; `time_label` is the time written into the result."""
    director.handle_timers(now)
    snap: dict[str, Any] = {
        "time": now if time_label is None else time_label,
        "kernel": director.profile.name,
        "timeouts": {"tcp": director.timeouts.tcp, "tcpfin": director.timeouts.tcpfin,
                     "udp": director.timeouts.udp},
        "total": {"stats": director.total_est.shown().as_dict(),
                  "rate": dict(zip(RATE_FIELDS, director.total_est.rates()))},
        "services": [_service(svc) for svc in director.services],
    }
    if connections:
        snap["connections"] = [
            {
                "proto": PROTO_NAMES.get(cp.protocol, f"IP_{cp.protocol}"),
                "state": director.state_name(cp),
                "expires": expires_in(cp.expires, now),
                "client": f"{int_to_ip(cp.caddr)}:{cp.cport}",
                "virtual": f"{int_to_ip(cp.vaddr)}:{cp.vport}",
                "dest": f"{int_to_ip(cp.daddr)}:{cp.dport}",
                "template": cp.template,
            }
            for cp in director.connections()
        ]
    return snap
