"""pyvs's own NFQUEUE binding: one netlink socket, packets in bursts, verdicts in batches.

The kernel side is net/netfilter/nfnetlink_queue.c; the messages are those of
include/uapi/linux/netfilter/nfnetlink_queue.h (docs/nfqueue.md has the layouts and what
each flag does).  Why not libnetfilter_queue through python-netfilterqueue: that binding
makes one recv and one verdict system call per packet, cannot set the queue's flags, and
caps the copy at 4016 bytes.  Here a burst of queued packets comes in with one recvmmsg(2)
and every verdict for it goes out with one sendmsg(2): the kernel processes the
NFQNL_MSG_VERDICT messages of one buffer in order, and a run of plain accepts with the same
mark goes as one NFQNL_MSG_VERDICT_BATCH.

    q = Queue(0)                      # bind queue 0: whole packets, FAIL_OPEN, GSO
    sel.register(q, EVENT_READ)       # fileno(): wait with selectors, select or poll
    for p in q.receive():             # what is queued now, in id order; never blocks
        q.accept(p.id, mark=..., payload=...)     # or q.drop(p.id)
    q.flush()                         # the burst's verdicts, in one sendmsg
    q.close()                         # or just exit: the kernel unbinds a closed socket

Verdicts must be given in the order the packets came (a batch verdict covers every queued
id up to its own), and `flush()` must follow each burst before the loop waits again, so no
packet waits for the next one.  Only the standard library: socket and struct, and ctypes
for recvmmsg(2), which the socket module lacks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from typing import NamedTuple

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5          # an overrun drops packets silently instead of failing recv
NETLINK_CAP_ACK = 10            # an error reply carries our header only, not our payload
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000        # recvmmsg: wait for the first message only

NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = NFNL_SUBSYS_QUEUE << 8 | 0
NFQNL_MSG_VERDICT = NFNL_SUBSYS_QUEUE << 8 | 1
NFQNL_MSG_CONFIG = NFNL_SUBSYS_QUEUE << 8 | 2
NFQNL_MSG_VERDICT_BATCH = NFNL_SUBSYS_QUEUE << 8 | 3

NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1 << 0
NFQA_CFG_F_GSO = 1 << 2

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_IFINDEX_INDEV = 5
NFQA_IFINDEX_OUTDEV = 6
NFQA_PAYLOAD = 10
NFQA_CAP_LEN = 13
NFQA_SKB_INFO = 14
NFQA_SKB_CSUMNOTREADY = 1 << 0
NFQA_SKB_GSO = 1 << 1

DROP = 0                        # NF_DROP
ACCEPT = 1                      # NF_ACCEPT
NF_INET_PRE_ROUTING = 0
NF_INET_POST_ROUTING = 4
MAX_COPY_RANGE = 0xFFFF - 4     # NFQNL_MAX_COPY_RANGE: nla_len is 16 bits, header included
SEND_LIMIT = 1 << 20            # bytes of verdicts per sendmsg, at most (plus one payload)
IOV_LIMIT = 1020                # buffers per sendmsg, at most (+2; the kernel allows 1024)
SLOT_HEADROOM = 512             # the headers and attributes in front of NFQA_PAYLOAD
TIMEOUT_SLACK = 0.001           # seconds a receive(t) may wait past t (see receive)

_NLMSG = struct.Struct("=IHHII")                         # struct nlmsghdr
_ERR = struct.Struct("=i")                               # struct nlmsgerr's error
_NLA = struct.Struct("=HH")                              # struct nlattr
_BE32 = struct.Struct(">I")
_PKT_HDR = struct.Struct(">IHB")                         # struct nfqnl_msg_packet_hdr
# nlmsghdr + nfgenmsg + NFQA_VERDICT_HDR (struct nfqnl_msg_verdict_hdr) [+ NFQA_MARK]
# [+ NFQA_PAYLOAD's header]: one native-order Struct each, the big-endian fields packed
# through htonl/htons
_VERDICT = struct.Struct("=IHHIIBBHHHII")
_VERDICT_MARK = struct.Struct("=IHHIIBBHHHIIHHI")
_VERDICT_DATA = struct.Struct("=IHHIIBBHHHIIHH")
_VERDICT_MARK_DATA = struct.Struct("=IHHIIBBHHHIIHHIHH")
_htonl, _htons = socket.htonl, socket.htons
_ACCEPT_BE = _htonl(ACCEPT)
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")                 # by length % 4


class NfqueueError(Exception):
    """The queue cannot be used; the text is one line saying why."""


class Packet(NamedTuple):
    """One queued packet.  `payload` is the packet from its IP header on, cut at the copy
    range (then `cap_len` is larger); `info` holds NFQA_SKB_INFO's flags.  On a queue with
    `head`, a longer packet's payload is its first `head` bytes and `rest` the others: a
    view into the receive buffer, valid until the next receive() (give it back with
    `rest=` in the verdict); otherwise `rest` is empty."""

    id: int
    hook: int                   # NF_INET_PRE_ROUTING 0 ... NF_INET_POST_ROUTING 4
    mark: int
    payload: bytes
    indev: int                  # ifindex, 0 if none
    outdev: int
    info: int
    cap_len: int
    rest: bytes | memoryview = b""

    @property
    def gso(self) -> bool:
        """Larger than the MTU (the queue's GSO flag): split into segments on output."""
        return bool(self.info & NFQA_SKB_GSO)

    @property
    def csum_not_ready(self) -> bool:
        """The TCP/UDP checksum field holds only the pseudo-header sum (CHECKSUM_PARTIAL):
        completed on output, if the packet is given back unchanged."""
        return bool(self.info & NFQA_SKB_CSUMNOTREADY)

    @property
    def needs_checksum(self) -> bool:
        """A changed copy of this packet must carry a complete TCP/UDP checksum
        (finish_checksum): the kernel takes a changed packet's checksum as final
        (nfqnl_mangle sets CHECKSUM_NONE).  GSO packets are exempt: the stack recomputes
        their checksum from the new addresses when it segments or offloads them."""
        return self.info & (NFQA_SKB_CSUMNOTREADY | NFQA_SKB_GSO) == NFQA_SKB_CSUMNOTREADY


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


# int recvmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags, struct timespec *t);
# called with ints, a byref() and None, which ctypes passes as they are (no argtypes: each
# call would convert its arguments, a third of its cost)
_recvmmsg = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).recvmmsg


