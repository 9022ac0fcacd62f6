"""The health-check core (pyvs.core.health) against keepalived's semantics, with explicit
times: when checks run, when a realserver goes down and comes back (retry,
delay_before_retry, delay_loop, HTTP_GET's url passes, MISC_CHECK timed from its start),
alpha, inhibit_on_failure against removal, quorum with hysteresis and the sorry server,
misc_dynamic weights, several checkers on one realserver, groups."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import yaml

from pyvs.config.yamlfile import parse
from pyvs.core import commands as C
from pyvs.core import health as H
from pyvs.core.packet import int_to_ip

Outcome = Callable[[H.Probe, float], tuple[bool, str, "int | None"]]


def monitor(text: str, rand: Callable[[], float] | None = None) -> H.Monitor:
    return H.Monitor(parse(yaml.safe_load(text), "t.yaml").pools(), rand=rand)


def show(cmd: C.Command) -> str:
    """A command as the ipvsadm line that makes it."""
    key = cmd.service
    svc = f"-f {key.fwmark}" if key.fwmark else f"-t {int_to_ip(key.addr)}:{key.port}"
    op = {C.AddDest: "-a", C.EditDest: "-e", C.DelDest: "-d"}[type(cmd)]
    text = f"{op} {svc} -r {int_to_ip(cmd.addr)}:{cmd.port}"
    return text if isinstance(cmd, C.DelDest) else f"{text} -w {cmd.weight}"


def down_during(windows: dict[str, tuple[float, float]]) -> Outcome:
    """Each target fails its checks while `start <= t < end`."""
    def outcome(probe: H.Probe, t: float) -> tuple[bool, str, int | None]:
        lo, hi = windows.get(probe.target, (0.0, 0.0))
        ok = not lo <= t < hi
        if probe.kind == H.MISC_CHECK:
            return ok, f"exit {0 if ok else 1}", 0 if ok else 1
        return ok, "ok" if ok else "refused", None
    return outcome


def drive(m: H.Monitor, outcome: Outcome, until: float, latency: float = 0.0):
    """Run the monitor's checks up to `until`, each result `latency` after its start:
    the check times, the transitions and the commands, each with its time."""
    checks, events, commands = [], [], []
    while True:
        t = m.next_timer()
        if t is None or t > until:
            return checks, events, commands
        for probe in m.due(t):
            checks.append((round(t, 6), probe.target))
            ok, detail, code = outcome(probe, t)
            update = m.result(probe, ok, t + latency, detail, code)
            events += [(round(x.at, 6), f"{x.subject} {x.event}") for x in update.transitions]
            commands += [(round(t + latency, 6), show(c)) for c in update.commands]


def one(check: str, inhibit: bool = False) -> str:
    return f"""\
services:
  - address: 10.0.0.1:80
    scheduler: rr
    realservers:
      - {{address: 192.0.2.11:80, forward: masq, inhibit_on_failure: {str(inhibit).lower()},
         checks: [{check}]}}
