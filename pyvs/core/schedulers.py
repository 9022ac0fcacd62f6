"""The IPVS schedulers, with the kernel's pick order (``net/netfilter/ipvs/ip_vs_*.c``).

``svc.dests`` is the kernel's destination list, newest-added first, so every "first wins a
tie" rule favours the most recently added realserver, as on a real director.  Weighted
comparisons cross-multiply, never divide.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import TYPE_CHECKING, ClassVar, Final

from .service import SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3
from .siphash import hsiphash_u32

if TYPE_CHECKING:
    from .service import Dest, Service

GOLDEN_RATIO_32 = 0x61C88647
TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS
LBLC_EXPIRATION = 24 * 60 * 60          # lblc_expiration / lblcr_expiration sysctls
LBLC_TAB_BITS = 10                      # CONFIG_IP_VS_LBLC_TAB_BITS, ..._LBLCR_TAB_BITS
LBLC_MAX_SIZE = (1 << LBLC_TAB_BITS) * 16   # above this, the periodic check purges
LBLC_CHECK_INTERVAL = 60                # CHECK_EXPIRE_INTERVAL
LBLC_ENTRY_TIMEOUT = 6 * 60             # idle time after which a purge may drop an entry
LBLC_FULL_EVERY = 30                    # COUNT_FOR_FULL_EXPIRATION


@dataclass(frozen=True)
class SchedFlag:
    """One `-b` flag: its service flag bit and the scheduler it belongs to (None: any)."""

    name: str
    bit: int
    scheduler: str | None


# ipvsadm.c parse_sched_flags() / print_sched_flags(): the sh- and mh- names are the
# scheduler-specific spellings of the generic bits.
SCHED_FLAGS: Final = (
    SchedFlag("flag-1", SVC_F_SCHED1, None), SchedFlag("flag-2", SVC_F_SCHED2, None),
    SchedFlag("flag-3", SVC_F_SCHED3, None),
    SchedFlag("sh-fallback", SVC_F_SCHED1, "sh"), SchedFlag("sh-port", SVC_F_SCHED2, "sh"),
    SchedFlag("mh-fallback", SVC_F_SCHED1, "mh"), SchedFlag("mh-port", SVC_F_SCHED2, "mh"),
)
SCHED_FLAG: Final = {f.name: f for f in SCHED_FLAGS}
SCHED_FLAG_BITS: Final = SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3


def sched_flags(scheduler: str, names: list[str]) -> int:
    """parse_sched_flags(): the bits for `names`; ValueError with ipvsadm's text."""
    bits = 0
    for name in names:
        flag = SCHED_FLAG.get(name)
        if flag is None:
            raise ValueError(f"invalid scheduler flag `{name}'")
        if flag.scheduler is not None and flag.scheduler != scheduler:
            raise ValueError(f"incompatible scheduler flag `{name}'")
        bits |= flag.bit
    return bits


def sched_flag_names(scheduler: str, flags: int) -> list[str]:
    """print_sched_flags(): sh and mh show their own two flags, others flag-1..3."""
    own = [f for f in SCHED_FLAGS if f.scheduler == scheduler]
    shown = own or [f for f in SCHED_FLAGS if f.scheduler is None]
    return [f.name for f in shown if flags & f.bit]


def hash_32(val: int, bits: int = TAB_BITS) -> int:
    """include/linux/hash.h: multiplicative hash, top `bits` bits of a u32 product."""
    return ((val * GOLDEN_RATIO_32) & 0xFFFFFFFF) >> (32 - bits)


class Scheduler:
    """Base: a scheduler sees the service's list and may keep per-service state."""

    name: ClassVar[str] = ""

    def init_service(self, svc: Service, now: float) -> None:
        """Called when the scheduler is bound to a service."""

    def add_dest(self, svc: Service, dest: Dest) -> None:
        """Called after `dest` was linked at the head of svc.dests."""

    def del_dest(self, svc: Service, dest: Dest, index: int) -> None:
        """Called after `dest` was unlinked from position `index` of svc.dests."""

    def upd_dest(self, svc: Service, dest: Dest) -> None:
        """Called after `dest`'s weight or thresholds were edited."""

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        raise NotImplementedError


def _usable(d: Dest) -> bool:
    return not d.overload and d.weight > 0


