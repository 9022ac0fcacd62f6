"""pyvs's NFQUEUE binding against the kernel: three namespaces of this test's own (client,
router, server, joined by veth pairs), real iptables -j NFQUEUE rules in the router, real
UDP and TCP peers.  The binding's socket is opened inside the router namespace (setns), so
the test process itself holds the queue and sees every packet and verdict.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from pyvs.core.engine import IN, OUT, Director
from pyvs.core.packet import ip_to_int
from pyvs.core.service import MASQ
from pyvs.drivers.nfqueue import (
    NF_INET_POST_ROUTING,
    NfqueueError,
    Packet,
    Queue,
    finish_checksum,
    queue_stats,
)

LAB = os.environ.get("PYVS_LAB", "pyvs")
NS = {role: f"{LAB}-nfq-{role}" for role in ("c", "r", "s")}
CLIENT, GW_C, VIP = "198.51.100.2", "198.51.100.1", "198.51.100.100"
SERVER, GW_S = "192.0.2.11", "192.0.2.1"
CLONE_NEWNET = 0x40000000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, NFQUEUE)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


live = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


@contextmanager
def inside(role: str) -> Iterator[None]:
    """Run the block in a namespace: sockets opened there stay there."""
    here = open("/proc/thread-self/ns/net")
    there = open(f"/run/netns/{NS[role]}")
    try:
        if _libc.setns(there.fileno(), CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns")
        try:
            yield
        finally:
            _libc.setns(here.fileno(), CLONE_NEWNET)
    finally:
        here.close()
        there.close()


def _down() -> None:
    for name in NS.values():
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def net() -> Iterator[None]:
    """client eth0 --- eth0 router eth1 --- eth0 server; the VIP on the router's eth0."""
    _down()
    try:
        for name in NS.values():
            sh("ip", "netns", "add", name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        sh("ip", "link", "add", "eth0", "netns", NS["c"], "type", "veth", "peer", "name",
           "eth0", "netns", NS["r"])
        sh("ip", "link", "add", "eth1", "netns", NS["r"], "type", "veth", "peer", "name",
           "eth0", "netns", NS["s"])
        for role, dev, addr in (("c", "eth0", CLIENT), ("r", "eth0", GW_C), ("r", "eth0", VIP),
                                ("r", "eth1", GW_S), ("s", "eth0", SERVER)):
            plen = 32 if addr == VIP else 24
            sh("ip", "addr", "add", f"{addr}/{plen}", "dev", dev, ns=NS[role])
            sh("ip", "link", "set", dev, "up", ns=NS[role])
        sh("ip", "route", "add", "default", "via", GW_C, ns=NS["c"])
        sh("ip", "route", "add", "default", "via", GW_S, ns=NS["s"])
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=NS["r"])
        yield
    finally:
        _down()


@pytest.fixture
def rules(net) -> Iterator[Callable[..., None]]:
    """Add iptables rules in the router; all are flushed after the test."""
    def add(table: str, *rule: str) -> None:
        sh("iptables", "-t", table, "-A", *rule, ns=NS["r"])
    yield add
    for table in ("mangle", "filter"):
        sh("iptables", "-t", table, "-F", ns=NS["r"])


def counter(table: str, chain: str) -> list[int]:
    """Packet counts of a chain's rules, in order."""
    out = sh("iptables", "-t", table, "-L", chain, "-v", "-x", "-n", ns=NS["r"])
    return [int(line.split()[0]) for line in out.splitlines()[2:]]


class Loop(threading.Thread):
    """Serve a queue: wait up to 20 ms for a burst, each packet to `handle(queue,
    packet)`, then one flush."""

    def __init__(self, q: Queue, handle: Callable[[Queue, Packet], None]) -> None:
        super().__init__(daemon=True)
        self.q, self.handle = q, handle
        self.seen: list[Packet] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for p in self.q.receive(0.02):
                self.seen.append(p)
                self.handle(self.q, p)
            self.q.flush()

    def __enter__(self) -> Loop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(5)


def udp_pair(port: int) -> tuple[socket.socket, socket.socket]:
    with inside("s"):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind((SERVER, port))
        server.settimeout(0.5)
    with inside("c"):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sender, server


def received(server: socket.socket) -> list[bytes]:
    got = []
    try:
        while True:
            got.append(server.recv(2048))
    except TimeoutError:
        return got