"""


@pytest.mark.parametrize("check, window, times, down, up", [
    # TCP: the (retry + 1)-th consecutive failure takes it down, failures delay_before_retry
    # apart; one success brings it back
    ("{type: TCP_CHECK, delay_loop: 6, retry: 2, delay_before_retry: 1}", (10, 30),
     [1, 7, 13, 14, 15, 21, 27, 33, 39, 45], 15, 33),
    ("{type: TCP_CHECK, delay_loop: 6, retry: 0}", (10, 30),
     [1, 7, 13, 19, 25, 31, 37, 43, 49], 13, 31),
    # a first check that fails takes it down at once, whatever retry says
    ("{type: TCP_CHECK, delay_loop: 6, retry: 3}", (0, 5),
     [1, 7, 13, 19, 25, 31, 37, 43, 49], 1, 7),
    # HTTP_GET: after a failure the failed url must pass, then a whole pass of the urls
    # (one url: two successes, delay_loop apart); while down, max(delay_before_retry,
    # delay_loop) between checks
    ("{type: HTTP_GET, delay_loop: 6, retry: 1, delay_before_retry: 3, url: [{path: /}]}",
     (10, 30), [1, 7, 13, 16, 22, 28, 34, 40, 46], 16, 40),
    ("{type: HTTP_GET, delay_loop: 6, retry: 1, delay_before_retry: 10, url: [{path: /}]}",
     (10, 30), [1, 7, 13, 23, 33, 39, 45], 23, 39),
    # MISC_CHECK: retry 0 by default
    ("{type: MISC_CHECK, delay_loop: 6, misc_path: [/bin/check]}", (10, 30),
     [1, 7, 13, 19, 25, 31, 37, 43, 49], 13, 31),
    ("{type: MISC_CHECK, delay_loop: 6, retry: 1, delay_before_retry: 2, "
     "misc_path: [/bin/check]}", (10, 30), [1, 7, 13, 15, 21, 27, 33, 39, 45], 15, 33),
])
def test_retry_delay_before_retry_and_recovery(check: str, window: tuple[float, float],
                                               times: list[float], down: float,
                                               up: float) -> None:
    m = monitor(one(check))
    checks, events, commands = drive(m, down_during({"192.0.2.11:80": window}), 50)
    assert [t for t, _ in checks] == times
    assert events == [(down, "rs 192.0.2.11:80 DOWN"), (down, "quorum LOST"),
                      (up, "rs 192.0.2.11:80 UP"), (up, "quorum GAINED")]
    assert commands == [(down, "-d -t 10.0.0.1:80 -r 192.0.2.11:80"),
                        (up, "-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 1")]


def test_misc_check_is_timed_from_its_start() -> None:
    """A script that runs 2.5 s: the next run is delay_loop after the last one started."""
    m = monitor(one("{type: MISC_CHECK, delay_loop: 6, misc_path: [/bin/check]}"))
    checks, _, _ = drive(m, down_during({}), 20, latency=2.5)
    assert [t for t, _ in checks] == [1, 7, 13, 19]
    m = monitor(one("{type: TCP_CHECK, delay_loop: 6}"))
    checks, _, _ = drive(m, down_during({}), 20, latency=2.5)
    assert [t for t, _ in checks] == [1, 9.5, 18]          # TCP: from its result


@pytest.mark.parametrize("inhibit, down_cmd, up_cmd", [
    (False, "-d -t 10.0.0.1:80 -r 192.0.2.11:80", "-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 3"),
    (True, "-e -t 10.0.0.1:80 -r 192.0.2.11:80 -w 0", "-e -t 10.0.0.1:80 -r 192.0.2.11:80 -w 3"),
])
def test_inhibit_on_failure_sets_weight_0_instead_of_removing(inhibit: bool, down_cmd: str,
                                                              up_cmd: str) -> None:
    text = one("{type: TCP_CHECK, delay_loop: 2, retry: 0}", inhibit).replace(
        "forward: masq,", "forward: masq, weight: 3,")
    m = monitor(text)
    assert [show(c) for c in m.initial] == ["-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 3"]
    _, _, commands = drive(m, down_during({"192.0.2.11:80": (2, 4)}), 10)
    assert commands == [(3, down_cmd), (5, up_cmd)]


@pytest.mark.parametrize("inhibit, initial, first_up", [
    (False, [], "-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 1"),
    (True, ["-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 0"], "-e -t 10.0.0.1:80 -r 192.0.2.11:80 -w 1"),
])
def test_alpha_starts_down_until_a_check_passes(inhibit: bool, initial: list[str],
                                                first_up: str) -> None:
    m = monitor(one("{type: TCP_CHECK, delay_loop: 5, alpha: true}", inhibit))
    assert [show(c) for c in m.initial] == initial
    checks, events, commands = drive(m, down_during({"192.0.2.11:80": (0, 3)}), 12)
    assert [t for t, _ in checks] == [1, 6, 11]
    assert events == [(6, "rs 192.0.2.11:80 UP"), (6, "quorum GAINED")]
    assert commands == [(6, first_up)]


POOL = """\
services:
  - address: 10.0.0.1:80
    scheduler: rr
    health: {quorum: 3, hysteresis: 1, delay_loop: 1, retry: 0}
    sorry_server: {address: 10.0.9.9:8080, forward: masq}
    realservers:
