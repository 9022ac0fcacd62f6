"""Several simulated directors: what survives a failover, a failback and an ECMP change,
as the kernel's rules give it (docs/failover.md derives each outcome); the ECMP router's
spreads; the reports."""

import json
from dataclasses import replace

import pytest

from pyvs.cli import main
from pyvs.config import ConfigFileError
from pyvs.core.packet import ip_to_int
from pyvs.sim import scenarios
from pyvs.sim.cluster import master_down_interval
from pyvs.sim.ecmp import L4, HashThreshold, Modulo, Resilient, flow_hash, moved_share
from pyvs.sim.run import run
from pyvs.sim.scenarios import FAILOVER_AT, _failback, failover_idle

VIP = ip_to_int("192.0.2.110")


def fates(result) -> dict[float, tuple[str, str]]:
    """Each client connection's (phase, fate), by the second its session started."""
    return {round(f.started, 2): (f.phase, f.fate) for f in result.fates}


def by_client(snap: dict) -> dict[str, str]:
    return {c["client"]: c["dest"].split(":")[0] for c in snap["connections"]}


# the failover scenario's sessions, by start: six long-held ones, one 4 s old, one 1 s
# old, the pooled one idle since its handshake, one whose handshake is under way at the
# crash, two that start while nobody holds the VIP
LONG = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
FOUR_S, ONE_S, POOLED, OPENING, NEW = 56.0, 59.0, 20.0, 59.99, [61.0, 62.0]


def test_keepalived_takeover_delay() -> None:
    """advert_int 1 s x 3 plus the skew of priority 100: (256 - 100) / 256 s."""
    assert master_down_interval() == 3 + 156 / 256
    assert master_down_interval(advert_int=0.5, priority=200) == 1.5 + 56 / 256


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_failover_without_sync_resets_every_connection_that_sends(mode: str) -> None:
    """d2 has no entry: a non-SYN packet (sloppy_tcp=0) is not scheduled and reaches the
    VIP's local TCP, which resets it.  In NAT the pooled connection's first packet after
    the takeover is the server's greeting: d2 forwards it un-NATed (source the realserver's
    address), the client's TCP rejects it, and the client waits forever."""
    r = run(scenarios.get("failover"), mode)
    pooled = ("held", "hung") if mode == "nat" else ("held", "reset by d2")
    assert fates(r) == {**{t: ("held", "reset by d2") for t in LONG + [FOUR_S, ONE_S]},
                        POOLED: pooled, OPENING: ("opening", "reset by d2"),
                        **{t: ("new", "survived") for t in NEW}}
    # the new ones' SYNs were lost until the takeover, then retransmitted
    assert r.clients["connect_over_1s"] == 2 and 3.0 <= r.clients["connect_max"] < 3.1
    assert "has no entry while the realserver's socket is ESTABLISHED" in r.cause


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_failover_with_sync_keeps_what_the_master_had_sent(mode: str) -> None:
    """Sent: every entry at its 3rd inbound packet, flushed 2-3 s later.  Not sent: the
    last second's (still in d1's buffer at the crash), the pooled one (2 packets), the
    handshake (SYN_RECV is never synced)."""
    r = run(scenarios.get("failover-sync"), mode, at=(FOUR_S + 1.9, FAILOVER_AT - 0.5))
    pooled = ("held", "hung") if mode == "nat" else ("held", "reset by d2")
    assert fates(r) == {**{t: ("held", "survived") for t in LONG + [FOUR_S]},
                        ONE_S: ("held", "reset by d2"), POOLED: pooled,
                        OPENING: ("opening", "reset by d2"),
                        **{t: ("new", "survived") for t in NEW}}
    (d1_early, _), (d2_early, _), (d1, _), (d2, _) = r.snapshots
    assert (d1["director"], d1["role"], d2["director"], d2["role"]) == (
        "d1", "holds the VIP", "d2", "backup")
    long = [f"198.18.0.{i}" for i in range(1, 7)]
    # 1.9 s after the 4-s-old connection's record was made it is still in d1's buffer
    assert sorted(c.split(":")[0] for c in by_client(d2_early)) == long
    assert sorted(c.split(":")[0] for c in by_client(d2)) == long + ["198.18.0.7"]
    assert len(by_client(d1)) == 9
    # the backup's entries: ESTABLISHED, the master's realserver, a full 900 s timeout
    # from the datagram's arrival, not from the connection's last packet
    for c in d2["connections"]:
        assert c["state"] == "ESTABLISHED" and by_client(d1)[c["client"]] == \
            c["dest"].split(":")[0]
        assert 840 < c["expires"] < 900


