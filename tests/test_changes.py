"""Control-plane changes applied at an instant, with the kernel's semantics: each change's
effect on entries, counters, timers and verdicts, with an explicit `now` (docs/ipvs.md,
"changes").  Every change goes through Director.apply, as pyvsadm, replay events, the
simulator and the health checkers send it."""

import pytest

from pyvs.config.events import parse_event, read_events
from pyvs.config.model import ConfigFileError
from pyvs.core import commands as C
from pyvs.core.engine import ConfigError, Director
from pyvs.core.forwarding import DROUTE, MASQ
from pyvs.core.packet import IPPROTO_ICMP, IPPROTO_TCP
from pyvs.core.service import SVC_F_PERSISTENT
from tests.helpers import ACK, FIN, PSH, SYN, Flow, counts, ip

VIP = "10.0.0.100"
SVC = C.ServiceKey(IPPROTO_TCP, ip(VIP), 80)
RS1, RS2 = ip("192.168.10.1"), ip("192.168.10.2")


def director(fwd=DROUTE, kernel="modern", persistent=0, **sysctls) -> Director:
    """VIP:80 rr with RS1 then RS2 (so rr picks RS2 first), sysctls set."""
    d = Director(kernel=kernel)
    for name, value in sysctls.items():
        d.apply(C.SetSysctl(name, value), 0.0)
    flags = SVC_F_PERSISTENT if persistent else 0
    d.apply(C.AddService(SVC, "rr", flags, persistent), 0.0)
    for rs in (RS1, RS2):
        d.apply(C.AddDest(SVC, rs, 80, fwd), 0.0)
    return d


def establish(f: Flow, t: float, nat: bool) -> None:
    f.inb(SYN, t)
    if nat:
        f.out(SYN | ACK, t + 0.001)
    f.inb(ACK, t + 0.002)


def server_closes_nat(f: Flow, t: float) -> None:
    """The realserver closes first (HTTP/1.0 server): the director ends in TIME_WAIT."""
    f.out(FIN | ACK, t)
    f.inb(ACK, t + 0.001)
    f.inb(FIN | ACK, t + 0.002)
    f.out(ACK, t + 0.003)


# ---------------------------------------------------------------------- port reuse
@pytest.mark.parametrize("kernel,reuse_mode,conntrack,first_syn,second_rs", [
    ("modern", 1, 0, "forward", RS1),         # expired, scheduled anew: rr moves on
    ("modern", 1, 1, "forward", RS1),         # 5.9+: a fresh conntrack, no drop
    ("modern", 0, 0, "forward", RS2),         # the old entry is reused: same realserver
    ("4.19", 1, 1, "reuse-conntrack", RS1),   # 4.10-5.8 with conntrack: the SYN dropped once
    ("4.19", 1, 0, "forward", RS1),
    ("4.4", 1, 1, "forward", RS1),            # before the drop was added
    ("2.6", 1, 0, "forward", RS2),            # no conn_reuse_mode at all
])
def test_syn_reusing_a_time_wait_entry(kernel, reuse_mode, conntrack, first_syn,
                                       second_rs) -> None:
    d = director(MASQ, kernel, **({} if kernel == "2.6" else
                                  {"conn_reuse_mode": reuse_mode, "conntrack": conntrack}))
    f = Flow(d)
    establish(f, 0.0, nat=True)
    assert f.conn().daddr == RS2
    server_closes_nat(f, 1.0)
    assert f.state() == "TIME_WAIT"
    v = f.inb(SYN, 5.0)                            # the client reuses its port
    assert v.reason == first_syn
    if first_syn == "reuse-conntrack":
        assert v.action == "drop" and f.conn() is None      # the old entry is gone too
        assert f.inb(SYN, 6.0).reason == "forward"          # the retransmit, 1 s later
    assert f.conn().daddr == second_rs and f.state() == "SYN_RECV"
    syn_recv = (1, 0) if d.profile.active[3] else (0, 1)    # ActiveConn on 4.9+ only
    expect = {second_rs: syn_recv}
    assert counts(d) == [("192.168.10.1", *expect.get(RS1, (0, 0))),
                         ("192.168.10.2", *expect.get(RS2, (0, 0)))]


