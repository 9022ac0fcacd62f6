"""The sync daemons' sockets, for real: two network namespaces of this test's own joined by
a veth pair, a master director that forwards a connection in one and a `pyvs serve`
backup in the other, real multicast between them, the datagram captured on the segment
and decoded by tshark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from pyvs.control import NoDirector, request
from pyvs.lab.netns import PREFIX

NSA, NSB = f"{PREFIX}-synca", f"{PREFIX}-syncb"
A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
CONFIG = """services:
  - protocol: tcp
    address: 10.0.0.100:80
    scheduler: rr
    realservers:
      - {address: 192.168.10.1:80, forward: route}
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs ip (iproute2)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def ns_run(ns: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True,
                          timeout=30, **kw)


@pytest.fixture
def segment():
    """Two namespaces, sa0 (192.0.2.1) and sb0 (192.0.2.2) on one veth link."""
    for ns in (NSA, NSB):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    try:
        for ns in (NSA, NSB):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            ns_run(ns, "ip", "link", "set", "lo", "up")
        subprocess.run(["ip", "link", "add", "sa0", "netns", NSA, "type", "veth", "peer",
                        "name", "sb0", "netns", NSB], check=True)
        for ns, dev, addr in ((NSA, "sa0", A_ADDR), (NSB, "sb0", B_ADDR)):
            ns_run(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            ns_run(ns, "ip", "link", "set", dev, "up")
        yield
    finally:
        for ns in (NSA, NSB):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# The master's side: a director whose engine sees a client's handshake and first data
# packet (ESTABLISHED at the third packet: synced), with a master and a backup daemon on
# sa0, its loop in a thread; it prints what its daemons counted.
MASTER = """
import json, sys, time
from pyvs.config import load
from pyvs.core.craft import ACK, SYN, tcp
from pyvs.core.packet import ip_to_int
from pyvs.drivers.daemon import Runtime

director = load(sys.argv[1]).build()
runtime = Runtime(director, sys.argv[2])
print(json.dumps(runtime.apply([
    {"op": "start-daemon", "state": "master", "mcast_ifn": "sa0", "syncid": 7},
    {"op": "start-daemon", "state": "backup", "mcast_ifn": "sa0", "syncid": 7}])),
    flush=True)
runtime.start()
runtime.run_in_thread()
c, v = ip_to_int("10.0.0.5"), ip_to_int("10.0.0.100")
def client():
    for flags in (SYN, ACK, ACK):
        director.receive(tcp(c, 40000, v, 80, flags), runtime.now())
runtime.call(client)
time.sleep(3.3)          # a partly filled message leaves 2-3 s after its first record
def summary():
    runtime._refresh(runtime.now())         # the summary the metrics read, brought up to now
    return runtime.summary
print(json.dumps(runtime.call(summary)), flush=True)
"""


def test_a_master_director_syncs_a_backup_over_real_multicast(segment, tmp_path) -> None:
    config = tmp_path / "d.yaml"
    config.write_text(CONFIG)
    bsock = str(tmp_path / "b.sock")
    env = {**os.environ, "PYVS_SOCKET": bsock}
    backup = subprocess.Popen(["ip", "netns", "exec", NSB, sys.executable, "-m", "pyvs.cli",
                               "serve", "--config", str(config), "--socket", bsock],
                              stderr=subprocess.PIPE, text=True)
    capture = None
    try:
        _wait_for(bsock)

        def adm(*args: str) -> tuple[int, str, str]:
            p = ns_run(NSB, sys.executable, "-m", "pyvs.pyvsadm", *args, env=env)
            return p.returncode, p.stdout, p.stderr
        assert adm("--start-daemon", "backup", "--mcast-interface", "nosuch0") == (
            255, "", "No such device\n")
        assert adm("--start-daemon", "backup", "--mcast-interface", "sb0", "--syncid",
                   "7") == (0, "", "")
        assert adm("--start-daemon", "backup", "--mcast-interface", "sb0") == (
            255, "", "Daemon has already run\n")
        assert adm("-L", "--daemon") == (0, "backup sync daemon (mcast=sb0, syncid=7, "
                                            "maxlen=1472, group=224.0.0.81, port=8848, "
                                            "ttl=1)\n", "")
        pcap = tmp_path / "sync.pcap"
        capture = subprocess.Popen(["ip", "netns", "exec", NSB, "tcpdump", "-i", "sb0", "-w",
                                    str(pcap), "-U", "-c", "1", "udp", "port", "8848"],
                                   stderr=subprocess.DEVNULL) if shutil.which("tcpdump") \
            else None
        script = tmp_path / "master.py"
        script.write_text(textwrap.dedent(MASTER))
        master = ns_run(NSA, sys.executable, str(script), str(config),
                        str(tmp_path / "a.sock"))
        assert master.returncode == 0, master.stderr
        started, counters = (json.loads(line) for line in master.stdout.splitlines())
        assert started == [None, None]
        daemons = {d["state"]: d["counters"] for d in counters["daemons"]}
        assert daemons["master"] == {"messages": 1, "records": 1, "queued": 1,
                                     "queue_dropped": 0, "send-error": 0}
        # multicast loop off: the director's own backup never hears its master
        assert daemons["backup"] == {"messages": 0, "records": 0, "results": {},
                                     "receive-error": 0}
        snap = _wait_for_entry(bsock)
        (entry,) = snap["connections"]
        assert (entry["client"], entry["virtual"], entry["dest"], entry["state"],
                entry["synced"]) == ("10.0.0.5:40000", "10.0.0.100:80", "192.168.10.1:80",
                                     "ESTABLISHED", True)
        assert 895 <= entry["expires"] <= 900      # the message's full timeout, re-armed
        (b,) = snap["daemons"]
        assert b["counters"] == {"messages": 1, "records": 1, "results": {"created": 1}}
        if capture is not None:
            capture.wait(timeout=5)
            _tshark_agrees(pcap)
    finally:
        if capture is not None and capture.poll() is None:
            capture.kill()
        backup.terminate()
        backup.wait(timeout=10)


def _wait_for(sock: str) -> None:
    for _ in range(100):
        try:
            request(sock, {"op": "ping"}, timeout=1)
            return
        except NoDirector:
            time.sleep(0.05)
    raise AssertionError(f"no director on {sock}")


def _wait_for_entry(sock: str) -> dict:
    deadline = time.monotonic() + 5
    while True:
        snap = request(sock, {"op": "snapshot", "connections": True})["snapshot"]
        if snap["connections"] or time.monotonic() > deadline:
            return snap
        time.sleep(0.05)


def _tshark_agrees(pcap) -> None:
    """Wireshark's ipvs dissector reads the captured datagram as pyvs wrote it: from the
    interface's address to the group, TTL 1, syncid 7, one record of the connection."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install -y tshark)")
    fields = ["ip.src", "ip.dst", "ip.ttl", "udp.dstport", "ipvs.syncid", "ipvs.conncount",
              "ipvs.version", "ipvs.caddr", "ipvs.vaddr", "ipvs.daddr", "ipvs.cport",
              "ipvs.vport", "ipvs.dport", "ipvs.timeout"]
    cmd = [tshark, "-r", str(pcap), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"{A_ADDR}|224.0.0.81|1|8848|7|1|1|10.0.0.5|10.0.0.100|"
                                "192.168.10.1|40000|80|80|900"]
