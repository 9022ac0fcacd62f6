"""Simulated directors that change: each built-in scenario's observation, as the public
report it reproduces describes it (Scenario.reproduces), pinned; realserver faults; the
scenario file's events."""

import pytest

from pyvs.config import ConfigFileError
from pyvs.sim import scenarios
from pyvs.sim.run import run
from pyvs.sim.scenarios import parse_scenario


def rs_stats(snap: dict, addr: str) -> dict:
    (d,) = [d for s in snap["services"] for d in s["dests"] if d["address"] == addr]
    return d


def test_drain_keeps_persistent_clients_until_expire_quiescent_template() -> None:
    r = run(scenarios.get("drain"), "dr", at=(58, 238, 470))
    conns = [rs_stats(snap, "192.0.2.12")["stats"]["conns"] for snap, _ in r.snapshots]
    weights = [rs_stats(snap, "192.0.2.12")["weight"] for snap, _ in r.snapshots]
    assert weights == [1, 0, 0]
    assert conns[1] > conns[0] + 40       # drained at 60 s, yet its clients came back
    assert conns[2] == conns[1]           # expire_quiescent_template=1 at 240 s: no more
    assert r.clients["connect_over_1s"] == 0


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_removed_realserver_blackholes_then_expire_nodest_conn_resets(mode) -> None:
    kept = run(scenarios.get("remove-realserver"), mode)
    assert kept.clients["timeout"] == 2 and kept.clients["open"] == 2
    assert kept.drops["dest-unavailable"] > 0
    assert "removed from the service" in kept.cause
    flushed = run(scenarios.get("remove-realserver-expire"), mode)
    assert flushed.clients["reset"] == 2 and flushed.clients["open"] == 2
    assert "dest-unavailable" not in flushed.drops
    assert "expired the entry before its timer" in flushed.cause


def test_port_reuse_nat_reschedules_dr_reuses_the_fin_wait_entry() -> None:
    nat = run(scenarios.get("port-reuse"), "nat", at=(59,))
    dr = run(scenarios.get("port-reuse"), "dr", at=(59,))
    nat_conns = [d["stats"]["conns"] for d in nat.snapshots[0][0]["services"][0]["dests"]]
    dr_conns = [d["stats"]["conns"] for d in dr.snapshots[0][0]["services"][0]["dests"]]
    assert sum(nat_conns) == 45 and min(nat_conns) >= 20     # every reuse scheduled anew
    assert sorted(dr_conns) == [1, 2]          # DR: FIN_WAIT is not taken (bit 2 unset)
    assert nat.clients["connect_over_1s"] == dr.clients["connect_over_1s"] == 0
    assert "reused client port replaced the entry" in nat.cause


def test_port_reuse_with_conntrack_on_4_19_costs_a_second() -> None:
    nat = run(scenarios.get("port-reuse-conntrack"), "nat")
    assert nat.kernel == "4.19"
    assert nat.drops == {"reuse-conntrack": 42}                # 3 clients x 14 reuses
    assert nat.clients["connect_over_1s"] == 42 and 1.0 <= nat.clients["connect_max"] < 1.1
    dr = run(scenarios.get("port-reuse-conntrack"), "dr")
    assert dr.drops == {} and dr.clients["connect_over_1s"] == 0


def test_conn_reuse_mode_0_never_drains() -> None:
    r = run(scenarios.get("port-reuse-mode0"), "nat", at=(9, 59))
    before, after = (rs_stats(snap, "192.0.2.12") for snap, _ in r.snapshots)
    assert (before["weight"], after["weight"]) == (1, 0)
    assert after["stats"]["conns"] == before["stats"]["conns"]          # nothing scheduled
    assert after["stats"]["inpkts"] > 2 * before["stats"]["inpkts"]     # ... yet it serves


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_timeout_lowered_below_the_keepalive_interval_resets_idle_clients(mode) -> None:
    r = run(scenarios.get("timeout-change"), mode, at=(310, 430))
    at310, at430 = (snap for snap, _ in r.snapshots)
    assert {c["expires"] for c in at310["connections"]} <= set(range(108, 121))
    assert at430["connections"] == []           # 120 s after the keystroke at ~301 s
    assert r.clients["reset"] == 4              # the next keystroke meets the director's RST
    assert "tcp timeout (120 s)" in r.cause