class RoundRobin(Scheduler):
    name: ClassVar[str] = "rr"

    def __init__(self) -> None:
        self.last: Dest | None = None     # None = the list head

    def init_service(self, svc: Service, now: float) -> None:
        self.last = None

    def del_dest(self, svc: Service, dest: Dest, index: int) -> None:
        # ip_vs_rr_del_dest(): a cursor on the removed entry steps back to its predecessor
        if self.last is dest:
            self.last = svc.dests[index - 1] if index > 0 else None

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        dests = svc.dests
        n = len(dests)
        start = 0 if self.last is None else dests.index(self.last) + 1
        for k in range(n):                 # from the one after the last pick, wrapping
            d = dests[(start + k) % n]
            if not d.overload and d.weight > 0:
                self.last = d
                return d
        return None


class WeightedRoundRobin(Scheduler):
    name: ClassVar[str] = "wrr"

    def __init__(self) -> None:
        self.cl = -1       # index of the current dest, -1 = head
        self.cw = 0
        self.mw = 0
        self.di = 1

    def _recompute(self, svc: Service) -> None:
        g = 0
        for d in svc.dests:
            if d.weight > 0:
                g = gcd(d.weight, g) if g > 0 else d.weight
        self.di = g or 1
        self.mw = max((d.weight for d in svc.dests), default=0)
        self.mw = max(self.mw, 0) - (self.di - 1)

    def init_service(self, svc: Service, now: float) -> None:
        self.cl = -1
        self._recompute(svc)
        self.cw = self.mw

    def _changed(self, svc: Service) -> None:
        # ip_vs_wrr_dest_changed()
        self.cl = -1
        self._recompute(svc)
        if self.cw > self.mw or not self.cw:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def add_dest(self, svc: Service, dest: Dest) -> None:
        self._changed(svc)

    def upd_dest(self, svc: Service, dest: Dest) -> None:
        self._changed(svc)

    def del_dest(self, svc: Service, dest: Dest, index: int) -> None:
        self._changed(svc)

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        dests = svc.dests
        if self.mw == 0:
            return None
        pos = self.cl if self.cl < len(dests) else -1
        last = pos
        stop = None
        last_pass = restarted = False
        while True:
            for i in range(pos + 1, len(dests)):
                d = dests[i]
                if not d.overload and d.weight >= self.cw:
                    self.cl = i
                    return d
                if i == stop:
                    return None
            pos = -1
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last == -1:
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last != -1:
                stop = last


def _conn_overhead(d: Dest) -> int:
    """ip_vs_dest_conn_overhead(): an active connection weighs 256 inactive ones."""
    return (d.activeconns << 8) + d.inactconns


def _sed_overhead(d: Dest) -> int:
    return d.activeconns + 1


class LeastConnection(Scheduler):
    name: ClassVar[str] = "lc"

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        least = None
        loh = 0
        for d in svc.dests:
            if d.overload or d.weight == 0:
                continue
            doh = _conn_overhead(d)
            if least is None or doh < loh:
                least, loh = d, doh
        return least


def _weighted_least(dests: list[Dest], overhead) -> Dest | None:
    """wlc/sed shape: first usable dest, then strictly better by cross-multiplication."""
    least = None
    loh = 0
    it = iter(dests)
    for d in it:
        if _usable(d):
            least, loh = d, overhead(d)
            break
    if least is None:
        return None
    for d in it:
        if d.overload:
            continue
        doh = overhead(d)
        if loh * d.weight > doh * least.weight:
            least, loh = d, doh
    return least


class WeightedLeastConnection(Scheduler):
    name: ClassVar[str] = "wlc"

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        return _weighted_least(svc.dests, _conn_overhead)


class ShortestExpectedDelay(Scheduler):
    name: ClassVar[str] = "sed"

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        return _weighted_least(svc.dests, _sed_overhead)


class NeverQueue(Scheduler):
    name: ClassVar[str] = "nq"

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        least = None
        loh = 0
        for d in svc.dests:
            if d.overload or not d.weight:
                continue
            doh = d.activeconns + 1
            if d.activeconns == 0:
                return d
            if least is None or loh * d.weight > doh * least.weight:
                least, loh = d, doh
        return least


class WeightedFailover(Scheduler):
    name: ClassVar[str] = "fo"

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        best = None
        hw = 0
        for d in svc.dests:
            if not d.overload and d.weight > hw:
                best, hw = d, d.weight
        return best


