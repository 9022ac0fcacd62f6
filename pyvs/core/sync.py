"""IPVS connection sync: what a master sends and when, and what a backup does with it.

The rules of ``net/netfilter/ipvs/ip_vs_sync.c`` (kernel 6.1), sans-I/O like the engine:

* :func:`sync_needed` is ``ip_vs_sync_conn_needed()``, a pure function of the entry's
  protocol, state, previous synced state, packet count and timers (jiffies at HZ=250).
* :class:`MessageBuilder` is one master thread: the buffer being filled
  (``ms->sync_buff``), the queue of full buffers, and the thread's wake-ups (``sb_queue_tail``,
  ``master_wakeup_work_handler``, ``sync_thread_master``), emulated on the message bytes.
* :class:`SyncMaster` ties them to a :class:`~pyvs.core.engine.Director` through its ``sync``
  hook (``ip_vs_sync_conn()``: the entry, then its controlling template).
* :class:`SyncBackup` applies received datagrams to a Director (``ip_vs_proc_conn()``).
* :func:`start_daemon` / :func:`stop_daemon` are ``start_sync_thread()`` /
  ``stop_sync_thread()``: the control plane's side, which Director.apply calls.

No sockets, no clocks: every call takes ``now`` (seconds); drivers send what
:meth:`SyncMaster.due` returns and sleep until :meth:`SyncMaster.next_timer`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from . import states as S
from .commands import DAEMON_STATES, ConfigError, StartDaemon
from .conn import INVALID_PORT, Conn, conn_key
from .forwarding import MASQ
from .packet import IPPROTO_TCP, IPPROTO_UDP
from .schedulers import make_scheduler
from .service import SVC_F_ONEPACKET, Dest, Service
from .syncmsg import (
    BACKUP_MASK,
    F_FWD_MASK,
    F_HASHED,
    F_INACTIVE,
    F_NOOUTPUT,
    F_ONE_PACKET,
    F_SYNC,
    F_TEMPLATE,
    SYNC_PORT,
    V0_HEADER,
    V1_HEADER,
    V4_RECORD,
    Decoded,
    SyncRecord,
    decode,
    encode_v0_record,
    encode_v1_record,
)
from .sysctls import Sysctls
from .wheel import HZ, jiffies, wheel_fires

if TYPE_CHECKING:                # the engine holds the daemons: it imports this module
    from .engine import Director

FLUSH_TIME: Final = 2 * HZ           # IPVS_SYNC_FLUSH_TIME: a buffer waits at most this...
CHECK_PERIOD: Final = HZ             # IPVS_SYNC_CHECK_PERIOD: ...checked this often
SEND_DELAY: Final = max(HZ // 50, 1)   # IPVS_SYNC_SEND_DELAY: wake-up after the first queued
WAKEUP_RATE: Final = 8               # IPVS_SYNC_WAKEUP_RATE: or at once at the 8th
PORTS_MAX: Final = 64                # IPVS_SYNC_PORTS_MAX
IP_UDP_HEADERS: Final = 20 + 8
MASTER_MAXLEN: Final = 1500 - IP_UDP_HEADERS      # the master assumes MTU 1500: 1472
BACKUP_MIN_MAXLEN: Final = 1024
V0_TEMPLATE_TIMEOUT: Final = 180     # v0 carries no timeout: templates get 3 minutes

# TCP states in which a connection is synced at all (SYN_RECV never is)
SYNC_TCP_STATES: Final = frozenset((S.ESTABLISHED, S.FIN_WAIT, S.CLOSE, S.CLOSE_WAIT,
                                    S.TIME_WAIT))

# What SyncBackup.apply() did with a record; the pyvs-only refusals come first.
A_IPV6: Final = "ipv6"                            # pyvs has no IPv6 table
A_PROTOCOL: Final = "protocol-not-modelled"       # SCTP, AH, ESP: the kernel takes them
A_PE: Final = "pe-not-loaded"                     # persistence engines: pyvs has none
A_TEMPLATE_CPORT: Final = "template-cport"        # a template with a client port (PE only)
A_CREATED: Final = "created"
A_UPDATED: Final = "updated"
A_REPLACED: Final = "replaced"    # same client, other realserver: the old entry expired
A_STALE: Final = "stale"          # other realserver, INACTIVE: the old entry's last word
A_ONE_PACKET: Final = "one-packet"    # v0 ONE_PACKET record: created and expired at once
A_ELSEWHERE: Final = "other-worker"   # pyvs run --queues N: another worker's client
APPLIED: Final = frozenset((A_CREATED, A_UPDATED, A_REPLACED))  # the rest: dropped, ignored
# what apply() says of a record (counted per record, after the decoding's own reasons)
ACTIONS: Final = APPLIED | {A_IPV6, A_PROTOCOL, A_PE, A_TEMPLATE_CPORT, A_STALE, A_ONE_PACKET}


def master_maxlen(maxlen: int = 0) -> int:
    """start_sync_thread(): the master assumes MTU 1500; a given maxlen is clamped."""
    return min(max(maxlen, 1), 65535 - IP_UDP_HEADERS) if maxlen else MASTER_MAXLEN


def backup_maxlen(mtu: int = 1500, maxlen: int = 0) -> int:
    """start_sync_thread(): the backup's receive buffer, from its interface MTU."""
    if maxlen:
        return min(max(maxlen, BACKUP_MIN_MAXLEN), 65535 - IP_UDP_HEADERS)
    return min(max(mtu, 1500), 65535) - IP_UDP_HEADERS