def test_reuse_bit_2_takes_dr_fin_wait_entries_too() -> None:
    for mode, moved in ((1, False), (3, True)):
        d = director(DROUTE, conn_reuse_mode=mode)
        f = Flow(d)
        establish(f, 0.0, nat=False)
        f.inb(FIN | ACK, 1.0)
        assert f.state() == "FIN_WAIT"
        f.inb(SYN, 2.0)
        assert (f.conn().daddr == RS1) is moved


def test_persistent_entries_are_never_rescheduled_by_reuse() -> None:
    d = director(MASQ, persistent=360)
    f = Flow(d)
    establish(f, 0.0, nat=True)
    server_closes_nat(f, 1.0)
    f.inb(SYN, 5.0)
    assert f.conn().daddr == RS2 and f.state() == "SYN_RECV"    # the same entry, re-used


# ---------------------------------------------------------------------- removal
def test_removed_realserver_blackholes_its_entries_with_expire_nodest_conn_0() -> None:
    d = director(DROUTE)
    f = Flow(d)
    establish(f, 0.0, nat=False)
    d.apply(C.DelDest(SVC, RS2, 80), 10.0)
    for t in (11.0, 12.0, 14.0):                   # the client retransmits into the void
        v = f.inb(PSH | ACK, t)
        assert (v.action, v.reason) == ("drop", "dest-unavailable")
    assert f.state() == "ESTABLISHED" and f.conn().expires == pytest.approx(900.002)
    d.handle_timers(900.002)
    assert f.conn() is None


@pytest.mark.parametrize("kernel,at_removal,next_packet", [
    ("modern", "gone", ("accept", "no-connection")),   # 5.9+: flushed when removed
    ("4.19", "kept", ("drop", "dest-unavailable")),    # expired by its next packet, dropped
])
def test_expire_nodest_conn_1(kernel, at_removal, next_packet) -> None:
    d = director(DROUTE, kernel, expire_nodest_conn=1)
    f = Flow(d)
    establish(f, 0.0, nat=False)
    d.apply(C.DelDest(SVC, RS2, 80), 10.0)
    assert ("gone" if f.conn() is None else "kept") == at_removal
    v = f.inb(PSH | ACK, 11.0)
    assert (v.action, v.reason) == next_packet
    assert f.conn() is None
    assert counts(d) == [("192.168.10.1", 0, 0)]
    # the client's next SYN from that port is scheduled to a live realserver
    assert f.inb(SYN, 12.0).reason == "forward" and f.conn().daddr == RS1


def test_expire_nodest_conn_set_after_removal_reschedules_the_next_packet() -> None:
    d = director(DROUTE)
    f = Flow(d)
    establish(f, 0.0, nat=False)
    d.apply(C.DelDest(SVC, RS2, 80), 10.0)
    d.apply(C.SetSysctl("expire_nodest_conn", 1), 20.0)
    assert f.conn() is not None                    # no flush: the sysctl came later
    v = f.inb(PSH | ACK, 21.0)                     # 5.9+: expired, and scheduled anew ...
    assert (v.action, v.reason, f.conn()) == ("accept", "no-connection", None)  # no SYN
    d2 = director(DROUTE, conntrack=1)
    g = Flow(d2)
    establish(g, 0.0, nat=False)
    d2.apply(C.DelDest(SVC, RS2, 80), 10.0)
    d2.apply(C.SetSysctl("expire_nodest_conn", 1), 20.0)
    v = g.inb(PSH | ACK, 21.0)                     # ... unless its conntrack is the old one
    assert (v.action, v.reason, g.conn()) == ("drop", "dest-unavailable", None)