def test_failover_sync_listing_whole(capsys) -> None:
    assert main(["simulate", "failover-sync", "--mode", "dr", "--at", "59.5", "-c"]) == 0
    out = capsys.readouterr().out
    start = out.index("director d2's table (backup)")
    assert out[start:out.index("--- the realservers'", start)] == (
        "director d2's table (backup)\n"
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
        "TCP 14:03  ESTABLISHED 198.18.0.1:59056   192.0.2.110:23     192.0.2.12:23\n"
        "TCP 14:03  ESTABLISHED 198.18.0.2:57795   192.0.2.110:23     192.0.2.11:23\n"
        "TCP 14:03  ESTABLISHED 198.18.0.3:34835   192.0.2.110:23     192.0.2.12:23\n"
        "TCP 14:06  ESTABLISHED 198.18.0.4:41126   192.0.2.110:23     192.0.2.11:23\n"
        "TCP 14:06  ESTABLISHED 198.18.0.5:36631   192.0.2.110:23     192.0.2.12:23\n"
        "TCP 14:06  ESTABLISHED 198.18.0.6:49002   192.0.2.110:23     192.0.2.11:23\n"
        "TCP 14:58  ESTABLISHED 198.18.0.7:57703   192.0.2.110:23     192.0.2.11:23\n")
    assert "d1 (down at the end): sent 3 sync datagrams (7 records)" in out
    assert "  held 9: 7 survived, 2 reset by d2; opening 1: 1 reset by d2; new 2: 2 survived" \
        in out


@pytest.mark.parametrize("name, synced", [("failover-sloppy", []),
                                          ("failover-sync-sloppy", LONG + [FOUR_S])])
def test_sloppy_tcp_reschedules_and_survives_only_on_the_same_realserver(name, synced) -> None:
    """sloppy_tcp=1: d2 schedules a connection it lacks at its next packet (rr); it
    survives where rr picks the realserver holding it, and that realserver resets it
    otherwise.  d2 never resets one itself."""
    r = run(scenarios.get(name), "dr", at=(80,))
    (d2, _), = r.snapshots
    now_on = {src.split(":")[0]: rs for src, rs in by_client(d2).items()}
    survived = reset = 0
    for f in r.fates:
        if f.phase != "held" or f.started == POOLED:     # the pooled one sends at 90 s
            continue
        ip = f.client.split(":")[0]
        if f.started in synced or now_on[ip] == f.realserver:
            assert f.fate == "survived"
            survived += 1
        else:
            assert f.fate.startswith("reset by rs")
            reset += 1
    assert survived >= len(synced) and reset >= 1
    assert not any(f.fate == "reset by d2" for f in r.fates)