FAULTS = """
name: faults
duration: 200
config: |
  -A -t 192.0.2.110:23 -s rr
  -a -t 192.0.2.110:23 -r 192.0.2.11:23 -g
  -a -t 192.0.2.110:23 -r 192.0.2.12:23 -g
sessions:
  - {start: 1, client: 0, port: 23, banner: 80, requests: 100, request_bytes: 1,
     response_bytes: 1, think: 5, end: quit}
  - {start: 2, client: 1, port: 23, banner: 80, requests: 100, request_bytes: 1,
     response_bytes: 1, think: 5, end: quit}
  - {start: 60, client: 2, port: 23, banner: 80, requests: 1, request_bytes: 1,
     response_bytes: 1, end: quit}
events:
  - {at: 30, realserver: rs2, fault: crash}
  - {at: 50, realserver: rs2, fault: recover}
  - {at: 55, realserver: rs2, fault: refuse}
"""


def test_realserver_faults() -> None:
    sc = parse_scenario(__import__("yaml").safe_load(FAULTS), "faults.yaml")
    assert sc.marks == [(30.0, "rs2 crash"), (50.0, "rs2 recover"), (55.0, "rs2 refuse")]
    r = run(sc, "dr", at=(29, 31, 70))
    truth = [states for _, states in r.snapshots]
    assert truth[0]["192.0.2.12"] == {"ESTABLISHED": 1}
    assert truth[1]["192.0.2.12"] == {}                  # crashed: its sockets are gone
    # the crashed server's client keeps typing into the void until the host is back,
    # then gets an RST for the old connection (which the DR director never sees: its
    # entry stays ESTABLISHED); the new client at 60 s (rr: rs2) meets rs2 refusing
    assert r.clients["reset"] == 1 and r.clients["refused"] == 1
    assert [c["state"] for c in r.snapshots[2][0]["connections"]][0] == "ESTABLISHED"
    assert truth[2]["192.0.2.11"] == {"ESTABLISHED": 1}  # rs1's connection lives on


@pytest.mark.parametrize("events,message", [
    ("[{at: 5, ipvsadm: '-L -n'}]", "events[0]: ipvsadm list is not a change"),
    ("[{at: 5, sysctl: {secure_tcp: 7}}]", "events[0]: sysctl secure_tcp: 7 is out of range"),
    ("[{at: 5, realserver: rs2, fault: melt}]",
     "events[0].fault: 'melt' is not one of crash, recover, blackhole, refuse"),
    ("[{at: 5}]", "events[0]: one of ipvsadm, sysctl or realserver"),
])
def test_bad_scenario_events_are_one_line(events, message) -> None:
    text = f"duration: 10\nsessions: [{{start: 1}}]\nevents: {events}\n"
    with pytest.raises(ConfigFileError) as exc:
        parse_scenario(__import__("yaml").safe_load(text), "s.yaml")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_an_event_the_director_refuses_names_it() -> None:
    text = ("duration: 10\nsessions: [{start: 1}]\n"
            "events: [{at: 5, ipvsadm: '-d -t 192.0.2.110:80 -r 192.0.2.99:80'}]\n")
    sc = parse_scenario(__import__("yaml").safe_load(text), "s.yaml")
    with pytest.raises(ConfigFileError) as exc:
        run(sc, "nat")
    assert str(exc.value) == ("s: the event at 5 s (service tcp 192.0.2.110:80 realserver "
                              "192.0.2.99:80) was refused: No such destination")
