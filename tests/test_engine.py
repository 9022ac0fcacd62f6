"""Engine behaviour beyond the state table: reuse, removal, thresholds, UDP, --set,
forwarding bytes (checked against scapy), stats and the rate estimator."""

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pyvs.core.craft import tcp
from pyvs.core.engine import OUT, Director
from pyvs.core.forwarding import TUNNEL
from pyvs.core.packet import int_to_ip
from pyvs.core.service import SVC_F_ONEPACKET
from tests.helpers import (
    ACK,
    DROUTE,
    FIN,
    MASQ,
    PSH,
    RST,
    SYN,
    Flow,
    counts,
    ip,
    make_director,
    udp,
)


def establish(f, t=0.0, nat=True):
    f.inb(SYN, t)
    if nat:
        f.out(SYN | ACK, t + 0.001)
    f.inb(ACK, t + 0.002)


def close_client_first(f, t, nat=True):
    f.inb(FIN | ACK, t)
    if nat:
        f.out(FIN | ACK, t + 0.001)
    f.inb(ACK, t + 0.002)


def test_conn_reuse_syn_on_time_wait_reschedules():
    d = make_director(fwd=MASQ, n=2)
    f = Flow(d)
    establish(f)
    first = f.conn().daddr
    close_client_first(f, 1.0)
    assert f.state() == "TIME_WAIT"
    f.inb(SYN, 5.0)                     # same client port, new connection
    assert f.state() == "SYN_RECV"
    assert f.conn().daddr != first      # rr moved on
    assert counts(d) == [("192.168.10.1", 1, 0), ("192.168.10.2", 0, 0)]


def test_no_conn_reuse_on_2_6_keeps_realserver():
    d = make_director(fwd=MASQ, n=2, kernel="2.6")
    f = Flow(d)
    establish(f)
    first = f.conn().daddr
    close_client_first(f, 1.0)
    f.inb(SYN, 5.0)
    assert f.state() == "SYN_RECV" and f.conn().daddr == first


def test_removed_realserver_drops_packets_until_expiry():
    d = make_director(fwd=DROUTE, n=1)
    f = Flow(d)
    establish(f, nat=False)
    dest = f.conn().dest
    d.del_dest(dest, now=1.0)
    v = f.inb(ACK, 2.0)
    assert v.action == "drop" and v.reason == "dest-unavailable"
    assert f.conn().expires == pytest.approx(900.002)          # not re-armed
    assert dest.inpkts == 2                                     # not counted
    assert d.drops == {"dest-unavailable": 1}


def test_removed_realserver_re_added_brings_counters_back():
    d = make_director(fwd=DROUTE, n=1)
    f = Flow(d)
    establish(f, nat=False)
    svc = d.services[0]
    d.del_dest(f.conn().dest, now=1.0)
    dest = d.add_dest(svc, ip("192.168.10.1"), 80, DROUTE, now=2.0)
    assert (dest.activeconns, dest.inactconns) == (1, 0)
    assert f.inb(ACK, 3.0).reason == "forward"


def test_expire_nodest_conn_flushes_connections():
    d = make_director(fwd=DROUTE, n=2)
    d.set_sysctl("expire_nodest_conn", 1)
    f = Flow(d)
    establish(f, nat=False)
    d.del_dest(f.conn().dest, now=1.0)
    assert f.conn() is None


def test_upper_threshold_overloads_and_lower_clears():
    d = Director()
    svc = d.add_service(6, ip("10.0.0.100"), 80, scheduler="rr")
    dest = d.add_dest(svc, ip("192.168.10.1"), 80, MASQ, u_threshold=2, l_threshold=1)
    flows = [Flow(d, cport=40000 + i) for i in range(3)]
    flows[0].inb(SYN, 0.0)
    flows[1].inb(SYN, 0.0)
    assert dest.overload
    v = flows[2].inb(SYN, 0.0)
    assert v.action == "drop" and v.reason == "no-destination"
    d.handle_timers(60.0)               # both SYN_RECV expire
    assert not dest.overload


def test_udp_always_inactive_300s():
    d = Director()
    svc = d.add_service(17, ip("10.0.0.100"), 53, scheduler="rr")
    dest = d.add_dest(svc, ip("192.168.10.1"), 53, MASQ)
    f = Flow(d, vport=53, protocol=17)
    f.inb(0, 0.0, b"q")
    assert (dest.activeconns, dest.inactconns) == (0, 1)
    assert f.state() == "UDP" and f.conn().expires == pytest.approx(300.0)
    f.out(0, 10.0, b"a")
    assert f.conn().expires == pytest.approx(310.0)


