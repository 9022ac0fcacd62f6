"""Every scheduler's pick sequence, with the kernel's newest-first list order."""

from collections import Counter

from pyvs.core.engine import Director
from pyvs.core.forwarding import MASQ
from pyvs.core.packet import int_to_ip, ip_to_int
from pyvs.core.schedulers import hash_32
from pyvs.core.service import SVC_F_SCHED1, SVC_F_SCHED2
from pyvs.core.siphash import siphash
from tests.helpers import ip

VIP = ip("10.0.0.100")
CLIENT = ip("10.0.0.5")


def build(scheduler, weights, flags=0):
    """Dests named A, B, C... added in the given order (so the last one is the list head)."""
    d = Director()
    svc = d.add_service(6, VIP, 80, scheduler=scheduler, flags=flags)
    names = {}
    for i, w in enumerate(weights):
        dest = d.add_dest(svc, ip(f"192.168.10.{i + 1}"), 80, MASQ, weight=w)
        names[dest.addr] = "ABCDEFGH"[i]
    return d, svc, names


def picks(svc, names, n, saddr=CLIENT, daddr=VIP):
    return "".join(names[svc.scheduler.schedule(svc, saddr, 1000 + i, daddr, 0.0).addr]
                   for i in range(n))


def test_rr_first_pick_is_last_added():
    _, svc, names = build("rr", [1, 1, 1])
    assert picks(svc, names, 7) == "CBACBAC"


def test_rr_skips_weight_zero_and_overloaded():
    d, svc, names = build("rr", [1, 1, 1])
    d.edit_dest(svc.find_dest(ip("192.168.10.2"), 80), weight=0)
    svc.find_dest(ip("192.168.10.3"), 80).overload = True
    assert picks(svc, names, 3) == "AAA"


def test_rr_del_dest_steps_cursor_back():
    d, svc, names = build("rr", [1, 1, 1])
    assert picks(svc, names, 2) == "CB"
    d.del_dest(svc.find_dest(ip("192.168.10.2"), 80))
    assert picks(svc, names, 3) == "ACA"


def test_wrr_first_round_then_steady_cycle():
    # added C(1) then B(2) then A(3): list order A, B, C (docs/ipvs.md, schedulers)
    d = Director()
    svc = d.add_service(6, VIP, 80, scheduler="wrr")
    names = {}
    for name, w, addr in (("C", 1, 3), ("B", 2, 2), ("A", 3, 1)):
        dest = d.add_dest(svc, ip(f"192.168.10.{addr}"), 80, MASQ, weight=w)
        names[dest.addr] = name
    assert picks(svc, names, 12) == "ABCAABABCAAB"


def test_wrr_weight_change_resets_cursor():
    d, svc, names = build("wrr", [1, 1])
    assert picks(svc, names, 3) == "BAB"
    d.edit_dest(svc.find_dest(ip("192.168.10.1"), 80), weight=3)
    # cw stays 1 after the change, so B and A each get one pass before the cycle restarts
    assert picks(svc, names, 8) == "BAAABAAA"


def test_lc_ties_go_to_newest():
    d, svc, names = build("lc", [1, 1])
    assert picks(svc, names, 2) == "BB"
    svc.dests[0].inactconns = 1        # B
    assert picks(svc, names, 1) == "A"
    svc.dests[1].activeconns = 1       # A: 256 > 1
    assert picks(svc, names, 1) == "B"


def test_wlc_weights_cross_multiply():
    _, svc, names = build("wlc", [3, 1])
    a, b = svc.dests[1], svc.dests[0]
    a.activeconns, b.activeconns = 2, 1           # 512*1 vs 256*3: A less loaded
    assert picks(svc, names, 1) == "A"
    a.activeconns = 3                             # 768*1 vs 256*3: tie -> first (B)
    assert picks(svc, names, 1) == "B"


def test_wlc_never_picks_weight_zero():
    _, svc, names = build("wlc", [0, 1])
    svc.dests[0].activeconns = 100
    assert picks(svc, names, 2) == "BB"
    svc.dests[0].weight = 0
    assert svc.scheduler.schedule(svc, 1, 1, VIP, 0.0) is None


def test_sed_ignores_inactive():
    _, svc, names = build("sed", [1, 1])
    svc.dests[0].inactconns = 50                  # B
    svc.dests[1].activeconns = 1                  # A: (1+1) vs B (0+1)
    assert picks(svc, names, 1) == "B"


def test_nq_returns_first_idle():
    _, svc, names = build("nq", [1, 5])
    svc.dests[0].activeconns = 1                  # B busy
    assert picks(svc, names, 1) == "A"
    svc.dests[1].activeconns = 1
    assert picks(svc, names, 1) == "B"            # (1+1)*1 vs (1+1)*5


