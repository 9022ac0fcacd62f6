"""The TCP state tables, flag priority and the reference's worked lifecycles, second by second."""

import pytest

from pyvs.core import states as S
from tests.helpers import ACK, DROUTE, FIN, MASQ, PSH, RST, SYN, Flow, counts, make_director


def test_tables_have_kernel_shape():
    for profile in S.PROFILES.values():
        for table in (profile.normal, profile.dos):
            assert len(table) == 3
            assert all(len(section) == 4 for section in table)
            assert all(len(row) == S.N_TCP_STATES for section in table for row in section)


def test_legacy_differs_only_in_ack_from_none():
    modern, legacy = S.PROFILES["modern"], S.PROFILES["2.6"]
    diffs = [(t, sec, row, col)
             for t, (a_tab, b_tab) in enumerate(((modern.normal, legacy.normal),
                                                  (modern.dos, legacy.dos)))
             for sec in range(3) for row in range(4) for col in range(S.N_TCP_STATES)
             if a_tab[sec][row][col] != b_tab[sec][row][col]]
    assert diffs == [(0, S.INPUT, S.ROW_ACK, S.NONE), (0, S.INPUT_ONLY, S.ROW_ACK, S.NONE),
                     (1, S.INPUT, S.ROW_ACK, S.NONE), (1, S.INPUT_ONLY, S.ROW_ACK, S.NONE)]
    assert legacy.normal[S.INPUT][S.ROW_ACK][S.NONE] == S.CLOSE
    assert modern.normal[S.INPUT][S.ROW_ACK][S.NONE] == S.ESTABLISHED


@pytest.mark.parametrize("flags,row", [
    (RST | SYN, S.ROW_RST), (SYN | FIN, S.ROW_SYN), (SYN | ACK, S.ROW_SYN),
    (FIN | ACK, S.ROW_FIN), (ACK | PSH, S.ROW_ACK), (PSH, S.ROW_NONE), (0, S.ROW_NONE),
    (0x20 | 0x40 | 0x80, S.ROW_NONE),
])
def test_flag_priority(flags, row):
    assert S.FLAG_ROW[flags] == row


def _every_cell(profile):
    for section in (S.INPUT, S.OUTPUT, S.INPUT_ONLY):
        for row, flags in ((S.ROW_SYN, SYN), (S.ROW_FIN, FIN | ACK), (S.ROW_ACK, ACK),
                           (S.ROW_RST, RST)):
            for state in range(S.N_TCP_STATES):
                yield profile, section, row, flags, state


@pytest.mark.parametrize("kernel", list(S.PROFILES))
def test_every_transition_cell_through_the_engine(kernel):
    """Force each (section, state) and send each flag row; the engine must follow the table."""
    profile = S.PROFILES[kernel]
    for _, section, row, flags, state in _every_cell(profile):
        fwd = DROUTE if section == S.INPUT_ONLY else MASQ
        d = make_director(fwd=fwd, kernel=kernel, n=1)
        f = Flow(d)
        f.inb(SYN, 0.0)
        cp = f.conn()
        cp.state = state
        cp.inactive = not profile.active[state]
        dest = cp.dest
        dest.activeconns, dest.inactconns = (0, 1) if cp.inactive else (1, 0)
        if section == S.OUTPUT:
            f.out(flags, 1.0)
        else:
            f.inb(flags, 1.0)
        expected = profile.normal[section][row][state]
        if flags & SYN and section != S.OUTPUT and state in (S.TIME_WAIT, S.CLOSE):
            # conn_reuse_mode=1 re-schedules instead (covered in test_engine)
            if profile.conn_reuse:
                continue
        assert cp.state == expected, (kernel, section, row, S.TCP_STATE_NAMES[state])
        assert cp.expires == pytest.approx(1.0 + S.TCP_TIMEOUTS[expected])
        assert (dest.activeconns, dest.inactconns) == (
            (1, 0) if profile.active[expected] else (0, 1))


def test_null_flags_packet_closes():
    d = make_director(n=1)
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.out(SYN | ACK, 0.001)
    f.inb(ACK, 0.002)
    assert f.state() == "ESTABLISHED"
    f.inb(PSH, 5.0)
    assert f.state() == "CLOSE"
    assert f.conn().expires == pytest.approx(15.0)


def _run(d, steps):
    """steps: (time, 'in'|'out', flags) -> list of state names after each."""
    f = Flow(d)
    seen = []
    for t, way, flags in steps:
        (f.inb if way == "in" else f.out)(flags, t)
        seen.append(f.state())
    return f, seen


NAT_CLIENT_CLOSES = [(0.0, "in", SYN), (0.01, "out", SYN | ACK), (0.02, "in", ACK),
                     (0.03, "in", PSH | ACK), (0.04, "out", PSH | ACK), (0.05, "in", ACK),
                     (1.0, "in", FIN | ACK), (1.01, "out", ACK), (1.02, "out", FIN | ACK),
                     (1.03, "in", ACK)]


