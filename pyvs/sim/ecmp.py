"""How a Linux router spreads flows over equal-cost next hops, and re-spreads them when
one leaves or joins the group.

* The flow hash (``fib_multipath_hash()``, net/ipv4/route.c): policy 0 hashes the source
  and destination addresses (L3, the default of ``net.ipv4.fib_multipath_hash_policy``),
  policy 1 the 5-tuple (L4).  The kernel hashes with a key chosen at random at boot;
  pyvs fixes one so that runs repeat.  The result keeps 31 bits (``mhash >> 1``).
* ``hash-threshold``: a route with several next hops (``ip route add VIP nexthop via d1
  nexthop via d2 ...``).  ``fib_rebalance()`` gives each live next hop an upper bound,
  its share of the 31-bit hash space in route order, and ``fib_select_multipath()`` takes
  the first next hop whose bound is not below the hash (RFC 2992).  When a next hop goes,
  the bounds are recomputed, so flows of next hops that stayed move too.
* ``resilient``: a resilient nexthop group (``ip nexthop add id N group 1/2/3 type
  resilient``, Linux 5.13+, net/ipv4/nexthop.c): the hash picks one of `buckets` buckets,
  each bucket names a next hop.  A next hop that goes leaves its buckets to the others; a
  next hop that joins gets only buckets idle for `idle_timer` (120 s by default), so a
  busy flow keeps its next hop.
* ``modulo``: hash modulo N (RFC 2991's modulo-N), for contrast: what a naive mapping
  moves.  Linux does not do this.
"""

from __future__ import annotations

import random
import struct
from typing import ClassVar, Final

from ..core.siphash import siphash

L3: Final = 0          # fib_multipath_hash_policy 0: source and destination address
L4: Final = 1          # ... 1: the 5-tuple
POLICIES: Final = (L3, L4)
HASH_KEY: Final = (0x0706050403020100, 0x0F0E0D0C0B0A0908)   # fixed; the kernel's is random
_L4 = struct.Struct("!IIHHB")
_L3 = struct.Struct("!II")


def flow_hash(policy: int, src: int, dst: int, sport: int, dport: int, proto: int) -> int:
    """The 31-bit multipath hash of a flow under `policy` (L3 or L4)."""
    data = (_L4.pack(src, dst, sport, dport, proto) if policy == L4
            else _L3.pack(src, dst))
    return (siphash(data, *HASH_KEY) & 0xFFFFFFFF) >> 1


class Spread:
    """A next-hop group: members (any hashable names) in route order, and the pick."""

    name: ClassVar[str] = ""
    migrations = 0          # buckets the group moved by itself (a resilient group's upkeep)

    def __init__(self, members: list[str], now: float) -> None:
        self.members: list[str] = []
        self.set_members(members, now)

    def set_members(self, members: list[str], now: float) -> None:
        self.members = list(members)

    def pick(self, h: int, now: float, peek: bool = False) -> str | None:
        """The member a flow of hash `h` goes to (`peek`: without counting it as traffic)."""
        raise NotImplementedError


class HashThreshold(Spread):
    """fib_rebalance() + fib_select_multipath(): equal weights, upper bounds in order."""

    name: ClassVar[str] = "hash-threshold"

    def set_members(self, members: list[str], now: float) -> None:
        self.members = list(members)
        total = len(members)
        # DIV_ROUND_CLOSEST_ULL((u64)w << 31, total) - 1, w the running weight
        self.bounds = [((w << 31) + total // 2) // total - 1 for w in range(1, total + 1)]

    def pick(self, h: int, now: float, peek: bool = False) -> str | None:
        for member, bound in zip(self.members, self.bounds):
            if h <= bound:
                return member
        return None


class Modulo(Spread):
    """hash mod N."""

    name: ClassVar[str] = "modulo"

    def pick(self, h: int, now: float, peek: bool = False) -> str | None:
        return self.members[h % len(self.members)] if self.members else None


class Resilient(Spread):
    """A resilient nexthop group: nh_res_group_rebalance(), nh_res_table_upkeep(),
    nexthop_select_path_res().  Upkeep runs when the group changes and, while the group
    is out of balance, before a packet that finds a bucket idle past `idle_timer` (the
    kernel runs it from a delayed work at the moment a bucket turns idle: the same
    buckets move before that packet, up to the work's 0.5 s minimum interval)."""

    name: ClassVar[str] = "resilient"

    def __init__(self, members: list[str], now: float, buckets: int = 128,
                 idle_timer: float = 120.0) -> None:
        self.idle_timer = idle_timer
        self.owner: list[str | None] = [None] * buckets        # None: not occupied
        self.used = [now - idle_timer] * buckets               # nh_res_bucket_set_idle()
        self.wants: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self.underweight: list[str] = []
        super().__init__(members, now)

    def set_members(self, members: list[str], now: float) -> None:
        """replace_nexthop_grp_res(): buckets of a member that left are unoccupied, the
        wants are recomputed (DIV_ROUND_CLOSEST of buckets x running weight), then upkeep."""
        self.members = list(members)
        n = len(self.owner)
        self.owner = [m if m in members else None for m in self.owner]
        self.count = {m: self.owner.count(m) for m in members}
        self.wants, self.underweight = {}, []
        prev = 0
        for i, m in enumerate(members, 1):
            upper = (n * i + len(members) // 2) // len(members)
            self.wants[m] = upper - prev
            prev = upper
            if self.count[m] < self.wants[m]:
                self.underweight.insert(0, m)        # list_add(): at the head
        self._upkeep(now)

    def _upkeep(self, now: float) -> None:
        """Move unoccupied buckets, and idle buckets of overweight members, to the first
        underweight member, bucket by bucket in index order."""
        for i, m in enumerate(self.owner):
            if not self.underweight:
                return
            if m is not None and not (self.count[m] > self.wants[m]
                                      and now >= self.used[i] + self.idle_timer):
                continue
            new = self.underweight[0]
            if m is not None:
                self.count[m] -= 1
            self.owner[i] = new
            self.count[new] += 1
            self.migrations += 1
            self.used[i] = now - self.idle_timer             # migrated buckets start idle
            if self.count[new] == self.wants[new]:
                self.underweight.pop(0)

    def pick(self, h: int, now: float, peek: bool = False) -> str | None:
        if not self.members:
            return None
        i = h % len(self.owner)
        if self.underweight and not peek and now >= self.used[i] + self.idle_timer:
            self._upkeep(now)
        if not peek:
            self.used[i] = now                       # nh_res_bucket_set_busy()
        return self.owner[i]


SPREADS: Final[dict[str, type[Spread]]] = {
    cls.name: cls for cls in (HashThreshold, Resilient, Modulo)}


def moved_share(kind: str, before: int, after: int, flows: int = 20000) -> float:
    """The share of `flows` flows (uniformly random hashes, as a good flow hash gives)
    whose member changes when the group goes from `before` to `after` members (the first
    min(before, after) kept, in order), every flow busy (so a resilient group moves only
    what it must)."""
    names = [f"d{i + 1}" for i in range(max(before, after))]
    spread = SPREADS[kind](names[:before], 0.0)
    rng = random.Random(1)
    hashes = [rng.getrandbits(31) for _ in range(flows)]
    first = [spread.pick(h, 1.0) for h in hashes]
    spread.set_members(names[:after], 1.0)
    return sum(a != spread.pick(h, 1.0) for a, h in zip(first, hashes)) / flows