"""


def test_quorum_with_hysteresis_brings_in_and_out_the_sorry_server() -> None:
    """Four realservers of weight 1, quorum 3, hysteresis 1: the quorum is lost below
    3 - 1 = 2, regained at 3 + 1 = 4; while it is lost the sorry server alone serves."""
    text = POOL + "".join(f"      - {{address: 192.0.2.{10 + i}:80, forward: masq, "
                          "checks: [{type: TCP_CHECK}]}\n" for i in range(1, 5))
    m = monitor(text)
    assert [show(c) for c in m.initial] == [
        f"-a -t 10.0.0.1:80 -r 192.0.2.{10 + i}:80 -w 1" for i in range(1, 5)]
    windows = {"192.0.2.11:80": (1.5, 5.5), "192.0.2.12:80": (2.5, 6.5),
               "192.0.2.13:80": (3.5, 7.5)}
    _, events, commands = drive(m, down_during(windows), 9)
    assert events == [
        (2, "rs 192.0.2.11:80 DOWN"),                   # 3 left: >= 2, kept
        (3, "rs 192.0.2.12:80 DOWN"),                   # 2 left: >= 2, kept
        (4, "rs 192.0.2.13:80 DOWN"), (4, "quorum LOST"), (4, "sorry 10.0.9.9:8080 ADDED"),
        (6, "rs 192.0.2.11:80 UP"),                     # 2: < 4, the sorry server stays
        (7, "rs 192.0.2.12:80 UP"),                     # 3: < 4
        (8, "rs 192.0.2.13:80 UP"), (8, "quorum GAINED"), (8, "sorry 10.0.9.9:8080 REMOVED")]
    assert commands == [
        (2, "-d -t 10.0.0.1:80 -r 192.0.2.11:80"),
        (3, "-d -t 10.0.0.1:80 -r 192.0.2.12:80"),
        (4, "-d -t 10.0.0.1:80 -r 192.0.2.13:80"),
        (4, "-d -t 10.0.0.1:80 -r 192.0.2.14:80"),      # the last alive one makes way
        (4, "-a -t 10.0.0.1:80 -r 10.0.9.9:8080 -w 1"),
        (8, "-d -t 10.0.0.1:80 -r 10.0.9.9:8080"),
        *[(8, f"-a -t 10.0.0.1:80 -r 192.0.2.{10 + i}:80 -w 1") for i in range(1, 5)]]
    status = m.status()["pools"][0]
    assert (status["quorum_up"], status["live_weight"], status["sorry_server"]["active"]) == (
        True, 4, False)


def test_sorry_server_inhibit_and_a_short_quorum_at_start() -> None:
    """With alpha the quorum is short from the start: the sorry server is in; with
    sorry_server_inhibit it leaves at weight 0 instead of being removed."""
    text = POOL.replace("quorum: 3, hysteresis: 1", "quorum: 1, alpha: true").replace(
        "forward: masq}", "forward: masq, inhibit: true}") + (
        "      - {address: 192.0.2.11:80, forward: masq, checks: [{type: TCP_CHECK}]}\n")
    m = monitor(text)
    assert [show(c) for c in m.initial] == ["-a -t 10.0.0.1:80 -r 10.0.9.9:8080 -w 1"]
    _, events, commands = drive(m, down_during({"192.0.2.11:80": (0, 1.5)}), 4)
    assert commands == [(2, "-e -t 10.0.0.1:80 -r 10.0.9.9:8080 -w 0"),
                        (2, "-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 1")]
    assert events == [(2, "rs 192.0.2.11:80 UP"), (2, "quorum GAINED"),
                      (2, "sorry 10.0.9.9:8080 REMOVED")]


def test_misc_dynamic_sets_the_weight_from_the_exit_code() -> None:
    """Exit N (2..255) sets weight N - 2, exit 0 the configured weight, exit 1 fails."""
    m = monitor(one("{type: MISC_CHECK, delay_loop: 1, misc_dynamic: true, "
                    "misc_path: [/bin/weight]}"))
    codes = iter([0, 12, 12, 1, 12, 2, 0])

    def outcome(probe: H.Probe, t: float) -> tuple[bool, str, int | None]:
        code = next(codes)
        ok, detail = H.misc_verdict(probe.check, code)
        return ok, detail, code
    _, events, commands = drive(m, outcome, 7)
    assert commands == [
        (2, "-e -t 10.0.0.1:80 -r 192.0.2.11:80 -w 10"),
        (4, "-d -t 10.0.0.1:80 -r 192.0.2.11:80"),
        (5, "-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 10"),     # back at its dynamic weight
        (6, "-e -t 10.0.0.1:80 -r 192.0.2.11:80 -w 0"),
        (7, "-e -t 10.0.0.1:80 -r 192.0.2.11:80 -w 1")]
    assert events == [
        (2, "rs 192.0.2.11:80 WEIGHT"), (4, "rs 192.0.2.11:80 DOWN"), (4, "quorum LOST"),
        (5, "rs 192.0.2.11:80 WEIGHT"), (5, "rs 192.0.2.11:80 UP"), (5, "quorum GAINED"),
        (6, "rs 192.0.2.11:80 WEIGHT"), (6, "quorum LOST"),      # weight 0: no live weight
        (7, "rs 192.0.2.11:80 WEIGHT"), (7, "quorum GAINED")]


def test_misc_dynamic_after_a_timeout_keeps_keepalived_s_offset() -> None:
    """check_misc.c clears only cur_weight when a script is killed: the old offset stays
    in the effective weight, so a new exit code adds to it (exit 12 -> 10; killed; exit
    22 -> 10 + 19 = 29, not 20).  pyvs predicts what keepalived does."""
    m = monitor(one("{type: MISC_CHECK, delay_loop: 1, misc_dynamic: true, "
                    "misc_path: [/bin/weight]}"))
    codes = iter([12, None, 22])

    def outcome(probe: H.Probe, t: float) -> tuple[bool, str, int | None]:
        code = next(codes)
        return H.misc_verdict(probe.check, code)[0], "", code
    _, _, commands = drive(m, outcome, 3)
    assert [c for _, c in commands] == ["-e -t 10.0.0.1:80 -r 192.0.2.11:80 -w 10",
                                        "-d -t 10.0.0.1:80 -r 192.0.2.11:80",
                                        "-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 29"]


def test_a_realserver_is_up_only_while_all_its_checkers_are() -> None:
    m = monitor(one("{type: TCP_CHECK, delay_loop: 1, retry: 0}, {type: TCP_CHECK, "
                    "connect_port: 8080, delay_loop: 1, retry: 0}"))
    windows = {"192.0.2.11:80": (1.5, 4.5), "192.0.2.11:8080": (2.5, 5.5)}
    _, _, commands = drive(m, down_during(windows), 7)
    assert commands == [(2, "-d -t 10.0.0.1:80 -r 192.0.2.11:80"),
                        (6, "-a -t 10.0.0.1:80 -r 192.0.2.11:80 -w 1")]
    texts = []
    m = monitor(one("{type: TCP_CHECK, delay_loop: 1, retry: 0}, {type: TCP_CHECK, "
                    "connect_port: 8080, delay_loop: 1, retry: 0}"))
    while (t := m.next_timer()) is not None and t <= 7:
        for p in m.due(t):
            ok, detail, _ = down_during(windows)(p, t)
            texts += [x.text() for x in m.result(p, ok, t, detail).transitions]
    assert texts == [
        "rs 192.0.2.11:80 DOWN (TCP_CHECK refused), removed [TCP 10.0.0.1:80]",
        "quorum LOST (0 of quorum 1) [TCP 10.0.0.1:80]",
        "rs 192.0.2.11:80 DOWN (TCP_CHECK refused), already down (another check failed) "
        "[TCP 10.0.0.1:80]",
        "rs 192.0.2.11:80 UP (TCP_CHECK ok), still down (1 other check(s) failing) "
        "[TCP 10.0.0.1:80]",
        "rs 192.0.2.11:80 UP (TCP_CHECK ok), added, weight 1 [TCP 10.0.0.1:80]",
        "quorum GAINED (1 of quorum 1) [TCP 10.0.0.1:80]"]


def test_a_group_s_realserver_leaves_every_service_of_the_group() -> None:
    m = monitor("""\