def test_nat_reply_without_an_entry_leaks_and_the_client_hangs() -> None:
    """NAT, sloppy_tcp=1 too: only client packets are scheduled; the realserver's greeting
    has no entry on d2 and leaves un-NATed (ip_vs_out_hook: NF_ACCEPT), the client resets
    it (no socket for the realserver's address), and waits for its greeting forever."""
    r = run(scenarios.get("failover-sloppy"), "nat")
    assert fates(r)[POOLED] == ("held", "hung")


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_failback_with_vrrp_daemons_loses_every_connection(mode: str) -> None:
    """keepalived's lvs_sync_daemon IF VI_1: d1 was down while d2 synced, and it listens
    only the second before it takes the VIP back: it knows none of them."""
    r = run(scenarios.get("failback"), mode)
    assert set(fates(r).values()) == {("held", "reset by d1")} and len(r.fates) == 8


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_failback_with_a_stale_table_keeps_only_its_own(mode: str) -> None:
    """d1 was cut off, not rebooted: its entries of 60 s still hold 900 s, so the six
    connections it carried survive the failback; the two d2 made meanwhile are reset."""
    r = run(scenarios.get("failback-stale"), mode, at=(199,))
    old = {t: ("held", "survived") for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)}
    assert fates(r) == {**old, 100.0: ("held", "reset by d1"), 110.0: ("held", "reset by d1")}
    roles = [(snap["director"], snap["role"]) for snap, _ in r.snapshots]
    assert roles == [("d1", "cut off"), ("d2", "holds the VIP")]
    assert len(r.snapshots[0][0]["connections"]) == 6


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_failback_both_daemons_and_refresh_keeps_them(mode: str) -> None:
    r = run(scenarios.get("failback-both-daemons"), mode)
    assert set(fates(r).values()) == {("held", "survived")} and len(r.fates) == 8


def test_failback_both_daemons_with_the_default_threshold_is_not_enough() -> None:
    """With sync_threshold 3 50 d2 resends an ESTABLISHED connection only at its 53rd,
    103rd... inbound packet: in d1's 30 s none of them is sent."""
    sc = _failback("x", "", "both", 30.0, False, "")
    r = run(sc, "dr")
    assert set(fates(r).values()) == {("held", "reset by d1")}


def test_idle_connection_outlives_its_backup_entry() -> None:
    """The backup's entry lives 900 s after d1's only message (the 3rd packet); with a
    keystroke a minute the 53rd packet is 25 minutes away.  sync_refresh_period with
    sync_threshold 3 0 resends it."""
    r = run(scenarios.get("failover-sync-idle"), "dr", at=(899, 999))
    assert set(fates(r).values()) == {("held", "reset by d2")}
    assert [len(s["connections"]) for s, _ in r.snapshots] == [4, 4, 4, 0]   # d1, d2
    fixed = run(failover_idle("y", "", True), "dr")
    assert set(fates(fixed).values()) == {("held", "survived")}


# ---------------------------------------------------------------------- ECMP
def _moves(result, before: list[str], after: list[str], spread=HashThreshold):
    """{client: (director before, after)} for the held flows, by the router's rule."""
    out = {}
    for f in result.fates:
        if f.phase != "held":
            continue
        ip, port = f.client.split(":")
        h = flow_hash(L4, ip_to_int(ip), VIP, int(port), 23, 6)
        router = spread(before, 0.0)
        first = router.pick(h, 1.0, peek=True)
        router.set_members(after, 60.0)
        out[f.client] = (first, router.pick(h, 60.0, peek=True))
    return out


D3, D2 = ["d1", "d2", "d3"], ["d1", "d2"]


@pytest.mark.parametrize("name", ["ecmp", "ecmp-mh"])
def test_ecmp_respread_resets_every_moved_flow_without_sloppy_tcp(name: str) -> None:
    """hash-threshold: d3's flows and part of d2's move (the bounds are recomputed); the
    new director has no entry and resets them, whatever the scheduler (mh alone is not
    enough: the packet is not a SYN)."""
    r = run(scenarios.get(name), "dr")
    moves = _moves(r, D3, D2)
    moved = {c for c, (a, b) in moves.items() if a != b}
    assert {a for c, (a, b) in moves.items() if c in moved} == {"d2", "d3"}
    for f in r.fates:
        if f.phase == "held":
            assert f.fate == (f"reset by {moves[f.client][1]}" if f.client in moved
                              else "survived")
        else:
            assert f.fate == "survived"


@pytest.mark.parametrize("name", ["ecmp-mh-sloppy", "ecmp-sync"])
def test_ecmp_respread_kept_by_mh_with_sloppy_tcp_or_by_sync(name: str) -> None:
    r = run(scenarios.get(name), "dr")
    assert {f.fate for f in r.fates} == {"survived"} and len(r.fates) == 21


