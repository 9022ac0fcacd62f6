"""The kernel's defenses under a memory budget (update_defense_level, drop_entry,
drop_packet, secure_tcp) and the allocation failure at the budget: a SYN flood cannot
grow the table past it, and legitimate connections that are already up survive."""

import time

import pytest

from pyvs.core import commands as C
from pyvs.core.defense import ENTRY_BYTES, PAGE, Defense
from pyvs.core.engine import Director
from pyvs.core.forwarding import DROUTE, MASQ
from pyvs.core.packet import IPPROTO_TCP
from tests.helpers import ACK, SYN, Flow, ip

SVC = C.ServiceKey(IPPROTO_TCP, ip("10.0.0.100"), 80)


def director(entries: int, fwd=MASQ, **sysctls) -> Director:
    """A director whose budget holds `entries` entries."""
    d = Director(memory_limit=entries * ENTRY_BYTES, seed=7)
    for name, value in sysctls.items():
        d.apply(C.SetSysctl(name, value), 0.0)
    d.apply(C.AddService(SVC, "rr"), 0.0)
    for i in (1, 2):
        d.apply(C.AddDest(SVC, ip(f"192.168.10.{i}"), 80, fwd), 0.0)
    return d


def flood(d: Director, n: int, t: float, first: int = 0) -> list:
    """`n` spoofed SYNs (one per source address), never answered."""
    return [Flow(d, client=f"172.{16 + (i >> 16) % 16}.{(i >> 8) & 255}.{i & 255}",
                 cport=1024 + i % 60000).inb(SYN, t) for i in range(first, first + n)]


def test_the_budget_bounds_the_table() -> None:
    d = director(1000)
    verdicts = flood(d, 1500, 0.0)
    assert d.connection_count() == 1000
    assert [v.reason for v in verdicts[999:1001]] == ["forward", "no-memory"]
    assert d.drops["no-memory"] == 500 and d.defense.no_memory == 500
    d.handle_timers(61.0)                 # the half-open entries time out
    assert d.connection_count() == 0
    assert flood(d, 1, 62.0)[0].reason == "forward"


def test_drop_entry_engages_under_pressure_and_keeps_live_connections() -> None:
    # 1000 entries allowed; memory is short once fewer than 50 pages remain
    short_at = 1000 - 50 * PAGE // ENTRY_BYTES
    d = director(1000, drop_entry=1, amemthresh=50)
    legit = [Flow(d, client="10.0.0.5", cport=40000 + i) for i in range(20)]
    for f in legit:
        f.inb(SYN, 0.0)
        f.out(SYN | ACK, 0.001)
        f.inb(ACK, 0.002)
    flood(d, 1000, 0.5)
    assert d.connection_count() == 1000 > short_at
    d.handle_timers(1.0)                  # the first defense tick
    assert d.sysctls.drop_entry == 2      # the sysctl shows the defense is on
    d.handle_timers(30.0)
    assert d.defense.entries_dropped > 0 and d.connection_count() < 1000
    assert all(f.state() == "ESTABLISHED" for f in legit)     # established: not dropped
    d.handle_timers(120.0)                # the flood's entries are gone: memory recovers
    assert d.sysctls.drop_entry == 1 and not d.defense.dropentry


def test_drop_packet_drops_one_new_connection_in_rate() -> None:
    d = director(1000, drop_packet=1, amemthresh=50)
    flood(d, 900, 0.0)
    d.handle_timers(1.0)
    avail = (1000 * ENTRY_BYTES - 900 * ENTRY_BYTES) // PAGE
    rate = 50 // (50 - avail)
    assert d.sysctls.drop_packet == 2 and d.defense.drop_rate == rate
    reasons = [v.reason for v in flood(d, 4 * rate, 1.5, first=900)]
    assert reasons.count("drop-packet") == 4
    assert d.drops["drop-packet"] == d.defense.packets_dropped == 4


