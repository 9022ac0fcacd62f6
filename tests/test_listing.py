"""Whole ipvsadm listings against golden files (tests/golden/*.txt), and format details."""

from pathlib import Path

import pytest

from pyvs.core.engine import Director
from pyvs.core.forwarding import DROUTE, MASQ, TUNNEL
from pyvs.core.service import SVC_F_ONEPACKET, SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2
from pyvs.views.listing import Fmt, largenum, list_all, list_conn, list_timeout
from pyvs.views.snapshot import snapshot
from tests.helpers import ACK, FIN, SYN, Flow, ip

GOLDEN = Path(__file__).parent / "golden"


def scene() -> Director:
    """A fixed table: NAT web service, DR telnet, UDP persistent, fwmark sh, traffic."""
    d = Director()
    web = d.add_service(6, ip("10.0.0.100"), 80, scheduler="rr")
    d.add_dest(web, ip("192.168.10.1"), 80, MASQ, u_threshold=100, l_threshold=10)
    d.add_dest(web, ip("192.168.10.2"), 80, MASQ, weight=2)
    tel = d.add_service(6, ip("10.0.0.100"), 23, scheduler="wlc")
    d.add_dest(tel, ip("10.1.0.2"), 23, DROUTE)
    d.add_dest(tel, ip("192.168.10.3"), 23, TUNNEL, weight=0)
    dns = d.add_service(17, ip("10.0.0.100"), 53, scheduler="wlc",
                        flags=SVC_F_PERSISTENT | SVC_F_ONEPACKET, timeout=360,
                        netmask=ip("255.255.255.0"))
    d.add_dest(dns, ip("192.168.10.1"), 53, MASQ)
    fwm = d.add_service(0, fwmark=1, scheduler="sh", flags=SVC_F_SCHED1 | SVC_F_SCHED2)
    d.add_dest(fwm, ip("192.168.10.2"), 0, DROUTE, weight=2)
    for i in range(3):                      # HTTP/1.0 fetches
        f = Flow(d, cport=51000 + i)
        f.inb(SYN, 0.1 * i)
        f.out(SYN | ACK, 0.1 * i + 0.01)
        f.inb(ACK, 0.1 * i + 0.02)
        f.inb(FIN | ACK, 0.1 * i + 0.03)
        f.out(FIN | ACK, 0.1 * i + 0.04)
        f.inb(ACK, 0.1 * i + 0.05)
    held = Flow(d, cport=52000, vport=23)
    held.inb(SYN, 1.0)
    held.inb(ACK, 1.01)
    return d


CASES = {
    "list_n.txt": Fmt.NUMERIC,
    "list_stats.txt": Fmt.NUMERIC | Fmt.STATS,
    "list_rate.txt": Fmt.NUMERIC | Fmt.RATE,
    "list_thresholds.txt": Fmt.NUMERIC | Fmt.THRESHOLDS,
    "list_persistent_conn.txt": Fmt.NUMERIC | Fmt.PERSISTENTCONN,
    "list_nosort.txt": Fmt.NUMERIC | Fmt.NOSORT,
    "save_n.txt": Fmt.NUMERIC | Fmt.RULE,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_listing(name):
    d = scene()
    text = list_all(snapshot(d, 4.0, connections=False), CASES[name])
    assert text == (GOLDEN / name).read_text()


def test_golden_connections():
    d = scene()
    text = list_conn(snapshot(d, 4.5), Fmt.NUMERIC)
    assert text == (GOLDEN / "list_c.txt").read_text()


def test_golden_connections_persistent_conn():
    """ipvsadm's print_conn() prints the PE columns only for a /proc line with
    persistence-engine data (11 fields); without, the plain row under the wide header."""
    d = scene()
    text = list_conn(snapshot(d, 4.5), Fmt.NUMERIC | Fmt.PERSISTENTCONN)
    assert text == (GOLDEN / "list_c_persistent.txt").read_text()


def test_timeout_line():
    d = scene()
    d.set_timeouts(3600, 0, 0)
    assert list_timeout(snapshot(d, 0.0)) == "Timeout (tcp tcpfin udp): 3600 120 300\n"


@pytest.mark.parametrize("value,text,exact", [
    (99_999_999, " 99999999", " 99999999"),
    (100_000_000, "  100000K", " 100000000"),
    (999_999_999, "  999999K", " 999999999"),
    (1_000_000_000, "     1000M", " 1000000000"),
    (123_456_789_012, "      123G", " 123456789012"),
    (100_000_000_000_000, "      100T", " 100000000000000"),
])
def test_largenum(value, text, exact):
    assert largenum(value, Fmt.NONE) == text.lstrip(" ").rjust(9)
    assert largenum(value, Fmt.EXACT) == exact


def test_sort_wraps_like_ipvsadm():
    d = Director()
    for addr in ("10.1.0.2", "192.168.10.1", "172.16.0.1"):
        d.add_service(6, ip(addr), 80, scheduler="rr")
    lines = list_all(snapshot(d, 0.0, connections=False)).splitlines()[3:]
    # 192.168.10.1 - 10.1.0.2 overflows int: it sorts first
    assert [line.split()[1] for line in lines] == ["172.16.0.1:80", "192.168.10.1:80",
                                                   "10.1.0.2:80"]


def test_long_names_truncated_to_33_and_28():
    d = Director()
    svc = d.add_service(6, ip("100.100.100.100"), 65535, scheduler="wlc")
    d.add_dest(svc, ip("200.200.200.200"), 65535, MASQ)
    text = list_all(snapshot(d, 0.0, connections=False), Fmt.NUMERIC | Fmt.STATS)
    line = text.splitlines()[3]
    assert line.startswith("TCP  100.100.100.100:65535        ")
    assert len(line) == 33 + 45
