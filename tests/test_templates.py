"""Persistence templates across kernel versions: when they turn ASSURED, when drop_entry
and the removal flush take them, and the realserver trash's timer (ip_vs_conn.c,
ip_vs_proto_udp.c, ip_vs_ctl.c)."""

import pytest

from pyvs.core.craft import udp
from pyvs.core.engine import OUT, Director
from pyvs.core.forwarding import MASQ
from pyvs.core.service import SVC_F_PERSISTENT
from tests.helpers import ACK, SYN, Flow, ip

VIP, RS1, RS2 = ip("10.0.0.100"), ip("192.168.10.1"), ip("192.168.10.2")


def persistent(kernel="modern", protocol=6, n=1, timeout=3600, **sysctls):
    d = Director(kernel=kernel, seed=3)
    for k, v in sysctls.items():
        d.set_sysctl(k, v)
    svc = d.add_service(protocol, VIP, 53 if protocol == 17 else 80, scheduler="rr",
                        flags=SVC_F_PERSISTENT, timeout=timeout)
    for rs in (RS1, RS2)[:n]:
        d.add_dest(svc, rs, svc.port, MASQ)
    return d, svc


def udp_exchange(d, now, reply=True, cport=5000):
    d.receive(udp(ip("10.0.0.5"), cport, VIP, 53, b"q"), now)
    if reply:
        d.receive(udp(RS1, 53, ip("10.0.0.5"), cport, b"a"), now + 0.01, OUT)


@pytest.mark.parametrize("kernel,before,after", [
    ("modern", "NONE", "ASSURED"), ("4.19", "NONE", "ASSURED"), ("4.9", "UDP", "UDP")])
def test_udp_template_turns_assured_on_a_reply(kernel, before, after) -> None:
    """udp_state_transition(): every OUTPUT packet assures the controlling template (4.19+,
    which also names template states NONE/ASSURED; before, a UDP template shows UDP)."""
    d, _ = persistent(kernel, protocol=17)
    udp_exchange(d, 0.0, reply=False)
    (ct,) = d.template_list()
    assert d.state_name(ct) == before
    udp_exchange(d, 1.0)
    assert d.state_name(ct) == after


def idle_template(kernel, protocol=17, **sysctls):
    """A persistent service whose only entry is a template its connection left idle."""
    d, svc = persistent(kernel, protocol=protocol, **sysctls)
    if protocol == 17:
        d.set_timeouts(0, 0, 10)
        udp_exchange(d, 0.0, reply=False)
    else:
        Flow(d).inb(SYN, 0.0)                  # SYN_RECV for 60 s
    d.handle_timers(61.0)
    assert [c.template for c in d.connections()] == [True]
    return d, svc


@pytest.mark.parametrize("kernel,kept", [("modern", False), ("4.19", False), ("4.9", True),
                                         ("4.4", True)])
def test_drop_entry_takes_idle_templates_unless_assured(kernel, kept) -> None:
    """ip_vs_random_dropentry(): since 4.19 a template that is not ASSURED is dropped at
    once; before, only a one-packet service's templates were considered."""
    d, _ = idle_template(kernel)
    d.set_sysctl("drop_entry", 3)
    d.handle_timers(661.0)                     # a bucket is drawn in 3% of the ticks
    assert len(d.template_list()) == (1 if kept else 0)


def test_drop_entry_keeps_an_assured_template() -> None:
    d, _ = persistent(protocol=17, drop_entry=3)
    d.set_timeouts(0, 0, 10)
    udp_exchange(d, 0.0)                       # the reply assures the template
    d.handle_timers(660.0)
    (ct,) = d.connections()
    assert ct.template and d.state_name(ct) == "ASSURED"


@pytest.mark.parametrize("kernel,template_left", [("modern", None), ("4.9", 60.0)])
def test_a_dropped_connection_takes_its_template(kernel, template_left) -> None:
    """4.19+: ip_vs_conn_del() (timeout 0) deletes the non-ASSURED template its connection
    leaves empty; before, ip_vs_conn_expire_now() of the template puts it off 60 s."""
    d, _ = persistent(kernel, drop_entry=3)
    Flow(d).inb(SYN, 0.0)                      # half-open: drop_entry takes it at once
    t = 0.0
    while any(not c.template for c in d.connections()):
        t += 1.0
        d.handle_timers(t)
    left = d.template_list()
    if template_left is None:
        assert left == []
    else:
        (ct,) = left
        assert ct.expires == pytest.approx(t + template_left)


@pytest.mark.parametrize("protocol", [6, 17])
def test_removal_flush_deletes_idle_templates(protocol) -> None:
    """ip_vs_expire_nodest_conn_flush() walks the whole table, templates included: the
    removed realserver's template that controls nothing goes at once."""
    d, svc = idle_template("modern", protocol=protocol, expire_nodest_conn=1)
    d.del_dest(svc.dests[0], 62.0)
    assert d.connections() == []


def test_removal_flush_deletes_an_assured_template_its_last_connection_leaves() -> None:
    d, svc = persistent(protocol=17, expire_nodest_conn=1)
    udp_exchange(d, 0.0)
    assert [d.state_name(c) for c in d.connections()] == ["UDP", "ASSURED"]
    d.del_dest(svc.dests[0], 1.0)
    assert d.connections() == []


@pytest.mark.parametrize("kernel,reuse_mode,rescheduled", [
    ("modern", 0, True), ("modern", 1, True), ("5.15", 0, False), ("5.15", 1, True),
    ("4.19", 1, True), ("4.4", 0, False), ("4.4", 1, True), ("3.18", 1, False)])
def test_weight0_syn_branch_by_version(kernel, reuse_mode, rescheduled) -> None:
    """ip_vs_in_hook(): with expire_nodest_conn=1 a SYN finding an entry of a weight-0
    realserver is scheduled anew: 4.2-5.15 only while conn_reuse_mode is not 0 (the
    branch sits inside `if (conn_reuse_mode && ...)`), 5.16+ whatever the mode."""
    d = Director(kernel=kernel)
    for k, v in (("expire_nodest_conn", 1), ("conn_reuse_mode", reuse_mode)):
        d.set_sysctl(k, v)
    svc = d.add_service(6, VIP, 80, scheduler="rr")
    for rs in (RS2, RS1):
        d.add_dest(svc, rs, 80, MASQ)
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.out(SYN | ACK, 0.01)
    f.inb(ACK, 0.02)
    d.edit_dest(svc.find_dest(RS1, 80), weight=0)
    f.inb(SYN, 1.0)
    assert f.conn().daddr == (RS2 if rescheduled else RS1)


def test_trash_frees_at_its_timer_run_not_120_s_after_idle() -> None:
    """ip_vs_dest_trash_expire() runs every 60 s (IP_VS_DEST_TRASH_PERIOD / 2, a level-3
    timer: on 512-jiffy boundaries at HZ=250) while the trash holds anything; a run notes
    when it first finds the realserver idle and frees it at the first run 120 s later."""
    def readd(at):
        d = Director()
        svc = d.add_service(6, VIP, 80, scheduler="rr")
        dest = d.add_dest(svc, RS1, 80, MASQ)
        Flow(d).inb(SYN, 0.0)                  # SYN_RECV: expires at 60 s
        d.del_dest(dest, 1.0)                  # runs at 61.44, 122.88, 184.32 s
        d.handle_timers(at)
        return d.add_dest(svc, RS1, 80, MASQ, now=at).conns
    # idle at 60 s; found idle by the run at 61.44 s; freed by the run at 184.32 s
    assert [readd(t) for t in (180.5, 184.3, 184.4)] == [1, 1, 0]
