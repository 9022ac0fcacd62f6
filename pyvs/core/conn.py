"""Connection entries (struct ip_vs_conn) and the expiry heap.

Expiry costs O(expired): each entry has at most one live heap slot.  A packet that pushes
the expiry later only writes ``expires``; the slot, when it comes due, re-files itself at the
new time.  A packet that brings expiry *earlier* (a shorter state timeout) files a new slot
and the old one goes stale (its generation no longer matches).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .service import Dest


class Conn:
    """One IPVS connection or persistence template."""

    __slots__ = (
        "protocol", "caddr", "cport", "vaddr", "vport", "daddr", "dport", "dest", "fwd",
        "state", "timeout", "expires", "heap_at", "gen", "inactive", "noout", "template",
        "control", "n_control", "in_key", "out_key", "alive", "fwmark",
        # Masq rewrite material, precomputed once per connection
        "d_bytes", "dport_bytes", "v_bytes", "vport_bytes",
        "in_ip_delta", "in_l4_delta", "out_ip_delta", "out_l4_delta",
    )

    def __init__(self, protocol: int, caddr: int, cport: int, vaddr: int, vport: int,
                 daddr: int, dport: int, dest: Dest | None, template: bool = False) -> None:
        self.protocol = protocol
        self.caddr = caddr
        self.cport = cport
        self.vaddr = vaddr
        self.vport = vport
        self.daddr = daddr
        self.dport = dport
        self.dest = dest
        self.fwd = dest.fwd if dest is not None else 0
        self.state = 0
        self.timeout = 3.0          # ip_vs_conn_new(): 3*HZ until the first transition
        self.expires = 0.0
        self.heap_at = float("inf")
        self.gen = 0
        self.inactive = True        # the dest's conn_flags always carry INACTIVE
        self.noout = dest.noout if dest is not None else False
        self.template = template
        self.control: Conn | None = None
        self.n_control = 0
        self.in_key: tuple | None = None
        self.out_key: tuple | None = None
        self.alive = True
        self.fwmark = 0


class TimerHeap:
    """Min-heap of (time, generation, conn); stale slots are skipped when popped."""

    __slots__ = ("heap", "counter")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Conn]] = []
        self.counter = 0

    def file(self, conn: Conn, at: float) -> None:
        self.counter += 1
        conn.gen = self.counter
        conn.heap_at = at
        heapq.heappush(self.heap, (at, self.counter, conn))

    def arm(self, conn: Conn, expires: float) -> None:
        """Set the entry's expiry; file a slot only if it moves earlier than its slot."""
        conn.expires = expires
        if expires < conn.heap_at:
            self.file(conn, expires)

    def next_time(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float) -> Conn | None:
        """Next entry whose expiry has truly come by ``now``, or None."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, gen, conn = heapq.heappop(heap)
            if gen != conn.gen or not conn.alive:
                continue
            if conn.expires > at:          # re-armed by later packets: re-file
                self.file(conn, conn.expires)
                continue
            conn.heap_at = float("inf")
            return conn
        return None