def test_udp_one_packet_scheduling_keeps_nothing():
    d = Director()
    svc = d.add_service(17, ip("10.0.0.100"), 53, scheduler="rr", flags=SVC_F_ONEPACKET)
    dest = d.add_dest(svc, ip("192.168.10.1"), 53, MASQ)
    Flow(d, vport=53, protocol=17).inb(0, 0.0, b"q")
    assert d.connections() == [] and dest.inactconns == 0 and dest.conns == 1


def test_set_tcpfin_changes_fin_wait_only():
    dr = make_director(fwd=DROUTE, n=1)
    nat = make_director(fwd=MASQ, n=1)
    for d in (dr, nat):
        d.set_timeouts(0, 30, 0)
    f = Flow(dr)
    establish(f, nat=False)
    close_client_first(f, 1.0, nat=False)
    assert f.state() == "FIN_WAIT" and f.conn().expires == pytest.approx(31.002)
    g = Flow(nat)
    establish(g)
    close_client_first(g, 1.0)
    assert g.state() == "TIME_WAIT" and g.conn().expires == pytest.approx(121.002)


def test_set_tcp_applies_on_next_packet():
    d = make_director(fwd=DROUTE, n=1)
    f = Flow(d)
    establish(f, nat=False)
    d.set_timeouts(60, 0, 0)
    assert f.conn().expires == pytest.approx(900.002)
    f.inb(ACK, 10.0)
    assert f.conn().expires == pytest.approx(70.0)
    assert (d.timeouts.tcp, d.timeouts.tcpfin, d.timeouts.udp) == (60, 120, 300)


def test_no_syn_for_unknown_connection_is_not_ipvs_traffic():
    d = make_director()
    v = Flow(d).inb(ACK, 0.0)
    assert v.action == "accept" and v.reason == "no-connection"
    v = Flow(d).inb(SYN | RST, 0.0)
    assert v.reason == "no-connection"
    assert d.connections() == []


def test_sloppy_tcp_creates_from_any_packet():
    d = make_director(fwd=DROUTE)
    d.set_sysctl("sloppy_tcp", 1)
    f = Flow(d)
    f.inb(ACK, 0.0)
    assert f.state() == "ESTABLISHED"


def assert_checksums_as_recomputed(data) -> None:
    """The incrementally updated IP and TCP checksums equal scapy's full recomputation."""
    got = IP(bytes(data))
    ref = IP(bytes(data))
    del ref.chksum
    del ref[TCP].chksum
    ref = IP(bytes(ref))
    assert (got.chksum, got[TCP].chksum) == (ref.chksum, ref[TCP].chksum)


def test_masq_rewrites_with_valid_checksums():
    d = make_director(fwd=MASQ, n=1)
    svc = d.services[0]
    d.del_dest(svc.dests[0])
    d.add_dest(svc, ip("192.168.10.1"), 8080, MASQ)
    pkt = tcp(ip("10.0.0.5"), 40000, ip("10.0.0.100"), 80, PSH | ACK, 7, 9, b"hello")
    v = d.receive(pkt, 0.0)
    assert v.reason == "no-connection"
    v = d.receive(tcp(ip("10.0.0.5"), 40000, ip("10.0.0.100"), 80, SYN, 7, 0, b"x"), 0.0)
    got = IP(bytes(v.data))
    assert (got.dst, got[TCP].dport) == ("192.168.10.1", 8080)
    assert_checksums_as_recomputed(v.data)
    reply = tcp(ip("192.168.10.1"), 8080, ip("10.0.0.5"), 40000, SYN | ACK, 100, 8, b"yy")
    v = d.receive(reply, 0.01, OUT)
    got = IP(bytes(v.data))
    assert (got.src, got[TCP].sport) == ("10.0.0.100", 80)
    assert_checksums_as_recomputed(v.data)


def test_masq_with_ip_options_and_link_padding():
    """An IP header with options moves the ports; Ethernet padding after tot_len is dropped
    from the rewrite (the kernel trims the skb to tot_len too)."""
    from scapy.layers.inet import IPOption_NOP

    d = make_director(fwd=MASQ, n=1)
    rs = d.services[0].dests[0]
    opts = [IPOption_NOP()] * 4

    def make(src, sport, dst, dport, flags):
        return bytes(IP(src=src, dst=dst, options=opts, id=7)
                     / TCP(sport=sport, dport=dport, flags=flags, seq=5) / b"data")

    pkt = make("10.0.0.5", 40000, "10.0.0.100", 80, "S")
    assert pkt[0] & 15 == 6
    v = d.receive(pkt + b"\0" * 6, 0.0)
    assert v.data == make("10.0.0.5", 40000, int_to_ip(rs.addr), rs.port, "S")
    v = d.receive(make(int_to_ip(rs.addr), rs.port, "10.0.0.5", 40000, "SA") + b"\0" * 6,
                  0.01, OUT)
    assert v.data == make("10.0.0.100", 80, "10.0.0.5", 40000, "SA")