def test_fo_highest_weight_first_wins():
    _, svc, names = build("fo", [2, 5, 5])
    assert picks(svc, names, 3) == "CCC"
    svc.dests[0].overload = True
    assert picks(svc, names, 1) == "B"


def test_ovf_skips_dests_over_weight():
    _, svc, names = build("ovf", [2, 5])
    svc.dests[0].activeconns = 6                  # B over its weight
    assert picks(svc, names, 1) == "A"


def test_sh_buckets_and_hash():
    _, svc, names = build("sh", [1, 1])
    saddr = ip("10.0.0.5")
    bucket = hash_32(saddr)
    assert bucket == ((saddr * 0x61C88647) & 0xFFFFFFFF) >> 24
    # buckets alternate B, A (list order)
    expected = "BA"[bucket % 2]
    assert picks(svc, names, 3, saddr=saddr) == expected * 3


def test_sh_port_and_fallback():
    _, svc, names = build("sh", [1, 1], flags=SVC_F_SCHED2 | SVC_F_SCHED1)
    saddr = ip("10.0.0.5")
    seq = picks(svc, names, 4, saddr=saddr)
    exp = "".join("BA"[hash_32((1000 + i + saddr) & 0xFFFFFFFF) % 2] for i in range(4))
    assert seq == exp
    for dest in svc.dests:
        if names[dest.addr] == "B":
            dest.weight = 0
    assert set(picks(svc, names, 4, saddr=saddr)) == {"A"}


def test_dh_hashes_destination():
    _, svc, names = build("dh", [1, 1, 1])
    for daddr in (ip("10.1.1.1"), ip("10.1.1.2"), VIP):
        expected = "CBA"[hash_32(daddr) % 3]
        assert picks(svc, names, 2, daddr=daddr) == expected * 2


def test_lblc_sticks_to_cached_server():
    _, svc, names = build("lblc", [1, 1])
    assert picks(svc, names, 1) == "B"
    svc.dests[0].activeconns = 1                  # B busier now; cache still says B
    assert picks(svc, names, 1) == "B"
    svc.dests[0].activeconns = 2                  # B over weight while A is under half load
    assert picks(svc, names, 1) == "A"


def test_lblcr_grows_set_when_overloaded():
    _, svc, names = build("lblcr", [1, 1])
    assert picks(svc, names, 1) == "B"
    svc.dests[0].activeconns = 2
    assert picks(svc, names, 1) == "A"
    assert len(svc.scheduler.cached(VIP)[1]) == 2


def test_lblcr_set_drops_its_most_loaded_member_24h_after_its_last_change():
    _, svc, names = build("lblcr", [1, 1])
    assert picks(svc, names, 1) == "B"
    svc.dests[0].activeconns = 2                 # B overloaded: A joins the set at t=10
    assert _lblc_pick(svc, names, VIP, 10.0) == "A"
    for hour in range(1, 25):                    # used hourly: the entry itself stays
        assert _lblc_pick(svc, names, VIP, hour * 3600.0 - 1) == "A"
    assert len(svc.scheduler.cached(VIP)[1]) == 2
    assert _lblc_pick(svc, names, VIP, 86410.0) == "A"      # not yet: strictly after
    assert len(svc.scheduler.cached(VIP)[1]) == 2
    assert _lblc_pick(svc, names, VIP, 86410.5) == "A"
    assert [names[d.addr] for d in svc.scheduler.cached(VIP)[1]] == ["A"]


def _lblc_pick(svc, names, daddr, now):
    return names[svc.scheduler.schedule(svc, CLIENT, 1000, daddr, now).addr]


def test_lblc_entry_expires_at_the_first_full_check_24h_after_its_last_use():
    """Full checks run every 30th periodic run (1800 s from the service's creation); one
    at T drops entries last used at or before T - 24 h.  Last use 100 -> gone at 88200."""
    for now, expected in ((88199.9, "B"), (88200.0, "A")):
        _, svc, names = build("lblc", [1, 1])
        assert _lblc_pick(svc, names, VIP, 100.0) == "B"
        svc.dests[0].activeconns = 1       # wlc would pick A now; the cache still says B
        assert _lblc_pick(svc, names, VIP, now) == expected


