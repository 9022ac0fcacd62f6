"""Persistence templates: port-0 and FTP keys, ASSURED, expire_later, quiescing, netmask."""

import pytest

from pyvs.core.engine import Director
from pyvs.core.forwarding import DROUTE
from pyvs.core.packet import int_to_ip
from pyvs.core.service import SVC_F_PERSISTENT
from tests.helpers import ACK, FIN, SYN, Flow, ip

VIP = "10.0.0.100"


def port0(kernel="modern", n=2, timeout=360, netmask=0xFFFFFFFF, **sysctls):
    d = Director(kernel=kernel)
    for k, v in sysctls.items():
        d.set_sysctl(k, v)
    svc = d.add_service(6, ip(VIP), 0, scheduler="rr", flags=SVC_F_PERSISTENT,
                        timeout=timeout, netmask=netmask)
    for i in range(1, n + 1):
        d.add_dest(svc, ip(f"192.168.10.{i}"), 0, DROUTE)
    return d, svc


def templates(d):
    return [(int_to_ip(c.caddr), c.cport, int_to_ip(c.vaddr), c.vport, int_to_ip(c.daddr),
             c.dport, d.state_name(c)) for c in d.connections() if c.template]


def test_ftp_like_control_and_data_share_realserver_and_template():
    d, svc = port0()
    ctl = Flow(d, cport=1230, vport=21)
    ctl.inb(SYN, 0.0)
    ctl.inb(ACK, 0.01)
    data = Flow(d, cport=1233, vport=21)
    data.inb(SYN, 1.0)
    data.inb(ACK, 1.01)
    data.inb(FIN | ACK, 2.0)
    assert ctl.conn().daddr == data.conn().daddr
    assert ctl.conn().dport == 21                 # connections keep their real ports
    assert templates(d) == [("10.0.0.5", 0, VIP, 0, int_to_ip(ctl.conn().daddr), 0,
                             "ASSURED")]
    dest = ctl.conn().dest
    assert (dest.persistconns, dest.activeconns, dest.inactconns) == (1, 1, 1)
    tpl = [c for c in d.connections() if c.template][0]
    assert tpl.expires == pytest.approx(1.0 + 360)   # re-armed by the second connection


def test_template_state_none_on_4_4():
    d, _ = port0(kernel="4.4")
    f = Flow(d, vport=23)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.1)
    assert templates(d)[0][-1] == "NONE"


def test_template_waits_in_60s_steps_while_connections_live():
    d, _ = port0(timeout=100)
    f = Flow(d, vport=23)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.0)                    # ESTABLISHED, 900 s
    tpl = [c for c in d.connections() if c.template][0]
    d.handle_timers(100.0)
    assert tpl.alive and tpl.expires == pytest.approx(160.0)
    d.handle_timers(400.0)
    assert tpl.expires == pytest.approx(460.0)   # fired at 100, 160, ..., 400
    f.inb(FIN | ACK, 401.0)            # FIN_WAIT (DR) 120 s
    d.handle_timers(521.0)
    assert f.state() == "gone"
    assert tpl.alive and tpl.expires == pytest.approx(580.0)   # fired at 460 and 520
    d.handle_timers(579.9)
    assert tpl.alive
    d.handle_timers(580.0)
    assert not tpl.alive
    assert d.connections() == []


def test_new_connection_after_expire_later_rearms_with_60s():
    d, _ = port0(timeout=100)
    f = Flow(d, vport=23)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.0)
    d.handle_timers(100.0)
    g = Flow(d, cport=40001, vport=25)
    g.inb(SYN, 120.0)
    tpl = [c for c in d.connections() if c.template][0]
    assert tpl.expires == pytest.approx(180.0)


def test_netmask_groups_clients():
    d, _ = port0(netmask=ip("255.255.255.0"))
    a = Flow(d, client="10.0.1.5", vport=80)
    b = Flow(d, client="10.0.1.77", vport=80)
    c = Flow(d, client="10.0.2.5", vport=80)
    for f, t in ((a, 0.0), (b, 1.0), (c, 2.0)):
        f.inb(SYN, t)
    assert a.conn().daddr == b.conn().daddr != c.conn().daddr
    assert sorted(t[0] for t in templates(d)) == ["10.0.1.0", "10.0.2.0"]


def test_quiesced_server_still_gets_clients_with_a_template():
    d, svc = port0()
    f = Flow(d, vport=80)
    f.inb(SYN, 0.0)
    dest = f.conn().dest
    d.edit_dest(dest, weight=0)
    g = Flow(d, cport=40001, vport=80)
    g.inb(SYN, 1.0)
    assert g.conn().dest is dest


def test_expire_quiescent_template_invalidates():
    d, svc = port0(expire_quiescent_template=1)
    f = Flow(d, vport=80)
    f.inb(SYN, 0.0)
    dest = f.conn().dest
    d.edit_dest(dest, weight=0)
    g = Flow(d, cport=40001, vport=80)
    g.inb(SYN, 1.0)
    assert g.conn().dest is not dest
    tpls = sorted(templates(d), key=lambda t: t[3])
    assert tpls[1][3] == 65535 and tpls[1][5] == 65535      # invalidated, still listed
    assert dest.persistconns == 1                           # until its own timer fires


def test_ftp_data_port_20_is_not_scheduled():
    d, _ = port0()
    f = Flow(d, cport=20, vport=5000)
    v = f.inb(SYN, 0.0)
    assert v.reason == "not-scheduled" and f.conn() is None


def test_normal_persistent_service_template_keeps_ports():
    d = Director()
    svc = d.add_service(6, ip(VIP), 443, scheduler="rr", flags=SVC_F_PERSISTENT, timeout=50)
    d.add_dest(svc, ip("192.168.10.1"), 443, DROUTE)
    Flow(d, vport=443).inb(SYN, 0.0)
    assert templates(d) == [("10.0.0.5", 0, VIP, 443, "192.168.10.1", 443, "NONE")]