def udp_payload(p: Packet) -> bytes:
    return p.payload[28:]


def wait_for(cond: Callable[[], bool], seconds: float = 3.0) -> None:
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


# ---------------------------------------------------------------------- the tests
@live
def test_accept_and_drop(rules) -> None:
    rules("mangle", "PREROUTING", "-p", "udp", "-d", SERVER, "-j", "NFQUEUE", "--queue-num", "0")
    sender, server = udp_pair(5000)
    with inside("r"):
        q = Queue(0)
    with q, Loop(q, lambda q, p: q.drop(p.id) if b"drop" in p.payload else q.accept(p.id)) as loop:
        for i in range(6):
            sender.sendto(b"drop %d" % i if i % 3 == 1 else b"pass %d" % i, (SERVER, 5000))
        assert received(server) == [b"pass 0", b"pass 2", b"pass 3", b"pass 5"]
    assert [udp_payload(p) for p in loop.seen] == [b"pass 0", b"drop 1", b"pass 2", b"pass 3",
                                                   b"drop 4", b"pass 5"]
    first = loop.seen[0]         # read attribute by attribute; the others by its layout
    assert first.indev > 0
    assert {(p.hook, p.mark, p.indev, p.outdev, p.cap_len, len(p.payload)) for p in loop.seen
            } == {(0, 0, first.indev, 0, 28 + 6, 28 + 6)}
    assert [p.id for p in loop.seen] == list(range(first.id, first.id + 6))


@live
def test_marks_in_and_out(rules) -> None:
    """The mark a packet came with, and the one a verdict gives it (seen in FORWARD)."""
    rules("mangle", "PREROUTING", "-p", "udp", "-d", SERVER, "-j", "MARK", "--set-mark", "5")
    rules("mangle", "PREROUTING", "-p", "udp", "-d", SERVER, "-j", "NFQUEUE", "--queue-num", "0")
    rules("filter", "FORWARD", "-m", "mark", "--mark", "5")
    rules("filter", "FORWARD", "-m", "mark", "--mark", "7")
    sender, server = udp_pair(5001)
    with inside("r"):
        q = Queue(0)
    with q, Loop(q, lambda q, p: q.accept(p.id, 7 if b"seven" in p.payload else None)) as loop:
        for word in (b"seven", b"five", b"seven", b"seven", b"five"):
            sender.sendto(word, (SERVER, 5001))
        assert len(received(server)) == 5
    assert {p.mark for p in loop.seen} == {5}
    assert counter("filter", "FORWARD") == [2, 3]


@live
def test_mixed_verdicts_go_out_in_one_sendmsg_in_order(rules) -> None:
    """30 packets waiting, then one burst: runs of plain accepts become VERDICT_BATCH
    messages, the rest single verdicts (drop, mark, new payload), all in one sendmsg;
    every packet meets its own fate."""
    rules("mangle", "PREROUTING", "-p", "udp", "-d", SERVER, "-j", "NFQUEUE", "--queue-num", "0")
    rules("filter", "FORWARD", "-m", "mark", "--mark", "7")
    sender, server = udp_pair(5002)
    with inside("r"):
        q = Queue(0, gso=False)
    with q:
        for i in range(30):
            sender.sendto(b"d%02d" % i, (SERVER, 5002))
        with inside("r"):
            wait_for(lambda: queue_stats(0)["waiting"] == 30)
        sel = selectors.DefaultSelector()
        sel.register(q, selectors.EVENT_READ)
        assert sel.select(0)                            # fileno() is readable
        burst = q.receive()
        assert len(burst) == 30 and q.receive() == [] and not sel.select(0)
        for i, p in enumerate(burst):
            if i == 10:
                q.drop(p.id)
            elif 11 <= i < 16:
                q.accept(p.id, mark=7)
            elif i == 20:
                data = p.payload.replace(b"d20", b"NEW")
                q.accept(p.id, payload=finish_checksum(data[:26] + b"\0\0" + data[28:]))
            else:
                q.accept(p.id)
        q.flush()
        assert (q.sends, q.batches, q.verdicts) == (1, 4, 2)   # batches: 0-9, 11-15 marked,
        with inside("r"):                                      # 16-19, 21-29
            assert queue_stats(0)["waiting"] == 0
    want = [b"d%02d" % i for i in range(30) if i != 10]
    want[19] = b"NEW"
    assert received(server) == want
    assert counter("filter", "FORWARD") == [5]