services:
  - group: web
    address: [10.0.0.1:80, 10.0.0.2:443]
    fwmark: [3]
    realservers:
      - {address: 192.0.2.11, checks: [{type: TCP_CHECK, connect_port: 80, retry: 0}]}
""")
    assert len(m.checkers) == 1                     # one checker for the whole group
    _, _, commands = drive(m, down_during({"192.0.2.11:80": (5, 100)}), 70)
    assert commands == [(61, "-d -t 10.0.0.1:80 -r 192.0.2.11:80"),
                        (61, "-d -t 10.0.0.2:443 -r 192.0.2.11:443"),
                        (61, "-d -f 3 -r 192.0.2.11:0")]


def test_http_urls_are_checked_one_per_delay_loop() -> None:
    m = monitor(one("{type: HTTP_GET, delay_loop: 2, url: [{path: /a}, {path: /b}]}"))
    paths = []
    while (t := m.next_timer()) is not None and t <= 9:
        for p in m.due(t):
            assert p.url is not None
            paths.append((t, p.url.path))
            m.result(p, True, t, "status 200")
    assert paths == [(1, "/a"), (3, "/b"), (5, "/a"), (7, "/b"), (9, "/a")]


def test_http_fast_recovery_checks_the_urls_back_to_back() -> None:
    text = one("{type: HTTP_GET, delay_loop: 5, retry: 0, fast_recovery: true, "
               "url: [{path: /a}, {path: /b}]}")
    checks, events, _ = drive(monitor(text), down_during({"192.0.2.11:80": (4, 8)}), 22)
    # up at 1 (/a) and 1 (/b, at once); down at 6; failed url retried each 5 s; at 11 it
    # passes, then /a and /b at once: up at 11
    assert [t for t, _ in checks] == [1, 1, 6, 11, 11, 11, 16, 21]
    assert events == [(6, "rs 192.0.2.11:80 DOWN"), (6, "quorum LOST"),
                      (11, "rs 192.0.2.11:80 UP"), (11, "quorum GAINED")]


def test_due_probes_stay_in_flight_and_stale_results_are_ignored() -> None:
    m = monitor(one("{type: TCP_CHECK, delay_loop: 3, connect_timeout: 2, warmup: 6}"),
                rand=lambda: 0.5)
    assert m.next_timer() == 4.0                    # 1 s + 0.5 x warmup
    assert m.due(3.9) == []
    (probe,) = m.due(4.0)
    assert (probe.kind, probe.target, probe.timeout) == ("TCP_CHECK", "192.0.2.11:80", 2.0)
    assert m.next_timer() is None and m.due(100) == []       # in flight: nothing more due
    assert m.result(probe, False, 5.0, "refused").commands != []
    assert m.result(probe, True, 5.1).commands == []         # not in flight any more
    assert m.next_timer() == 8.0


def test_http_request_and_verdicts() -> None:
    m = monitor(one("{type: HTTP_GET, connect_port: 8080, http_protocol: '1.1', url: "
                    "[{path: /h, status_code: [200, 301-302], digest: "
                    "5d41402abc4b2a76b9719d911017c592}, {path: /v, virtualhost: www.x}]}"))
    (probe,) = m.due(1.0)
    assert H.http_request(probe) == (b"GET /h HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\n"
                                     b"Connection: close\r\nHost: 192.0.2.11:8080\r\n\r\n")
    url = probe.url
    assert url is not None
    hello = hashlib.md5(b"hello").hexdigest()
    assert H.http_verdict(url, 200, hello) == (True, "status 200")
    assert H.http_verdict(url, 302, hello) == (True, "status 302")
    assert H.http_verdict(url, 204, hello) == (False, "status 204")
    assert H.http_verdict(url, 200, hashlib.md5(b"o").hexdigest()) == (False, "MD5 digest mismatch")
    assert H.http_verdict(url, None, None) == (False, "no data received")
    m.result(probe, True, 1.0)
    (probe,) = m.due(m.next_timer() or 0)
    assert H.http_request(probe).endswith(b"Host: www.x\r\n\r\n")
    check = H.Check(H.MISC_CHECK, misc_dynamic=True)
    assert [H.misc_verdict(check, c)[0] for c in (0, 1, 2, 255, None)] == [
        True, False, True, True, False]
    assert H.misc_verdict(H.Check(H.MISC_CHECK), 2) == (False, "exit 2")


def test_status_as_prometheus_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pyvs.views.health import HealthCollector
    m = monitor(POOL.replace("quorum: 3, hysteresis: 1", "quorum: 1")
                + "      - {address: 192.0.2.11:80, forward: masq, checks: [{type: TCP_CHECK}]}\n")
    drive(m, down_during({"192.0.2.11:80": (1.5, 2.5)}), 3)
    registry = CollectorRegistry()
    registry.register(HealthCollector(lambda: {**m.status(), "events": {"DOWN": 1, "UP": 1}}))
    lines = [line for line in generate_latest(registry).decode().splitlines()
             if not line.startswith("#")]
    svc, rs = 'service="TCP 10.0.0.1:80"', 'realserver="192.0.2.11:80"'
    check = f'check="TCP_CHECK",{rs},{svc},target="192.0.2.11:80"'     # labels sort by name
    assert lines == [
        f"pyvs_quorum_up{{{svc}}} 1.0",
        f"pyvs_quorum_live_weight{{{svc}}} 1.0",
        f'pyvs_sorry_server_active{{{svc},sorry_server="10.0.9.9:8080"}} 0.0',
        f"pyvs_realserver_up{{{rs},{svc}}} 1.0",
        f"pyvs_check_up{{{check}}} 1.0",
        f"pyvs_checks_total{{{check}}} 3.0",
        f"pyvs_check_failures_total{{{check}}} 1.0",
        'pyvs_health_transitions_total{event="DOWN"} 1.0',
        'pyvs_health_transitions_total{event="UP"} 1.0']