def test_lblc_overfull_table_purges_idle_entries_from_the_rover_and_delays_full_checks():
    """16384 + 100 entries: each 60 s run drops entries idle 6 min, bucket by bucket from
    bucket 1, until 4/3 of the excess (133) is gone; the runs that find the table overfull
    do not count towards the next full check, so it comes 7 runs (420 s) late."""
    _, svc, names = build("lblc", [1, 1])
    sched = svc.scheduler
    base = ip("20.0.0.0")
    daddrs = [base + i for i in range(16384 + 100)]
    far = next(a for a in daddrs if hash_32(a, 10) == 1000)     # not reached by the purge
    _lblc_pick(svc, names, far, 0.0)
    for a in daddrs:
        if a != far:
            _lblc_pick(svc, names, a, 10.0)
    assert sched.count == 16484
    _lblc_pick(svc, names, far, 419.0)     # runs at 60..360: nothing idle 6 min yet
    assert sched.count == 16484
    probe = ip("30.0.0.1")
    _lblc_pick(svc, names, probe, 420.0)   # run at 420: buckets 1, 2, ... until >= 133
    per_bucket = Counter(hash_32(a, 10) for a in daddrs if a != far)
    reached, dropped = 0, 0
    while dropped < 133:
        reached += 1
        dropped += per_bucket[reached]
    gone = {a for a in daddrs if 1 <= hash_32(a, 10) <= reached and a != far}
    assert sched.rover == reached
    assert all((sched.cached(a) is None) == (a in gone) for a in daddrs)
    assert sched.count == 16484 + 1 - dropped
    # far, last used at 419, goes at the first full check at or after 86819: 88200 on the
    # usual schedule (1800k), but the 7 overfull runs moved them to 1800k + 420: 86820
    for now, present in ((86819.0, True), (86820.0, False)):
        _lblc_pick(svc, names, probe, now)
        assert (sched.cached(far) is not None) is present


def test_engine_uses_scheduler_for_new_connections():
    from tests.helpers import SYN, Flow, make_director
    d = make_director(n=3, scheduler="rr")
    seen = []
    for i in range(6):
        f = Flow(d, cport=50000 + i)
        f.inb(SYN, float(i))
        seen.append(int_to_ip(f.conn().daddr))
    assert seen == ["192.168.10.3", "192.168.10.2", "192.168.10.1"] * 2


# ---------------------------------------------------------------------- mh (Maglev)
def test_siphash_matches_the_reference_vectors() -> None:
    """SipHash-2-4 test vectors (key 00..0f, message 00..n-1): the permutation, preamble
    and finalisation hsiphash (SipHash-1-3 on 64-bit kernels) shares."""
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert siphash(b"", k0, k1) == 0x726FDB47DD0E0E31
    assert siphash(bytes(range(8)), k0, k1) == 0x93F5F5799A932462
    assert siphash(bytes(range(15)), k0, k1) == 0xA129CA6149BE45E5


def _mh(*weights: int, flags: int = 0):
    d = Director()
    svc = d.add_service(6, ip_to_int("10.0.0.1"), 80, scheduler="mh", flags=flags)
    dests = [d.add_dest(svc, ip_to_int(f"192.168.1.{i + 1}"), 80, weight=w)
             for i, w in enumerate(weights)]
    return d, svc, dests


def test_mh_table_is_full_and_shared_by_weight() -> None:
    d, svc, (a, b) = _mh(1, 3)
    table = svc.scheduler.lookup
    assert len(table) == 4093 and None not in table
    counts = Counter(table)
    assert counts[a] + counts[b] == 4093
    assert abs(counts[b] / counts[a] - 3) < 0.05


def test_mh_quiesced_dest_keeps_its_slots_and_fallback_probes() -> None:
    d, svc, (a, b) = _mh(1, 1)
    before = list(svc.scheduler.lookup)
    d.edit_dest(a, weight=0)                       # last_weight stays 1: same table
    assert svc.scheduler.lookup == before
    clients = [ip_to_int(f"172.16.{i >> 8}.{i & 255}") for i in range(200)]
    picks = [svc.scheduler.schedule(svc, c, 1000, 0, 0.0) for c in clients]
    assert None in picks and a not in picks          # its clients get no destination
    d2, svc2, (a2, b2) = _mh(1, 1, flags=SVC_F_SCHED1)
    d2.edit_dest(a2, weight=0)
    assert {svc2.scheduler.schedule(svc2, c, 1000, 0, 0.0) for c in clients} == {b2}


def test_mh_adding_a_dest_moves_few_slots() -> None:
    """Maglev's minimal disruption: a third equal dest takes about a third of the table
    and leaves most other slots where they were."""
    d, svc, _ = _mh(1, 1)
    before = list(svc.scheduler.lookup)
    c = d.add_dest(svc, ip_to_int("192.168.1.3"), 80)
    after = svc.scheduler.lookup
    moved = sum(x is not y for x, y in zip(before, after))
    taken = sum(x is c for x in after)
    assert abs(taken - 4093 / 3) < 60
    assert moved < taken * 1.25