# ------------------------------------------------------------------------ master: when
Decision = tuple[bool, int, int]     # send?, then cp->old_state and cp->sync_endtime
#                                      afterwards (jiffies; low 2 bits: retries sent)


def sync_needed(protocol: int, state: int, old_state: int, template: bool,
                in_persistence: bool, timeout: int, sync_endtime: int, pkts: int, now: int,
                sysctls: Sysctls) -> Decision:
    """ip_vs_sync_conn_needed(): `timeout`, `sync_endtime` and `now` in jiffies; `pkts` is
    the entry's inbound packet count (the caller's, see SyncMaster.sync_conn).  A plain
    tuple: a NamedTuple costs the compiled master a Python-level constructor per call."""
    orig = sync_endtime
    n = (now + timeout) & ~3
    keep = (False, old_state, orig)
    if template:
        force = False
    elif sysctls.sync_persist_mode and in_persistence:
        return keep
    elif protocol == IPPROTO_TCP:
        if state not in SYNC_TCP_STATES:
            return keep
        force = state != old_state
        if force and state != S.ESTABLISHED:
            return (True, state, n)
    else:                                    # UDP: one state, sent by packet count only
        force = False
    refresh = sysctls.sync_refresh_period * HZ
    if refresh > 0:
        diff = n - orig
        min_diff = max(timeout >> 1, 10 * HZ)
        if abs(diff) < min(refresh, min_diff):
            retries = orig & 3
            if retries >= sysctls.sync_retries:
                return keep
            if now < orig - timeout + (refresh >> 3):
                return keep
            n |= retries + 1
    period = sysctls.sync_period
    if period > 0:
        if not template and pkts % period != sysctls.sync_threshold:
            return keep
    elif not refresh and pkts != sysctls.sync_threshold:
        return keep
    del force          # the kernel returns `cmpxchg succeeded || force`: always true here
    return (True, state, n)


# ------------------------------------------------------------------------ master: buffering
class _Buffer:
    """struct ip_vs_sync_buff: the message bytes, the write position, when first used;
    and how many records it holds (nr_conns without its byte's wrap, for the counters)."""

    __slots__ = ("mesg", "head", "firstuse", "records")

    def __init__(self, mesg: bytearray, head: int, firstuse: int) -> None:
        self.mesg = mesg
        self.head = head
        self.firstuse = firstuse
        self.records = 0

    def datagram(self) -> bytes:
        """ip_vs_send_sync_msg(): the first ntohs(mesg->size) bytes."""
        return bytes(self.mesg[:(self.mesg[2] << 8) | self.mesg[3]])