class WeightedOverflow(Scheduler):
    name: ClassVar[str] = "ovf"

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        best = None
        for d in svc.dests:
            w = d.weight
            if d.overload or d.activeconns > w or w == 0:
                continue
            if best is None or w > best.weight:
                best = d
        return best


class _RebuiltTable(Scheduler):
    """sh, dh, mh: a lookup table rebuilt whenever the destination list changes."""

    def _reassign(self, svc: Service) -> None:
        raise NotImplementedError

    def init_service(self, svc: Service, now: float) -> None:
        self._reassign(svc)

    def add_dest(self, svc: Service, dest: Dest) -> None:
        self._reassign(svc)

    def upd_dest(self, svc: Service, dest: Dest) -> None:
        self._reassign(svc)

    def del_dest(self, svc: Service, dest: Dest, index: int) -> None:
        self._reassign(svc)


class _BucketTable(_RebuiltTable):
    """sh/dh: 256 buckets."""

    def __init__(self) -> None:
        self.buckets: list[Dest | None] = [None] * TAB_SIZE


class SourceHashing(_BucketTable):
    name: ClassVar[str] = "sh"

    def _reassign(self, svc: Service) -> None:
        dests = svc.dests
        if not dests:
            self.buckets = [None] * TAB_SIZE
            return
        out: list[Dest | None] = []
        i = 0
        count = 0
        for _ in range(TAB_SIZE):
            d = dests[i]
            out.append(d)
            count += 1
            if count >= d.weight:
                i = (i + 1) % len(dests)
                count = 0
        self.buckets = out


    @staticmethod
    def _unavailable(d: Dest | None) -> bool:
        return d is None or d.weight <= 0 or d.overload

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        port = sport if svc.flags & SVC_F_SCHED2 else 0
        ihash = hash_32((port + saddr) & 0xFFFFFFFF)
        d = self.buckets[ihash]
        if not svc.flags & SVC_F_SCHED1:
            return None if self._unavailable(d) else d
        if d is None:
            return None
        if not self._unavailable(d):
            return d
        # ip_vs_sh_get_fallback(): the hash key adds the probe offset to the hashed value
        for offset in range(TAB_SIZE):
            roffset = (offset + ihash) % TAB_SIZE
            d = self.buckets[(roffset + ihash) % TAB_SIZE]
            if not self._unavailable(d):
                return d
        return None


class DestinationHashing(_BucketTable):
    name: ClassVar[str] = "dh"

    def _reassign(self, svc: Service) -> None:
        dests = svc.dests
        self.buckets = [dests[i % len(dests)] if dests else None for i in range(TAB_SIZE)]


    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        d = self.buckets[hash_32(daddr)]
        if d is None or not d.available or d.weight <= 0 or d.overload:
            return None
        return d


def _lblc_overloaded(dest: Dest, svc: Service) -> bool:
    """lblc/lblcr is_overloaded(): busy while some other server is under half load."""
    if dest.activeconns > dest.weight:
        return any(d.activeconns * 2 < d.weight for d in svc.dests)
    return False