def test_nat_client_closes_ends_in_time_wait_120s():
    d = make_director(fwd=MASQ, n=1)
    f, seen = _run(d, NAT_CLIENT_CLOSES)
    assert seen == ["SYN_RECV", "SYN_RECV", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED",
                    "ESTABLISHED", "CLOSE_WAIT", "CLOSE_WAIT", "TIME_WAIT", "TIME_WAIT"]
    assert f.conn().expires == pytest.approx(121.03)
    assert counts(d) == [("192.168.10.1", 0, 1)]
    d.handle_timers(121.02)
    assert f.state() == "TIME_WAIT"
    d.handle_timers(121.03)
    assert f.state() == "gone"
    assert counts(d) == [("192.168.10.1", 0, 0)]


def test_nat_server_closes():
    d = make_director(fwd=MASQ, n=1)
    _, seen = _run(d, [(0.0, "in", SYN), (0.01, "out", SYN | ACK), (0.02, "in", ACK),
                       (0.03, "in", PSH | ACK), (15.0, "out", FIN | PSH | ACK),
                       (15.01, "in", ACK), (15.02, "in", FIN | ACK), (15.03, "out", ACK)])
    assert seen == ["SYN_RECV", "SYN_RECV", "ESTABLISHED", "ESTABLISHED", "FIN_WAIT",
                    "FIN_WAIT", "TIME_WAIT", "TIME_WAIT"]
    assert counts(d) == [("192.168.10.1", 0, 1)]


def test_dr_client_closes_ends_in_fin_wait_120s():
    d = make_director(fwd=DROUTE, n=1)
    f, seen = _run(d, [(0.0, "in", SYN), (0.02, "in", ACK), (0.03, "in", PSH | ACK),
                       (0.05, "in", ACK), (1.0, "in", FIN | ACK), (1.03, "in", ACK)])
    assert seen == ["SYN_RECV", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED", "FIN_WAIT",
                    "FIN_WAIT"]
    assert f.conn().expires == pytest.approx(121.03)


def test_dr_server_close_stays_established_until_client_fin():
    d = make_director(fwd=DROUTE, n=1)
    f, seen = _run(d, [(0.0, "in", SYN), (0.02, "in", ACK), (0.03, "in", PSH | ACK),
                       (15.0, "in", ACK)])          # client ACKs the server's FIN
    assert seen[-1] == "ESTABLISHED"
    assert counts(d) == [("192.168.10.1", 1, 0)]
    f.inb(FIN | ACK, 20.0)
    assert f.state() == "FIN_WAIT"
    assert counts(d) == [("192.168.10.1", 0, 1)]


def test_client_rst_close_10s():
    d = make_director(fwd=MASQ, n=1)
    f, seen = _run(d, [(0.0, "in", SYN), (0.01, "out", SYN | ACK), (0.02, "in", ACK),
                       (3.0, "in", RST)])
    assert seen[-1] == "CLOSE"
    assert f.conn().expires == pytest.approx(13.0)
    assert counts(d) == [("192.168.10.1", 0, 1)]


@pytest.mark.parametrize("kernel,active", [("modern", 1), ("4.4", 0), ("2.6", 0)])
def test_half_open_syn_counts_by_kernel(kernel, active):
    d = make_director(fwd=DROUTE, n=1, kernel=kernel)
    f = Flow(d)
    f.inb(SYN, 0.0)
    assert f.state() == "SYN_RECV"
    assert f.conn().expires == pytest.approx(60.0)
    assert counts(d) == [("192.168.10.1", active, 1 - active)]
    f.inb(SYN, 3.0)                     # retransmitted SYN re-arms the 60 s timer
    assert f.conn().expires == pytest.approx(63.0)
    d.handle_timers(63.0)
    assert f.state() == "gone"
    assert counts(d) == [("192.168.10.1", 0, 0)]


def test_established_timeout_rearmed_by_every_packet():
    d = make_director(fwd=DROUTE, n=1)
    f, _ = _run(d, [(0.0, "in", SYN), (0.02, "in", ACK)])
    for t in (100.0, 500.0, 899.0):
        f.inb(ACK, t)
        assert f.conn().expires == pytest.approx(t + 900)
    d.handle_timers(899.0 + 899.9)
    assert f.state() == "ESTABLISHED"
    d.handle_timers(1799.0)
    assert f.state() == "gone"


def test_secure_tcp_3_uses_dos_table():
    d = make_director(fwd=DROUTE, n=1)
    d.set_sysctl("secure_tcp", 3)
    f = Flow(d)
    f.inb(SYN, 0.0)
    assert f.state() == "SYNACK"
    assert f.conn().expires == pytest.approx(120.0)
    d = make_director(fwd=MASQ, n=1)
    d.set_sysctl("secure_tcp", 3)
    _, seen = _run(d, [(0.0, "in", SYN), (0.01, "in", ACK), (0.02, "out", SYN | ACK),
                       (0.03, "in", ACK), (0.04, "out", ACK)])
    assert seen == ["SYN_RECV", "SYN_RECV", "SYNACK", "SYNACK", "ESTABLISHED"]