class MessageBuilder:
    """One master sync thread (``ipvs->ms[id]`` and its kthread).

    Records go into the current buffer until one does not fit (or the protocol version
    changes); that buffer is then queued and the thread woken 24 ms later (HZ/50 on the
    timer wheel), or at once when it is the eighth queued since the thread last emptied
    the queue.  The thread also wakes every 1.024 s (a one-second sleep on the timer
    wheel) and then sends the current buffer if its first record is at least 2 s old.
    """

    def __init__(self, syncid: int = 0, maxlen: int = MASTER_MAXLEN, start: float = 0.0,
                 qlen_max: int | None = None) -> None:
        self.syncid = syncid
        self.maxlen = maxlen
        self.qlen_max = qlen_max
        self.current: _Buffer | None = None
        self.queue: list[_Buffer] = []
        self.queue_delay = 0                 # ms->sync_queue_delay
        self.work_at: int | None = None      # the pending master_wakeup_work (jiffies)
        self.wake_at: int | None = None      # a wake_up_process() not yet served
        j = jiffies(start)
        self.check_at = wheel_fires(j + CHECK_PERIOD, j)  # the thread's schedule_timeout(HZ)
        self.dropped = 0                     # buffers sb_queue_tail() released unsent
        self.records_sent = 0                # records in the datagrams sent
        self._sent: list[tuple[int, bytes]] = []   # sent, not yet handed out by due()
        # the thread waits in ip_vs_send_sync_msg() for a full socket: it dequeues
        # nothing, so the queue fills to sync_qlen_max and sb_queue_tail() drops the rest
        self.blocked = False

    # the producer side: ip_vs_sync_conn() / ip_vs_sync_conn_v0()
    def add(self, record: SyncRecord, now: float, version: int = 1) -> None:
        """Append one record as the kernel does for protocol `version`."""
        self.add_encoded(encode_v0_record(record) if version == 0
                         else encode_v1_record(record), now, version)

    def add_encoded(self, data: bytes, now: float, version: int = 1) -> None:
        """Append one record already encoded for protocol `version` (no v1 padding)."""
        j = jiffies(now)
        self._advance(j - 1)                 # the thread's wake-ups before this record
        if version == 0:
            buff = self.current
            if buff is not None and (buff.head + len(data) > len(buff.mesg)
                                     or not buff.mesg[0]):   # a v1 buffer: byte 0 is 0
                self._queue_current(j)
                buff = None
            if buff is None:
                size = max(len(data) + V0_HEADER.size, self.maxlen)
                mesg = bytearray(size)
                V0_HEADER.pack_into(mesg, 0, 0, self.syncid, V0_HEADER.size)
                buff = self.current = _Buffer(mesg, V0_HEADER.size, j)
            m = buff.mesg
            m[buff.head:buff.head + len(data)] = data
            buff.head += len(data)
            buff.records += 1
            m[0] = (m[0] + 1) & 0xFF
            self._add_size(m, len(data))
            return
        buff = self.current
        pad = 0
        if buff is not None:
            pad = -buff.head & 3
            if buff.head + len(data) + pad > len(buff.mesg) or buff.mesg[0]:  # v0: nr_conns
                self._queue_current(j)
                buff, pad = None, 0
        if buff is None:
            size = max(len(data) + V1_HEADER.size, self.maxlen)
            mesg = bytearray(size)
            V1_HEADER.pack_into(mesg, 0, 0, self.syncid, V1_HEADER.size, 0, 1, 0)
            buff = self.current = _Buffer(mesg, V1_HEADER.size, j)
        m = buff.mesg
        start = buff.head + pad              # the pad bytes are zero already
        m[start:start + len(data)] = data
        buff.head = start + len(data)
        buff.records += 1
        self._add_size(m, pad + len(data))
        m[4] = (m[4] + 1) & 0xFF

    @staticmethod
    def _add_size(m: bytearray, n: int) -> None:
        size = (((m[2] << 8) | m[3]) + n) & 0xFFFF
        m[2], m[3] = size >> 8, size & 0xFF

    def _queue_current(self, j: int) -> None:
        """sb_queue_tail(): queue the current buffer (or release it if the queue is full)."""
        buff = self.current
        assert buff is not None
        self.current = None
        if self.qlen_max is not None and len(self.queue) >= self.qlen_max:
            self.dropped += 1
            return
        if not self.queue and self.work_at is None:   # schedule_delayed_work()
            self.work_at = wheel_fires(j + SEND_DELAY, j)
        self.queue.append(buff)
        self.queue_delay += 1
        if self.queue_delay == WAKEUP_RATE:
            self.wake_at = j

    # the consumer side: the master thread
    def _idle(self) -> bool:
        """Nothing to send and no wake-up pending: the thread's periodic wake-ups
        then change nothing but their own phase, which _catch_up() recomputes."""
        return (self.current is None and not self.queue and self.work_at is None
                and self.wake_at is None)

    def block(self, blocked: bool, now: float) -> None:
        """The driver's socket is full (True) or writable again (False, at `now`: the
        thread goes on from there; its wake-ups in between happen at once, as one)."""
        self.blocked = blocked
        if not blocked:
            j = jiffies(now)
            self.check_at = max(self.check_at, j)
            if self.work_at is not None and self.work_at < j:
                self.work_at = j
            if self.wake_at is not None and self.wake_at < j:
                self.wake_at = j

    def _catch_up(self, j: int) -> None:
        """Advance the idle thread's wake-up past the ones it made before jiffy `j`: after
        one sleep it wakes on a bucket boundary, and from there at a fixed period."""
        if self.check_at < j:
            self.check_at = wheel_fires(self.check_at + CHECK_PERIOD, self.check_at)
        if self.check_at < j:
            period = wheel_fires(self.check_at + CHECK_PERIOD, self.check_at) - self.check_at
            self.check_at += -(-(j - self.check_at) // period) * period

    def next_timer(self) -> float | None:
        """When due() next has something to do; None while idle (no polling)."""
        t: int | None = None
        if self.blocked:
            pass                             # asleep in a send: nothing until the driver
        elif not self._idle():
            t = self.check_at
            if self.work_at is not None and self.work_at < t:
                t = self.work_at
            if self.wake_at is not None and self.wake_at < t:
                t = self.wake_at
        if self._sent and (t is None or self._sent[0][0] < t):
            t = self._sent[0][0]
        return None if t is None else t / HZ

    def due(self, now: float) -> list[bytes]:
        """Run the thread's wake-ups up to `now`; the datagrams it sent, in order."""
        return [data for _, data in self.due_timed(now)]

    def due_timed(self, now: float) -> list[tuple[float, bytes]]:
        """due() with the instant each datagram went out (a wake-up's jiffy, in seconds):
        for drivers that record rather than send, and so drain late."""
        self._advance(jiffies(now))
        out = [(j / HZ, data) for j, data in self._sent]
        self._sent.clear()
        return out

    def _advance(self, limit: int) -> None:
        """Run every wake-up of the thread (and of its work item) up to jiffy `limit`."""
        while not self.blocked:
            if self._idle():
                self._catch_up(limit + 1)
                return
            at = self.check_at
            work, wake = self.work_at, self.wake_at
            if work is not None and work < at:
                at = work
            if wake is not None and wake < at:
                at = wake
            if at > limit:
                return
            if self.work_at == at:            # master_wakeup_work_handler()
                self.work_at = None
                if self.queue and self.queue_delay < WAKEUP_RATE:
                    self.queue_delay = WAKEUP_RATE
                    self._run(at)
            else:
                self._run(at)

    def _run(self, at: int) -> None:
        """One pass of sync_thread_master(): send the queue, then the current buffer if it
        is old enough, then sleep a second."""
        while True:
            if self.queue:                   # sb_dequeue()
                buff = self.queue.pop(0)
                self.records_sent += buff.records
                self._sent.append((at, buff.datagram()))
                if not self.queue:
                    self.queue_delay = 0
                continue
            current = self.current           # get_curr_sync_buff(IPVS_SYNC_FLUSH_TIME)
            if current is not None and at - current.firstuse >= FLUSH_TIME:
                self.current = None
                self.records_sent += current.records
                self._sent.append((at, current.datagram()))
                continue
            break
        self.wake_at = None
        self.check_at = wheel_fires(at + CHECK_PERIOD, at)

    def stop(self) -> None:
        """stop_sync_thread(): everything not yet sent is released."""
        self.current = None
        self.queue.clear()
        self._sent.clear()
        self.queue_delay = 0
        self.work_at = self.wake_at = None


# ------------------------------------------------------------------------ master: the hook
def conn_flags(cp: Conn) -> int:
    """cp->flags as the master sends them (HASHED dropped).  pyvs models the forwarding
    method, NOOUTPUT, INACTIVE, TEMPLATE and SYNC; SEQ, NO_CPORT (FTP helper) and NFCT
    (conntrack=1) it does not."""
    flags = cp.fwd
    if cp.noout:
        flags |= F_NOOUTPUT
    if cp.inactive:
        flags |= F_INACTIVE
    if cp.template:
        flags |= F_TEMPLATE
    if cp.synced:
        flags |= F_SYNC
    return flags


# A plain IPv4 record's layout with the entry's lookup key copied in: the key holds the
# client and virtual addresses and ports in network order, as the record does.
_CONN_V1: Final = struct.Struct("!BBHIH4sHII8sI")   # type .. state, cport vport, dport,
#                                                     fwmark, timeout, caddr vaddr, daddr
_CONN_V0: Final = struct.Struct("!BB4sH8sIHH")      # reserved, protocol, cport vport,
#                                                     dport, caddr vaddr, daddr, flags, state


def encode_conn(cp: Conn, version: int) -> bytes:
    """The record ip_vs_sync_conn() (v1) or ip_vs_sync_conn_v0() writes for this entry:
    encode_v1_record(record_from_conn(cp)) without the record in between (the master's
    per-record cost; tests/test_sync.py checks that the two agree)."""
    key = cp.key
    if version == 0:
        return _CONN_V0.pack(0, cp.protocol, key[-4:], cp.dport, key[-12:-4], cp.daddr,
                             conn_flags(cp) & 0xFFFF, cp.state)
    return _CONN_V1.pack(0, cp.protocol, V4_RECORD, conn_flags(cp), cp.state, key[-4:],
                         cp.dport, cp.dest.svc.fwmark, int(cp.timeout + 1e-9), key[-12:-4],
                         cp.daddr)


def record_from_conn(cp: Conn) -> SyncRecord:
    """The v1 record ip_vs_sync_conn() writes for this entry.  cp->fwmark is the first
    packet's mark; pyvs takes its service's fwmark (the same for a fwmark service)."""
    return SyncRecord(cp.protocol, conn_flags(cp), cp.state, cp.cport, cp.vport, cp.dport,
                      cp.caddr, cp.vaddr, cp.daddr, cp.dest.svc.fwmark,
                      int(cp.timeout + 1e-9))


class SyncMaster:
    """A master sync daemon on `director`, started at `start` (``ipvsadm --start-daemon
    master``): it hooks itself into the director's packet path and reads the director's
    sync_* sysctls at each decision, as the kernel does."""

    def __init__(self, director: Director, syncid: int = 0, maxlen: int = 0,
                 start: float = 0.0, threads: int | None = None) -> None:
        if not 0 <= syncid <= 255:
            raise ConfigError(f"syncid {syncid} out of range 0..255")
        self.director = director
        self.syncid = syncid
        self.maxlen = master_maxlen(maxlen)
        self.config: DaemonConfig | None = None     # as started by start_daemon()
        sysctls = director.sysctls
        if threads is None:                          # sync_ports, fixed at start
            threads = min(max(sysctls.sync_ports, 1), PORTS_MAX)
        self.builders = [MessageBuilder(syncid, self.maxlen, start, sysctls.sync_qlen_max)
                         for _ in range(threads)]
        self.records = 0          # records queued; datagrams handed out by due()
        self.messages = 0
        director.sync = self.hook

    def hook(self, cp: Conn, now: float, from_packet: bool) -> None:
        """Director.sync: ip_vs_in_hook() after a packet (pkts = ++cp->in_pkts, or the
        threshold for ONE_PACKET), or ip_vs_conn_expire() putting off a controlling entry
        (pkts = the threshold)."""
        sysctls = self.director.sysctls
        threshold = sysctls.sync_threshold
        pkts = cp.in_pkts if from_packet and not _one_packet(cp) else threshold
        if cp.control is None and not cp.template and _surely_not_needed(cp, pkts, sysctls):
            return                           # the common packet: nothing to send or record
        self.sync_conn(cp, pkts, now)

    def sync_conn(self, cp: Conn, pkts: int, now: float) -> None:
        """ip_vs_sync_conn(): this entry if needed, then its controller (a template, with
        its own count bumped), whatever the entry's own decision was."""
        if self.director.sysctls.sync_version == 0:
            self._sync_conn_v0(cp, pkts, now)
            return
        j = jiffies(now)
        entry: Conn | None = cp
        check = not _one_packet(cp)          # ONE_PACKET: straight to the controller
        while entry is not None:
            if check and self._needed(entry, pkts, j):
                self._builder(entry).add_encoded(encode_conn(entry, 1), now, 1)
                self.records += 1
            check = True
            ct = entry.control
            if ct is None:
                return
            pkts = self._controller_pkts(ct)
            entry = ct

    def _sync_conn_v0(self, cp: Conn, pkts: int, now: float) -> None:
        """ip_vs_sync_conn_v0(): unlike v1, the controller is synced only with its entry."""
        if _one_packet(cp) or not self._needed(cp, pkts, jiffies(now)):
            return
        self._builder(cp).add_encoded(encode_conn(cp, 0), now, 0)
        self.records += 1
        ct = cp.control
        if ct is not None:
            self.sync_conn(ct, self._controller_pkts(ct), now)

    def _controller_pkts(self, ct: Conn) -> int:
        if ct.template:
            ct.in_pkts += 1                  # atomic_inc_return(&cp->in_pkts)
            return ct.in_pkts
        return self.director.sysctls.sync_threshold

    def _needed(self, cp: Conn, pkts: int, j: int) -> bool:
        if cp.sync_endtime < 0:    # the creating packet's jiffy (or the daemon's start)
            cp.sync_endtime = j & ~3
        ct = cp.control
        d = sync_needed(cp.protocol, cp.state, cp.old_state, cp.template,
                        ct is not None and ct.template, round(cp.timeout * HZ),
                        cp.sync_endtime, pkts, j, self.director.sysctls)
        send, cp.old_state, cp.sync_endtime = d
        return send

    def _builder(self, cp: Conn) -> MessageBuilder:
        """select_master_thread_id() hashes the entry's address; pyvs hashes its key.
        sb_queue_tail() reads sync_qlen_max at each buffer it queues."""
        builders = self.builders
        b = builders[0] if len(builders) == 1 else builders[zlib.crc32(cp.key)
                                                            & (len(builders) - 1)]
        b.qlen_max = self.director.sysctls.sync_qlen_max
        return b

    def next_timer(self) -> float | None:
        """When due() next has work; None while nothing waits to be sent."""
        if len(self.builders) == 1:
            return self.builders[0].next_timer()
        times = [t for t in (b.next_timer() for b in self.builders) if t is not None]
        return min(times) if times else None

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """(thread id, datagram) to send by `now`; thread id sends to port 8848 + id."""
        return [(i, d) for _, i, d in self.due_timed(now)]

    def due_timed(self, now: float) -> list[tuple[float, int, bytes]]:
        """(when sent, thread id, datagram) by `now`, in time order."""
        for b in self.builders:
            b.qlen_max = self.director.sysctls.sync_qlen_max
        out = [(t, i, d) for i, b in enumerate(self.builders) for t, d in b.due_timed(now)]
        if len(self.builders) > 1:
            out.sort(key=lambda x: (x[0], x[1]))
        self.messages += len(out)
        return out

    def block(self, thread: int, blocked: bool, now: float) -> None:
        """Thread `thread`'s socket is full, or writable again (MessageBuilder.block)."""
        self.builders[thread].block(blocked, now)

    def queue_dropped(self) -> int:
        """Messages released unsent because the queue held sync_qlen_max."""
        return sum(b.dropped for b in self.builders)

    def records_sent(self) -> int:
        """Records in the datagrams sent (handed out by due(), or due to be)."""
        return sum(b.records_sent for b in self.builders)

    def stop(self) -> None:
        """stop_sync_thread(): unhook; whatever was not sent is lost."""
        for b in self.builders:
            b.stop()
        if self.director.sync == self.hook:
            self.director.sync = None


def _surely_not_needed(cp: Conn, pkts: int, sysctls: Sysctls) -> bool:
    """sync_needed() would say no and change nothing (checked before computing jiffies,
    for the packets that make up nearly all of a master's traffic)."""
    if cp.protocol == IPPROTO_TCP:
        if cp.state not in SYNC_TCP_STATES:
            return True
        if cp.state != cp.old_state and cp.state != S.ESTABLISHED:
            return False                     # a state change: sent at once
    if sysctls.sync_refresh_period:
        return False
    period = sysctls.sync_period
    if period > 0:
        return pkts % period != sysctls.sync_threshold
    return pkts != sysctls.sync_threshold


def _one_packet(cp: Conn) -> bool:
    """IP_VS_CONN_F_ONE_PACKET: a UDP connection of a one-packet service (never a synced
    entry: binding a synced entry drops the flag)."""
    return (cp.protocol == IPPROTO_UDP and not cp.template and not cp.synced
            and bool(cp.dest.svc.flags & SVC_F_ONEPACKET))


# ------------------------------------------------------------------------ backup
@dataclass
class Received:
    """One datagram at the backup: the decoding, and what became of each record."""

    decoded: Decoded
    actions: list[str] = field(default_factory=list)   # one per decoded.records entry


class SyncBackup:
    """A backup sync daemon feeding one Director (sync_thread_backup(), ip_vs_proc_conn()).

    Entries whose service or realserver this director lacks are kept *unbound*, as the
    kernel keeps them (``cp->dest == NULL``): they forward to the message's realserver by
    the message's forwarding method, count in no realserver's ActiveConn/InActConn, and
    are bound when a later message finds the realserver.  pyvs holds them on stand-in
    realservers that belong to no listed service; a stand-in for templates is unavailable,
    so a packet never uses an unbound template (the kernel invalidates it).
    """

    def __init__(self, director: Director, syncid: int = 0, mtu: int = 1500,
                 maxlen: int = 0) -> None:
        if not 0 <= syncid <= 255:
            raise ConfigError(f"syncid {syncid} out of range 0..255")
        self.director = director
        self.syncid = syncid
        self.maxlen = backup_maxlen(mtu, maxlen)
        self.config: DaemonConfig | None = None     # as started by start_daemon()
        self.messages = 0                    # datagrams received, records applied
        self.records = 0
        self.counts: dict[str, int] = {}     # reasons and actions, as Director.drops
        # which client addresses (a template: client networks) this table holds; None:
        # all (pyvs run --queues N: each worker holds its own clients' entries)
        self.owns: Callable[[int], bool] | None = None
        self._stand_in_svcs: dict[tuple[int, int, int, int], Service] = {}
        self._stand_ins: dict[tuple[Service, int, int, int, bool], Dest] = {}
        self._unbound: set[Service] = set()
        self._invalidated: dict[tuple[int, int, int, int], Conn] = {}   # vport 0xffff

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def receive(self, datagram: bytes, now: float) -> Received:
        """One datagram off the socket at `now` (cut to the receive buffer, as recvmsg()
        does: a longer one then fails the size check)."""
        self.director.handle_timers(now)
        decoded = decode(datagram[:self.maxlen], self.syncid)
        self.messages += 1
        result = Received(decoded)
        for _, reason in decoded.skipped:
            self._count(reason)
        if decoded.error is not None:
            self._count(decoded.error)
        owns = self.owns
        for rec in decoded.records:
            if owns is not None and not owns(rec.caddr):
                result.actions.append(A_ELSEWHERE)
                continue
            self.records += 1
            action = self.apply(rec, decoded.version or 0, now)
            self._count(action)
            result.actions.append(action)
        return result

    # ip_vs_proc_conn()
    def apply(self, rec: SyncRecord, version: int, now: float) -> str:
        """Create or update the entry a decoded record names; returns what was done."""
        refused = _not_held(rec)
        if refused is not None:
            return refused
        if version == 1:
            flags = (rec.flags & BACKUP_MASK) | F_SYNC
        else:
            flags = (rec.flags | F_SYNC) & ~F_HASHED
        timeout = float(self._timeout(rec, version))
        action = A_UPDATED
        if rec.template:
            cp = self._find_template(rec)
        else:
            cp = self.director._in.get(conn_key(rec.protocol, rec.caddr, rec.vaddr, rec.cport,
                                                rec.vport))
            if cp is not None and (cp.dport != rec.dport or cp.daddr != rec.daddr):
                if flags & F_INACTIVE:
                    return A_STALE
                self.director._expire(cp, now)          # ip_vs_conn_expire_now()
                cp = None
                action = A_REPLACED
        if cp is None:
            if flags & F_ONE_PACKET:         # only v0 lets the flag through
                return A_ONE_PACKET
            self._create(rec, flags, timeout, now)
            return A_CREATED if action == A_UPDATED else action
        self._update(cp, flags)
        self._refresh(cp, rec.state, timeout, now)
        return action

    def _timeout(self, rec: SyncRecord, version: int) -> int:
        """The message's timeout (v1), else the backup's own for the state (v0 carries
        none; a v1 entry under a second long sends 0), templates 3 minutes."""
        d = self.director
        if version == 1 and rec.timeout:
            return rec.timeout
        if rec.template:
            return V0_TEMPLATE_TIMEOUT
        if rec.protocol == IPPROTO_TCP:
            return int(d._tcp_timeouts[rec.state])
        return int(d._udp_timeout)

    def _find_template(self, rec: SyncRecord) -> Conn | None:
        """ip_vs_ct_in_get(): by protocol, client network, virtual address and port."""
        key = (rec.protocol, rec.caddr, rec.vaddr, rec.vport)
        if rec.vport != INVALID_PORT:
            return self.director._templates.get(key)
        ct = self._invalidated.get(key)
        if ct is not None and not ct.alive:
            del self._invalidated[key]
            return None
        return ct

    def _refresh(self, cp: Conn, state: int, timeout: float, now: float) -> None:
        """The end of ip_vs_proc_conn(): in_pkts, state and timer from the message."""
        d = self.director
        cp.in_pkts = d.sysctls.sync_threshold
        if not cp.template and cp.protocol == IPPROTO_TCP:   # the engine's count by state
            d.state_counts[cp.state] -= 1
            d.state_counts[state] += 1
        cp.state = state
        cp.old_state = state
        cp.timeout = timeout
        d._arm(cp, now)                      # ip_vs_conn_put(): timer = now + timeout
        if d.watch is not None and not cp.template:
            d.watch(cp, now)

    def _update(self, cp: Conn, flags: int) -> None:
        """An existing entry: INACTIVE (and the SEQ bits) come from the message; a flip
        moves the realserver's count between ActiveConn and InActConn."""
        inactive = bool(flags & F_INACTIVE)
        if not cp.template and cp.inactive != inactive:
            dest = cp.dest
            if inactive:
                dest.activeconns -= 1
                dest.inactconns += 1
            else:
                dest.activeconns += 1
                dest.inactconns -= 1
        cp.inactive = inactive
        if cp.dest.svc in self._unbound:
            self._try_bind(cp)

    def _create(self, rec: SyncRecord, flags: int, timeout: float, now: float) -> Conn:
        """ip_vs_find_dest() + ip_vs_conn_new(): bound if the realserver is found, then
        with its forwarding method and NOOUTPUT; unbound with the message's."""
        d = self.director
        fwd = flags & F_FWD_MASK
        dest = find_dest(d, rec.protocol, rec.vaddr, rec.vport, rec.fwmark, fwd, rec.daddr,
                         rec.dport)
        bound = dest is not None
        if dest is None:
            dest = self._stand_in(rec, fwd)
        noout = dest.noout if bound else bool(flags & F_NOOUTPUT)
        threshold = d.sysctls.sync_threshold
        cp: Conn
        if rec.template:
            cp = d.insert_template(rec.protocol, rec.caddr, rec.vaddr, rec.vport, dest,
                                   rec.dport, rec.state, now + timeout, timeout, threshold)
            if rec.vport == INVALID_PORT:    # the kernel still finds it by these ports
                self._invalidated[(rec.protocol, rec.caddr, rec.vaddr, rec.vport)] = cp
            # a bound template takes INACTIVE from the realserver, which always has it
            cp.inactive = True if bound else bool(flags & F_INACTIVE)
            cp.noout = noout
        else:
            cp = d.insert_entry(rec.protocol, rec.caddr, rec.cport, rec.vaddr, rec.vport, dest,
                                rec.dport, dest.fwd, rec.state, bool(flags & F_INACTIVE),
                                noout, now + timeout, timeout, threshold, None, now)
        cp.old_state = rec.state
        cp.synced = True
        cp.sync_endtime = jiffies(now) & ~3
        return cp

    def _stand_in(self, rec: SyncRecord, fwd: int) -> Dest:
        """The stand-in realserver an unbound entry hangs on (see the class docstring)."""
        skey = (rec.fwmark, rec.protocol, rec.vaddr, rec.vport)
        svc = self._stand_in_svcs.get(skey)
        if svc is None:
            svc = Service(rec.protocol, rec.vaddr, rec.vport, rec.fwmark, "rr",
                          make_scheduler("rr"), 0, 0, 0xFFFFFFFF)
            self._stand_in_svcs[skey] = svc
            self._unbound.add(svc)
        dkey = (svc, rec.daddr, rec.dport, fwd, rec.template)
        dest = self._stand_ins.get(dkey)
        if dest is None:
            dest = Dest(svc, rec.daddr, rec.dport, fwd, 1)
            self.director._update_dest(dest, fwd, 1, 0, 0)   # a route mark for Route
            dest.available = not rec.template
            self._stand_ins[dkey] = dest
        return dest

    def _try_bind(self, cp: Conn) -> None:
        """ip_vs_try_bind_dest(): move an unbound entry onto the realserver now found."""
        d = self.director
        old = cp.dest
        dest = find_dest(d, cp.protocol, cp.vaddr, cp.vport, old.svc.fwmark, cp.fwd, cp.daddr,
                         cp.dport)
        if dest is None:
            return
        if cp.template:
            old.persistconns -= 1
            dest.persistconns += 1
            cp.inactive = True
        elif cp.inactive:
            old.inactconns -= 1
            dest.inactconns += 1
        else:
            old.activeconns -= 1
            dest.activeconns += 1
        dest.check_overload_on_bind()
        cp.dest = dest
        cp.fwd = dest.fwd
        cp.noout = dest.noout
        if cp.out_key is not None and d._out.get(cp.out_key) is cp:
            del d._out[cp.out_key]
        cp.out_key = None
        cp.masq = None
        if not cp.template and dest.fwd == MASQ:
            cp.out_key = conn_key(cp.protocol, cp.daddr, cp.caddr, cp.dport, cp.cport)
            d._out[cp.out_key] = cp
            cp.masq = d._masq_rewrite(cp.vaddr, cp.vport, cp.daddr, cp.dport)

    def unbound(self, cp: Conn) -> bool:
        """Whether an entry is held unbound (no service or realserver for it here)."""
        return cp.dest.svc in self._unbound


def _not_held(rec: SyncRecord) -> str | None:
    """Why pyvs cannot hold what the kernel would create from this record (None: it can)."""
    if rec.ipv6:
        return A_IPV6
    if rec.pe_data is not None:              # the kernel needs the named PE module loaded
        return A_PE
    if not rec.template and rec.protocol not in (IPPROTO_TCP, IPPROTO_UDP):
        return A_PROTOCOL
    if rec.template and rec.cport:
        return A_TEMPLATE_CPORT
    return None


def find_dest(director: Director, protocol: int, vaddr: int, vport: int, fwmark: int, fwd: int,
              daddr: int, dport: int) -> Dest | None:
    """ip_vs_find_dest(): the service as a packet would find it (fwmark first), then the
    realserver by address and port, or port 0 (a fwmark service not forwarding by Masq
    tries port 0 first)."""
    svc = director._lookup_service(fwmark, protocol, vaddr, vport)
    if svc is None:
        return None
    port = 0 if fwmark and fwd != MASQ else dport
    dest = svc.find_dest(daddr, port)
    return dest if dest is not None else svc.find_dest(daddr, port ^ dport)


# ------------------------------------------------------------------------ the daemons
SYNC_GROUP_ADDR: Final = 0xE0000051          # IP_VS_SYNC_GROUP, 224.0.0.81
MTU_DEFAULT: Final = 1500                    # an interface pyvs knows nothing of


@dataclass(frozen=True)
class DaemonConfig:
    """A running daemon's struct ipvs_sync_daemon_cfg, the defaults filled in as
    start_sync_thread() fills them (what ipvsadm -L --daemon lists), and the number of
    threads: thread i sends to (or, a backup, listens on) port mcast_port + i."""

    state: str
    mcast_ifn: str
    syncid: int
    sync_maxlen: int
    mcast_group: int
    mcast_port: int
    mcast_ttl: int
    threads: int


def start_daemon(director: Director, cmd: StartDaemon, now: float) -> None:
    """start_sync_thread(), in its order: the thread count (sync_ports, unless a daemon
    already runs: then its count), the defaults, the interface (ENODEV), maxlen from the
    MTU, then EEXIST if this daemon already runs.  ConfigError with libipvs's texts."""
    master, backup = director.sync_master, director.sync_backup
    running = master.config if master is not None else (
        backup.config if backup is not None else None)
    threads = running.threads if running is not None else min(
        max(director.sysctls.sync_ports, 1), PORTS_MAX)
    links = director.links
    if links is not None and cmd.mcast_ifn not in links:
        raise ConfigError("No such device")       # -ENODEV, left to strerror() by libipvs
    mtu = MTU_DEFAULT if links is None else links[cmd.mcast_ifn]
    is_master = cmd.state == DAEMON_STATES[0]
    maxlen = master_maxlen(cmd.sync_maxlen) if is_master else backup_maxlen(
        mtu, cmd.sync_maxlen)
    if (master if is_master else backup) is not None:
        raise ConfigError("Daemon has already run")      # -EEXIST
    config = DaemonConfig(cmd.state, cmd.mcast_ifn, cmd.syncid, maxlen,
                          cmd.mcast_group or SYNC_GROUP_ADDR, cmd.mcast_port or SYNC_PORT,
                          cmd.mcast_ttl or 1, threads)
    if is_master:
        m = SyncMaster(director, cmd.syncid, maxlen, now, threads)
        m.config = config
        director.sync_master = m
    else:
        b = SyncBackup(director, cmd.syncid, maxlen=maxlen)
        b.config = config
        director.sync_backup = b


def stop_daemon(director: Director, state: str) -> None:
    """stop_sync_thread(): ESRCH unless that daemon runs.  A master's unsent messages are
    lost; a backup's entries stay in the table and live out their timers."""
    if state == DAEMON_STATES[0]:
        if director.sync_master is None:
            raise ConfigError("No daemon is running")    # -ESRCH
        director.sync_master.stop()
        director.sync_master = None
    else:
        if director.sync_backup is None:
            raise ConfigError("No daemon is running")
        director.sync_backup = None


def daemons(director: Director) -> list[DaemonConfig]:
    """The running daemons, master first, as ip_vs_genl_dump_daemons() lists them."""
    return [x.config for x in (director.sync_master, director.sync_backup)
            if x is not None and x.config is not None]
