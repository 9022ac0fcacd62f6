"""The sync daemons' sockets: real UDP multicast between directors, around the sans-I/O
SyncMaster and SyncBackup (pyvs.core.sync) that Director.apply starts and stops.

The sockets are made as ``make_send_sock()`` and ``make_receive_sock()`` in
net/netfilter/ipvs/ip_vs_sync.c make them:

  master, one per thread i   IP_MULTICAST_IF the interface, IP_MULTICAST_LOOP 0,
                             IP_MULTICAST_TTL, IP_MTU_DISCOVER DONT (fragments if the
                             MTU changes), SO_SNDBUF = sync_sock_size if set, bound to
                             the interface's address (its source address on the wire),
                             connected to group:port+i
  backup, one per thread i   SO_REUSEADDR, SO_RCVBUF = sync_sock_size if set, bound to
                             the interface (SO_BINDTODEVICE) and to group:port+i, the
                             group joined on the interface

Nothing filters a director's own datagrams: with multicast loop off its master's never
reach its own backup (a director may run both, for failback), and the other director's
arrive.  The driver sleeps until the master's next wake-up (SyncMaster.next_timer(), on
the director's loop); the backup's sockets are read when the selector says so.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core.engine import Director
from ..core.packet import int_to_ip
from ..core.sync import SyncBackup, SyncMaster

log = logging.getLogger("pyvs")
SIOCGIFADDR = 0x8915
SIOCGIFMTU = 0x8921
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
RECV_SIZE = 65535           # whatever arrives; SyncBackup cuts it to its receive buffer


def _ifreq(sock: socket.socket, request: int, name: str) -> bytes:
    return fcntl.ioctl(sock, request, struct.pack("16s16x", name.encode()))


def links() -> dict[str, int]:
    """This network namespace's interfaces and their MTUs (what start_sync_thread()
    looks up with __dev_get_by_name())."""
    out: dict[str, int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                out[name] = struct.unpack_from("i", _ifreq(s, SIOCGIFMTU, name), 16)[0]
            except OSError:
                continue
    return out


def interface_address(name: str) -> str:
    """The interface's primary IPv4 address, as inet_select_addr() picks it; 0.0.0.0 if
    it has none (the kernel then binds that, saying 'You probably need to specify IP
    address on multicast interface')."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return socket.inet_ntoa(_ifreq(s, SIOCGIFADDR, name)[20:24])
        except OSError:
            log.warning("sync: %s has no IPv4 address; the master sends from 0.0.0.0", name)
            return "0.0.0.0"


def _mreqn(group: str, ifindex: int) -> bytes:
    """struct ip_mreqn: multicast address, local address (any), interface index."""
    return socket.inet_aton(group) + bytes(4) + struct.pack("i", ifindex)


def send_socket(ifname: str, group: str, port: int, ttl: int, sock_size: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                     _mreqn("0.0.0.0", socket.if_nametoindex(ifname)))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        if sock_size > 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sock_size)
        s.bind((interface_address(ifname), 0))
        s.connect((group, port))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def receive_socket(ifname: str, group: str, port: int, sock_size: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock_size > 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sock_size)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.bind((group, port))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     _mreqn(group, socket.if_nametoindex(ifname)))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class SyncSockets:
    """The sockets of one director's daemons, on its loop (pyvs.drivers.loop)."""

    def __init__(self, director: Director, loop: Any, clock: Callable[[], float]) -> None:
        self.director = director
        self.loop = loop
        self.clock = clock
        self.master: SyncMaster | None = None        # the daemons the sockets are for
        self.backup: SyncBackup | None = None
        self.sending: list[socket.socket] = []
        self.receiving: list[socket.socket] = []
        self.errors = {"master": 0, "backup": 0}     # sends / receives that failed
        self.waiting: dict[int, deque[bytes]] = {}   # a full socket's datagrams, by thread
        self.owns: Callable[[int], bool] | None = None   # a worker's clients (SyncBackup)

    def follow(self) -> None:
        """Open or close sockets so that they match the director's daemons (after a
        control-plane change).  OSError if a socket cannot be made: the caller stops
        the daemon again, as start_sync_thread() fails then."""
        d = self.director
        if d.sync_master is not self.master:
            self._close(self.sending)
            self.waiting.clear()
            self.master = d.sync_master
            if self.master is not None:
                self.sending = self._open(self.master, True)
        if d.sync_backup is not self.backup:
            self._close(self.receiving)
            self.backup = d.sync_backup
            if self.backup is not None:
                self.backup.owns = self.owns
                self.receiving = self._open(self.backup, False)
                for s in self.receiving:
                    self.loop.add_reader(s, lambda s=s: self._read(s))

    def _open(self, daemon: SyncMaster | SyncBackup, sending: bool) -> list[socket.socket]:
        c = daemon.config
        assert c is not None
        group, size = int_to_ip(c.mcast_group), self.director.sysctls.sync_sock_size
        out: list[socket.socket] = []
        try:
            for i in range(c.threads):
                out.append(send_socket(c.mcast_ifn, group, c.mcast_port + i, c.mcast_ttl, size)
                           if sending else receive_socket(c.mcast_ifn, group,
                                                          c.mcast_port + i, size))
        except OSError:
            self._close(out)
            if sending:
                self.master = None
            else:
                self.backup = None
            raise
        log.info("sync: %s daemon on %s, syncid %d, %s:%d%s", c.state, c.mcast_ifn,
                 c.syncid, group, c.mcast_port,
                 f"-{c.mcast_port + c.threads - 1}" if c.threads > 1 else "")
        return out

    def _close(self, socks: list[socket.socket]) -> None:
        for s in socks:
            self.loop.remove(s)
            s.close()
        socks.clear()

    def next_timer(self) -> float | None:
        """When the master next has datagrams to send (None: nothing waits)."""
        return self.master.next_timer() if self.master is not None else None

    def send_due(self, now: float) -> None:
        """Send what the master's thread sends by `now`, each on its thread's socket."""
        if self.master is None:
            return
        for thread, datagram in self.master.due(now):
            waiting = self.waiting.get(thread)
            if waiting is not None:
                waiting.append(datagram)
            else:
                self._send(thread, datagram)

    def _send(self, thread: int, datagram: bytes) -> bool:
        """ip_vs_send_sync_msg(): False if the socket is full.  Then, as the kernel's
        thread waits until the socket is writable and sends the same message again, the
        thread's datagrams wait, in order, for the selector; any other error loses the
        message (the kernel logs "ip_vs_send_async error")."""
        sock = self.sending[thread]
        try:
            sock.send(datagram)
        except BlockingIOError:
            if thread not in self.waiting:
                self.waiting[thread] = deque()
                self.loop.watch(sock, None, lambda: self._writable(thread))
                if self.master is not None:     # the thread stops dequeuing meanwhile
                    self.master.block(thread, True, self.clock())
            self.waiting[thread].appendleft(datagram)
            return False
        except OSError as exc:
            self.errors["master"] += 1
            log.debug("sync: send failed: %s", exc)
        return True

    def _writable(self, thread: int) -> None:
        waiting = self.waiting.pop(thread)
        self.loop.watch(self.sending[thread], None, None)
        while waiting:
            if not self._send(thread, waiting.popleft()):
                self.waiting[thread].extend(waiting)
                return
        if self.master is not None:
            self.master.block(thread, False, self.clock())

    def _read(self, s: socket.socket) -> None:
        backup = self.backup
        while backup is not None:
            try:
                datagram = s.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.errors["backup"] += 1
                log.debug("sync: receive failed: %s", exc)
                return
            backup.receive(datagram, self.clock())

    def annotate(self, snap: dict[str, Any]) -> None:
        """Add the sockets' failures to a snapshot's daemon counters."""
        for d in snap.get("daemons", []):
            key = "send-error" if d["state"] == "master" else "receive-error"
            d.setdefault("counters", {})[key] = self.errors[d["state"]]

    def close(self) -> None:
        self.waiting.clear()
        self._close(self.sending)
        self._close(self.receiving)
        self.master = self.backup = None
