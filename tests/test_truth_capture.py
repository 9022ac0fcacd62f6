"""The realserver's socket as a capture shows it: each rule of pyvs/truth/capture.py on the
segments a client-side capture holds, and `pyvs compare --capture` on whole captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyvs.cli import main
from pyvs.core.craft import ACK, FIN, PSH, RST, SYN, tcp
from pyvs.truth.capture import CaptureTruth
from pyvs.truth.tcpstates import STATE_NAMES
from tests import capfiles as cf
from tests.test_captures import CLIENT, MS, T0, VIP, config

KEY = CLIENT.to_bytes(4, "big") + VIP.to_bytes(4, "big") + (40000).to_bytes(2, "big") + \
    (80).to_bytes(2, "big")
C, S = 1000, 900_000            # client and server initial sequence numbers


class Conn:
    """Segments of one connection, fed to a CaptureTruth; its reported changes kept."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str]] = []
        self.truth = CaptureTruth(on_change=lambda end, old, new, now: self.log.append(
            (round(now, 3), STATE_NAMES[new])))
        self.end = None

    def client(self, t: float, flags: int, seq: int, ack: int = 0, length: int = 0) -> None:
        self.truth.handle_timers(t)
        end = self.truth.client_segment(KEY, round(t * 1e9), t, flags, seq, ack, length)
        self.end = end or self.end

    def server(self, t: float, flags: int, seq: int, length: int = 0) -> None:
        self.truth.handle_timers(t)
        self.truth.server_segment(self.truth.conns.get(KEY), t, flags, seq, length)

    def at(self, t: float) -> str:
        self.truth.handle_timers(t)
        return STATE_NAMES[self.end.state]

    def open(self) -> Conn:
        self.client(0.0, SYN, C)
        self.server(0.010, SYN | ACK, S)
        self.client(0.011, ACK, C + 1, S + 1)
        return self


def test_client_closes_first_the_server_ends_in_last_ack_then_closed():
    c = Conn().open()
    c.client(1.0, FIN | ACK, C + 1, S + 1)
    c.server(1.010, FIN | ACK, S + 1)
    c.client(1.011, ACK, C + 2, S + 2)
    assert c.log == [(0.01, "SYN_RECV"), (0.011, "ESTABLISHED"), (1.0, "CLOSE_WAIT"),
                     (1.01, "LAST_ACK"), (1.011, "CLOSED")]


def test_server_closes_first_holds_time_wait_60_s():
    c = Conn().open()
    c.server(1.0, FIN | ACK, S + 1)
    c.client(1.001, ACK, C + 1, S + 2)
    c.client(1.5, FIN | ACK, C + 1, S + 2)
    assert c.at(61.49) == "TIME_WAIT" and c.at(61.6) == "CLOSED"
    assert c.log[2:] == [(1.0, "FIN_WAIT1"), (1.001, "FIN_WAIT2"), (1.5, "TIME_WAIT"),
                         (61.5, "CLOSED")]


def test_an_orphaned_fin_wait2_is_dropped_after_tcp_fin_timeout():
    c = Conn().open()
    c.server(1.0, FIN | ACK, S + 1)
    c.client(1.001, ACK, C + 1, S + 2)
    assert c.at(60.9) == "FIN_WAIT2" and c.at(61.001) == "CLOSED"


def test_a_client_rst_closes_only_with_the_expected_sequence_number():
    c = Conn().open()
    c.client(1.0, PSH | ACK, C + 1, S + 1, length=100)
    c.client(2.0, RST, C + 5000)                    # out of window: a challenge ACK
    assert c.at(2.0) == "ESTABLISHED"
    c.client(3.0, RST | ACK, C + 101, S + 1)
    assert c.log[-1] == (3.0, "CLOSED")


def test_a_lost_final_ack_shows_when_the_fin_comes_again():
    """The capture saw the client's ACK; the server's FIN retransmitted 200 ms later says
    it was lost on the way: LAST_ACK again until the next ACK."""
    c = Conn().open()
    c.client(1.0, FIN | ACK, C + 1, S + 1)
    c.server(1.010, FIN | ACK, S + 1)
    c.client(1.011, ACK, C + 2, S + 2)
    c.server(1.220, FIN | ACK, S + 1)
    c.client(1.221, ACK, C + 2, S + 2)
    assert c.log[-3:] == [(1.011, "CLOSED"), (1.22, "LAST_ACK"), (1.221, "CLOSED")]


