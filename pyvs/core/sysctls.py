"""The /proc/sys/net/ipv4/vs knobs, one declaration each: default, accepted range, and
whether pyvs models what the knob changes (an unmodelled knob is kept and shown, and the
front ends say it changes nothing here).

Defaults and ranges: net/netfilter/ipvs/ip_vs_ctl.c (vs_vars[],
ip_vs_control_net_init_sysctl()) and Documentation/networking/ipvs-sysctl.rst.
`sync_threshold` is one file holding two numbers ("3 50": threshold and period); here
they are the fields sync_threshold and sync_period.  Two knobs have handlers that check
more than a range, and pyvs makes the same checks: proc_do_sync_threshold() refuses a
pair unless 0 <= threshold < period, or period is 0; proc_do_sync_ports() refuses a
value that is not a power of 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

INT_MAX: Final = 2**31 - 1
ULONG_MAX: Final = 2**64 - 1


def knob(default: int, low: int, high: int, modelled: bool, what: str) -> Any:
    return field(default=default, metadata={"low": low, "high": high, "modelled": modelled,
                                             "what": what})


@dataclass
class Sysctls:
    """One network namespace's IPVS sysctls, at the kernel's defaults."""

    conn_reuse_mode: int = knob(1, 0, 3, True, "a SYN reusing a closing entry's port is "
                                "scheduled anew (bit 1); bit 2 also for FIN_WAIT in DR/TUN")
    expire_nodest_conn: int = knob(0, 0, 1, True, "packets of a removed realserver's "
                                   "entries expire the entry instead of being dropped")
    expire_quiescent_template: int = knob(0, 0, 1, True, "a persistence template to a "
                                          "weight-0 realserver is not used")
    sloppy_tcp: int = knob(0, 0, 1, True, "any TCP packet, not only a SYN, may create an "
                           "entry")
    secure_tcp: int = knob(0, 0, 3, True, "the defense state table: 3 always, 1/2 under "
                           "memory pressure")
    conntrack: int = knob(0, 0, 1, True, "entries keep netfilter conntrack: a SYN reusing "
                          "an entry that must be expired is dropped once")
    nat_icmp_send: int = knob(0, 0, 1, False, "ICMP for NAT realserver packets matching no "
                              "entry")
    drop_entry: int = knob(0, 0, 3, True, "randomly drop entries under memory pressure")
    drop_packet: int = knob(0, 0, 3, True, "drop 1/rate of new connections under memory "
                            "pressure")
    amemthresh: int = knob(1024, 0, INT_MAX, True, "available memory (pages) below which "
                           "the defenses engage")
    am_droprate: int = knob(10, 0, INT_MAX, True, "drop_packet 3's rate")
    cache_bypass: int = knob(0, 0, 1, False, "fwmark packets with no realserver go "
                             "straight to their destination")
    backup_only: int = knob(0, 0, 1, True, "IPVS off (every packet passed on untouched) "
                            "while a backup sync daemon runs")
    sync_version: int = knob(1, 0, 1, True, "sync message format")
    sync_threshold: int = knob(3, 0, INT_MAX, True, "sync an entry at this many inbound "
                               "packets ...")
    sync_period: int = knob(50, 0, INT_MAX, True, "... and every this many after")
    sync_refresh_period: int = knob(0, 0, INT_MAX, True, "resync entries whose timer moved "
                                    "this many seconds")
    sync_retries: int = knob(0, 0, 3, True, "resends of a refreshed entry")
    sync_persist_mode: int = knob(0, 0, 1, True, "skip entries under a template")
    sync_ports: int = knob(1, 1, INT_MAX, True, "sync threads (ports 8848..), fixed "
                           "when the first daemon starts; at most 64 are used")
    # The kernel's default is the free buffer pages / 32 when the namespace is made; pyvs
    # has no host memory and counts INT_MAX pages (defense.availmem() with no budget).
    sync_qlen_max: int = knob(INT_MAX // 32, 0, ULONG_MAX, True, "full sync messages "
                              "queued at most (0: none, each is released unsent)")
    sync_sock_size: int = knob(0, 0, INT_MAX, True, "the sync sockets' buffer size (0: the "
                               "system's default)")
    snat_reroute: int = knob(1, 0, 1, False, "NAT replies rerouted after SNAT")
    pmtu_disc: int = knob(1, 0, 1, False, "DF on tunnelled packets")
    schedule_icmp: int = knob(0, 0, 1, False, "ICMP errors may create entries")
    ignore_tunneled: int = knob(0, 0, 1, False, "tunnelled packets are not IPVS traffic")
    run_estimation: int = knob(1, 0, 1, False, "the 2 s rate estimator runs")
    sloppy_sctp: int = knob(0, 0, 1, False, "SCTP (pyvs has none)")


KNOBS: Final = {f.name: f for f in fields(Sysctls)}
# /proc names with two values in one file
PAIRS: Final = {"sync_threshold": ("sync_threshold", "sync_period")}


def check(name: str, value: int) -> str | None:
    """Why `value` cannot be written to knob `name` whatever the other knobs hold (None:
    it can; see also :func:`change_problem`)."""
    knob_field = KNOBS.get(name)
    if knob_field is None:
        return f"unknown sysctl {name!r}"
    low, high = knob_field.metadata["low"], knob_field.metadata["high"]
    if not low <= value <= high:
        return f"{name}: {value} is out of range {low}..{high}"
    if name == "sync_ports" and value & (value - 1):
        return f"sync_ports: {value} is not a power of 2"        # proc_do_sync_ports()
    return None


def threshold_problem(threshold: int, period: int) -> str | None:
    """proc_do_sync_threshold(): why the pair cannot be written (None: it can)."""
    if threshold < 0 or period < 0 or (period and threshold >= period):
        return (f"sync_threshold: '{threshold} {period}' refused: the threshold must be "
                "below the period (or the period 0), neither negative")
    return None


def change_problem(current: Sysctls, name: str, value: int) -> str | None:
    """Why knob `name` cannot take `value` given the others in `current` (None: it can):
    sync_threshold and sync_period are one file, checked as a pair."""
    problem = check(name, value)
    if problem is None and name in PAIRS["sync_threshold"]:
        pair = {"sync_threshold": current.sync_threshold, "sync_period": current.sync_period,
                name: value}
        problem = threshold_problem(pair["sync_threshold"], pair["sync_period"])
    return problem


def modelled(name: str) -> bool:
    return bool(KNOBS[name].metadata["modelled"])
