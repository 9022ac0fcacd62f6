"""A replayed director's master sync daemon, recorded: the datagrams it would send, at the
instants its thread would send them, written to a pcap (`pyvs replay --sync-master`).

The engine's master queues records as packets pass and its thread's wake-ups send them
(pyvs.core.sync); this driver only drains those datagrams, with their times, wraps each in
IPv4/UDP as the kernel's socket would (the group, port + thread and TTL of the daemon's
configuration; no DF; a full UDP checksum) and writes them.  The source is `--sync-source`,
else the source of the first sync datagram the capture itself holds (a capture on a kernel
director holds its own master's, whose first datagram goes out about when pyvs's does),
else 0.0.0.0: datagrams wait in memory for the source at most HOLD seconds of capture
time, then go out from 0.0.0.0, so a long capture with no sync traffic of its own streams
as the replay does.
"""

from __future__ import annotations

from pathlib import Path

from ..core.engine import Director
from ..core.packet import udp_datagram
from ..core.sync import SYNC_GROUP_ADDR
from ..core.syncmsg import SYNC_PORT
from .pcap import NS, PcapWriter
from .replay import ReplayStats

IDLE_AFTER: float = 10.0    # a master sends what it holds within 3.1 s of its last record
HOLD: float = 10.0          # how long datagrams wait for the capture to show a source
DEFAULT_SPORT: int = SYNC_PORT


class SyncRecorder:
    """Drains `director`'s master (whichever runs: events may stop and start it) into
    `path`.  Call drain(now) as the replay's time advances and finish(end) after it."""

    def __init__(self, director: Director, path: str, stats: ReplayStats,
                 source: tuple[int, int] | None = None) -> None:
        self.director = director
        self.stats = stats
        self.source = source
        self.writer = PcapWriter(path)     # OSError: the caller names the file
        self._held: list[tuple[float, bytes, int, int, int]] = []
        self._ident = 0
        self.records = 0
        self.guessed = False                # the source came from no flag nor capture

    def drain(self, now: float) -> None:
        m = self.director.sync_master
        if m is None:
            return
        cfg = m.config
        group = cfg.mcast_group if cfg is not None else SYNC_GROUP_ADDR
        port = cfg.mcast_port if cfg is not None else SYNC_PORT
        ttl = cfg.mcast_ttl if cfg is not None else 1
        for t, thread, data in m.due_timed(now):
            self.records += data[4] if data[0] == 0 else data[0]   # v1 nr_conns, v0 byte 0
            self._held.append((t, data, group, port + thread, ttl))
        if self._held and self._source() is None and now - self._held[0][0] > HOLD:
            self.source, self.guessed = (0, DEFAULT_SPORT), True
        if self._held and self._source() is not None:
            self._write()

    def finish(self, end: float) -> int:
        """Run the master's thread past the capture's end until it holds nothing (as if
        the director went on, idle), write everything; the number of datagrams."""
        m = self.director.sync_master
        t = m.next_timer() if m is not None else None
        while m is not None and t is not None and t <= max(end, 0.0) + IDLE_AFTER:
            self.drain(max(t, end))
            t = m.next_timer()
        if self._source() is None:
            self.source = (0, DEFAULT_SPORT)
            self.guessed = self._held != [] or self.guessed
        self._write()
        self.writer.close()
        return self.writer.packets

    def abandon(self) -> None:
        """The replay failed: close and remove the file."""
        self.writer.close()
        Path(self.writer.path).unlink(missing_ok=True)

    def _source(self) -> tuple[int, int] | None:
        if self.source is None and self.stats.sync_source is not None:
            self.source = self.stats.sync_source
        return self.source

    def _write(self) -> None:
        assert self.source is not None
        src, sport = self.source
        first = self.stats.first_ns
        base = first / NS if first is not None else 0.0    # the capture's own clock
        for t, data, group, dport, ttl in self._held:
            self._ident += 1
            self.writer.write(base + t, udp_datagram(src, sport, group, dport, data, ttl,
                                              self._ident))
        self._held.clear()