def test_a_fin_retransmitted_while_our_ack_was_in_flight_changes_nothing():
    """Sent before the ACK reached the server (within the 10 ms round trip): no evidence."""
    c = Conn().open()
    c.server(1.0, FIN | ACK, S + 1)
    c.client(1.001, ACK, C + 1, S + 2)
    c.server(1.005, FIN | ACK, S + 1)
    assert c.at(1.006) == "FIN_WAIT2"


def test_a_retransmitted_client_fin_rearms_time_wait():
    c = Conn().open()
    c.server(1.0, FIN | ACK, S + 1)
    c.client(1.001, FIN | ACK, C + 1, S + 2)       # simultaneous-ish: acks and closes
    assert c.at(1.001) == "TIME_WAIT"
    c.client(30.0, FIN | ACK, C + 1, S + 2)        # our last ACK was lost
    assert c.at(89.9) == "TIME_WAIT" and c.at(90.001) == "CLOSED"


def test_a_half_open_socket_gives_up_after_the_synack_retries():
    c = Conn()
    c.client(0.0, SYN, C)
    for t in (0.001, 1.001, 3.001, 7.001, 15.001, 31.001):
        c.server(t, SYN | ACK, S)
    assert c.at(63.0) == "SYN_RECV" and c.at(63.002) == "CLOSED"


def test_one_way_and_refused_connections_are_never_reported():
    c = Conn()
    c.client(0.0, SYN, C)
    c.client(1.0, SYN, C)
    c.truth.finish()
    assert c.log == [] and c.truth.stats.one_way == 1
    r = Conn()
    r.client(0.0, SYN, C)
    r.server(0.001, RST | ACK, 0)
    assert r.log == [] and r.truth.stats.refused == 1


def test_a_syn_on_time_wait_opens_a_new_connection():
    c = Conn().open()
    c.server(1.0, FIN | ACK, S + 1)
    c.client(1.001, FIN | ACK, C + 1, S + 2)
    c.client(5.0, SYN, C + 100_000)
    c.server(5.01, SYN | ACK, S + 7)
    assert c.log[-3:] == [(1.001, "TIME_WAIT"), (5.0, "CLOSED"), (5.01, "SYN_RECV")]
    assert c.truth.stats.connections == 2


def test_server_data_after_a_client_rst_revives_the_socket_only_after_a_round_trip():
    c = Conn().open()
    c.client(1.0, RST | ACK, C + 1, S + 1)
    c.server(1.005, PSH | ACK, S + 1, 100)          # in flight when the RST went out
    assert c.at(1.005) == "CLOSED"
    c.server(1.5, PSH | ACK, S + 1, 100)            # retransmitted: it never got the RST
    assert c.log[-2:] == [(1.0, "CLOSED"), (1.5, "ESTABLISHED")]


# ---------------------------------------------------------------- pyvs compare --capture
def keepalive_server_close(t_ns: int, cport: int, isn: int) -> list[tuple[int, bytes]]:
    """HTTP/1.1 keep-alive: the server closes after 5 s idle, the client 30 s later."""
    c, s = isn, 7_000_000 + isn
    steps = [(0, True, SYN, c, 0, 0), (1, False, SYN | ACK, s, c + 1, 0),
             (2, True, ACK, c + 1, s + 1, 0), (3, True, PSH | ACK, c + 1, s + 1, 50),
             (5, False, PSH | ACK, s + 1, c + 51, 500),
             (5005, False, FIN | ACK, s + 501, c + 51, 0),
             (5006, True, ACK, c + 51, s + 502, 0),
             (35000, True, FIN | ACK, c + 51, s + 502, 0),
             (35001, False, ACK, s + 502, c + 52, 0)]
    out = []
    for i, (ms, from_client, flags, seq, ack, n) in enumerate(steps):
        src, sport, dst, dport = (CLIENT, cport, VIP, 80) if from_client else (VIP, 80, CLIENT,
                                                                               cport)
        out.append((t_ns + ms * MS, tcp(src, sport, dst, dport, flags, seq, ack, bytes(n),
                                        ident=i)))
    return out