def test_masq_udp_checksum_and_zero_checksum():
    d = Director()
    svc = d.add_service(17, ip("10.0.0.100"), 53, scheduler="rr")
    d.add_dest(svc, ip("192.168.10.1"), 5353, MASQ)
    v = d.receive(udp(ip("10.0.0.5"), 4000, ip("10.0.0.100"), 53, b"query"), 0.0)
    got = IP(bytes(v.data))
    ref = IP(bytes(v.data))
    del ref[UDP].chksum
    assert got[UDP].chksum == IP(bytes(ref))[UDP].chksum and got[UDP].dport == 5353
    raw = bytearray(udp(ip("10.0.0.6"), 4000, ip("10.0.0.100"), 53, b"q"))
    raw[26:28] = b"\0\0"                # no UDP checksum: stays none
    v = d.receive(bytes(raw), 0.0)
    assert v.data[26:28] == b"\0\0"


def test_route_marks_per_realserver_and_leaves_packet():
    d = make_director(fwd=DROUTE, n=2)
    marks = set()
    for i in range(2):
        v = Flow(d, cport=40000 + i).inb(SYN, 0.0)
        assert v.data is None and v.action == "accept"
        marks.add(v.mark)
    assert marks == {1001, 1002}


def test_tunnel_wraps_in_ipip():
    d = Director(tunnel_source=ip("10.0.0.1"))
    svc = d.add_service(6, ip("10.0.0.100"), 80, scheduler="rr")
    d.add_dest(svc, ip("192.168.10.1"), 80, TUNNEL)
    inner = tcp(ip("10.0.0.5"), 40000, ip("10.0.0.100"), 80, SYN)
    v = d.receive(inner, 0.0)
    outer = IP(bytes(v.data))
    assert (outer.src, outer.dst, outer.proto) == ("10.0.0.1", "192.168.10.1", 4)
    assert bytes(outer.payload) == inner
    check = IP(bytes(v.data))
    del check.chksum
    assert IP(bytes(check)).chksum == outer.chksum
    assert d.connections()[0].noout              # tunnel = one-sided tracking


def test_dr_reply_through_director_turns_on_full_tracking():
    d = make_director(fwd=DROUTE, n=1)
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.out(SYN | ACK, 0.01)               # reply from the VIP crosses the director
    assert not f.conn().noout
    f.inb(ACK, 0.02)
    f.inb(FIN | ACK, 1.0)
    assert f.state() == "CLOSE_WAIT"      # INPUT table now, not INPUT-ONLY


def test_stats_lag_until_estimator_tick_and_rates():
    d = make_director(fwd=MASQ, n=1)
    svc = d.services[0]
    f = Flow(d)
    establish(f, t=0.5)
    assert svc.est.shown().conns == 0           # copied by the 2 s timer
    d.handle_timers(2.0)
    shown = svc.est.shown()
    assert (shown.conns, shown.inpkts, shown.outpkts) == (1, 2, 1)
    assert shown.inbytes == 80 and shown.outbytes == 40
    # conns: delta 1 over 2 s -> rate 1<<9 = 512, EWMA 512>>2 = 128, shown (128+511)>>10 = 0
    assert svc.est.cps == 128 and svc.est.rates()[0] == 0
    assert d.total_est.shown().conns == 1
    d.zero()
    assert svc.est.shown().conns == 0 and svc.dests[0].est.shown().inpkts == 0


def test_rate_converges_for_steady_traffic():
    d = make_director(fwd=DROUTE, n=1)
    svc = d.services[0]
    t = 0.0
    for i in range(2000):                # 10 new connections per second for 200 s
        Flow(d, cport=1024 + i).inb(SYN, t)
        t += 0.1
    d.handle_timers(t)
    assert svc.est.rates()[0] == 10
    assert svc.est.rates()[1] == 10


def test_fwmark_service_and_template():
    d = Director()
    svc = d.add_service(0, fwmark=7, scheduler="rr", flags=1, timeout=300)
    d.add_dest(svc, ip("192.168.10.1"), 0, DROUTE)
    v = d.receive(tcp(ip("10.0.0.5"), 40000, ip("10.9.9.9"), 443, SYN), 0.0, mark=7)
    assert v.mark == 1001
    v = d.receive(tcp(ip("10.0.0.5"), 40001, ip("10.9.9.9"), 443, SYN), 0.0)
    assert v.reason == "no-service"
    tpl = [c for c in d.connections() if c.template][0]
    assert (tpl.protocol, int_to_ip(tpl.vaddr)) == (0, "0.0.0.7")
