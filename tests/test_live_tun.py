"""LVS-TUN in the namespace lab with full-size client packets: a 1500-byte packet is 1520
wrapped, more than the route to the realserver carries, so the director answers the client
with ICMP "fragmentation needed" for 1480, as the kernel's ip_vs_tunnel_xmit() does, and the
client's path MTU discovery lowers its segments: a bulk upload completes.  The route's MTU
is read again after each control-plane change."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyvs.control import request
from pyvs.lab import netns
from tests.test_live import _missing
from tests.test_live_director import adm

pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")

UPLOAD = """import socket, sys
s = socket.create_connection((sys.argv[1], 9), 5)
s.settimeout(10)
data = b"x" * 1_000_000
s.sendall(data)
s.shutdown(socket.SHUT_WR)
print(len(data) if s.recv(1) == b"" else -1)     # the realserver read it all, then closed"""


@pytest.fixture
def lab():
    netns.down(out=open(os.devnull, "w"))
    state = netns.up("tun", 1, 1, out=open(os.devnull, "w"))
    try:
        yield state
    finally:
        netns.down(out=open(os.devnull, "w"))


def upload(vip: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns.ns("c1"), sys.executable, "-c",
                           UPLOAD, vip], capture_output=True, text=True, timeout=30
                          ).stdout.strip()


def client_pmtu(vip: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", netns.ns("c1"), "ip", "route", "get", vip],
                         capture_output=True, text=True, timeout=10).stdout.split()
    return out[out.index("mtu") + 1] if "mtu" in out else "none"


def drops() -> dict:
    return request(netns.SOCKET, {"op": "snapshot", "connections": False})["snapshot"]["drops"]


def test_a_bulk_upload_through_tun_completes(lab) -> None:
    vip, rs1 = lab["vip"], lab["realservers"][0]
    assert client_pmtu(vip) == "none"
    assert upload(vip) == "1000000"
    assert client_pmtu(vip) == "1480"              # learnt from the director's ICMP
    first = drops()["frag-needed"]
    assert first >= 1
    # a smaller route to the realserver, then any change: the director reads it again
    subprocess.run(["ip", "netns", "exec", netns.ns("d"), "ip", "route", "replace",
                    f"{rs1}/32", "dev", "eth0", "mtu", "1400"], check=True)
    assert adm("-e", "-t", f"{vip}:0", "-r", f"{rs1}:0", "-i", "-w", "2").returncode == 0
    assert upload(vip) == "1000000"
    assert client_pmtu(vip) == "1380"
    assert drops()["frag-needed"] > first
