"""The director hosts of a several-director simulation, and the front that picks one for
each packet: a VRRP pair's virtual address, or an ECMP router (pyvs.sim.ecmp)."""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..core.conn import Conn
from ..core.engine import Director
from ..core.sync import SyncBackup, SyncMaster
from . import tcp
from .cluster import Cluster
from .ecmp import SPREADS, Resilient, Spread, flow_hash

_ADDRS = struct.Struct("!12xII")        # an IPv4 packet's source and destination
_PORTS = struct.Struct("!HH")
INF = float("inf")


class Node:
    """One director host."""

    __slots__ = ("name", "index", "engine", "stack", "marks", "master", "backup", "sync_at",
                 "cut", "sent", "records", "received")

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index
        self.engine: Director | None = None      # None while the host is down
        self.stack: tcp.Stack | None = None
        self.marks: dict[int, Callable[[bytes], None]] = {}
        self.master: SyncMaster | None = None
        self.backup: SyncBackup | None = None
        self.sync_at = INF                      # the master thread's pending wake-up
        self.cut = False                         # isolated: nothing in or out
        self.sent = 0                            # sync datagrams sent ...
        self.records = 0                         # ... holding this many records
        self.received = 0                        # sync datagrams received

    @property
    def up(self) -> bool:
        return self.engine is not None


class VipFront:
    """A VRRP pair: every packet, the clients' and (NAT) the realservers' replies, goes to
    the director holding the virtual addresses; a dead holder's are lost until another
    takes over."""

    version = 0

    def __init__(self, nodes: list[Node]) -> None:
        self.holder = nodes[0]

    def route(self, pkt: bytes, now: float) -> Node:
        return self.holder

    def owner(self, cp: Conn, now: float) -> Node:
        return self.holder

    def role(self, node: Node) -> str:
        return "holds the VIP" if node is self.holder else "backup"


class EcmpFront:
    """A router spreading the clients' flows over the directors of its group."""

    def __init__(self, nodes: list[Node], cluster: Cluster) -> None:
        self.by_name = {n.name: n for n in nodes}
        self.policy = cluster.hash_policy
        names = [n.name for n in nodes]
        if cluster.spread == Resilient.name:
            self.spread: Spread = Resilient(names, 0.0, cluster.buckets, cluster.idle_timer)
        else:
            self.spread = SPREADS[cluster.spread](names, 0.0)
        self.hashes: dict[bytes, int] = {}

    @property
    def version(self) -> int:
        """Bumped when the router moves buckets by itself (a resilient group's upkeep)."""
        return self.spread.migrations

    def route(self, pkt: bytes, now: float) -> Node | None:
        ihl = (pkt[0] & 15) << 2
        key = pkt[12:20] + pkt[ihl:ihl + 4]          # the engine's key (conn_key())
        if pkt[9] != 6:
            key = pkt[9:10] + key
        h = self.hashes.get(key)
        if h is None:
            src, dst = _ADDRS.unpack_from(pkt)
            sport, dport = _PORTS.unpack_from(pkt, ihl) if pkt[9] in (6, 17) else (0, 0)
            h = self.hashes[key] = flow_hash(self.policy, src, dst, sport, dport, pkt[9])
        name = self.spread.pick(h, now)
        return None if name is None else self.by_name[name]

    def owner(self, cp: Conn, now: float) -> Node | None:
        h = self.hashes.get(cp.key)
        if h is None:
            h = self.hashes[cp.key] = flow_hash(self.policy, cp.caddr, cp.vaddr, cp.cport,
                                                cp.vport, cp.protocol)
        name = self.spread.pick(h, now, peek=True)
        return None if name is None else self.by_name[name]

    def set_member(self, node: Node, present: bool, now: float) -> None:
        names = [m for m in self.spread.members if m != node.name]
        if present:
            names.append(node.name)
        self.spread.set_members(names, now)

    def role(self, node: Node) -> str:
        return "in the ECMP group" if node.name in self.spread.members else "withdrawn"