def test_delete_service_and_flush_keep_entries_until_they_expire() -> None:
    for change in (C.DelService(SVC), C.Flush()):
        d = director(DROUTE)
        f = Flow(d)
        establish(f, 0.0, nat=False)
        d.apply(change, 5.0)
        assert d.services == []
        assert f.inb(ACK, 6.0).reason == "dest-unavailable"
        assert f.conn().expires == pytest.approx(900.002)


# ---------------------------------------------------------------------- quiescing
def test_weight_0_takes_no_new_connections_but_keeps_its_entries() -> None:
    d = director(DROUTE)
    held = Flow(d, cport=40000)
    establish(held, 0.0, nat=False)                    # on RS2
    d.apply(C.EditDest(SVC, RS2, 80, DROUTE, 0), 1.0)
    new = [Flow(d, cport=40001 + i) for i in range(3)]
    for i, f in enumerate(new):
        f.inb(SYN, 2.0 + i)
    assert {f.conn().daddr for f in new} == {RS1}
    assert held.inb(PSH | ACK, 10.0).reason == "forward" and held.conn().daddr == RS2


@pytest.mark.parametrize("expire_quiescent,where", [(0, RS2), (1, RS1)])
def test_weight_0_with_persistence(expire_quiescent, where) -> None:
    d = director(DROUTE, persistent=360, expire_quiescent_template=expire_quiescent)
    first = Flow(d, cport=40000)
    establish(first, 0.0, nat=False)
    d.apply(C.EditDest(SVC, RS2, 80, DROUTE, 0), 1.0)
    again = Flow(d, cport=40001)                   # the same client, a new connection
    again.inb(SYN, 2.0)
    assert again.conn().daddr == where


def test_expire_nodest_conn_reschedules_a_syn_to_a_weight_0_entry() -> None:
    d = director(DROUTE, expire_nodest_conn=1)
    f = Flow(d)
    establish(f, 0.0, nat=False)
    d.apply(C.EditDest(SVC, RS2, 80, DROUTE, 0), 1.0)
    f.inb(SYN, 2.0)                                # same port, entry ESTABLISHED
    assert f.conn().daddr == RS1 and f.state() == "SYN_RECV"


def test_no_usable_destination_answers_icmp_port_unreachable() -> None:
    d = director(DROUTE)
    for rs in (RS1, RS2):
        d.apply(C.EditDest(SVC, rs, 80, DROUTE, 0), 1.0)
    f = Flow(d)
    v = f.inb(SYN, 2.0)
    assert (v.action, v.reason) == ("drop", "no-destination")
    icmp = v.reply
    assert icmp[9] == IPPROTO_ICMP and icmp[20:22] == b"\x03\x03"       # port unreachable
    assert icmp[12:16] == ip(VIP).to_bytes(4, "big")                    # from the VIP
    assert icmp[16:20] == ip("10.0.0.5").to_bytes(4, "big")             # to the client
    assert icmp[28:28 + 20] == f.last_sent[:20]                         # quoting the SYN
    assert d.drops == {"no-destination": 1}


# ---------------------------------------------------------------------- timeouts, zero
def test_set_changes_an_entrys_timeout_at_its_next_packet_only() -> None:
    d = director(DROUTE)
    idle, busy = Flow(d, cport=40000), Flow(d, cport=40001)
    establish(idle, 0.0, nat=False)
    establish(busy, 0.0, nat=False)
    d.apply(C.SetTimeouts(30, 0, 0), 60.0)
    assert idle.conn().expires == pytest.approx(900.002)     # armed before: keeps 900 s
    busy.inb(PSH | ACK, 100.0)
    assert busy.conn().expires == pytest.approx(130.0)       # re-armed with the new 30 s
    d.handle_timers(131.0)
    assert busy.conn() is None and idle.conn() is not None
    assert d.timeouts.tcp == 30 and d.timeouts.tcpfin == 120


