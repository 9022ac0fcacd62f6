"""Health checks in the simulator: keepalived's checker logic with each check a simulated
connection from the director; the check-flap scenario against the same run without
checks: what clients see while a check notices a failure."""

from __future__ import annotations

import copy
from dataclasses import replace

from pyvs.sim.run import run
from pyvs.sim.scenarios import get as builtin


def without_checks(name: str):
    sc = builtin(name)
    cfg = copy.deepcopy(sc.config)
    for rs in cfg["services"][0]["realservers"]:
        rs.pop("checks")
    return replace(sc, config=cfg)


def test_check_flap_removes_and_adds_rs2_as_keepalived_times_it() -> None:
    # refuse at 20 s: the first check after it (every delay_loop 3 s from 1.29 s) is
    # refused, the retry 1 s later too: down; a crash at 80 s: two 1 s connect timeouts
    # 1 s apart; back: the first check that connects
    result = run(builtin("check-flap"), "dr")
    assert result.checks == [
        "22.2861 s rs 192.0.2.12:80 DOWN (TCP_CHECK connection refused), removed "
        "[TCP 192.0.2.110:80]",
        "52.2901 s rs 192.0.2.12:80 UP (TCP_CHECK connected), added, weight 1 "
        "[TCP 192.0.2.110:80]",
        "85.2937 s rs 192.0.2.12:80 DOWN (TCP_CHECK connect timeout), removed "
        "[TCP 192.0.2.110:80]",
        "112.294 s rs 192.0.2.12:80 UP (TCP_CHECK connected), added, weight 1 "
        "[TCP 192.0.2.110:80]"]


def test_checks_bound_what_clients_see_to_the_detection_window() -> None:
    checked = run(builtin("check-flap"), "dr").clients
    unchecked = run(without_checks("check-flap"), "dr").clients
    # while rs2 refuses, rr sends it every other new connection: refused (RST) until the
    # check removes it 2.3 s later, or for all 30 s without checks
    assert (checked["refused"], unchecked["refused"]) == (3, 30)
    # a crashed rs2 answers nothing: SYNs retried; those scheduled to it before the check
    # noticed keep their entry (expire_nodest_conn=0 drops their SYNs) and wait until it
    # is back (31 s); without checks every second connection waits
    assert (checked["connect_over_1s"], unchecked["connect_over_1s"]) == (4, 30)
    assert checked["connect_max"] == unchecked["connect_max"] == 31.01


def test_check_connections_are_not_the_clients() -> None:
    # the checks' own connections reach rs1 and rs2 but never the director's table, and
    # the truth leaves them out: with no faults the table and the truth agree as without
    sc = builtin("check-flap")
    quiet = replace(sc, faults=[])
    assert run(quiet, "nat").summary == run(replace(without_checks("check-flap"),
                                                    faults=[]), "nat").summary