class _LocalityCache(Scheduler):
    """The daddr cache of lblc/lblcr and its periodic check (ip_vs_lblc_check_expire).

    The kernel runs the check every 60 s from the service's creation: every 30th run drops
    the entries idle for lblc_expiration (24 h); a run that finds more than 16384 entries
    drops those idle for 6 min, bucket by bucket from where the last one stopped, until
    4/3 of the excess (at most 8192) is gone, and does not advance the count to the next
    full check.  Nothing but the scheduler reads the cache, so the runs that came due
    since the last schedule() are run then, in order, each at its own time: the cache the
    scheduler sees is the kernel's."""

    def __init__(self) -> None:
        self._clear(0.0)

    def init_service(self, svc: Service, now: float) -> None:
        self._clear(now)

    def _clear(self, now: float) -> None:
        """ip_vs_lblc_init_svc(): an empty table, the first check 60 s from now."""
        self.buckets: list[dict[int, list]] = [{} for _ in range(1 << LBLC_TAB_BITS)]
        self.count = 0
        self.started = now
        self.runs = 0              # periodic checks done
        self.counter = 1           # tbl->counter
        self.rover = 0             # tbl->rover

    def cached(self, daddr: int) -> list | None:
        """The entry for daddr as it stands (no checks run, not marked used)."""
        return self.buckets[hash_32(daddr, LBLC_TAB_BITS)].get(daddr)

    def _entry(self, daddr: int, now: float) -> list | None:
        """The cache entry for daddr, marked used at `now` (en->lastuse = jiffies)."""
        self._run_checks(now)
        en = self.cached(daddr)
        if en is not None:
            en[0] = now
        return en

    def _add(self, daddr: int, en: list) -> None:
        self.buckets[hash_32(daddr, LBLC_TAB_BITS)][daddr] = en
        self.count += 1

    def _run_checks(self, now: float) -> None:
        while True:
            at = self.started + LBLC_CHECK_INTERVAL * (self.runs + 1)
            if at > now:
                return
            if self.counter % LBLC_FULL_EVERY == 0:
                self._drop_idle(at, LBLC_EXPIRATION, None)
                self.counter = 1
            elif self.count <= LBLC_MAX_SIZE:
                # nothing happens until the next full check: take those runs at once
                due = int((now - at) // LBLC_CHECK_INTERVAL) + 1
                skip = min(LBLC_FULL_EVERY - self.counter, due)
                self.counter += skip
                self.runs += skip
                continue
            else:
                excess = self.count - LBLC_MAX_SIZE
                self._drop_idle(at, LBLC_ENTRY_TIMEOUT,
                                min(excess * 4 // 3, LBLC_MAX_SIZE // 2))
            self.runs += 1

    def _drop_idle(self, at: float, idle: int, goal: int | None) -> None:
        """Walk the buckets from the rover, dropping entries unused for `idle` seconds at
        time `at`; with a goal, stop after the bucket that reaches it."""
        if not self.count:
            return
        mask = (1 << LBLC_TAB_BITS) - 1
        j = self.rover
        for _ in range(mask + 1):
            j = (j + 1) & mask
            bucket = self.buckets[j]
            stale = [a for a, en in bucket.items() if at >= en[0] + idle]
            for a in stale:
                del bucket[a]
            self.count -= len(stale)
            if goal is not None:
                goal -= len(stale)
                if goal <= 0:
                    break
        self.rover = j


class LocalityBasedLeastConnection(_LocalityCache):
    name: ClassVar[str] = "lblc"

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        en = self._entry(daddr, now)
        if en is not None:
            d = en[1]
            if d.available and d.weight > 0 and not _lblc_overloaded(d, svc):
                return d
        d = _weighted_least(svc.dests, _conn_overhead)
        if d is None:
            return None
        if en is not None:
            en[1] = d                      # ip_vs_lblc_new(): the entry now names d
        else:
            self._add(daddr, [now, d])
        return d


class LocalityBasedLeastConnectionReplication(_LocalityCache):
    name: ClassVar[str] = "lblcr"

    @staticmethod
    def _set_min(members: list[Dest]) -> Dest | None:
        least = None
        loh = 0
        it = iter(members)
        for d in it:
            if d.overload:
                continue
            if d.weight > 0 and d.available:
                least, loh = d, _conn_overhead(d)
                break
        if least is None:
            return None
        for d in it:
            if d.overload:
                continue
            doh = _conn_overhead(d)
            if loh * d.weight > doh * least.weight and d.available:
                least, loh = d, doh
        return least

    @staticmethod
    def _set_max(members: list[Dest]) -> Dest | None:
        most = None
        moh = 0
        it = iter(members)
        for d in it:
            if d.weight > 0:
                most, moh = d, _conn_overhead(d)
                break
        if most is None:
            return None
        for d in it:
            doh = _conn_overhead(d)
            if moh * d.weight < doh * most.weight and d.weight > 0:
                most, moh = d, doh
        return most

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        en = self._entry(daddr, now)
        if en is not None:
            members, lastmod = en[1], en[2]
            d = self._set_min(members)
            if len(members) > 1 and now > lastmod + LBLC_EXPIRATION:
                m = self._set_max(members)
                if m is not None:
                    members.remove(m)
                    en[2] = now
            if d is not None and not _lblc_overloaded(d, svc):
                return d
            d = _weighted_least(svc.dests, _conn_overhead)
            if d is None:
                return None
            if d not in members:
                members.insert(0, d)
                en[2] = now
            return d
        d = _weighted_least(svc.dests, _conn_overhead)
        if d is None:
            return None
        self._add(daddr, [now, [d], now])
        return d


MH_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
MH_TAB_INDEX = 12                                   # CONFIG_IP_VS_MH_TAB_INDEX default
MH_TAB_SIZE = MH_PRIMES[MH_TAB_INDEX - 8]           # 4093
MH_TAB_BITS = MH_TAB_INDEX // 2
MH_HASH1 = (2654435761, 2654435761)                 # generate_hash_secret(): fixed keys
MH_HASH2 = (2654446892, 2654446892)


def _mh_hashkey(addr: int, port: int, key: tuple[int, int], offset: int) -> int:
    """ip_vs_mh_hashkey(): hsiphash of the u32 offset + port + address."""
    return hsiphash_u32(offset + port + addr, *key)


class MaglevHashing(_RebuiltTable):
    """mh (ip_vs_mh.c): a 4093-slot Maglev lookup table filled from per-dest permutations
    (offset and skip from SipHash-1-3 of address+port), `last_weight` turns each, so a
    quiesced dest keeps its slots; rebuilt on every add/edit/delete."""

    name: ClassVar[str] = "mh"

    def __init__(self) -> None:
        self.lookup: list[Dest | None] = [None] * MH_TAB_SIZE

    def _reassign(self, svc: Service) -> None:
        dests = svc.dests
        weights = [d.last_weight for d in dests if d.last_weight > 0]
        g = 0
        for w in weights:
            g = gcd(w, g) if g else w
        if g < 1:
            self.lookup = [None] * MH_TAB_SIZE       # ip_vs_mh_reset()
            return
        shift = max(0, (max(weights) // g).bit_length() - MH_TAB_BITS)
        setup = []
        for d in dests:
            offset = _mh_hashkey(d.addr, d.port, MH_HASH1, 0) % MH_TAB_SIZE
            skip = _mh_hashkey(d.addr, d.port, MH_HASH2, 0) % (MH_TAB_SIZE - 1) + 1
            turns = ((d.last_weight // g) >> shift) or (1 if d.last_weight != 0 else 0)
            setup.append([offset, skip, turns])
        lookup = self.lookup                 # ip_vs_mh_populate() overwrites slot by slot
        taken = [False] * MH_TAB_SIZE
        n = dt_count = 0
        i = 0
        while n < MH_TAB_SIZE:
            if i == len(dests):
                i = 0
            while i < len(dests):
                ds = setup[i]
                if ds[2] < 1:                # an added server with zero weight
                    i += 1
                    continue
                c = ds[0]
                while taken[c]:
                    c = ds[0] = (ds[0] + ds[1]) % MH_TAB_SIZE
                taken[c] = True
                lookup[c] = dests[i]
                n += 1
                if n == MH_TAB_SIZE:
                    return
                dt_count += 1
                if dt_count >= ds[2]:
                    dt_count = 0
                    i += 1

    @staticmethod
    def _unavailable(d: Dest) -> bool:
        return d.weight <= 0 or d.overload

    def schedule(self, svc: Service, saddr: int, sport: int, daddr: int,
                 now: float) -> Dest | None:
        port = sport if svc.flags & SVC_F_SCHED2 else 0
        ihash = _mh_hashkey(saddr, port, MH_HASH1, 0) % MH_TAB_SIZE
        d = self.lookup[ihash]
        if d is None:
            return None
        if not self._unavailable(d):
            return d
        if not svc.flags & SVC_F_SCHED1:
            return None
        for offset in range(MH_TAB_SIZE):    # ip_vs_mh_get_fallback()
            roffset = (offset + ihash) % MH_TAB_SIZE
            d = self.lookup[_mh_hashkey(saddr, port, MH_HASH1, roffset) % MH_TAB_SIZE]
            if d is None:
                return None
            if not self._unavailable(d):
                return d
        return None


SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (RoundRobin, WeightedRoundRobin, LeastConnection, WeightedLeastConnection,
                ShortestExpectedDelay, NeverQueue, WeightedFailover, WeightedOverflow,
                SourceHashing, DestinationHashing, MaglevHashing,
                LocalityBasedLeastConnection, LocalityBasedLeastConnectionReplication)
}


def make_scheduler(name: str) -> Scheduler:
    return SCHEDULERS[name]()
