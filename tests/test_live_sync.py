"""A director pair in the namespace lab (`pyvs lab up --directors 2`): two `pyvs run`
directors with master and backup sync daemons on the client segment, real multicast
between them, a failover as keepalived's VRRP makes it (`pyvs lab failover`), a Linux TCP
client holding an idle connection through it.  With sync the backup director already has
the connection's entry and forwards its next packet to the same realserver; without it,
the new director has no entry, takes the packet (not a SYN, sloppy_tcp 0) as no
connection of its own, and its own stack, which now holds the VIP, answers it with a RST."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from pyvs.control import request
from pyvs.lab import netns
from tests.test_live import _missing

pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")

# the client: connect to the VIP's echo service, read the banner, then (on "go") send a
# line and report the echo or the error
HOLD = """
import socket, sys
s = socket.create_connection((sys.argv[1], 23), 5)
s.recv(100)
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
s.settimeout(5)
try:
    s.sendall(b"hello\\n")
    print("reply", s.recv(100).decode().strip(), flush=True)
except OSError as exc:
    print("error", type(exc).__name__, flush=True)
"""


@pytest.fixture
def pair(request):
    netns.down(out=open(os.devnull, "w"))
    state = netns.up(request.param, 2, 1, out=open(os.devnull, "w"), n_directors=2)
    try:
        yield state
    finally:
        netns.down(out=open(os.devnull, "w"))


def pyvsadm(k: int, *args: str) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "pyvs.pyvsadm", *args], capture_output=True,
                       text=True, env={**os.environ, "PYVS_SOCKET": netns.director_socket(k)})
    return p.returncode, p.stdout, p.stderr


def entry(k: int, cport: int) -> dict | None:
    snap = request(netns.director_socket(k), {"op": "snapshot", "connections": True})
    return next((c for c in snap["snapshot"]["connections"]
                 if c["client"].endswith(f":{cport}")), None)


def hold(state: dict) -> tuple[subprocess.Popen, int]:
    client = subprocess.Popen(["ip", "netns", "exec", netns.ns("c1"), sys.executable, "-c",
                               HOLD, state["vip"]], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    return client, int(client.stdout.readline())


def finish(client: subprocess.Popen) -> str:
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write("go\n")
    client.stdin.flush()
    out = client.stdout.readline().strip()
    client.wait(timeout=10)
    return out


def failover() -> None:
    assert subprocess.run([sys.executable, "-m", "pyvs.cli", "lab", "failover"],
                          capture_output=True).returncode == 0


def capture(state: dict, path) -> subprocess.Popen | None:
    """One sync datagram off the second director's eth0 (the client segment)."""
    if shutil.which("tcpdump") is None:
        return None
    return subprocess.Popen(["ip", "netns", "exec", netns.ns("d2"), "tcpdump", "-i", "eth0",
                             "-w", str(path), "-U", "-c", "1", "udp", "port", "8848"],
                            stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("pair", ["dr", "nat"], indirect=True)
def test_failover_keeps_a_held_connection_only_with_sync(pair, tmp_path) -> None:
    daemons = ("master sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, "
               "port=8848, ttl=1)\nbackup sync daemon (mcast=eth0, syncid=7, maxlen=1472, "
               "group=224.0.0.81, port=8848, ttl=1)\n")
    assert pyvsadm(0, "-L", "--daemon") == pyvsadm(1, "-L", "--daemon") == (0, daemons, "")
    pcap = tmp_path / "sync.pcap"
    tcpdump = capture(pair, pcap)
    time.sleep(0.3)                       # tcpdump listening before the datagram leaves
    # with sync: the third inbound packet (the banner's ACK) makes the entry ESTABLISHED
    # and queues it; it reaches the backup director 2-3 s later
    client, cport = hold(pair)
    deadline = time.monotonic() + 5
    while entry(1, cport) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    mine, theirs = entry(0, cport), entry(1, cport)
    assert theirs is not None and theirs["synced"] and not mine["synced"]
    assert (theirs["state"], theirs["dest"]) == ("ESTABLISHED", mine["dest"])
    failover()
    assert finish(client) == "reply hello"
    after = entry(1, cport)
    assert after is not None and after["dest"] == mine["dest"] and after["synced"]
    if tcpdump is not None:
        tcpdump.wait(timeout=5)
        _tshark(pcap, pair, cport, mine["dest"])

    # without sync (daemons stopped with pyvsadm): director 2 is active now, director 1
    # takes over and has never heard of the connection
    for k in (0, 1):
        for daemon in ("master", "backup"):
            assert pyvsadm(k, "--stop-daemon", daemon) == (0, "", "")
    assert pyvsadm(0, "--stop-daemon", "master") == (255, "", "No daemon is running\n")
    assert pyvsadm(0, "-L", "--daemon") == (0, "", "")
    client, cport = hold(pair)
    time.sleep(3.5)                       # longer than a sync message would have taken
    assert entry(1, cport) is not None and entry(0, cport) is None
    failover()
    assert finish(client) == "error ConnectionResetError"
    assert entry(0, cport) is None        # accepted as no connection: no entry made
    # the realserver never saw the reset: its side of the connection is still open
    rs = netns.ns(f"r{pair['realservers'].index(entry(1, cport)['dest'].split(':')[0]) + 1}")
    ss = subprocess.run(["ip", "netns", "exec", rs, "ss", "-Htn", "state", "established",
                         f"dport = :{cport}"], capture_output=True, text=True).stdout
    assert len(ss.splitlines()) == 1


def _tshark(pcap, state: dict, cport: int, dest: str) -> None:
    """tshark decodes the captured datagram as `ipvs`: director 1's address to the group,
    the lab's syncid, one record of the held connection."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install -y tshark)")
    fields = ["ip.src", "ip.dst", "ipvs.syncid", "ipvs.conncount", "ipvs.caddr",
              "ipvs.cport", "ipvs.vaddr", "ipvs.vport", "ipvs.daddr", "ipvs.dport"]
    cmd = [tshark, "-r", str(pcap), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    daddr, dport = dest.split(":")
    assert out.splitlines() == [f"{state['gateway']}|224.0.0.81|{netns.SYNCID}|1|"
                                f"{state['clients'][0]}|{cport}|{state['vip']}|23|{daddr}|"
                                f"{dport}"]
