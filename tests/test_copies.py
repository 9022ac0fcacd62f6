"""The second-copy rule's fingerprints and windows (pyvs.drivers.copies): a copy is what
the director changes and nothing else, the windows' reach is exact, and the compiled and
the Python build hash alike."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.core.craft import ACK, PSH, SYN, tcp, udp
from pyvs.core.packet import ip_to_int
from pyvs.drivers.copies import COPY_WINDOW_NS, CopyRule, fingerprint
from tests import capfiles as cf

CLIENT, VIP, RS = ip_to_int("10.0.0.2"), ip_to_int("10.0.0.100"), ip_to_int("10.0.1.11")
T0 = 1_700_000_000 * 1_000_000_000
TS_OPTIONS = b"\x01\x01\x08\x0a" + (1234567).to_bytes(4, "big") + (7654321).to_bytes(4, "big")


def with_options(pkt: bytes, options: bytes) -> bytes:
    """The TCP packet with `options` after its header (data offset and lengths adjusted;
    checksums left as they are: the rule ignores them)."""
    b = bytearray(pkt[:40] + options + pkt[40:])
    b[2:4] = len(b).to_bytes(2, "big")
    b[32] = ((20 + len(options)) // 4) << 4
    return bytes(b)


def nat_rewritten(pkt: bytes) -> bytes:
    """A NAT director's copy toward the realserver: destination address and port, TTL and
    every checksum changed."""
    b = bytearray(cf.forwarded(pkt, tcp_check=0xBEEF))
    b[16:20] = RS.to_bytes(4, "big")
    b[22:24] = (8080).to_bytes(2, "big")
    return bytes(b)


def fp(pkt: bytes, toward_server: bool = True) -> int:
    return fingerprint(pkt, (pkt[0] & 15) << 2, toward_server)


def test_a_copy_has_the_packets_fingerprint_and_any_other_change_another():
    base = with_options(tcp(CLIENT, 40000, VIP, 80, PSH | ACK, 1000, 2000, b"GET /", 501,
                            ident=7), TS_OPTIONS)
    assert fp(cf.forwarded(base)) == fp(base)                       # DR: TTL, IP checksum
    assert fp(cf.with_tcp_check(base, 0x1234)) == fp(base)          # offload's partial sum
    assert fp(nat_rewritten(base)) == fp(base)                      # NAT: the server side
    changed = {
        "IP ID": with_options(tcp(CLIENT, 40000, VIP, 80, PSH | ACK, 1000, 2000, b"GET /",
                                  501, ident=8), TS_OPTIONS),
        "TOS": base[:1] + b"\x10" + base[2:],
        "client port": base[:20] + (40001).to_bytes(2, "big") + base[22:],
        "client address": base[:12] + (CLIENT + 1).to_bytes(4, "big") + base[16:],
        "sequence": base[:24] + (1001).to_bytes(4, "big") + base[28:],
        "acknowledgement": base[:28] + (2001).to_bytes(4, "big") + base[32:],
        "flags": base[:33] + bytes([ACK]) + base[34:],
        "window": base[:34] + (502).to_bytes(2, "big") + base[36:],
        "urgent pointer": base[:38] + b"\x00\x01" + base[40:],
        "TSval": base[:47] + b"\x88" + base[48:],
    }
    prints = {name: fp(p) for name, p in changed.items()}
    assert fp(base) not in prints.values()
    assert len(set(prints.values())) == len(prints)
    # the same packet the other way (client side is the destination) is another packet
    assert fp(base, toward_server=False) != fp(base)


def test_udp_copies_share_the_payloads_start_and_length():
    a = udp(CLIENT, 5353, VIP, 53, b"\x12\x34query-one")
    assert fp(cf.forwarded(a)) == fp(a)
    assert fp(udp(CLIENT, 5353, VIP, 53, b"\x56\x78query-one")) != fp(a)
    assert fp(udp(CLIENT, 5353, VIP, 53, b"\x12\x34query-one!")) != fp(a)     # the length


def test_a_snaplen_cut_hashes_what_was_captured():
    """Both copies of a cut packet are cut alike: equal; a cut inside the options still
    tells the packets apart by what is left."""
    base = with_options(tcp(CLIENT, 40000, VIP, 80, ACK, 1, 2, b"x" * 100), TS_OPTIONS)
    for cut in (40, 41, 43, 46, 52, 60):
        assert fp(cf.forwarded(base)[:cut]) == fp(base[:cut])
    assert fp(base[:46]) != fp(base[:47])
    assert fp(base[:46]) != fp(base)


def test_the_compiled_and_the_python_build_agree():
    """A fixed packet's fingerprint, written down: the pure Python pass of the suite and
    the compiled one check the same number (the hash never overflows 63 bits)."""
    pkt = with_options(tcp(CLIENT, 40000, VIP, 80, SYN, 1000, 0, b"", 64240, ident=1),
                       TS_OPTIONS)
    assert fp(pkt) == 3608066533898827244
    assert fp(udp(CLIENT, 5353, VIP, 53, b"query")) == 3093793233099233479


def test_the_windows_reach_less_than_one_always_two_never():
    rule = CopyRule()
    assert not rule.seen(T0, 42)
    assert rule.seen(T0 + COPY_WINDOW_NS - 1, 42)          # < 100 ms: always
    rule = CopyRule()
    start = T0 - T0 % COPY_WINDOW_NS                       # the grid's window start
    assert not rule.seen(start, 42)
    assert rule.seen(start + 2 * COPY_WINDOW_NS - 1, 42)   # < 200 ms, the window before
    rule = CopyRule()
    assert not rule.seen(start, 42)
    assert not rule.seen(start + 2 * COPY_WINDOW_NS, 42)   # 200 ms: never
    rule = CopyRule()
    assert not rule.seen(start, 42)
    assert not rule.seen(start + 10**18, 42)               # an idle span of decades
    assert rule.seen(start + 10**18 + 5, 42)


@settings(max_examples=15, deadline=None)
@given(st.integers(min_value=50, max_value=20000), st.integers(min_value=1, max_value=4))
def test_every_fingerprint_of_a_window_is_kept_however_many(n, windows):
    """The tables grow past their first 4,096 slots, and a window reused after the one
    before holds only its own entries."""
    rule = CopyRule()
    for w in range(windows):
        at = T0 + w * COPY_WINDOW_NS
        fps = [(w << 40) + i * 7919 + 1 for i in range(n)]
        assert not any(rule.seen(at, f) for f in fps)
        assert all(rule.seen(at + 1, f) for f in fps)
        if w >= 2:                                          # two windows back: gone
            assert not rule.seen(at + 2, ((w - 2) << 40) + 1)