def test_compare_capture_dr_misses_the_server_s_close_nat_does_not(tmp_path, capsys):
    """DR's own error, from a capture: DR's director never sees the server's FIN and
    keeps the entry ESTABLISHED 30 s; NAT's ActiveConn is exact."""
    pkts = sorted(keepalive_server_close(T0, 40000, 1000)
                  + keepalive_server_close(T0 + 2_000 * MS, 40001, 5000)
                  + [(T0 + 3_000 * MS, tcp(CLIENT, 40009, VIP, 80, SYN, 77))])   # unanswered
    path = cf.pcap(tmp_path / "ka.pcap", pkts)
    out = tmp_path / "ka.json"
    assert main(["compare", "--capture", str(path), "--config", config(tmp_path, "masq"),
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[:2] == [
        "capture: client side: both directions, client <-> VIP; 19 IPv4 packets over "
        "37.001 s",
        "truth inferred from both directions of 2 connections; 1 seen one-way only, left out"]
    data = json.loads(out.read_text())
    nat, dr = data["results"]
    assert (nat["mode"], dr["mode"]) == ("nat", "dr")
    assert set(nat["samples"][0]) == {"t", "dest", "active", "inactive", "truth_active",
                                      "truth_inactive"}
    assert all(s["active"] == s["truth_active"] for s in nat["samples"])
    assert nat["summary"]["ghost_seconds"] == 0
    assert dr["summary"]["ghost_seconds"] == pytest.approx(2 * 30, abs=0.1)
    assert dr["cause"].startswith("ghost 60 s: server-initiated close not seen")
    assert data["capture"]["truth"]["one_way"] == 1
    assert len({s["t"] for s in nat["samples"]}) == 38          # every second, 0..37


def test_compare_capture_refuses_a_one_way_capture(tmp_path, capsys):
    syn = tcp(CLIENT, 40000, VIP, 80, SYN, 1)
    path = cf.pcap(tmp_path / "dr.pcap", [(T0, syn), (T0 + MS, syn)])
    assert main(["compare", "--capture", str(path), "--config", config(tmp_path, "route")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: no connection is seen in both directions")


def test_compare_capture_at_samples_only_there(tmp_path, capsys):
    path = cf.pcap(tmp_path / "ka.pcap", keepalive_server_close(T0, 40000, 1000))
    out = tmp_path / "at.json"
    assert main(["compare", "--capture", str(path), "--config", config(tmp_path, "masq"),
                 "--modes", "dr", "--at", "1", "--at", "10", "--at", "200", "--json",
                 str(out)]) == 0
    (dr,) = json.loads(Path(out).read_text())["results"]
    rows = [(s["t"], s["active"], s["truth_active"], s["truth_inactive"])
            for s in dr["samples"] if s["dest"] == "192.0.2.12"]
    # at 10 s the server has closed (FIN_WAIT2) while DR shows ESTABLISHED; at 200 s the
    # server's TIME_WAIT (from the client's FIN at 35 s) is over
    assert rows == [(1.0, 1, 1, 0), (10.0, 1, 0, 1), (200.0, 0, 0, 0)]


def test_compare_capture_of_a_nat_director_s_any_capture(tmp_path, capsys):
    """tcpdump -i any on a NAT director: the realserver's replies make the truth (the
    director's rewritten copies are skipped), NAT's table agrees with it at every sample."""
    from scapy.utils import wrpcap

    from tests.test_replay import captures
    path = tmp_path / "nat.pcap"
    wrpcap(str(path), captures()["nat-director"])
    cfg = tmp_path / "one.yaml"
    cfg.write_text("services:\n  - {protocol: tcp, address: '198.51.100.100:80', scheduler: rr,"
                   "\n      realservers: [{address: '192.0.2.11:80', forward: masq}]}\n")
    out = tmp_path / "nat.json"
    assert main(["compare", "--capture", str(path), "--config", str(cfg), "--modes", "nat",
                 "--at", "0.0125", "--at", "30", "--at", "200", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[:2] == [
        "capture: director side, NAT: realservers' replies seen, the director's rewritten "
        "copies skipped; 18 IPv4 packets over 0.014 s",
        "truth inferred from both directions of 1 connections"]
    (nat,) = json.loads(out.read_text())["results"]
    # the server closed first: its TIME_WAIT (60 s) against the director's (120 s)
    assert [(s["t"], s["inactive"], s["truth_inactive"]) for s in nat["samples"]] == [
        (0.0125, 1, 1), (30.0, 1, 1), (200.0, 0, 0)]
