"""The engine's rewrite as a live driver uses it: only a packet's head handed over (the rest
stays in the driver's buffer and follows the new head unchanged), and packets whose
checksum field holds only the pseudo-header sum (a local sender's CHECKSUM_PARTIAL, as
NFQUEUE hands them over), which the driver completes after the rewrite.  Either way the
bytes that go out are those of the whole-packet rewrite of a packet with a complete
checksum."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pyvs.core.craft import SYN, tcp, udp
from pyvs.core.engine import OUT, Director
from pyvs.core.forwarding import MASQ, TUNNEL
from pyvs.drivers.nfqueue import finish_checksum
from tests.helpers import VIP, ip

CLIENT, RS = "10.0.0.5", "192.168.10.1"
SIZES = [40, 41, 576, 577, 1488, 1489, 65000]      # odd ones summed with a zero byte after


def director(fwd: int = MASQ) -> Director:
    d = Director(tunnel_source=ip("10.0.0.1"))
    for proto in (6, 17):
        svc = d.add_service(proto, ip(VIP), 80)
        d.add_dest(svc, ip(RS), 8080, fwd)
    d.route_mtu = 0xFFFF
    d.receive(tcp(ip(CLIENT), 40000, ip(VIP), 80, SYN), 0.0)
    return d


def packet(proto: int, size: int, out: bool = False, options: bool = False) -> bytes:
    """A client's (or, `out`, the realserver's reply) packet of `size` bytes in all."""
    src, sport, dst, dport = (RS, 8080, CLIENT, 40000) if out else (CLIENT, 40000, VIP, 80)
    head = 24 if options else 20
    l4 = TCP(sport=sport, dport=dport, flags="PA", seq=1, ack=1) if proto == 6 else \
        UDP(sport=sport, dport=dport)
    body = bytes(i * 7 & 255 for i in range(size - head - len(l4)))
    ip_head = IP(src=src, dst=dst, ttl=64, flags="DF",
                 options=[b"\x94\x04\x00\x00"] if options else [])    # router alert
    return bytes(ip_head / l4 / body)


def partial(data: bytes) -> bytes:
    """The packet with its checksum field holding only the folded pseudo-header sum, as a
    sender leaving the rest to the device writes it (__tcp_v4_send_check())."""
    ihl = (data[0] & 15) << 2
    at = ihl + 16 if data[9] == 6 else ihl + 6
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in (12, 14, 16, 18))
    total += data[9] + len(data) - ihl
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return data[:at] + total.to_bytes(2, "big") + data[at + 2:]


@pytest.mark.parametrize("proto", [6, 17], ids=["tcp", "udp"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("out", [False, True], ids=["in", "out"])
def test_a_head_rewritten_then_the_rest_is_the_whole_rewrite(proto: int, size: int,
                                                              out: bool) -> None:
    d = director()
    if proto == 17:
        d.receive(udp(ip(CLIENT), 40000, ip(VIP), 80), 0.0)
    data = packet(proto, size, out)
    way = OUT if out else None
    whole = d.receive(data, 1.0, way).data
    cut = min(576, size)
    v = d.receive(data[:cut], 1.0, way, tail=size - cut)
    assert (v.reason, len(v.data)) == ("forward", cut)
    assert v.data + data[cut:] == whole
    assert IP(whole).dst == (RS if not out else CLIENT)


@pytest.mark.parametrize("proto", [6, 17], ids=["tcp", "udp"])
@pytest.mark.parametrize("size", [40, 41, 1488, 1489])
@pytest.mark.parametrize("out", [False, True], ids=["in", "out"])
@pytest.mark.parametrize("options", [False, True], ids=["ihl20", "ihl24"])
def test_a_partial_checksum_rewritten_then_completed_is_the_complete_rewrite(
        proto: int, size: int, out: bool, options: bool) -> None:
    """What `pyvs run` does with a packet NFQUEUE hands over with a partial checksum: the
    engine's incremental update of a field that held no sum of the data, then
    finish_checksum over the whole result."""
    d = director()
    if proto == 17:
        d.receive(udp(ip(CLIENT), 40000, ip(VIP), 80), 0.0)
    data = packet(proto, size, out, options)
    way = OUT if out else None
    want = d.receive(data, 1.0, way).data          # incremental, from a complete checksum
    assert finish_checksum(d.receive(partial(data), 1.0, way).data) == want


def test_a_tunnelled_head_is_the_outer_header_and_the_head() -> None:
    d = director(TUNNEL)
    data = packet(6, 1400)
    cut = d.receive(data[:576], 1.0, tail=len(data) - 576)
    outer = IP(cut.data + data[576:])
    assert (outer.len, outer.dst, bytes(outer.payload)) == (1420, RS, data)
    assert finish_checksum(d.receive(partial(data), 1.0).data)[20:] == data


def test_the_head_and_tail_must_make_the_packet() -> None:
    d = director()
    data = packet(6, 1488)
    assert d.receive(data[:576], 1.0, tail=100).reason == "malformed"
    assert d.receive(data[:30], 1.0, tail=1458).reason == "malformed"   # no whole TCP header