@live
def test_a_payload_too_big_to_carry_is_a_drop(rules) -> None:
    rules("mangle", "PREROUTING", "-p", "udp", "-d", SERVER, "-j", "NFQUEUE", "--queue-num", "0")
    sender, server = udp_pair(5004)
    with inside("r"):
        q = Queue(0)
    with q, Loop(q, lambda q, p: q.accept(p.id, payload=p.payload + bytes(65531))):
        sender.sendto(b"x", (SERVER, 5004))
        assert received(server) == []
    assert q.errors == {errno.EMSGSIZE: 1} and q.verdicts == 1


def nat_director(port: int) -> Director:
    d = Director()
    svc = d.add_service(6, ip_to_int(VIP), port, scheduler="rr")
    d.add_dest(svc, ip_to_int(SERVER), port, MASQ)
    return d


def serve_nat(d: Director) -> Callable[[Queue, Packet], None]:
    """The minimal NAT director: the engine's verdict applied to each packet."""
    def handle(q: Queue, p: Packet) -> None:
        v = d.receive(p.payload, time.monotonic(), OUT if p.hook == NF_INET_POST_ROUTING else IN,
                      p.mark)
        if v.action != "accept":
            q.drop(p.id)
        elif v.data is None:
            q.accept(p.id, v.mark or None)
        else:
            q.accept(p.id, payload=finish_checksum(v.data) if p.needs_checksum else v.data)
    return handle


def nat_rules(rules, port: int) -> None:
    rules("mangle", "PREROUTING", "-p", "tcp", "-d", VIP, "--dport", str(port), "-j", "NFQUEUE",
          "--queue-num", "0")
    rules("mangle", "POSTROUTING", "-p", "tcp", "-s", SERVER, "--sport", str(port), "-j",
          "NFQUEUE", "--queue-num", "0")


def tcp_server(port: int, handle: Callable[[socket.socket], None]) -> threading.Thread:
    with inside("s"):
        lsock = socket.create_server((SERVER, port))
    lsock.settimeout(5)

    def run() -> None:
        with lsock:
            conn, _ = lsock.accept()
            with conn:
                handle(conn)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@live
def test_nat_rewrite_by_the_engine(rules) -> None:
    """Client -> VIP rewritten to the server, the server's replies back to the VIP: the
    payload verdicts carry the engine's Masq packets (partial checksums finished)."""
    nat_rules(rules, 80)
    peers = []

    def echo(conn: socket.socket) -> None:
        peers.append(conn.getpeername())
        conn.sendall(conn.recv(100).upper())
    server = tcp_server(80, echo)
    d = nat_director(80)
    with inside("r"):
        q = Queue(0)
    with q, Loop(q, serve_nat(d)) as loop:
        with inside("c"):
            c = socket.create_connection((VIP, 80), 3)
        with c:
            c.sendall(b"hello through pyvs")
            assert c.recv(100) == b"HELLO THROUGH PYVS"
            me = c.getsockname()
        server.join(5)
    assert peers == [me]
    assert {p.hook for p in loop.seen} == {0, 4}
    assert any(p.needs_checksum for p in loop.seen)     # GSO queue: partial sums come in
    assert d.connection_count() == 1 and not d.drops
    assert "InCsumErrors 0" in nstat_csum("s")


def nstat_csum(role: str) -> str:
    lines = [line.split() for line in sh("cat", "/proc/net/snmp", ns=NS[role]).splitlines()
             if line.startswith("Tcp:")]
    return f"InCsumErrors {lines[1][lines[0].index('InCsumErrors')]}"


@live
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
def test_bulk_nat_transfer(rules, gso: bool) -> None:
    """4 MB through the NAT director.  With GSO the queue hands over packets larger than
    the MTU (up to 64 KiB), the engine rewrites them whole and the bytes arrive intact;
    without it every packet fits the 1500-byte MTU."""
    nat_rules(rules, 9)
    got = hashlib.sha256()

    def sink(conn: socket.socket) -> None:
        while chunk := conn.recv(1 << 16):
            got.update(chunk)
    server = tcp_server(9, sink)
    d = nat_director(9)
    data = os.urandom(4 << 20)
    with inside("r"):
        q = Queue(0, gso=gso)
    with q, Loop(q, serve_nat(d)) as loop:
        with inside("c"):
            c = socket.create_connection((VIP, 9), 3)
        with c:
            c.sendall(data)
        server.join(10)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()
    biggest = max(loop.seen, key=lambda p: len(p.payload))
    if gso:
        assert len(biggest.payload) > 1500 and biggest.gso and biggest.csum_not_ready
        assert biggest.cap_len == len(biggest.payload)
        assert (biggest.payload[2] << 8 | biggest.payload[3]) == len(biggest.payload)
    else:
        assert len(biggest.payload) == 1500 and not any(p.gso for p in loop.seen)
    assert not d.drops and not q.errors
    assert "InCsumErrors 0" in nstat_csum("s")


