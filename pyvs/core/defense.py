"""The kernel's defenses against a table that outgrows memory (ip_vs_ctl.c
update_defense_level(), ip_vs_conn.c ip_vs_random_dropentry() and todrop_entry(),
ip_vs_core.c ip_vs_todrop()), driven by a memory budget instead of the host's free pages.

Every second the director compares the memory it may still use with `amemthresh` (in
pages, as the kernel does with free + buffer pages).  Each of drop_entry, drop_packet and
secure_tcp then acts as its sysctl says: 0 never, 1 only while memory is short (the sysctl
then reads 2 until memory recovers), 3 always.  pyvs has no physical limit, so the budget
is the user's (`--max-memory`); reaching it is an allocation failure, as in the kernel:
the packet that needed a new entry is dropped.
"""

from __future__ import annotations

import math
import random
from typing import Final

from .sysctls import Sysctls

PAGE: Final = 4096
ENTRY_BYTES: Final = 300        # a connection entry, measured (bench/engine.py: 276-296 B)
TODROP_RATE: Final = (0, 1, 2, 3, 4, 5, 6, 7, 8)     # by in_pkts 0..8
CONN_TAB_BITS: Final = 12       # ip_vs_conn_tab_bits (CONFIG_IP_VS_TAB_BITS default)
CONN_TAB_MASK: Final = (1 << CONN_TAB_BITS) - 1
DROP_SCAN_BUCKETS: Final = (1 << CONN_TAB_BITS) >> 5   # ip_vs_random_dropentry(): 128 draws
DEFENSE_PERIOD: Final = 1.0     # DEFENSE_TIMER_PERIOD


class Defense:
    """What update_defense_level() decided last, and the counters it keeps."""

    __slots__ = ("dropentry", "drop_rate", "drop_counter", "old_secure_tcp",
                 "todrop_counter", "random", "entries_dropped", "packets_dropped",
                 "no_memory", "short")

    def __init__(self, seed: int = 0) -> None:
        self.dropentry = False
        self.drop_rate = 0
        self.drop_counter = 0
        self.old_secure_tcp = 0
        self.todrop_counter = [0] * len(TODROP_RATE)
        self.random = random.Random(seed)
        self.entries_dropped = 0      # by drop_entry
        self.packets_dropped = 0      # by drop_packet
        self.no_memory = 0            # new entries refused: the budget was spent
        self.short = False            # memory short at the last update

    def update(self, sysctls: Sysctls, availmem: int) -> bool:
        """update_defense_level(): True when the TCP state table must switch (between
        tcp_states and tcp_states_dos).  Writes back sysctls 1 <-> 2 as the kernel does."""
        amemthresh = sysctls.amemthresh
        nomem = availmem < amemthresh
        self.short = nomem
        level = sysctls.drop_entry
        self.dropentry = level == 3 or (level in (1, 2) and nomem)
        if level in (1, 2):
            sysctls.drop_entry = 2 if nomem else 1
        level = sysctls.drop_packet
        if level == 3:
            self.drop_rate = sysctls.am_droprate
        elif level in (1, 2) and nomem:
            self.drop_rate = self.drop_counter = amemthresh // (amemthresh - availmem)
            sysctls.drop_packet = 2
        else:
            self.drop_rate = 0
            if level == 2:
                sysctls.drop_packet = 1
        secure = sysctls.secure_tcp
        if secure in (1, 2):
            sysctls.secure_tcp = secure = 2 if nomem else 1
        old, self.old_secure_tcp = self.old_secure_tcp, secure
        return (old >= 2) != (secure >= 2)

    def todrop(self) -> bool:
        """ip_vs_todrop(): drop one new connection in every drop_rate."""
        if not self.drop_rate:
            return False
        self.drop_counter -= 1
        if self.drop_counter > 0:
            return False
        self.drop_counter = self.drop_rate
        self.packets_dropped += 1
        return True

    def scan(self, n: int) -> list[list[int]]:
        """One ip_vs_random_dropentry() pass over a table of `n` entries (indices 0..n-1,
        oldest first): for each of the 128 bucket draws in order, the indices of the
        entries in its bucket, newest first (hlist_add_head()).  A drawn bucket that is drawn again
        is walked again.

        Which entries share a bucket is random in the kernel (jhash with a random seed), so
        pyvs draws it for each pass: every entry is in a drawn bucket with probability
        (distinct buckets drawn) / 4096, independently, and then in any of those buckets
        alike.  That is the kernel's law for one pass; what pyvs does not keep is that the
        same entries share a bucket from one pass to the next (docs/ipvs.md, Defenses)."""
        rng = self.random
        draws = [rng.getrandbits(32) & CONN_TAB_MASK for _ in range(DROP_SCAN_BUCKETS)]
        distinct = list(dict.fromkeys(draws))
        chains: dict[int, list[int]] = {b: [] for b in distinct}
        log_miss = math.log1p(-len(distinct) / (CONN_TAB_MASK + 1))
        i = -1
        while True:                      # a Bernoulli selection by geometric gaps: O(picked)
            i += 1 + int(math.log(1.0 - rng.random()) / log_miss)
            if i >= n:
                break
            chains[distinct[int(rng.random() * len(distinct))]].append(i)
        for chain in chains.values():
            chain.reverse()
        return [chains[b] for b in draws]

    def todrop_entry(self, in_pkts: int, idle: float) -> bool:
        """todrop_entry(): an entry quiet for 60 s with 1..8 inbound packets, at the rate
        of its packet count (1: every one, 8: one in eight)."""
        if idle < 60.0 or not 0 <= in_pkts < len(TODROP_RATE):
            return False
        rate = TODROP_RATE[in_pkts]
        if not rate:
            return False
        self.todrop_counter[in_pkts] -= 1
        if self.todrop_counter[in_pkts] > 0:
            return False
        self.todrop_counter[in_pkts] = rate
        return True


def availmem(limit: int | None, entries: int) -> int:
    """The pages the director may still use under a budget of `limit` bytes."""
    if limit is None:
        return 2**31 - 1
    return max(0, limit - entries * ENTRY_BYTES) // PAGE
