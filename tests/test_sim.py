"""The simulator: the classic LVS write-ups' observations as assertions, for the modern and
2.6 profiles, plus exact TCP endpoint timers (the truth the director is measured against)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pyvs.cli import main
from pyvs.core.packet import ip_to_int
from pyvs.sim import tcp
from pyvs.sim.apps import Session
from pyvs.sim.events import Simulation
from pyvs.sim.network import LabParams
from pyvs.sim.run import run
from pyvs.sim.scenarios import BUILTIN, Scenario, parse_scenario
from pyvs.truth import tcpstates

KERNELS = ("modern", "2.6")
RS1, RS2 = "192.0.2.11", "192.0.2.12"
LOSS_FREE = ("telnet", "ftp", "http10", "http11-keepalive", "client-rst", "identd-delay")


def dest_counts(snap: dict, port: int, rs: str) -> tuple[int, int, int]:
    for svc in snap["services"]:
        if svc["port"] == port:
            for d in svc["dests"]:
                if d["address"] == rs:
                    return d["active"], d["inactive"], d["persistent"]
    raise AssertionError(f"no dest {rs} on port {port}")


def at(name: str, mode: str, kernel: str, *times: float):
    return run(BUILTIN[name], mode, kernel, at=times).snapshots


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ("nat", "dr"))
def test_http10_fetch_leaves_one_inactive(kernel: str, mode: str) -> None:
    (snap, truth), = at("http10", mode, kernel, 1.5)
    assert dest_counts(snap, 80, RS2)[:2] == (0, 1)        # rr: the newest dest first
    assert dest_counts(snap, 80, RS1)[:2] == (0, 0)
    state = "TIME_WAIT" if mode == "nat" else "FIN_WAIT"
    assert [c["state"] for c in snap["connections"]] == [state]
    assert [c["expires"] for c in snap["connections"]] == [120 - 1]   # closed at ~1.03 s
    assert truth[RS2] == {}                               # the client closed: LAST_ACK is over


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ("nat", "dr"))
def test_telnet_held_then_logout(kernel: str, mode: str) -> None:
    (held, held_truth), (after, after_truth) = at("telnet", mode, kernel, 30, 290)
    assert dest_counts(held, 23, RS2)[:2] == (1, 0)
    assert held_truth[RS2] == {"ESTABLISHED": 1}
    assert dest_counts(after, 23, RS2)[:2] == (0, 1)
    assert after_truth[RS2] == {"TIME_WAIT": 1}           # the telnet server closed first


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ("nat", "dr"))
def test_ftp_template_one_active_one_inactive(kernel: str, mode: str) -> None:
    (snap, truth), = at("ftp", mode, kernel, 20)
    assert dest_counts(snap, 0, RS1) == (1, 1, 1)
    templates = [c for c in snap["connections"] if c["template"]]
    assert len(templates) == 1
    assert templates[0]["state"] == ("ASSURED" if kernel == "modern" else "NONE")
    assert truth[RS1] == {"ESTABLISHED": 1, "TIME_WAIT": 1}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ("nat", "dr"))
def test_bad_routing_leaves_syn_recv(kernel: str, mode: str) -> None:
    (snap, truth), = at("bad-routing", mode, kernel, 30)
    states = [c["state"] for c in snap["connections"]]
    assert states == ["SYN_RECV"] * 3
    active, inactive = (3, 0) if kernel == "modern" else (0, 3)
    a1, i1, _ = dest_counts(snap, 80, RS1)
    a2, i2, _ = dest_counts(snap, 80, RS2)
    assert (a1 + a2, i1 + i2) == (active, inactive)
    assert sum(n for t in truth.values() for n in t.values()) == 3


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", LOSS_FREE)
def test_nat_active_conn_exact_at_every_sample(kernel: str, name: str) -> None:
    r = run(BUILTIN[name], "nat", kernel)
    assert r.samples
    assert all(s.active == s.truth_active for s in r.samples)
    assert r.summary["forgotten_seconds"] == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_web_mix_nat_active_errors_are_packets_in_flight(kernel: str) -> None:
    """Under load NAT ActiveConn differs only while a packet is between director and
    realserver (and, on modern kernels, during handshakes: SYN_RECV counts as active)."""
    r = run(BUILTIN["web-mix"], "nat", kernel)
    assert r.summary["ghost_seconds"] + r.summary["hidden_seconds"] < 0.02 * 2000
    assert r.summary["active_max"] <= 1


def test_web_mix_inactconn_much_larger_than_activeconn() -> None:
    r = run(BUILTIN["web-mix"], "dr", "modern")
    mid = [s for s in r.samples if s.t == 150]
    assert sum(s.inactive for s in mid) > 10 * sum(s.active for s in mid)


@pytest.mark.parametrize("kernel", KERNELS)
def test_dr_fin_wait_lags_client_close_by_tcpfin(kernel: str) -> None:
    """DR: the client's FIN leaves FIN_WAIT for 120 s; the realserver's socket is gone."""
    (snap, truth), = at("http10", "dr", kernel, 100)
    first = [c for c in snap["connections"] if c["expires"] == 121 - 100]   # closed ~1.03 s
    assert first and all(c["state"] == "FIN_WAIT" for c in snap["connections"])
    assert truth == {RS1: {}, RS2: {}}


@pytest.mark.parametrize("kernel", KERNELS)
def test_dr_server_close_stays_established_until_client_fin(kernel: str) -> None:
    """http11-keepalive: the server closes 5 s after its last response; the pooled client
    closes 30 s later.  DR shows ESTABLISHED for those 30 s, NAT shows FIN_WAIT."""
    sc = replace(BUILTIN["http11-keepalive"], sessions=BUILTIN["http11-keepalive"].sessions[:1])
    last_response = 1.0 + 4 * 1.0           # five requests a second apart, small RTTs
    t = last_response + 5 + 15               # server closed ~10 s ago, client not yet
    (dr, dr_truth), = run(sc, "dr", kernel, at=(t,)).snapshots
    (nat, nat_truth), = run(sc, "nat", kernel, at=(t,)).snapshots
    assert [c["state"] for c in dr["connections"]] == ["ESTABLISHED"]
    assert [c["state"] for c in nat["connections"]] == ["FIN_WAIT"]
    assert dr_truth[RS2] == nat_truth[RS2] == {"FIN_WAIT2": 1}
    r = run(sc, "dr", kernel)
    assert r.cause.startswith("ghost")
    assert "server-initiated close not seen" in r.cause


def test_idle_past_timeout_forgets_and_director_resets_the_client() -> None:
    r = run(BUILTIN["idle-past-timeout"], "dr", "modern", at=(1000, 1300))
    (s1000, t1000), (s1300, t1300) = r.snapshots
    assert s1000["connections"] == [] and t1000[RS2] == {"ESTABLISHED": 1}
    assert t1300[RS2] == {"ESTABLISHED": 1}            # the director's RST went to the client
    assert r.summary["forgotten_seconds"] > 6000
    assert "tcp timeout (900 s)" in r.cause


def test_runs_are_deterministic_for_a_seed() -> None:
    a = run(BUILTIN["web-mix"], "dr", seed=7)
    b = run(BUILTIN["web-mix"], "dr", seed=7)
    assert a.summary == b.summary and a.packets == b.packets
    assert run(BUILTIN["web-mix"], "dr", seed=8).packets != a.packets


# ---------------------------------------------------------------------- TCP endpoints
class Wire:
    """Two stacks joined by a fixed one-way delay, optionally losing everything from b."""

    def __init__(self, delay: float = 0.01, b_mute: bool = False) -> None:
        self.sim = Simulation(3)
        self.p = tcp.TcpParams()
        self.a = tcp.Stack(self.sim, {ip_to_int("10.0.0.1")}, self.p, self._to_b)
        self.b = tcp.Stack(self.sim, {ip_to_int("10.0.0.2")}, self.p, self._to_a)
        self.delay, self.b_mute = delay, b_mute
        self.log: list[tuple[float, str, int, int]] = []
        for side, stack in (("a", self.a), ("b", self.b)):
            stack.on_state = (lambda s: lambda sock, old, new: self.log.append(
                (round(self.sim.now, 3), s, old, new)))(side)

    def _to_b(self, pkt: bytes) -> None:
        self.sim.after(self.delay, self.b.receive, pkt)

    def _to_a(self, pkt: bytes) -> None:
        if not self.b_mute:
            self.sim.after(self.delay, self.a.receive, pkt)

    def changes(self, side: str) -> list[tuple[float, str]]:
        return [(t, tcpstates.STATE_NAMES[new]) for t, s, _, new in self.log if s == side]


class Quiet:
    def connected(self, sock) -> None: ...
    def data(self, sock, n) -> None: ...
    def eof(self, sock) -> None: ...
    def closed(self, sock) -> None: ...


def test_tcp_active_close_time_wait_is_60_s() -> None:
    w = Wire()
    w.b.listen(80, lambda sock: Quiet())
    sock = w.a.connect(ip_to_int("10.0.0.1"), ip_to_int("10.0.0.2"), 80, Quiet())
    w.sim.at(1.0, sock.close)
    w.sim.run_until(100)
    assert w.changes("a") == [(0.0, "SYN_SENT"), (0.02, "ESTABLISHED"), (1.0, "FIN_WAIT1"),
                              (1.02, "FIN_WAIT2"), (61.02, "CLOSED")]      # orphan FIN_WAIT2
    assert w.changes("b") == [(0.01, "SYN_RECV"), (0.03, "ESTABLISHED"), (1.01, "CLOSE_WAIT")]


def test_tcp_both_close_gives_time_wait_60_s_on_the_active_closer() -> None:
    w = Wire()

    class CloseOnEof(Quiet):
        def eof(self, sock) -> None:
            sock.close()

    w.b.listen(80, lambda sock: CloseOnEof())
    sock = w.a.connect(ip_to_int("10.0.0.1"), ip_to_int("10.0.0.2"), 80, Quiet())
    w.sim.at(1.0, sock.close)
    w.sim.run_until(100)
    assert w.changes("a")[-3:] == [(1.02, "FIN_WAIT2"), (1.02, "TIME_WAIT"), (61.02, "CLOSED")]
    assert w.changes("b")[-3:] == [(1.01, "CLOSE_WAIT"), (1.01, "LAST_ACK"), (1.03, "CLOSED")]


def test_tcp_syn_retries_and_synack_retries() -> None:
    """tcp_syn_retries 6: SYNs at 0,1,3,7,15,31,63, give up at 127 s.  The listener's
    half-open socket: SYN-ACK retries 5 (1,2,4,8,16), dropped 32 s after the last."""
    w = Wire(b_mute=True)
    w.b.listen(80, lambda sock: Quiet())
    w.a.connect(ip_to_int("10.0.0.1"), ip_to_int("10.0.0.2"), 80, Quiet())
    w.sim.run_until(300)
    assert w.changes("a") == [(0.0, "SYN_SENT"), (127.0, "CLOSED")]
    assert w.changes("b")[:2] == [(0.01, "SYN_RECV"), (63.01, "CLOSED")]


def test_tcp_keepalive_gives_up_after_probes() -> None:
    w = Wire()
    w.b.listen(23, lambda sock: Quiet(), keepalive=True)
    w.a.connect(ip_to_int("10.0.0.1"), ip_to_int("10.0.0.2"), 23, Quiet())
    w.sim.at(10.0, w.a.crash)
    w.sim.run_until(9000)
    # b last heard from a at 0.03 s (the handshake's ACK): probes at 7200.03 + k*75 s,
    # the RST and CLOSED 75 s after the 9th
    assert w.changes("b")[-1] == (round(0.03 + 7200 + 9 * 75, 3), "CLOSED")


# ---------------------------------------------------------------------- CLI and YAML
def test_compare_cli_json_and_plot(tmp_path, capsys) -> None:
    out_json, out_png = tmp_path / "c.json", tmp_path / "c.png"
    assert main(["compare", "http10", "telnet", "--json", str(out_json),
                 "--plot", str(out_png)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[1].startswith("scenario")
    assert max(len(line) for line in text) <= 120
    body = text[2:text.index("")]
    assert [line.split()[:2] for line in body if not line.startswith(" ")] == [
        ["http10", "nat"], ["http10", "dr"], ["telnet", "nat"], ["telnet", "dr"]]
    assert sum(line.startswith("  cause: ") for line in body) == 4
    data = json.loads(out_json.read_text())
    first = data["results"][0]
    assert set(first) >= {"scenario", "mode", "kernel", "samples", "summary"}
    assert set(first["samples"][0]) == {"t", "dest", "active", "inactive", "truth_active",
                                        "truth_inactive"}
    assert set(first["summary"]) >= {"active_mae", "active_max", "inactive_mae",
                                     "inactive_max", "ghost_seconds", "forgotten_seconds"}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # saved runs print again as the same table (how separate NAT and DR runs are joined)
    assert main(["compare", "--from", str(out_json)]) == 0
    assert capsys.readouterr().out.splitlines() == text


def test_simulate_cli_prints_listing_and_truth(capsys) -> None:
    assert main(["simulate", "telnet", "--mode", "nat", "--at", "30"]) == 0
    out = capsys.readouterr().out
    assert "TCP  192.0.2.110:23 rr\n  -> 192.0.2.11:23                Masq    1      0" in out
    assert "  -> 192.0.2.12:23                Masq    1      1          0" in out
    assert "realserver 192.0.2.12:\nESTABLISHED 1\n" in out


def test_scenario_yaml(tmp_path, capsys) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("duration: 60\nlab: {bad_routing: true}\n"
                 "sessions:\n  - {start: 1, repeat: 3, every: 2, port: 80}\n")
    sc = parse_scenario(__import__("yaml").safe_load(f.read_text()), str(f))
    assert [s.start for s in sc.sessions] == [1.0, 3.0, 5.0]
    assert sc.lab == LabParams(bad_routing=True)
    assert main(["simulate", str(f), "--at", "10", "-c"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("TCP ") and "SYN_RECV" in line for line in lines) == 3


@pytest.mark.parametrize("text, message", [
    ("sessions: []\n", "duration: required"),
    ("duration: 10\nsessions: [{end: later}]\n",
     "sessions[0].end: 'later' is not one of client-close"),
    ("duration: 10\nlab: {loss: x}\nsessions: [{}]\n", "lab.loss: 'x' is not a number"),
    ("duration: 10\nsessions: [{colour: red}]\n", "sessions[0].colour: unknown field"),
])
def test_scenario_yaml_errors(tmp_path, capsys, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    assert main(["compare", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(f) in err


def test_compare_saved_and_ssh_errors(tmp_path, capsys) -> None:
    """--from and --ssh-config: one line naming the file and what is wrong, exit 2."""
    junk = tmp_path / "junk.json"
    junk.write_text('{"results": [{"scenario": "x"}]}')
    assert main(["compare", "--from", str(junk)]) == 2
    assert capsys.readouterr().err == (f"{junk}: not what pyvs compare --json writes "
                                       "(missing or bad 'samples')\n")
    assert main(["compare", "--from", str(tmp_path / "none.json")]) == 2
    assert "none.json: cannot read: No such file or directory" in capsys.readouterr().err
    cfg = tmp_path / "ssh.cfg"
    cfg.write_text("Host director\n  HostName 10.0.0.1\nHost rs1\n")
    assert main(["compare", "--ssh-config", str(cfg)]) == 2
    assert capsys.readouterr().err == (
        f"pyvs compare --ssh-config: {cfg}: no 'Host client' (hosts: director, rs1); "
        "write it with `vagrant ssh-config > FILE` in vagrant/\n")


def test_unknown_scenario_and_mode(capsys) -> None:
    assert main(["compare", "nosuch"]) == 2
    assert "nosuch: unknown scenario" in capsys.readouterr().err
    assert main(["compare", "telnet", "--modes", "nat,xx"]) == 2
    assert "'xx' is not one of nat, dr, tun" in capsys.readouterr().err


def test_tun_mode_decapsulates_at_the_realserver() -> None:
    sc = Scenario("t", "one fetch", 20, [Session(start=1.0)])
    r = run(sc, "tun", at=(1.5,))
    (snap, truth), = r.snapshots
    assert snap["services"][2]["dests"][0]["forward"] == "tunnel"
    assert [c["state"] for c in snap["connections"]] == ["FIN_WAIT"]
