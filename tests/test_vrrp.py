"""pyvs.lab.vrrp, the VRRP transition both labs' director pairs make (`pyvs lab failover`
in the namespaces, `pyvs-vrrp` on the VMs): MASTER adds the floating addresses and
announces each with keepalived's five gratuitous ARPs, BACKUP deletes them; bad arguments
get one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pyvs.lab import vrrp


@pytest.mark.parametrize("argv,code,message", [
    ([], 2, vrrp.USAGE),
    (["garp", "eth0", "10.0.0.1"], 2, vrrp.USAGE),
    (["master"], 1, "pyvs.lab.vrrp master: no floating address (DEV=ADDR...)"),
    (["backup", "eth1"], 1, "pyvs.lab.vrrp backup: 'eth1' is not DEV=ADDR (an interface and "
                            "an IPv4 address)"),
    (["master", "eth1=10.0.0.300"], 1, "pyvs.lab.vrrp master: 'eth1=10.0.0.300' is not "
                                       "DEV=ADDR (an interface and an IPv4 address)"),
])
def test_bad_arguments_get_one_line(argv: list[str], code: int, message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pyvs.lab.vrrp", *argv],
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, "", message + "\n")


# in a fresh network namespace: eth1 (the director's) and peer1 (the segment) as a veth
# pair; peer1 listens for ARP, then master, backup, backup again
TRANSITIONS = """
import socket, subprocess, sys
from pyvs.lab import vrrp
def ip(*a): return subprocess.run(["ip", *a], check=True, capture_output=True, text=True).stdout
ip("link", "add", "eth1", "type", "veth", "peer", "name", "peer1")
ip("addr", "add", "192.0.2.254/24", "dev", "eth1")
ip("link", "set", "eth1", "up"); ip("link", "set", "peer1", "up")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(vrrp.ETH_P_ARP))
s.bind(("peer1", vrrp.ETH_P_ARP)); s.settimeout(2)
def addrs():
    return [line.split()[3] for line in ip("-4", "-o", "addr", "show", "eth1").splitlines()]
mac = ip("-o", "link", "show", "eth1").split("link/ether ")[1].split()[0]
print(vrrp.main(["master", "eth1=192.0.2.100"]), addrs())
frames = [s.recv(100)[:42] for _ in range(vrrp.GARP_REPEAT)]
print(frames == [vrrp.garp_frame(bytes.fromhex(mac.replace(":", "")), "192.0.2.100")] * 5)
print(vrrp.main(["backup", "eth1=192.0.2.100"]), addrs())
print(vrrp.main(["backup", "eth1=192.0.2.100"]), addrs())
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare (util-linux) for a network namespace")
def test_master_adds_and_announces_backup_deletes() -> None:
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", TRANSITIONS],
                          capture_output=True, text=True, timeout=30,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert (proc.stdout, proc.stderr) == (
        "0 ['192.0.2.254/24', '192.0.2.100/32']\nTrue\n0 ['192.0.2.254/24']\n"
        "0 ['192.0.2.254/24']\n", "")