def test_zero_resets_counters_and_rates_as_of_the_last_estimator_tick() -> None:
    d = director(DROUTE)
    f = Flow(d)
    establish(f, 0.0, nat=False)
    d.handle_timers(4.0)                            # two ticks: SYN and ACK counted, a rate
    dest = d.services[0].find_dest(RS2, 80)
    assert dest.est.shown().inpkts == 2 and dest.est.inpps > 0      # (shown rounded: 0)
    f.inb(PSH | ACK, 4.5)                           # after the last tick
    d.apply(C.Zero(), 5.0)
    assert dest.est.shown().inpkts == 0 and dest.est.rates() == (0, 0, 0, 0, 0)
    d.handle_timers(6.0)                            # the packet at 4.5 came after kstats
    assert dest.est.shown().inpkts == 1


# ---------------------------------------------------------------------- edits
def test_edit_service_takes_effect_at_the_next_scheduling() -> None:
    d = director(DROUTE, persistent=360)
    a = Flow(d, client="10.0.0.5", cport=40000)
    establish(a, 0.0, nat=False)
    d.apply(C.EditService(SVC, "rr"), 1.0)         # -E without -p: no longer persistent
    assert not d.services[0].persistent
    b = Flow(d, client="10.0.0.5", cport=40001)
    b.inb(SYN, 2.0)
    assert b.conn().control is None and b.conn().daddr == RS1    # rr, not the template
    assert any(c.template for c in d.connections())              # the old one lives on


def test_edit_dest_forwarding_leaves_existing_entries_as_they_were() -> None:
    d = director(DROUTE)
    old = Flow(d, cport=40000)
    establish(old, 0.0, nat=False)                 # Route, on RS2
    mark = old.inb(ACK, 0.5).mark
    d.apply(C.EditDest(SVC, RS2, 80, MASQ, 1), 1.0)
    v = old.inb(PSH | ACK, 2.0)
    assert (v.mark, v.data) == (mark, None) and mark    # still routed by its mark
    d.apply(C.EditDest(SVC, RS1, 80, DROUTE, 0), 2.5)    # so the next pick is RS2
    new = Flow(d, cport=40001)
    v = new.inb(SYN, 3.0)
    assert new.conn().daddr == RS2 and v.data is not None and v.mark == 0   # Masq now


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize("cmd,text", [
    (C.AddService(SVC), "Service already exists"),
    (C.AddService(C.ServiceKey(IPPROTO_TCP, ip(VIP), 81), "fast"),
     "Scheduler or persistence engine not found"),
    (C.EditService(C.ServiceKey(IPPROTO_TCP, ip(VIP), 81)), "No such service"),
    (C.AddDest(C.ServiceKey(IPPROTO_TCP, ip(VIP), 81), RS1, 80), "Service not defined"),
    (C.AddDest(SVC, RS1, 80), "Destination already exists"),
    (C.EditDest(SVC, ip("192.168.10.9"), 80), "No such destination"),
    (C.AddDest(SVC, ip("192.168.10.9"), 80, weight=-7), "illegal weight specified"),
    (C.AddDest(SVC, ip("192.168.10.9"), 70000), "illegal real server address[:port] specified"),
    (C.AddDest(SVC, ip("192.168.10.9"), 80, l_threshold=5), "Numerical result out of range"),
    (C.AddService(C.ServiceKey(99, ip(VIP), 80)), "invalid protocol 99 (tcp 6 or udp 17)"),
    (C.AddService(C.ServiceKey(IPPROTO_TCP, 2**40, 80)),
     "illegal virtual server address[:port] specified"),
    (C.AddService(C.ServiceKey(IPPROTO_TCP, ip(VIP), 82), flags=SVC_F_PERSISTENT, timeout=-1),
     "invalid timeout value `-1' specified"),
    (C.SetTimeouts(-5, 0, 0), "invalid timeout value `-5' specified"),
    (C.SetSysctl("secure_tcp", 4), "secure_tcp: 4 is out of range 0..3"),
    (C.SetSysctl("colour", 1), "unknown sysctl 'colour'"),
])
def test_refused_changes_say_why_and_change_nothing(cmd, text) -> None:
    d = director(DROUTE)
    before = counts(d), [(s.sched_name, len(s.dests)) for s in d.services]
    with pytest.raises(ConfigError) as exc:
        d.apply(cmd, 1.0)
    assert str(exc.value) == text
    assert (counts(d), [(s.sched_name, len(s.dests)) for s in d.services]) == before