def test_secure_tcp_switches_tables_under_pressure_and_back() -> None:
    d = director(1000, fwd=DROUTE, secure_tcp=1, amemthresh=50)
    flood(d, 900, 0.0)
    d.handle_timers(1.0)
    assert d.sysctls.secure_tcp == 2
    f = Flow(d, client="10.0.0.9", cport=5555)
    f.inb(SYN, 1.5)
    assert f.state() == "SYNACK"          # DR under the defense table: SYN -> SYNACK 120 s
    d.handle_timers(62.0)                 # the flood expired at 60 s; the tick at 61 sees it
    assert d.sysctls.secure_tcp == 1
    g = Flow(d, client="10.0.0.9", cport=5556)
    g.inb(SYN, 63.0)
    assert g.state() == "SYN_RECV"


def test_drop_entry_3_drops_half_open_entries_without_pressure() -> None:
    d = Director(seed=3)
    d.apply(C.SetSysctl("drop_entry", 3), 0.0)
    d.apply(C.AddService(SVC, "rr"), 0.0)
    d.apply(C.AddDest(SVC, ip("192.168.10.1"), 80, DROUTE), 0.0)
    flood(d, 3200, 0.0)
    d.handle_timers(10.0)
    # ten ticks, each looking at 1/32 of the table
    assert 3200 * (1 - (31 / 32) ** 10) * 0.8 < d.defense.entries_dropped < 3200 * 0.35


def test_todrop_entry_rates() -> None:
    defense = Defense()
    assert not defense.todrop_entry(1, 59.9)            # active in the last 60 s: kept
    assert not defense.todrop_entry(0, 100) and not defense.todrop_entry(9, 100)
    assert [defense.todrop_entry(1, 100) for _ in range(3)] == [True] * 3
    assert [defense.todrop_entry(3, 100) for _ in range(6)] == [True, False, False] * 2


def test_an_idle_span_costs_little_with_a_budget() -> None:
    d = director(1000, drop_entry=1)
    f = Flow(d)
    f.inb(SYN, 0.0)
    start = time.perf_counter()
    d.handle_timers(3e9)
    assert time.perf_counter() - start < 0.5
    assert d.connection_count() == 0 and d.next_timer() <= 3e9 + 2


@pytest.mark.parametrize("name,value,text", [
    ("drop_entry", 4, "drop_entry: 4 is out of range 0..3"),
    ("amemthresh", -1, "amemthresh: -1 is out of range 0..2147483647")])
def test_defense_sysctls_are_checked(name, value, text) -> None:
    with pytest.raises(ValueError) as exc:
        Director().apply(C.SetSysctl(name, value), 0.0)
    assert str(exc.value) == text


def _half_open_director(seed: int) -> Director:
    d = Director(seed=seed)
    d.apply(C.SetSysctl("drop_entry", 3), 0.0)
    d.apply(C.AddService(SVC, "rr"), 0.0)
    d.apply(C.AddDest(SVC, ip("192.168.10.1"), 80, DROUTE), 0.0)
    Flow(d).inb(SYN, 0.0)
    return d


def test_drop_entry_draws_hash_buckets_not_entries() -> None:
    """ip_vs_random_dropentry() draws 128 of the 4096 buckets a second: a lone half-open
    entry is seen in a tick with probability 1 - (4095/4096)^128 = 3.08%, not every tick."""
    ticks = []
    for seed in range(200):
        d = _half_open_director(seed)
        t = 0
        while d.connection_count():
            t += 1
            d.handle_timers(float(t))
        ticks.append(t)
    # geometric, cut at 60 s when the SYN_RECV entry expires: mean (1 - 0.969^60) / 0.0308
    assert 24 < sum(ticks) / len(ticks) < 31


def test_a_pass_walks_a_bucket_drawn_twice_twice() -> None:
    """The 128 draws repeat buckets (about 2 repeats a pass); each repeat walks the bucket
    again, and one entry's in each bucket."""
    d = Defense(seed=1)
    passes = [d.scan(40960) for _ in range(50)]
    assert all(len(p) == 128 for p in passes)
    for p in passes:
        seen = [i for chain in p for i in chain]
        assert 1000 < len(seen) < 1600                # 128 buckets of 4096, 10 entries each
        assert all(chain == sorted(chain, reverse=True) for chain in p)
    assert sum(len(p) - len({tuple(c) for c in p if c}) for p in passes) > 20

