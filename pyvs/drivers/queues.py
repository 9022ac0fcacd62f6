"""How `pyvs run --queues N` splits the traffic between its N workers.

Each worker has its own engine, so everything one table entry needs must reach the same
worker: both directions of a NAT connection (client->VIP in PREROUTING, realserver->client
in POSTROUTING) and every connection of a persistent client (its template is keyed by the
client's address masked with the service's persistence netmask).  The one field all of
them share is the client's address, so the split is by client address: the packets of a
client go to the queue of its bucket, requests matched on the source (`-s`), replies on
the destination (`-d`), with a bit mask in the iptables address (`-s 0.0.0.1/0.0.0.3`).

The kernel's own `--queue-balance` hashes the source and destination addresses together,
which puts a NAT reply (realserver, client) in another queue than its request (client,
VIP), so it cannot be used here.

The bucket bits are the lowest bits of the address that lie inside every persistence
netmask configured at start (a /24 persistent service: bits 8..), so all clients of one
persistence network share a worker.  The split never changes while the director runs
(moving a client to another worker would lose its entries); a service added later with a
coarser netmask gets a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..core.packet import int_to_ip
from ..core.service import Service

log = logging.getLogger("pyvs")
MAX_QUEUES = 64


def _prefix(netmask: int) -> int:
    """The length of the netmask's leading ones (a persistence netmask is a prefix)."""
    n = 0
    while n < 32 and netmask & (1 << (31 - n)):
        n += 1
    return n


class Split:
    """Which of `n` queues (`base`..`base+n-1`) a client's packets go to."""

    def __init__(self, n: int, base: int, services: Iterable[Service]) -> None:
        if not 1 <= n <= MAX_QUEUES:
            raise ValueError(f"--queues: {n} is not between 1 and {MAX_QUEUES}")
        self.n = n
        self.base = base
        # a power of two splits evenly; otherwise 4x as many buckets as the next power of
        # two keeps the largest share within 1/16 of the others
        width = (n - 1).bit_length()
        self.bits = width if n == 1 << width else width + 2
        self.prefix = min((_prefix(s.netmask) for s in services if s.persistent), default=32)
        self.bits = min(self.bits, self.prefix)
        self.shift = 32 - self.prefix
        self.mask = ((1 << self.bits) - 1) << self.shift

    def bucket(self, addr: int) -> int:
        return (addr & self.mask) >> self.shift

    def worker(self, addr: int) -> int:
        """The worker (0..n-1) whose engine holds `addr`'s entries."""
        return self.bucket(addr) % self.n

    def check(self, svc: Service) -> None:
        """A service added while running: say if its persistence spans workers."""
        if svc.persistent and _prefix(svc.netmask) < self.prefix:
            log.warning("persistence netmask %s is coarser than the queues' split (/%d): "
                        "clients of one network may land on different workers, each with "
                        "its own template; restart the director to split anew",
                        int_to_ip(svc.netmask), self.prefix)

    def rules(self, chain: str, side: str, target: list[str]) -> list[str]:
        """iptables-restore lines that send each bucket to its queue; `side` is -s
        (requests, by source) or -d (replies, by destination)."""
        mask = int_to_ip(self.mask)
        return [f"-A {chain} {side} {int_to_ip(b << self.shift)}/{mask} "
                + " ".join(target).replace("{queue}", str(self.base + b % self.n))
                for b in range(1 << self.bits)]