def queue_stats(num: int) -> dict[str, int] | None:
    """Queue `num`'s line of /proc/net/netfilter/nfnetlink_queue (this network namespace):
    portid, waiting, copy_mode, copy_range, queue_dropped (the queue was full),
    user_dropped (the socket buffer was full), id_sequence (packets queued so far); None if
    nothing binds it.  With FAIL_OPEN an overrun is accepted instead and counted nowhere."""
    names = ("queue", "portid", "waiting", "copy_mode", "copy_range", "queue_dropped",
             "user_dropped", "id_sequence")
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as f:
            lines = [line.split() for line in f]
    except OSError:
        return None
    for fields in lines:
        if fields and int(fields[0]) == num:
            return dict(zip(names, map(int, fields)))
    return None


def _cap_net_admin() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 12 & 1)      # CAP_NET_ADMIN is 12
    return os.geteuid() == 0


def _refused(num: int, err: int) -> str:
    """The one line for a configuration request the kernel refused."""
    if err == errno.EPERM:
        if not _cap_net_admin():
            return f"NFQUEUE queue {num}: binding a queue needs root (CAP_NET_ADMIN)"
        owner = queue_stats(num)
        port = f" by netlink port {owner['portid']}" if owner else ""
        return f"NFQUEUE queue {num} is already bound{port} (another program holds it)"
    if err == errno.EINVAL:
        return (f"NFQUEUE queue {num}: this kernel has no NFQUEUE "
                "(CONFIG_NETFILTER_NETLINK_QUEUE)")
    if err == errno.EOPNOTSUPP:
        return (f"NFQUEUE queue {num}: this kernel lacks a queue flag asked for "
                "(FAIL_OPEN needs 3.6, GSO 3.10)")
    return f"NFQUEUE queue {num}: {os.strerror(err)}"