def test_ecmp_rr_sloppy_survives_only_where_rr_agrees() -> None:
    r = run(scenarios.get("ecmp-sloppy"), "dr")
    moves = _moves(r, D3, D2)
    for f in r.fates:
        if f.phase == "held" and moves[f.client][0] != moves[f.client][1]:
            assert f.fate == "survived" or f.fate.startswith("reset by rs")
        else:
            assert f.fate == "survived"
    assert any(f.fate.startswith("reset by rs") for f in r.fates)


def test_ecmp_resilient_group_moves_only_the_withdrawn_directors_flows() -> None:
    r = run(scenarios.get("ecmp-resilient"), "dr")
    moves = _moves(r, D3, D2, Resilient)
    moved = {c for c, (a, b) in moves.items() if a != b}
    assert moved and {moves[c][0] for c in moved} == {"d3"}
    assert {c for c, (a, _) in moves.items() if a == "d3"} == moved
    for f in r.fates:
        assert f.fate == (f"reset by {moves[f.client][1]}" if f.client in moved
                          else "survived")
    threshold = run(scenarios.get("ecmp"), "dr")
    assert sum(f.fate != "survived" for f in threshold.fates) > len(moved)


def test_hash_threshold_bounds_are_fib_rebalance() -> None:
    """DIV_ROUND_CLOSEST_ULL(w << 31, total) - 1; a hash takes the first bound >= it."""
    ht = HashThreshold(D3, 0.0)
    assert ht.bounds == [715827882, 1431655764, 2147483647]
    assert [ht.pick(h, 0.0) for h in (0, 715827882, 715827883, 2147483647)] == [
        "d1", "d1", "d2", "d3"]
    assert Modulo(D3, 0.0).pick(7, 0.0) == "d2"


def test_what_each_spread_moves() -> None:
    """Removing one of three next hops, or adding a fourth: hash-threshold moves half the
    flows either way, modulo two thirds / three quarters, a resilient group only the
    leaving next hop's buckets (43 of 128) and none of the busy ones when one joins."""
    assert moved_share("hash-threshold", 3, 2) == pytest.approx(0.5, abs=0.02)
    assert moved_share("hash-threshold", 3, 4) == pytest.approx(0.5, abs=0.02)
    assert moved_share("modulo", 3, 2) == pytest.approx(2 / 3, abs=0.02)
    assert moved_share("modulo", 3, 4) == pytest.approx(3 / 4, abs=0.02)
    assert moved_share("resilient", 3, 2) == pytest.approx(43 / 128, abs=0.02)
    assert moved_share("resilient", 3, 4) == 0.0


def test_resilient_group_fills_in_bucket_order_and_moves_idle_buckets_only() -> None:
    r = Resilient(D3, 0.0, buckets=128, idle_timer=120.0)
    # wants 43, 42, 43; the underweight list is built head first, so d3 fills first
    assert (r.owner[0], r.owner[42], r.owner[43], r.owner[84], r.owner[85]) == (
        "d3", "d3", "d2", "d2", "d1")
    r.pick(5, 10.0)                         # bucket 5 (d3) busy at 10 s
    r.set_members(D3 + ["d4"], 20.0)        # d4 wants 32: only idle buckets move
    assert r.owner[5] == "d3" and r.count["d4"] == 32
    r.pick(5, 100.0)
    r2 = Resilient(D3, 0.0)
    for b in range(128):
        r2.pick(b, 10.0)                    # every bucket busy
    r2.set_members(D3 + ["d4"], 20.0)
    assert r2.count["d4"] == 0
    assert r2.pick(0, 129.0) == "d3"        # bucket 0 used at 10 s: idle only at 130 s
    assert r2.pick(1, 131.0) == "d4"        # an idle bucket of an overweight hop moves
    assert r2.count["d4"] == 32             # ... with every other idle one


