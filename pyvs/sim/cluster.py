"""Several directors in one simulated scenario, as data: how the clients reach them, how
they sync their tables, and what happens to which director when.

The front is either a VRRP pair (keepalived): one director holds the virtual addresses —
the VIP, and for NAT the realservers' default gateway with it — and every packet goes to
it; or an ECMP router that hashes each flow to one director of a group.  The sync modes
are the ways keepalived (or ipvsadm) runs the kernel's sync daemon.  docs/failover.md says
where each rule comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .ecmp import POLICIES, SPREADS

FRONTS: Final = ("vrrp", "ecmp")
SYNC_MODES: Final = {
    "none": "no sync daemon",
    # keepalived's `lvs_sync_daemon IF VI_1`: the daemon follows the VRRP state
    # (ipvs_syncd_master() / ipvs_syncd_backup() at each transition)
    "vrrp": "the VIP holder runs the master daemon, the others a backup daemon",
    # keepalived 2.1+ `lvs_sync_daemon IF` (no instance), or ipvsadm --start-daemon twice
    "both": "every director runs a master and a backup daemon",
}
DIRECTOR_EVENTS: Final = {
    "crash": "the host stops: its table, its TCP and its daemons are gone",
    "boot": "the host is back with the configured services and an empty table",
    "isolate": "its network is cut (a link or switch fault): it runs on, table and all",
    "rejoin": "its network is back",
    "master": "VRRP: it takes the virtual addresses (gratuitous ARP: packets come to it)",
    "withdraw": "ECMP: the router takes it out of the group",
    "announce": "ECMP: the router puts it (back) into the group",
}

VRRP_ADVERT_INT: Final = 1.0      # keepalived's advert_int default
VRRP_DOWN_ADVERTS: Final = 3      # VRRP_DOWN_TIMER_ADVERTS: adverts missed before master down
VRRP_PRIORITY: Final = 100        # keepalived's default priority


def master_down_interval(advert_int: float = VRRP_ADVERT_INT,
                         priority: int = VRRP_PRIORITY) -> float:
    """How long a keepalived backup waits after the master's last advert before it takes
    over (VRRP_MS_DOWN_TIMER, VRRPv2, keepalived's default version): three adverts plus
    the skew (256 - priority) / 256 s.  3.609 s for the defaults."""
    return VRRP_DOWN_ADVERTS * advert_int + (256 - priority) / 256


def startup_wait(advert_int: float = VRRP_ADVERT_INT) -> float:
    """How long a keepalived configured `state MASTER` (not the address owner) starts in
    BACKUP, listening for another master, before it takes the addresses: one advert
    interval plus the smallest skew (vrrp_init_state(): master_adver_int +
    VRRP_TIMER_SKEW_MIN).  A lower-priority master's advert makes it preempt no later."""
    return advert_int + 1 / 256


@dataclass(frozen=True)
class DirectorEvent:
    at: float
    director: int            # 0 is d1
    kind: str                # one of DIRECTOR_EVENTS


MAX_DIRECTORS: Final = 32         # a simulated cluster, not a data centre
MAX_BUCKETS: Final = 65535        # a resilient nexthop group's u16 bucket count


@dataclass
class Cluster:
    """N directors with the same services (d1, d2, ...; d1 holds the VIP at first)."""

    directors: int = 2
    front: str = "vrrp"                  # FRONTS
    sync: str = "none"                   # SYNC_MODES
    syncid: int = 0
    spread: str = "hash-threshold"       # ECMP: how the router maps hashes (ecmp.SPREADS)
    hash_policy: int = 1                 # ECMP: fib_multipath_hash_policy (0 L3, 1 L4)
    buckets: int = 128                   # ECMP resilient group: buckets ...
    idle_timer: float = 120.0            # ... and the idle timer (the kernel's default)
    pivot: float = 0.0                   # connections open at this instant are "held"
    events: list[DirectorEvent] = field(default_factory=list)

    def add(self, at: float, director: int, kind: str) -> None:
        self.events.append(DirectorEvent(at, director, kind))

    def problem(self) -> str | None:
        """Why this cluster cannot run (None: it can)."""
        choices = (("front", self.front, FRONTS), ("sync", self.sync, SYNC_MODES),
                   ("spread", self.spread, SPREADS), ("hash_policy", self.hash_policy, POLICIES))
        for what, value, allowed in choices:
            if value not in allowed:
                return f"{what}: {value!r} is not one of {', '.join(map(str, allowed))}"
        for what, value, low, high in (("directors", self.directors, 1, MAX_DIRECTORS),
                                       ("syncid", self.syncid, 0, 255),
                                       ("buckets", self.buckets, 1, MAX_BUCKETS)):
            if not low <= value <= high:
                return f"{what}: {value} is out of range {low}..{high}"
        for e in self.events:
            if e.kind not in DIRECTOR_EVENTS:
                return (f"the director event at {e.at:g} s: {e.kind!r} is not one of "
                        f"{', '.join(DIRECTOR_EVENTS)}")
            if not 0 <= e.director < self.directors:
                return f"the director event at {e.at:g} s: no director d{e.director + 1}"
            front = {"withdraw": "ecmp", "announce": "ecmp", "master": "vrrp"}.get(e.kind)
            if front is not None and front != self.front:
                return f"the director event at {e.at:g} s: {e.kind} needs the {front} front"
        return None

    def name(self, index: int) -> str:
        return f"d{index + 1}"