class Queue:
    """A bound NFQUEUE queue.

    maxlen      packets the kernel holds for us (NFQA_CFG_QUEUE_MAXLEN; its default 1024)
    copy_range  bytes of each packet copied to us (at most 65531, NFQNL_MAX_COPY_RANGE)
    fail_open   NFQA_CFG_F_FAIL_OPEN: accept, not drop, what does not fit in the queue or
                the socket buffer
    gso         NFQA_CFG_F_GSO: hand GSO packets over whole (up to 64 KiB) instead of
                segmenting them first, and leave partial checksums partial (see Packet)
    rcvbuf      the socket's receive buffer (SO_RCVBUFFORCE as root, past rmem_max)
    burst       packets per receive() at most
    head        copy at most this many bytes of each packet into its `payload` and leave
                the rest in the receive buffer (`Packet.rest`): a director that rewrites
                headers never copies a 64 KiB GSO packet's data in Python (None: whole)
    """

    def __init__(self, num: int = 0, *, maxlen: int = 4096, copy_range: int = MAX_COPY_RANGE,
                 fail_open: bool = True, gso: bool = True, rcvbuf: int = 32 << 20,
                 burst: int = 64, head: int | None = None) -> None:
        if not 0 <= num <= 0xFFFF:
            raise NfqueueError(f"NFQUEUE queue {num}: the number must be 0..65535")
        self.num = num
        self.burst = burst
        self.head = MAX_COPY_RANGE if head is None else max(head, 1)
        self._res = _htons(num)                # nfgenmsg's res_id, big-endian
        self.copy_range = min(copy_range, MAX_COPY_RANGE)
        self.received = 0                      # packets so far
        self.verdicts = 0                      # NFQNL_MSG_VERDICT messages sent
        self.batches = 0                       # NFQNL_MSG_VERDICT_BATCH messages sent
        self.sends = 0                         # sendmsg calls
        self.errors: dict[int, int] = {}       # errno -> count, for verdicts refused
        self._parts: list[bytes | memoryview] = []     # verdict messages not sent yet
        self._pending = 0                      # their bytes
        self._run_id = -1                      # a run of plain accepts: its last id ...
        self._run_mark: int | None = None      # ... and the mark they all get
        self._early: list[bytes] = []          # packets that came while we were binding
        self._timeout: float | None = -1.0     # SO_RCVTIMEO as last set (-1: never)
        self._layouts: dict[int, list[tuple]] = {}     # hook -> packet layouts seen (_parse)
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise NfqueueError(f"NFQUEUE: no netfilter netlink socket ({exc.strerror}): "
                               "the kernel needs CONFIG_NETFILTER_NETLINK") from None
        try:
            self._setup_socket(rcvbuf)
            self._setup_buffers()
            flags = (NFQA_CFG_F_FAIL_OPEN if fail_open else 0) | (NFQA_CFG_F_GSO if gso else 0)
            self._configure(NFQNL_CFG_CMD_BIND, maxlen, flags)
        except BaseException:
            self.sock.close()
            raise

    # ------------------------------------------------------------------ set-up
    def _setup_socket(self, rcvbuf: int) -> None:
        s = self.sock
        for opt, force, size in ((socket.SO_RCVBUF, SO_RCVBUFFORCE, rcvbuf),
                                 (socket.SO_SNDBUF, SO_SNDBUFFORCE, 2 * SEND_LIMIT)):
            try:
                s.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:
                s.setsockopt(socket.SOL_SOCKET, opt, size)
        s.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        s.bind((0, 0))                                  # the kernel picks our port id
        self._fd = s.fileno()

    def _setup_buffers(self) -> None:
        """recvmmsg's vector: `burst` slots in one buffer, each the largest message."""
        self._slot = slot = (self.copy_range + SLOT_HEADROOM + 7) & ~7
        self._buf = bytearray(slot * self.burst)
        self._view = memoryview(self._buf)
        self._words = self._view.cast("H")             # attribute headers, for _parse
        self._dwords = self._view.cast("I")            # each slot's nlmsg_len
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._buf))
        self._iov = (_Iovec * self.burst)()
        self._mm = (_Mmsghdr * self.burst)()
        for i in range(self.burst):
            self._iov[i].base = base + i * slot
            self._iov[i].len = slot
            self._mm[i].hdr.iov = ctypes.pointer(self._iov[i])
            self._mm[i].hdr.iovlen = 1
        self._mm_ref = ctypes.byref(self._mm)

    def set_gso(self, on: bool) -> None:
        """GSO on or off for a bound queue (a tunnel realserver needs it off: an IPIP
        packet returned as bytes cannot be segmented again)."""
        self._configure(0, flags=NFQA_CFG_F_GSO if on else 0, mask=NFQA_CFG_F_GSO)

    def _configure(self, cmd: int, maxlen: int = 0, flags: int = 0, mask: int = 0) -> None:
        """One NFQNL_MSG_CONFIG: for BIND the command, the copy mode, the queue length and
        the flags together.  The kernel checks the flags before it binds, so a refusal
        leaves nothing bound.  (PF_BIND/PF_UNBIND are not sent: kernels since 3.8 ignore
        them, and on older ones PF_UNBIND would cut every other queue user off.)"""
        attrs = [_NLA.pack(8, NFQA_CFG_CMD) + struct.pack(">BBH", cmd, 0, 0)] if cmd else [
            _NLA.pack(8, NFQA_CFG_MASK) + _BE32.pack(mask),
            _NLA.pack(8, NFQA_CFG_FLAGS) + _BE32.pack(flags)]
        if cmd == NFQNL_CFG_CMD_BIND:
            attrs += [_NLA.pack(9, NFQA_CFG_PARAMS)
                      + struct.pack(">IB3x", self.copy_range, NFQNL_COPY_PACKET),
                      _NLA.pack(8, NFQA_CFG_QUEUE_MAXLEN) + _BE32.pack(maxlen),
                      _NLA.pack(8, NFQA_CFG_MASK)
                      + _BE32.pack(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO),
                      _NLA.pack(8, NFQA_CFG_FLAGS) + _BE32.pack(flags)]
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, _htons(self.num)) + b"".join(attrs)
        seq = int.from_bytes(os.urandom(4), "little") | 1
        self.sock.send(_NLMSG.pack(16 + len(body), NFQNL_MSG_CONFIG,
                                   NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
        err = self._wait_ack(seq)
        if err:
            raise NfqueueError(_refused(self.num, err) if cmd == NFQNL_CFG_CMD_BIND
                               else f"NFQUEUE queue {self.num}: {os.strerror(err)}")

    def _wait_ack(self, seq: int) -> int:
        """The errno in our request's NLMSG_ERROR (0: done).  Packets queued meanwhile
        are kept for the first receive()."""
        self.sock.settimeout(5)
        try:
            while True:
                try:
                    msg = self.sock.recv(self._slot)
                except TimeoutError:
                    raise NfqueueError(f"NFQUEUE queue {self.num}: the kernel did not "
                                       "answer the configuration request") from None
                _, mtype, _, mseq, _ = _NLMSG.unpack_from(msg)
                if mtype == NLMSG_ERROR and mseq == seq:
                    return -_ERR.unpack_from(msg, 16)[0]
                if mtype == NFQNL_MSG_PACKET:
                    self._early.append(msg)
        finally:
            self.sock.setblocking(True)                 # receive() says when not to wait

    # ------------------------------------------------------------------ packets
    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, timeout: float | None = 0.0) -> list[Packet]:
        """The packets queued now, up to `burst`, in id order, with one recvmmsg.
        `timeout` 0 (the default) never waits: [] if none, for a loop that waits on
        fileno() with selectors; None waits for the first packet; t > 0 up to t seconds
        (SO_RCVTIMEO), [] if none came.  SO_RCVTIMEO is changed only when t differs from
        the wait set by more than TIMEOUT_SLACK, so a busy loop whose wait shrinks by
        microseconds makes no extra system call (the wait ends at most that much late).
        After a full burst more may be waiting."""
        if self._early:
            early, self._early = self._early, []
            self.received += len(early)
            return [_parse_message(msg) for msg in early]
        if self._parts:
            self._send()                # they may point into the buffer about to be reused
        if timeout is not None and timeout <= 0:
            flags = MSG_DONTWAIT
        else:
            flags = MSG_WAITFORONE
            last = self._timeout
            if timeout != last and (timeout is None or last is None
                                    or abs(timeout - last) > TIMEOUT_SLACK):
                self._set_timeout(timeout)
        n = _recvmmsg(self._fd, self._mm_ref, self.burst, flags, None)
        if n <= 0:
            err = ctypes.get_errno()
            if n < 0 and err not in (errno.EAGAIN, errno.EINTR):
                raise NfqueueError(f"NFQUEUE queue {self.num}: recvmmsg: {os.strerror(err)}")
            return []
        buf, view, words, dwords = self._buf, self._view, self._words, self._dwords
        layouts, head = self._layouts, self.head
        out = []
        for off in range(0, n * self._slot, self._slot):
            mtype = words[(off >> 1) + 2]
            if mtype == NFQNL_MSG_PACKET:
                out.append(_parse(buf, view, words, off, off + dwords[off >> 2], layouts,
                                  head))
            elif mtype == NLMSG_ERROR:              # a verdict the kernel refused
                err = -_ERR.unpack_from(buf, off + 16)[0]
                self.errors[err] = self.errors.get(err, 0) + 1
        self.received += len(out)
        return out

    def _set_timeout(self, timeout: float | None) -> None:
        sec, usec = 0, 0                                # 0: no limit
        if timeout is not None:
            sec = int(timeout)
            usec = max(int((timeout - sec) * 1e6), 0 if sec else 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("@ll", sec, usec))
        self._timeout = timeout

    # ------------------------------------------------------------------ verdicts
    def verdict(self, packet_id: int, verdict: int = ACCEPT, mark: int | None = None,
                payload: bytes | None = None, rest: bytes | memoryview = b"") -> None:
        """Queue a verdict for flush(): ACCEPT or DROP; `mark` sets the packet's mark,
        `payload` replaces the packet, followed by `rest` (a packet's unchanged tail,
        `Packet.rest`: sent from where it lies, not copied).  A payload over 65531 bytes
        cannot be carried (nla_len is 16 bits): the packet is dropped, as the kernel drops
        one it cannot mangle, and counted in `errors` under EMSGSIZE."""
        if payload is not None and len(payload) + len(rest) > MAX_COPY_RANGE:
            self.errors[errno.EMSGSIZE] = self.errors.get(errno.EMSGSIZE, 0) + 1
            verdict, payload = DROP, None
        if payload is None and verdict == ACCEPT:
            if self._run_id >= 0 and mark == self._run_mark:
                self._run_id = packet_id
                return
            self._end_run()
            self._run_id, self._run_mark = packet_id, mark
            return
        if self._run_id >= 0:
            self._end_run()
        self.verdicts += 1
        res, i = self._res, _htonl(packet_id)
        v = _ACCEPT_BE if verdict == ACCEPT else _htonl(verdict)
        if payload is None:
            if mark is None:
                self._parts.append(_VERDICT.pack(32, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, 0,
                                                 0, 0, res, 12, NFQA_VERDICT_HDR, v, i))
            else:
                self._parts.append(_VERDICT_MARK.pack(
                    40, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, 0, 0, 0, res, 12,
                    NFQA_VERDICT_HDR, v, i, 8, NFQA_MARK, _htonl(mark)))
            self._pending += 40
            if len(self._parts) >= IOV_LIMIT:
                self._send()
            return
        n = len(payload) + len(rest)
        pad = _PADS[n & 3]
        if mark is None:
            head = _VERDICT_DATA.pack(36 + n + len(pad), NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0,
                                      0, 0, 0, res, 12, NFQA_VERDICT_HDR, v, i, 4 + n,
                                      NFQA_PAYLOAD)
        else:
            head = _VERDICT_MARK_DATA.pack(44 + n + len(pad), NFQNL_MSG_VERDICT,
                                           NLM_F_REQUEST, 0, 0, 0, 0, res, 12,
                                           NFQA_VERDICT_HDR, v, i, 8, NFQA_MARK,
                                           _htonl(mark), 4 + n, NFQA_PAYLOAD)
        parts = self._parts
        parts.append(head)
        parts.append(payload)
        if rest:
            parts.append(rest)
        if pad:
            parts.append(pad)
        self._pending += 48 + n
        if self._pending >= SEND_LIMIT or len(parts) >= IOV_LIMIT:
            self._send()

    def accept(self, packet_id: int, mark: int | None = None,
               payload: bytes | None = None, rest: bytes | memoryview = b"") -> None:
        self.verdict(packet_id, ACCEPT, mark, payload, rest)

    def drop(self, packet_id: int) -> None:
        self.verdict(packet_id, DROP)

    def _end_run(self) -> None:
        """The run of plain accepts as one NFQNL_MSG_VERDICT_BATCH: every packet still
        queued with an id up to the run's last, and only those, since every earlier one
        already has its verdict in the buffer."""
        if self._run_id < 0:
            return
        res, v, i = self._res, _ACCEPT_BE, _htonl(self._run_id)
        if self._run_mark is None:
            self._parts.append(_VERDICT.pack(32, NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, 0, 0,
                                             0, 0, res, 12, NFQA_VERDICT_HDR, v, i))
        else:
            self._parts.append(_VERDICT_MARK.pack(
                40, NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, 0, 0, 0, 0, res, 12,
                NFQA_VERDICT_HDR, v, i, 8, NFQA_MARK, _htonl(self._run_mark)))
        self._pending += 40
        self.batches += 1
        self._run_id = -1
        if len(self._parts) >= IOV_LIMIT:
            self._send()

    def flush(self) -> None:
        """Send every verdict queued so far (one sendmsg per SEND_LIMIT bytes)."""
        self._end_run()
        if self._parts:
            self._send()

    def _send(self) -> None:
        """One sendmsg of whole messages (each is one skb for nfnetlink_rcv, which
        processes its messages in order)."""
        parts, self._parts, self._pending = self._parts, [], 0
        self.sends += 1
        try:
            if len(parts) == 1:
                self.sock.send(parts[0])                # cheaper than sendmsg's iovec
            else:
                self.sock.sendmsg(parts)
        except OSError as exc:
            # the kernel would hold the packets of lost verdicts until the queue goes
            raise NfqueueError(f"NFQUEUE queue {self.num}: sending verdicts: "
                               f"{exc.strerror}") from None

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Send what is pending, unbind, close.  The kernel drops what is still queued.
        A process that dies unbinds too: closing the socket releases its port, and the
        kernel destroys the queues bound to it (NETLINK_URELEASE)."""
        if self.sock.fileno() < 0:
            return
        try:
            self.flush()
            self._configure(NFQNL_CFG_CMD_UNBIND)
        except NfqueueError:
            pass                                        # closing unbinds all the same
        finally:
            self.sock.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(buf: bytearray, view: memoryview, words: memoryview, off: int, end: int,
           layouts: dict[int, list[tuple]], head: int) -> Packet:
    """The NFQNL_MSG_PACKET at buf[off:end] (`view` is buf, `words` buf as native 16-bit
    words; `off` is a multiple of 4).  It runs for every packet, so it is written for
    speed: the messages of one hook mostly share a layout (which attributes, so where
    each one is), and one Struct reads a known layout at once (see _learn); only a new
    layout is walked attribute by attribute."""
    packet_id, _, hook = _PKT_HDR.unpack_from(buf, off + 24)
    for st, types, at, im, ii, io, inf, icap in layouts.get(hook, ()):
        r = st.unpack_from(buf, off + 32)
        if r[1::3] == types and words[(off + at) >> 1] == end - off - at:
            r += _ABSENT
            start = off + at + 4
            if end - start <= head:
                return _new(Packet, (packet_id, hook, r[im], view[start:end].tobytes(), r[ii],
                                     r[io], r[inf], r[icap] or end - start, b""))
            return _new(Packet, (packet_id, hook, r[im], view[start:start + head].tobytes(),
                                 r[ii], r[io], r[inf], r[icap] or end - start,
                                 view[start + head:end]))
    layout = _learn(buf, words, off, end)
    if layout is not None:
        known = layouts.setdefault(hook, [])
        known.insert(0, layout)
        del known[3:]                       # a hook rarely has more (a mark, a timestamp)
    return _walk(buf, view, words, packet_id, hook, off, end, head)


_ABSENT = (0,)                              # index -1 of a layout's values: not there
_VALUE_AT = {NFQA_MARK: 0, NFQA_IFINDEX_INDEV: 1, NFQA_IFINDEX_OUTDEV: 2, NFQA_SKB_INFO: 3,
             NFQA_CAP_LEN: 4}


def _learn(buf: bytearray, words: memoryview, off: int, end: int) -> tuple | None:
    """This message's layout: a big-endian Struct over its attributes up to NFQA_PAYLOAD's
    header, three fields per attribute (length, type, its first 4 bytes), the types as
    that Struct reads them (the native-order headers come out byte-swapped, and are
    compared so), the payload header's offset, and where mark, indev, outdev, skb info and
    cap_len are in the Struct's result (-1: absent).  None if the layout does not fit."""
    fmt, where = ">", [-1] * 5
    pos, i = off + 32, 0
    while pos < end:
        alen, atype = words[pos >> 1], words[(pos >> 1) + 1] & 0x3FFF
        if atype == NFQA_PAYLOAD:
            st = struct.Struct(fmt + "HH")
            return (st, st.unpack_from(buf, off + 32)[1::3], pos - off, *where)
        size = (alen + 3) & ~3
        if size < 8:
            return None
        fmt += "HHI" + ("%dx" % (size - 8) if size > 8 else "")
        if atype in _VALUE_AT and alen == 8:
            where[_VALUE_AT[atype]] = 3 * i + 2
        pos += size
        i += 1
    return None


def _walk(buf: bytearray, view: memoryview, words: memoryview, packet_id: int, hook: int,
          off: int, end: int, head: int = MAX_COPY_RANGE) -> Packet:
    """A packet message read attribute by attribute.  nfqnl_build_packet_message puts
    NFQA_PACKET_HDR first and NFQA_PAYLOAD last; the others come only when they apply (a
    mark only if one is set, a timestamp only if the packet has one)."""
    mark = indev = outdev = info = cap_len = 0
    payload = b""
    rest: bytes | memoryview = b""
    be32 = _BE32.unpack_from
    pos = off + 32
    while pos < end:
        w = pos >> 1
        atype = words[w + 1] & 0x3FFF                   # without NLA_F_NESTED/BYTEORDER
        if atype == NFQA_PAYLOAD:
            start, stop = pos + 4, pos + words[w]
            payload = view[start:min(stop, start + head)].tobytes()
            if stop - start > head:
                rest = view[start + head:stop]
            break
        if atype == NFQA_IFINDEX_INDEV:
            indev = be32(buf, pos + 4)[0]
        elif atype == NFQA_IFINDEX_OUTDEV:
            outdev = be32(buf, pos + 4)[0]
        elif atype == NFQA_MARK:
            mark = be32(buf, pos + 4)[0]
        elif atype == NFQA_SKB_INFO:
            info = be32(buf, pos + 4)[0]
        elif atype == NFQA_CAP_LEN:
            cap_len = be32(buf, pos + 4)[0]
        pos += (words[w] + 3) & ~3
    return _new(Packet, (packet_id, hook, mark, payload, indev, outdev, info,
                         cap_len or len(payload) + len(rest), rest))


_new = tuple.__new__                                    # Packet(...) without its __new__


def _parse_message(msg: bytes) -> Packet:
    """_parse for one message on its own (one that came during a configuration)."""
    buf = bytearray(msg) + _PADS[len(msg) & 3]
    view = memoryview(buf)
    packet_id, _, hook = _PKT_HDR.unpack_from(buf, 24)
    return _walk(buf, view, view.cast("H"), packet_id, hook, 0, len(msg))


def finish_checksum(packet: bytes) -> bytes:
    """The IPv4 packet with its TCP or UDP checksum computed in full over the pseudo-header
    and the segment; for an IPIP packet (LVS-TUN's), the inner packet's.  For changed
    copies of packets that came `needs_checksum`: their field holds a partial sum, which no
    incremental update turns into a complete one.

    The one's-complement sum of 16-bit words is the bytes' value as one number modulo
    0xFFFF (2**16 = 1 mod 0xFFFF), so int.from_bytes does the summing in C."""
    start = 0
    if packet[9] == 4 and len(packet) >= 40:                       # IPPROTO_IPIP
        start = (packet[0] & 15) << 2
    ihl = (packet[start] & 15) << 2
    proto = packet[start + 9]
    if proto != 6 and proto != 17:
        return packet
    end = start + ((packet[start + 2] << 8) | packet[start + 3])
    l4 = start + ihl
    at = l4 + 16 if proto == 6 else l4 + 6                         # the checksum field
    if at + 2 > end or end > len(packet):
        return packet
    odd = 8 * ((end - l4) & 1)            # an odd segment is summed with a zero byte after it
    # the addresses and the segment, old field included (taken out again below); where the
    # bytes sit in the number does not matter as long as each 16-bit word stays whole
    if ihl == 20:
        total = int.from_bytes(packet[start + 12:end], "big") << odd
    else:
        total = (int.from_bytes(packet[start + 12:start + 20], "big")
                 + (int.from_bytes(packet[l4:end], "big") << odd))
    total += proto + end - l4 - ((packet[at] << 8) | packet[at + 1])
    check = -total % 0xFFFF
    if check == 0 and proto == 17:
        check = 0xFFFF                                             # RFC 768: 0 is "none"
    return b"%b%b%b" % (packet[:at], check.to_bytes(2, "big"), packet[at + 2:])