# ---------------------------------------------------------------------- the CLI
def test_compare_prints_the_fates_and_ecmp_only_in_dr(tmp_path, capsys) -> None:
    out_json = tmp_path / "c.json"
    assert main(["compare", "failover", "ecmp", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out.splitlines()
    rows = [line.split()[:2] for line in text[2:text.index("")] if not line.startswith(" ")]
    assert rows == [["failover", "nat"], ["failover", "dr"], ["ecmp", "dr"]]
    assert max(len(line) for line in text) <= 120
    assert any(line.startswith("  clients: held 9: 9 reset by d2; opening 1: 1 reset by d2; "
                               "new 2: 2 survived; 2 connects took 1 s or more") for line in text)
    assert json.loads(out_json.read_text())["results"][1]["clients"]["held/reset by d2"] == 9
    assert main(["compare", "--from", str(out_json)]) == 0
    assert capsys.readouterr().out.splitlines() == text


def test_simulate_ecmp_in_nat_says_why_not(capsys) -> None:
    assert main(["simulate", "ecmp", "--mode", "nat"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ecmp: runs in dr, tun only (NAT needs")


def test_a_bad_cluster_gets_one_line() -> None:
    sc = scenarios.get("failover")
    bad = replace(sc, cluster=replace(sc.cluster, sync="always"))
    with pytest.raises(ConfigFileError, match="failover: cluster: sync: 'always' is not one "
                       "of none, vrrp, both"):
        run(bad, "dr")
    odd = replace(sc, cluster=replace(sc.cluster, events=[]))
    odd.cluster.add(10, 1, "withdraw")
    with pytest.raises(ConfigFileError, match="at 10 s: withdraw needs the ecmp front"):
        run(odd, "dr")


@pytest.mark.parametrize("cluster, message", [
    ("{directors: 3, front: ecmp, spread: resilient, buckets: 0}",
     "cluster: buckets: 0 is out of range 1..65535"),      # was a ZeroDivisionError
    ("{directors: 2, sync: vrrp, syncid: 999}",
     "cluster: syncid: 999 is out of range 0..255"),       # was a ConfigError mid-run
    ("{directors: 2147483647}", "cluster: directors: 2147483647 is out of range 1..32"),
])
def test_a_cluster_s_numbers_are_checked_before_it_runs(tmp_path, capsys, cluster, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nduration: 10\nsessions:\n  - {{start: 1, port: 80}}\n"
                    f"cluster: {cluster}\n")
    assert main(["simulate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"{path}: {message}\n"


CLUSTER_YAML = """\
name: mine
duration: 120
config: |
  -A -t 192.0.2.110:23 -s rr
  -a -t 192.0.2.110:23 -r 192.0.2.11:23 -g
  -a -t 192.0.2.110:23 -r 192.0.2.12:23 -g
cluster:
  sync: vrrp
  pivot: 40
  events: [{at: 40, director: d1, event: crash}, {at: 43.609, director: d2, event: master}]
sessions:
  - {start: 1, repeat: 3, every: 1, port: 23, banner: 80, requests: 6, request_bytes: 1,
     response_bytes: 1, think: 10, hold: 5, end: quit}
"""


def test_cluster_from_yaml(tmp_path, capsys) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text(CLUSTER_YAML)
    assert main(["compare", str(f), "--modes", "nat,dr"]) == 0
    out = capsys.readouterr().out
    assert out.count("  clients: held 3: 3 survived") == 2
    f.write_text(CLUSTER_YAML.replace("sync: vrrp", "sync: vrrp\n  front: ecmp"))
    assert main(["compare", str(f)]) == 2
    assert capsys.readouterr().err == (f"{f}: cluster: the director event at 43.609 s: "
                                       "master needs the vrrp front\n")
    f.write_text(CLUSTER_YAML.replace("event: crash", "event: melt"))
    assert main(["simulate", str(f)]) == 2
    assert "cluster.events[0].event: 'melt' is not one of crash, boot" in capsys.readouterr().err


def test_cluster_scenarios_name_their_reports() -> None:
    for name in ("failover-sync", "failback", "ecmp-mh-sloppy", "failover-sync-idle"):
        assert scenarios.get(name).reproduces
