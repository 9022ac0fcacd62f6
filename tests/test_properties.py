"""Hypothesis: malformed packets never crash the director or corrupt its table, and the
per-realserver counters never drift from the connections that exist."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvs.core import states as S
from pyvs.core.craft import tcp, udp
from pyvs.core.engine import IN, OUT, Director
from pyvs.core.forwarding import DROUTE, MASQ
from pyvs.core.service import SVC_F_PERSISTENT
from tests.helpers import ip

VIP = ip("10.0.0.100")
RS = [ip("192.168.10.1"), ip("192.168.10.2"), ip("192.168.10.3")]


def build(kernel: str, fwd: int, persistent: bool) -> Director:
    d = Director(kernel=kernel)
    svc = d.add_service(6, VIP, 80, scheduler="wlc",
                        flags=SVC_F_PERSISTENT if persistent else 0,
                        timeout=30 if persistent else 0)
    for i, a in enumerate(RS):
        d.add_dest(svc, a, 80, fwd if i != 2 else MASQ, weight=i)
    usvc = d.add_service(17, VIP, 53, scheduler="rr")
    d.add_dest(usvc, RS[0], 53, fwd)
    return d


def check_invariants(d: Director) -> None:
    per_dest: dict[int, list[int]] = {}
    states = [0] * len(d.state_counts)
    for cp in d.connections():
        if not cp.template:
            states[cp.state if cp.protocol == 6 else -1] += 1
        dest = cp.dest
        slot = per_dest.setdefault(id(dest), [0, 0, 0])
        if cp.template:
            slot[2] += 1
        elif cp.inactive:
            slot[1] += 1
        else:
            slot[0] += 1
        if not cp.template and cp.protocol == 6:
            assert cp.inactive == (not d.profile.active[cp.state])
        assert cp.alive
    for svc in d.services:
        for dest in svc.dests:
            got = [dest.activeconns, dest.inactconns, dest.persistconns]
            assert got == per_dest.get(id(dest), [0, 0, 0])
            assert min(got) >= 0
    assert d.state_counts == states          # kept as entries change, never recounted


event = st.tuples(
    st.floats(min_value=0.0, max_value=400.0),          # time step
    st.integers(min_value=0, max_value=3),              # which client
    st.sampled_from([IN, OUT]),
    st.integers(min_value=0, max_value=255),            # TCP flags byte
    st.booleans(),                                      # UDP instead of TCP
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(S.PROFILES)), st.sampled_from([MASQ, DROUTE]), st.booleans(),
       st.integers(0, 3), st.lists(event, max_size=60))
def test_counters_match_connections_under_random_traffic(kernel, fwd, persistent, reuse,
                                                         events):
    d = build(kernel, fwd, persistent)
    d.set_sysctl("conn_reuse_mode", reuse)
    now = 0.0
    for step, client, direction, flags, is_udp in events:
        now += step
        caddr, cport = ip("10.0.0.5") + client, 40000 + client
        if direction == IN:
            pkt = (udp(caddr, cport, VIP, 53, b"x") if is_udp
                   else tcp(caddr, cport, VIP, 80, flags))
        else:
            cp = d.find_conn(17 if is_udp else 6, caddr, cport, VIP, 53 if is_udp else 80)
            if cp is None:
                continue
            src, sport = (cp.daddr, cp.dport) if cp.fwd == MASQ else (VIP, cp.vport)
            pkt = (udp(src, sport, caddr, cport, b"y") if is_udp
                   else tcp(src, sport, caddr, cport, flags))
        d.receive(pkt, now, direction)
        check_invariants(d)
        for cp in d.connections():
            assert cp.expires > now or cp.n_control
    d.handle_timers(now + 100000)
    assert d.connections() == []
    check_invariants(d)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([None, IN, OUT]))
def test_garbage_never_crashes(data, direction):
    d = build("modern", MASQ, False)
    v = d.receive(data, 1.0, direction)
    assert v.action in ("accept", "drop") and isinstance(v.reason, str)
    check_invariants(d)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 39), st.integers(0, 255), st.binary(min_size=1, max_size=4))
def test_mangled_headers_never_crash(pos, value, tail):
    d = build("modern", MASQ, False)
    good = bytearray(tcp(ip("10.0.0.5"), 40000, VIP, 80, 0x02))
    good[pos] = value
    for pkt in (bytes(good), bytes(good[:pos]) + tail):
        v = d.receive(pkt, 1.0)
        assert v.action in ("accept", "drop")
    check_invariants(d)


addr = st.integers(1, 0xFFFFFFFE)
port = st.integers(1, 0xFFFF)


@settings(max_examples=300, deadline=None)
# client port 20 is FTP data, never scheduled by ip_vs_schedule() (see test_persistence)
@given(vip=addr, rs=addr, client=addr, vport=port, rport=port,
       cport=port.filter(lambda p: p != 20), udp_=st.booleans(),
       ident=st.integers(0, 0xFFFF), payload=st.binary(max_size=40),
       seq=st.integers(0, 0xFFFFFFFF))
def test_masq_rewrite_is_byte_exact(vip, rs, client, vport, rport, cport, udp_, ident,
                                    payload, seq) -> None:
    """Masq's incremental checksum updates give, in both directions, exactly the bytes of a
    packet built from scratch with the rewritten addresses and ports."""
    d = Director()
    svc = d.add_service(17 if udp_ else 6, vip, vport, scheduler="rr")
    d.add_dest(svc, rs, rport, MASQ)
    if udp_:
        def make(s, sp, dst, dp):
            return udp(s, sp, dst, dp, payload, ident=ident)
    else:
        def make(s, sp, dst, dp):
            return tcp(s, sp, dst, dp, S.TH_SYN, seq, 0, payload, ident=ident)
    v = d.receive(make(client, cport, vip, vport), 1.0, IN)
    assert bytes(v.data) == make(client, cport, rs, rport)
    v = d.receive(make(rs, rport, client, cport), 1.1, OUT)
    assert bytes(v.data) == make(vip, vport, client, cport)