def test_commands_round_trip_through_the_socket_form() -> None:
    cmds = [C.AddService(SVC, "sh", 0x18), C.AddDest(SVC, RS1, 80, MASQ, 3, 10, 5),
            C.Zero(), C.Zero(SVC), C.SetTimeouts(1, 2, 3), C.SetSysctl("sloppy_tcp", 1),
            C.DelDest(SVC, RS1, 80), C.Flush()]
    assert [C.from_dict(C.to_dict(c)) for c in cmds] == cmds


@pytest.mark.parametrize("raw,text", [
    ({"op": "nuke"}, "unknown op 'nuke'"),
    ({"op": "add-server", "service": {"protocol": 6, "addr": 1, "port": 80}},
     "add-server: missing field 'addr'"),
    ({"op": "set", "tcp": "9"}, "set.tcp: '9' is not an integer"),
    ({"op": "set", "tcp": True}, "set.tcp: True is not an integer"),
    ({"op": "zero", "service": [1]}, "zero.service: expected an object"),
    ({"op": "flush", "extra": 1}, "flush: unknown field 'extra'"),
    ("[[[", "a command is an object with an 'op'"),
])
def test_malformed_socket_commands_are_refused(raw, text) -> None:
    with pytest.raises(C.CommandError) as exc:
        C.from_dict(raw)
    assert str(exc.value).startswith(text)


# ---------------------------------------------------------------------- event text
def test_event_lines() -> None:
    (e,) = parse_event("30 ipvsadm -e -t 10.0.0.100:80 -r 192.168.10.2 -g -w 0")
    assert e == C.Event(30.0, C.EditDest(SVC, RS2, 80, DROUTE, 0))
    assert parse_event("40 sysctl net.ipv4.vs.expire_nodest_conn=1") == [
        C.Event(40.0, C.SetSysctl("expire_nodest_conn", 1))]
    assert parse_event("1.5 sysctl sync_threshold='60 100'") == [
        C.Event(1.5, C.SetSyncThreshold(60, 100))]
    assert parse_event("  # a comment") == []
    events = read_events(["5 ipvsadm -Z", "1 ipvsadm --set 30 0 0"], "f: line ")
    assert [e.at for e in events] == [1.0, 5.0]


@pytest.mark.parametrize("line,text", [
    ("x ipvsadm -C", "f: line 1: 'x ipvsadm -C': 'x' is not a time in seconds"),
    ("-1 ipvsadm -C", "a time must be 0 or more seconds"),
    ("3 reboot", "expected `T ipvsadm ARGS...` or `T sysctl NAME=VALUE`"),
    ("3 ipvsadm -L -n", "ipvsadm list is not a change"),
    ("3 ipvsadm -a -t 10.0.0.1:80", "You need to supply the 'real-server' option"),
    ("3 sysctl secure_tcp=9", "sysctl secure_tcp: 9 is out of range 0..3"),
    ("3 sysctl conn_reuse_mode", "expected NAME=VALUE"),
])
def test_bad_events_say_which_and_why(line, text) -> None:
    with pytest.raises(ConfigFileError) as exc:
        read_events([line], "f: line ")
    assert text in str(exc.value) and "\n" not in str(exc.value)
