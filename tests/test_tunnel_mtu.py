"""LVS-TUN and the path MTU: the tunnel's 20-byte header must fit in the route's MTU, and a
DF packet that does not is answered with ICMP "fragmentation needed" for MTU - 20, as
ip_vs_tunnel_xmit() does (__ip_vs_get_out_rt(), ensure_mtu_is_adequate() in
net/netfilter/ipvs/ip_vs_xmit.c)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP

from pyvs.core import commands as C
from pyvs.core.craft import ACK, SYN, tcp
from pyvs.core.engine import Director
from pyvs.core.forwarding import TUNNEL
from pyvs.core.sysctls import Sysctls
from tests.helpers import VIP, ip

CLIENT, RS1, RS2, DIP = "10.0.0.5", "192.168.10.1", "192.168.10.2", "10.0.0.1"
SVC = C.ServiceKey(6, ip(VIP), 80)


def director(**sysctls: int) -> Director:
    d = Director(tunnel_source=ip(DIP), sysctls=Sysctls(**sysctls))
    d.apply(C.AddService(SVC, "rr"), 0.0)
    d.apply(C.AddDest(SVC, ip(RS1), 80, TUNNEL), 0.0)
    return d


def segment(size: int, df: bool = True, tos: int = 0, port: int = 40000) -> bytes:
    """A client's data segment of `size` bytes in all, IP header included."""
    return bytes(IP(src=CLIENT, dst=VIP, tos=tos, flags="DF" if df else 0, ttl=64)
                 / TCP(sport=port, dport=80, flags="PA", seq=1, ack=1)
                 / (b"x" * (size - 40)))


def opened(d: Director) -> None:
    d.receive(tcp(ip(CLIENT), 40000, ip(VIP), 80, SYN), 0.0)
    d.receive(tcp(ip(CLIENT), 40000, ip(VIP), 80, ACK, 1, 1), 0.01)


def test_a_full_size_df_packet_gets_fragmentation_needed_for_1480() -> None:
    d = director()
    opened(d)
    packet = segment(1500, tos=0x10)
    v = d.receive(packet, 0.1)
    assert (v.action, v.reason, v.data) == ("drop", "frag-needed", None)
    # the whole reply, byte for byte: from the VIP to the client, TOS bits kept under
    # precedence 6, TTL 64, no DF, the MTU in the low half of the field, 548 bytes quoted
    want = IP(src=VIP, dst=CLIENT, tos=0xD0, id=0, flags=0, ttl=64) / ICMP(
        type=3, code=4, nexthopmtu=1480) / packet[:548]
    assert v.reply == bytes(want)
    assert len(v.reply) == 576
    assert d.drops == {"frag-needed": 1}
    # the kernel counted the packet and kept the entry before it refused to send it
    dest = d.services[0].dests[0]
    assert (dest.inpkts, dest.inbytes) == (3, 40 + 40 + 1500)
    assert d.state_name(d.connections()[0]) == "ESTABLISHED"


def test_the_reply_checksums_are_valid() -> None:
    d = director()
    opened(d)
    reply = IP(d.receive(segment(1500), 0.1).reply)
    ip_sum, icmp_sum = reply.chksum, reply[ICMP].chksum
    del reply.chksum, reply[ICMP].chksum
    again = IP(bytes(reply))
    assert (again.chksum, again[ICMP].chksum) == (ip_sum, icmp_sum)


@pytest.mark.parametrize(("size", "df", "forwarded"), [
    (1480, True, True),          # exactly the tunnel's MTU: 1500 wrapped
    (1481, True, False),
    (1500, False, True),         # no DF: wrapped, for the stack to fragment
])
def test_the_limit_is_the_route_mtu_less_the_outer_header(size: int, df: bool,
                                                          forwarded: bool) -> None:
    d = director()
    opened(d)
    v = d.receive(segment(size, df), 0.1)
    assert (v.action == "accept") is forwarded
    if forwarded:
        outer = IP(v.data)
        assert (outer.len, outer.flags.DF) == (size + 20, df)


def test_pmtu_disc_0_sends_it_wrapped_without_df() -> None:
    d = director(pmtu_disc=0)
    opened(d)
    v = d.receive(segment(1500), 0.1)
    outer = IP(v.data)
    assert (v.action, outer.len, outer.flags.DF, IP(bytes(outer.payload)).flags.DF) == (
        "accept", 1520, False, True)


def test_route_mtus_per_realserver_and_the_default() -> None:
    d = director()
    d.apply(C.AddDest(SVC, ip(RS2), 80, TUNNEL), 0.0)
    d.apply(C.SetRouteMtu(ip(RS2), 9000), 0.0)
    first, second = (tcp(ip(CLIENT), port, ip(VIP), 80, SYN) for port in (40000, 40001))
    d.receive(first, 0.0)                  # rr: the newest realserver (RS2) first
    d.receive(second, 0.0)
    big = {port: segment(1500, port=port) for port in (40000, 40001)}
    assert d.receive(big[40000], 0.1).reason == "forward"          # via RS2: 9000
    assert d.receive(big[40001], 0.1).reason == "frag-needed"      # via RS1: 1500
    d.apply(C.SetRouteMtu(0, 1520), 0.2)                           # every other route
    assert d.receive(big[40001], 0.3).reason == "forward"
    assert (d.route_mtu_to(ip(RS1)), d.route_mtu_to(ip(RS2))) == (1520, 9000)


def test_a_route_mtu_that_leaves_the_tunnel_under_68_drops() -> None:
    d = director()
    d.apply(C.SetRouteMtu(ip(RS1), 87), 0.0)
    v = d.receive(tcp(ip(CLIENT), 40000, ip(VIP), 80, SYN), 0.0)
    assert (v.action, v.reason, v.reply) == ("drop", "tunnel-mtu", None)


def test_route_mtu_commands_are_checked_and_travel_as_dicts() -> None:
    assert C.check(C.SetRouteMtu(ip(RS1), 67)) == "invalid MTU 67 (68..65535)"
    assert C.check(C.SetRouteMtu(ip(RS1), 65536)) == "invalid MTU 65536 (68..65535)"
    cmd = C.SetRouteMtu(ip(RS1), 1400)
    assert C.to_dict(cmd) == {"op": "route-mtu", "addr": ip(RS1), "mtu": 1400}
    assert C.from_dict(C.to_dict(cmd)) == cmd


def test_a_replay_counts_the_same_drops_and_builds_nothing() -> None:
    """receive(headers_only=True), as replay and compare --capture call it: the verdicts
    and drop counts of the live path, no ICMP built, no tunnel packet, cut packets too."""
    live, replay = director(), director()
    for d in (live, replay):
        opened(d)
    packet = segment(1500)
    v_live = live.receive(packet, 0.1)
    v_replay = replay.receive(packet[:96], 0.1, headers_only=True)    # a snaplen of 96
    assert (v_replay.action, v_replay.reason) == (v_live.action, v_live.reason) == (
        "drop", "frag-needed")
    assert v_replay.reply is None and v_live.reply is not None
    assert replay.drops == live.drops == {"frag-needed": 1}
    small = segment(1000)
    assert replay.receive(small, 0.2, headers_only=True).data is None
    assert live.receive(small, 0.2).data is not None