@live
@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
def test_a_full_queue_fails_open_or_drops(rules, fail_open: bool) -> None:
    """Nobody reads a queue of 4: the other 16 packets are accepted past it (FAIL_OPEN)
    or dropped and counted (queue_dropped)."""
    rules("mangle", "PREROUTING", "-p", "udp", "-d", SERVER, "-j", "NFQUEUE", "--queue-num", "0")
    sender, server = udp_pair(5003)
    with inside("r"):
        q = Queue(0, maxlen=4, fail_open=fail_open)
    with q:
        for i in range(20):
            sender.sendto(b"%d" % i, (SERVER, 5003))
        got = received(server)
        with inside("r"):
            stats = queue_stats(0)
    assert stats["waiting"] == 4
    if fail_open:
        assert got == [b"%d" % i for i in range(4, 20)] and stats["queue_dropped"] == 0
    else:
        assert got == [] and stats["queue_dropped"] == 16


HOLD = """import sys, time
sys.path.insert(0, sys.argv[1])
from pyvs.drivers.nfqueue import Queue
q = Queue(3)
print("bound", flush=True)
time.sleep(30)"""

AS_NOBODY = """import os, sys
sys.path.insert(0, sys.argv[1])
from pyvs.drivers.nfqueue import NfqueueError, Queue
os.setuid(65534)
try:
    Queue(4)
except NfqueueError as exc:
    print(exc)"""


@live
def test_a_killed_holder_leaves_nothing_bound(net) -> None:
    """Bound elsewhere: a one-line refusal.  SIGKILL the holder: the kernel unbinds its
    queue with its socket, and the queue can be bound again."""
    holder = subprocess.Popen(["ip", "netns", "exec", NS["r"], sys.executable, "-c", HOLD, ROOT],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "bound\n"
        with inside("r"):
            portid = queue_stats(3)["portid"]
            with pytest.raises(NfqueueError) as refused:
                Queue(3)
        assert str(refused.value) == (f"NFQUEUE queue 3 is already bound by netlink port "
                                      f"{portid} (another program holds it)")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with inside("r"):
        wait_for(lambda: queue_stats(3) is None)
        with Queue(3) as q:
            assert queue_stats(3)["portid"] != portid
            q.close()
        assert queue_stats(3) is None


@live
def test_binding_without_cap_net_admin_says_so(net) -> None:
    out = sh(sys.executable, "-c", AS_NOBODY, ROOT, ns=NS["r"])
    assert out == "NFQUEUE queue 4: binding a queue needs root (CAP_NET_ADMIN)\n"


# ---------------------------------------------------------------------- offline
@pytest.mark.parametrize("size", [0, 1, 2, 3, 61, 1400, 1401, 65000])
def test_finish_checksum_matches_a_full_computation(size: int) -> None:
    """Against scapy's checksums: TCP, UDP, IP options, odd lengths, IPIP's inner packet."""
    from scapy.all import IP, TCP, UDP, Raw, raw
    body = bytes((i * 7 + 3) & 0xFF for i in range(size))
    for l4, at in ((TCP(sport=1, dport=80, flags="PA"), 36), (UDP(sport=53, dport=9), 26)):
        for options in (b"", b"\x01\x01\x01\x00"):
            good = raw(IP(src="198.51.100.2", dst="192.0.2.11", options=options) / l4 / Raw(body))
            at2 = at + len(options)
            bad = good[:at2] + b"\x12\x34" + good[at2 + 2:]
            assert finish_checksum(bad) == good
            outer = raw(IP(src="203.0.113.1", dst="203.0.113.11", proto=4) / Raw(bad))
            assert finish_checksum(outer) == outer[:20] + good
