"""Connection sync rules: when the master sends, how it buffers, what the backup makes of it."""

from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.core import states as S
from pyvs.core.engine import Director
from pyvs.core.forwarding import DROUTE, MASQ
from pyvs.core.packet import int_to_ip
from pyvs.core.service import SVC_F_ONEPACKET, SVC_F_PERSISTENT
from pyvs.core.sync import (
    HZ,
    MessageBuilder,
    SyncBackup,
    SyncMaster,
    backup_maxlen,
    jiffies,
    master_maxlen,
    sync_needed,
    wheel_fires,
)
from pyvs.core.syncmsg import (
    F_INACTIVE,
    F_NOOUTPUT,
    F_ONE_PACKET,
    F_SYNC,
    F_TEMPLATE,
    SyncRecord,
    decode,
    encode_message,
)
from pyvs.core.sysctls import Sysctls
from pyvs.views.snapshot import snapshot
from tests.helpers import ACK, FIN, PSH, SYN, Flow, counts, ip, make_director

TCP, UDP = 6, 17
ES, SS, SR, FW, TW, CL, CW, LA = (S.ESTABLISHED, S.SYN_SENT, S.SYN_RECV, S.FIN_WAIT,
                                  S.TIME_WAIT, S.CLOSE, S.CLOSE_WAIT, S.LAST_ACK)
VIP = "10.0.0.100"


# --------------------------------------------------------------------- ip_vs_sync_conn_needed
class Decision(NamedTuple):
    send: bool
    old_state: int
    sync_endtime: int


def needed(state, old_state=0, pkts=3, protocol=TCP, template=False, persist=False,
           timeout=900, endtime=0, now=1000, **sysctls):
    return Decision(*sync_needed(protocol, state, old_state, template, persist, timeout * HZ,
                                 endtime, pkts, now, Sysctls(**sysctls)))


DEFAULT_CASES = [
    # state, old_state, pkts, protocol, template -> sent?
    (SR, 0, 1, TCP, False, False),      # SYN_RECV is never synced
    (SS, 0, 3, TCP, False, False),
    (ES, SR, 2, TCP, False, False),     # into ESTABLISHED: waits for the packet count
    (ES, SR, 3, TCP, False, True),
    (ES, ES, 4, TCP, False, False),
    (ES, ES, 53, TCP, False, True),     # 3, 53, 103, ...
    (ES, ES, 103, TCP, False, True),
    (FW, ES, 4, TCP, False, True),      # any other state change: at once
    (FW, FW, 5, TCP, False, False),
    (FW, FW, 53, TCP, False, True),
    (TW, FW, 6, TCP, False, True),
    (CL, ES, 7, TCP, False, True),
    (CW, ES, 8, TCP, False, True),
    (LA, CW, 9, TCP, False, False),     # LAST_ACK is not a synced state
    (0, 0, 3, UDP, False, True),        # UDP: by count only
    (0, 0, 4, UDP, False, False),
    (0, 0, 1, TCP, True, True),         # templates: every time (period > 0)
    (1, 1, 2, TCP, True, True),
]


@pytest.mark.parametrize("state,old,pkts,proto,template,sent", DEFAULT_CASES)
def test_defaults_3_50(state, old, pkts, proto, template, sent):
    d = needed(state, old, pkts, proto, template)
    assert d.send is sent
    n = (1000 + 900 * HZ) & ~3
    # a send records the state and the new end time; no send changes nothing
    assert d == (Decision(True, state, n) if sent else Decision(False, old, 0))


@pytest.mark.parametrize("state,old,pkts,proto,template,sent", [
    (ES, SR, 3, TCP, False, True),      # the threshold packet, once
    (ES, ES, 53, TCP, False, False),
    (FW, ES, 60, TCP, False, True),     # state changes still go out
    (0, 0, 3, UDP, False, True),
    (0, 0, 53, UDP, False, False),
    (0, 0, 5, TCP, True, False),        # templates too, only at the threshold
    (0, 0, 3, TCP, True, True),
])
def test_period_0_sends_state_changes_and_the_threshold_packet(state, old, pkts, proto,
                                                               template, sent):
    assert needed(state, old, pkts, proto, template, sync_period=0).send is sent


def test_persist_mode_skips_connections_under_a_template():
    assert needed(ES, SR, 3, persist=True, sync_persist_mode=1).send is False
    assert needed(ES, SR, 3, persist=False, sync_persist_mode=1).send is True
    assert needed(0, 0, 1, template=True, sync_persist_mode=1).send is True


def test_refresh_period_suppresses_resends_and_retries_every_eighth():
    """sync_refresh_period 16 s, timeout 900 s: within 16 s of the last send the timer
    barely moved, so no send; with 2 retries, resend after 16/8 = 2 s, twice."""
    kw = dict(sync_refresh_period=16, sync_period=0)      # count no longer matters
    last = 1000
    sent_end = (last + 900 * HZ) & ~3
    assert needed(ES, ES, 99, now=last + 5 * HZ, endtime=sent_end, **kw).send is False
    assert needed(ES, ES, 99, now=last + 16 * HZ, endtime=sent_end, **kw).send is True
    kw["sync_retries"] = 2
    early = needed(ES, ES, 99, now=last + HZ, endtime=sent_end, **kw)
    assert early.send is False                            # before refresh/8
    first = needed(ES, ES, 99, now=last + 2 * HZ, endtime=sent_end, **kw)
    assert first.send and first.sync_endtime & 3 == 1     # retry 1 in the low bits
    # each retry waits refresh/8 after the one before (and a jiffy: the count in the low
    # bits of sync_endtime)
    assert needed(ES, ES, 99, now=last + 4 * HZ, endtime=first.sync_endtime, **kw).send is False
    second = needed(ES, ES, 99, now=last + 4 * HZ + 1, endtime=first.sync_endtime, **kw)
    assert second.send and second.sync_endtime & 3 == 2
    third = needed(ES, ES, 99, now=last + 7 * HZ, endtime=second.sync_endtime, **kw)
    assert third.send is False                            # retries used up
    # a state change is sent whatever the refresh period says
    assert needed(FW, ES, 99, now=last + HZ, endtime=sent_end, **kw).send is True


def test_maxlen_defaults():
    assert master_maxlen() == 1472 and master_maxlen(9000) == 9000
    assert backup_maxlen(1500) == 1472 and backup_maxlen(9000) == 8972
    assert backup_maxlen(576) == 1472 and backup_maxlen(maxlen=100) == 1024


# --------------------------------------------------------------------- the master's buffering
def crec(i, **kw):
    base = dict(protocol=TCP, flags=DROUTE | F_NOOUTPUT, state=ES, cport=10000 + i, vport=80,
                dport=80, caddr=ip("10.0.1.1") + i, vaddr=ip(VIP), daddr=ip("192.168.10.1"),
                timeout=900)
    base.update(kw)
    return SyncRecord(**base)


def test_thread_sleeps_on_the_timer_wheel():
    """A 1 s sleep armed on a bucket boundary lasts 256 jiffies (1.024 s); off a boundary
    251-258; the 20 ms wake-up (5 jiffies, level 0) fires one jiffy late."""
    assert [wheel_fires(j + HZ, j) - j for j in range(8)] == [256, 255, 254, 253, 252, 251,
                                                             258, 257]
    assert wheel_fires(1005, 1000) == 1006 and wheel_fires(10, 20) == 20


def test_full_message_holds_40_ipv4_records_and_goes_out_24ms_after_it_fills():
    b = MessageBuilder(start=0.0)                # wakes at 1.024, 2.048, 3.072 ... s
    for i in range(40):
        b.add(crec(i), 0.0)
    assert b.due(1.0) == [] and b.next_timer() == 1.024
    b.add(crec(40), 1.1)                         # does not fit: the full buffer is queued
    assert b.next_timer() == pytest.approx(1.124)
    (first,) = b.due(1.124)
    assert len(first) == 8 + 40 * 36 == 1448
    assert decode(first).records == [crec(i) for i in range(40)]
    # the partial buffer (first record at 1.1 s) goes at the first wake-up 2 s after it;
    # woken at 1.124 s (jiffy 281), the thread sleeps to 2.144 (536), then 3.168 (792)
    assert b.due(3.16) == [] and b.next_timer() == pytest.approx(3.168)
    (second,) = b.due(3.168)
    assert decode(second).records == [crec(40)]


def test_a_thread_blocked_on_its_socket_dequeues_nothing_and_its_queue_drops():
    """ip_vs_send_sync_msg() waiting for a full socket: the thread sends nothing more, so
    full messages pile up to sync_qlen_max and sb_queue_tail() releases the rest; once
    the socket is writable the queue goes out at once."""
    b = MessageBuilder(maxlen=8 + 36, start=0.0, qlen_max=3)     # one record a message
    b.block(True, 0.0)
    for i in range(8):
        b.add(crec(i), 0.5)
    assert b.next_timer() is None and b.due(5.0) == []           # no wake-up while blocked
    assert len(b.queue) == 3 and b.dropped == 4                  # the 8th is current
    b.block(False, 5.0)
    assert b.next_timer() == pytest.approx(5.0)
    sent = b.due(5.0)                  # the queue, then the current one (4.5 s old)
    assert [decode(m).records for m in sent] == [[crec(0)], [crec(1)], [crec(2)], [crec(7)]]


def test_partial_message_waits_between_2_and_3_seconds():
    b = MessageBuilder(start=0.0)
    b.add(crec(0), 1.04)
    assert b.due(3.071) == []                    # 2.03 s old but the thread sleeps
    assert len(b.due(3.072)) == 1
    b.add(crec(1), 4.1)                          # 2 s later is 6.1: the wake-up at 6.144
    assert b.due(6.14) == [] and len(b.due(6.144)) == 1


def test_eighth_queued_message_wakes_the_thread_at_once():
    b = MessageBuilder(maxlen=8 + 36, start=0.0)          # one record per message
    for i in range(9):
        b.add(crec(i), 0.0)                      # 8 full messages queued, 1 current
    assert b.next_timer() == 0.0
    sent = b.due(0.0)
    assert [decode(m).records[0].cport for m in sent] == [10000 + i for i in range(8)]
    assert b.due(2.04) == [] and len(b.due(2.048)) == 1


def test_records_are_padded_to_4_bytes_between_but_not_after():
    b = MessageBuilder(start=0.0)
    seqrec = crec(0, seq=(1, 2, 3, 4, 5, 6))      # 36 + 26 = 62 bytes
    b.add(seqrec, 0.0)
    b.add(seqrec, 0.0)
    (m,) = b.due(3.0)
    assert len(m) == 8 + 62 + 2 + 62
    assert m[8 + 62:8 + 64] == b"\0\0" and decode(m).records == [seqrec, seqrec]
    assert m == encode_message([seqrec, seqrec])


def test_record_larger_than_maxlen_gets_a_buffer_of_its_own():
    b = MessageBuilder(maxlen=60, start=0.0)
    big = crec(0, pe_data=b"x" * 100, pe_name=b"sip")
    b.add(crec(1), 0.0)
    b.add(big, 0.0)
    b.add(crec(2), 0.0)
    sent = b.due(0.1) + b.due(3.0)       # two queued at once; the last one after 2 s
    assert [len(m) for m in sent] == [44, 8 + 36 + 102 + 5, 44]


def test_version_switch_closes_the_message():
    b = MessageBuilder(start=0.0)
    b.add(crec(0), 0.0, version=1)
    b.add(crec(1), 0.0, version=0)
    b.add(crec(2), 0.0, version=1)
    sent = b.due(0.024) + b.due(3.0)
    assert [decode(m).version for m in sent] == [1, 0, 1]
    assert [decode(m).records[0].cport for m in sent] == [10000, 10001, 10002]


def test_nr_conns_wraps_at_256_as_in_the_kernel():
    """nr_conns is a byte: a message of 256 records (possible with a large sync_maxlen)
    says 0 and the backup reads none of them."""
    b = MessageBuilder(maxlen=8 + 257 * 36, start=0.0)
    for i in range(256):
        b.add(crec(i % 200), 0.0)
    (m,) = b.due(3.0)
    assert len(m) == 8 + 256 * 36 and decode(m).nr_conns == 0 and decode(m).records == []


def test_queue_limit_releases_messages_and_stop_discards_everything():
    b = MessageBuilder(maxlen=44, start=0.0, qlen_max=2)
    for i in range(5):
        b.add(crec(i), 0.0)
    assert b.dropped == 2
    assert len(b.due(0.024)) == 2
    b.add(crec(9), 0.5)
    b.stop()
    assert b.due(10.0) == []


# --------------------------------------------------------------------- the master on a director
def master(fwd=DROUTE, persistent=0, version=1, **kw):
    d = make_director(fwd=fwd, flags=SVC_F_PERSISTENT if persistent else 0,
                      timeout=persistent)
    d.set_sysctl("sync_version", version)
    for name, value in kw.items():
        d.set_sysctl(name, value)
    return d, SyncMaster(d, syncid=5, start=0.0)


def sent(m, until=10.0):
    """Every record the master sends up to `until`, as (time, record)."""
    out = []
    t = m.next_timer()
    while t is not None and t <= until:
        for _, data in m.due(t):
            out += [(t, r) for r in decode(data).records]
        t = m.next_timer()
    return out


def test_connection_is_sent_at_its_third_packet_not_in_syn_recv():
    d, m = master()
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.1)                          # ESTABLISHED, 2 packets: nothing yet
    idle = Flow(d, cport=40001)
    idle.inb(SYN, 0.2)                       # SYN_RECV forever: never sent
    f.inb(PSH | ACK, 0.3, b"x")              # third packet
    ((t, r),) = sent(m)
    assert t == 3.072 and (r.state, r.cport, r.timeout) == (ES, 40000, 900)
    assert r.flags == DROUTE | F_NOOUTPUT and r.daddr == f.conn().daddr


def test_other_state_changes_are_sent_with_the_packet_that_makes_them():
    d, m = master()
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.1)
    f.inb(FIN | ACK, 0.2)                    # DR: ESTABLISHED -> FIN_WAIT
    f.inb(ACK, 0.3)                          # still FIN_WAIT, packet 4: no
    recs = [r for _, r in sent(m)]
    assert [(r.state, r.flags & F_INACTIVE, r.timeout) for r in recs] == [(FW, F_INACTIVE,
                                                                           120)]


def test_masq_flags_show_the_reply_seen():
    d, m = master(fwd=MASQ)
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.out(SYN | ACK, 0.01)
    f.inb(ACK, 0.02)
    f.inb(PSH | ACK, 0.03, b"x")
    ((_, r),) = sent(m)
    assert r.flags == MASQ and r.state == ES


def test_template_is_sent_after_its_connection_on_every_packet():
    d, m = master(persistent=360)
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.1)
    f.inb(PSH | ACK, 0.2, b"x")
    recs = [r for _, r in sent(m)]
    assert [r.template for r in recs] == [True, True, False, True]
    tpl = recs[0]
    assert (tpl.cport, tpl.vport, tpl.dport, tpl.timeout, tpl.state) == (0, 80, 80, 360, 0)
    assert tpl.flags == F_TEMPLATE | F_INACTIVE | DROUTE | F_NOOUTPUT
    assert recs[-1].state == S.TEMPLATE_ASSURED         # 6.x: ASSURED once a child is ES


def test_persist_mode_sends_only_templates():
    d, m = master(persistent=360, sync_persist_mode=1)
    f = Flow(d)
    for i, flags in enumerate((SYN, ACK, PSH | ACK, FIN | ACK)):
        f.inb(flags, i * 0.1)
    assert [r.template for _, r in sent(m)] == [True] * 4


def test_template_in_use_is_resent_when_put_off_60s():
    d, m = master(persistent=10)
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.1)
    sent(m, 3.0)
    d.handle_timers(10.5)                    # template times out at 10.1 with a live child
    recs = sent(m, 14.0)
    assert [(r.template, r.timeout) for _, r in recs] == [(True, 60)]


def test_one_packet_udp_connections_are_not_sent_but_their_template_is():
    d = Director()
    svc = d.add_service(UDP, ip(VIP), 53, scheduler="rr",
                        flags=SVC_F_ONEPACKET | SVC_F_PERSISTENT, timeout=60)
    d.add_dest(svc, ip("192.168.10.1"), 53, DROUTE)
    m = SyncMaster(d, start=0.0)
    for i in range(4):
        Flow(d, cport=5000, vport=53, protocol=UDP).inb(0, i * 0.1)
    assert [r.template for _, r in sent(m)] == [True] * 4
    d.edit_service(svc, flags=SVC_F_ONEPACKET)
    for i in range(4):
        Flow(d, cport=6000 + i, vport=53, protocol=UDP).inb(0, 5 + i * 0.1)
    assert sent(m, 20.0) == []


def test_version_0_sends_the_template_only_with_its_connection():
    d, m = master(persistent=360, version=0)
    f = Flow(d)
    f.inb(SYN, 0.0)
    f.inb(ACK, 0.1)
    f.inb(PSH | ACK, 0.2, b"x")
    datagrams = []
    t = m.next_timer()
    while t is not None and t <= 5:
        datagrams += [data for _, data in m.due(t)]
        t = m.next_timer()
    (data,) = datagrams
    dec = decode(data)
    assert dec.version == 0 and [r.template for r in dec.records] == [False, True]


def test_sync_ports_spread_entries_over_threads():
    d, m = master(sync_ports=4)
    for i in range(16):
        f = Flow(d, cport=30000 + i)
        for j, flags in enumerate((SYN, ACK, PSH | ACK)):
            f.inb(flags, 0.01 * j)
    threads = {i for i, _ in m.due(5.0)}
    assert len(m.builders) == 4 and len(threads) > 1


# --------------------------------------------------------------------- the backup
def backup(fwd=DROUTE, n=2, **kw):
    d = make_director(fwd=fwd, n=n, **kw)
    return d, SyncBackup(d)


def msg(*recs, version=1, syncid=0):
    return encode_message(list(recs), version, syncid)


def check_counts(d):
    """Every realserver's (and stand-in's) counts and the engine's count by state agree
    with a recount of the table."""
    per_dest, states = {}, [0] * len(d.state_counts)
    for cp in d.connections():
        slot = per_dest.setdefault(cp.dest, [0, 0, 0])
        slot[2 if cp.template else 1 if cp.inactive else 0] += 1
        if not cp.template:
            states[cp.state if cp.protocol == TCP else -1] += 1
    dests = {x for svc in d.services for x in svc.dests} | set(per_dest)
    for dest in dests:
        assert [dest.activeconns, dest.inactconns, dest.persistconns] == per_dest.get(
            dest, [0, 0, 0])
    assert d.state_counts == states


def entries(d, now):
    snap = snapshot(d, now)
    check_counts(d)
    return [(c["state"], c["client"], c["dest"], c["expires"], c["template"])
            for c in snap["connections"]]


def brec(**kw):
    base = dict(protocol=TCP, flags=DROUTE | F_NOOUTPUT, state=ES, cport=40000, vport=80,
                dport=80, caddr=ip("10.0.0.5"), vaddr=ip(VIP), daddr=ip("192.168.10.1"),
                timeout=900)
    base.update(kw)
    return SyncRecord(**base)


def test_backup_creates_a_bound_entry_with_the_message_state_and_timeout():
    d, b = backup()
    res = b.receive(msg(brec()), 10.0)
    assert res.actions == ["created"]
    assert entries(d, 10.0) == [("ESTABLISHED", "10.0.0.5:40000", "192.168.10.1:80", 900,
                                 False)]
    cp = d.find_conn(TCP, ip("10.0.0.5"), 40000, ip(VIP), 80)
    assert cp.synced and cp.in_pkts == 3 and cp.old_state == ES and not cp.inactive
    assert counts(d) == [("192.168.10.1", 1, 0), ("192.168.10.2", 0, 0)]
    d.handle_timers(909.9)
    assert d.connection_count() == 1
    d.handle_timers(910.0)                   # one full state timeout after the message
    assert d.connection_count() == 0 and counts(d)[0] == ("192.168.10.1", 0, 0)


def test_backup_entry_forwards_by_its_own_realserver_config():
    """The forwarding method and NOOUTPUT come from the backup's realserver."""
    d, b = backup(fwd=MASQ)
    b.receive(msg(brec(flags=DROUTE | F_NOOUTPUT)), 0.0)
    cp = d.find_conn(TCP, ip("10.0.0.5"), 40000, ip(VIP), 80)
    assert (cp.fwd, cp.noout) == (MASQ, False)
    assert d.find_reply_conn(TCP, ip("192.168.10.1"), 80, ip("10.0.0.5"), 40000) is cp


def test_inactive_flip_moves_the_count_and_refreshes_the_timer():
    d, b = backup()
    b.receive(msg(brec()), 0.0)
    b.receive(msg(brec(state=FW, flags=DROUTE | F_NOOUTPUT | F_INACTIVE, timeout=120)), 5.0)
    assert counts(d)[0] == ("192.168.10.1", 0, 1)
    assert entries(d, 5.0) == [("FIN_WAIT", "10.0.0.5:40000", "192.168.10.1:80", 120, False)]
    b.receive(msg(brec(state=ES)), 6.0)
    assert counts(d)[0] == ("192.168.10.1", 1, 0)


def test_other_realserver_replaces_an_entry_unless_inactive():
    d, b = backup()
    b.receive(msg(brec()), 0.0)
    res = b.receive(msg(brec(daddr=ip("192.168.10.2"))), 1.0)
    assert res.actions == ["replaced"]
    assert counts(d) == [("192.168.10.1", 0, 0), ("192.168.10.2", 1, 0)]
    # the old connection's closing message, arriving late, is ignored
    res = b.receive(msg(brec(state=TW, flags=DROUTE | F_INACTIVE, timeout=120)), 2.0)
    assert res.actions == ["stale"]
    assert entries(d, 2.0) == [("ESTABLISHED", "10.0.0.5:40000", "192.168.10.2:80", 899,
                                False)]


def test_unbound_entry_counts_nowhere_forwards_to_its_realserver_and_binds_later():
    d = Director()
    b = SyncBackup(d)
    b.receive(msg(brec(flags=DROUTE | F_NOOUTPUT)), 0.0)
    cp = d.find_conn(TCP, ip("10.0.0.5"), 40000, ip(VIP), 80)
    assert b.unbound(cp) and entries(d, 0.0)[0][:3] == ("ESTABLISHED", "10.0.0.5:40000",
                                                        "192.168.10.1:80")
    # a packet is forwarded (Route, with the mark of a route to 192.168.10.1)
    verdict = Flow(d).inb(PSH | ACK, 1.0, b"x")
    assert verdict.accepted and d.route_marks()[verdict.mark] == ip("192.168.10.1")
    # the service appears; the next message binds the entry
    svc = d.add_service(TCP, ip(VIP), 80, scheduler="rr")
    dest = d.add_dest(svc, ip("192.168.10.1"), 80, MASQ)
    b.receive(msg(brec()), 2.0)
    assert not b.unbound(cp) and cp.dest is dest and (cp.fwd, cp.noout) == (MASQ, False)
    assert counts(d) == [("192.168.10.1", 1, 0)]
    assert d.find_reply_conn(TCP, ip("192.168.10.1"), 80, ip("10.0.0.5"), 40000) is cp
    d.handle_timers(902.0)
    assert counts(d) == [("192.168.10.1", 0, 0)] and d.connection_count() == 0


def test_backup_templates_count_as_persistconn_and_serve_failover():
    d, b = backup(flags=SVC_F_PERSISTENT, timeout=360)
    tpl = brec(flags=F_TEMPLATE | F_INACTIVE | DROUTE | F_NOOUTPUT, cport=0, state=1,
               timeout=360, daddr=ip("192.168.10.2"))
    b.receive(msg(tpl), 0.0)
    dest2 = [x for x in d.services[0].dests if x.addr == ip("192.168.10.2")][0]
    assert dest2.persistconns == 1
    assert entries(d, 0.0) == [("ASSURED", "10.0.0.5:0", "192.168.10.2:80", 360, True)]
    # after failover a new connection from the client follows the synced template
    f = Flow(d, cport=50000)
    f.inb(SYN, 10.0)
    assert f.conn().daddr == ip("192.168.10.2")
    # a template update changes state and timer, never the realserver
    b.receive(msg(brec(flags=F_TEMPLATE | F_INACTIVE | DROUTE, cport=0, state=1,
                       timeout=60, daddr=ip("192.168.10.1"))), 20.0)
    assert entries(d, 20.0)[-1] == ("ASSURED", "10.0.0.5:0", "192.168.10.2:80", 60, True)


def test_v0_records_take_timeouts_from_the_backups_tables():
    d, b = backup()
    d.set_timeouts(600, 0, 0)
    b.receive(msg(brec(), brec(cport=2, state=FW, flags=DROUTE | F_INACTIVE),
                  brec(cport=0, flags=F_TEMPLATE | DROUTE, state=0), version=0), 0.0)
    assert [(e[0], e[3]) for e in entries(d, 0.0)] == [("ESTABLISHED", 600), ("FIN_WAIT", 120),
                                                       ("NONE", 180)]


def test_flags_are_masked_v1_keeps_the_backup_mask_and_v0_lets_one_packet_through():
    d, b = backup(fwd=DROUTE)
    b.receive(msg(brec(flags=DROUTE | F_ONE_PACKET | 0x40 | F_SYNC)), 0.0)
    assert d.connection_count() == 1
    res = b.receive(msg(brec(cport=7, flags=DROUTE | F_ONE_PACKET), version=0), 0.0)
    assert res.actions == ["one-packet"] and d.connection_count() == 1


def test_backup_refuses_what_pyvs_cannot_hold_and_counts_every_reason():
    d, b = backup()
    recs = [brec(ipv6=True, caddr=1, vaddr=2, daddr=3), brec(protocol=132, state=0),
            brec(pe_data=b"\1\2", pe_name=b"sip"), brec(protocol=TCP, state=11), brec()]
    res = b.receive(msg(*recs), 0.0)
    assert res.actions == ["ipv6", "protocol-not-modelled", "pe-not-loaded", "created"]
    assert res.decoded.skipped == [(3, "bad-state")]
    b.receive(b"\0\0\0", 0.0)
    assert b.counts == {"ipv6": 1, "protocol-not-modelled": 1, "pe-not-loaded": 1,
                        "bad-state": 1, "created": 1, "short": 1}


def test_backup_syncid_and_receive_buffer():
    d = make_director()
    b = SyncBackup(d, syncid=7)
    assert b.receive(msg(brec(), syncid=8), 0.0).decoded.error == "syncid"
    assert b.receive(msg(brec(), syncid=7), 0.0).actions == ["created"]
    # a datagram longer than the receive buffer arrives cut, and fails the size check
    many = msg(*[brec(cport=i) for i in range(41)], syncid=7)     # 1484 > 1472 bytes
    assert b.receive(many, 0.0).decoded.error == "size-mismatch"
    assert SyncBackup(d, syncid=7, mtu=9000).receive(many, 0.0).decoded.error is None


def test_synced_template_with_a_bad_state_lists_as_err():
    d, b = backup()
    b.receive(msg(brec(flags=F_TEMPLATE | DROUTE, cport=0, state=9)), 0.0)
    assert entries(d, 0.0)[0][0] == "ERR!"


# --------------------------------------------------------------------- master -> backup
@pytest.mark.parametrize("fwd", [DROUTE, MASQ])
def test_backup_fed_by_a_master_holds_what_the_master_synced(fwd):
    md, m = master(fwd=fwd, persistent=0)
    bd = make_director(fwd=fwd)
    b = SyncBackup(bd)
    established = Flow(md, cport=1001)
    closing = Flow(md, cport=1002)
    half_open = Flow(md, cport=1003)
    for flow in (established, closing):
        flow.inb(SYN, 0.0)
        if fwd == MASQ:
            flow.out(SYN | ACK, 0.001)
        flow.inb(ACK, 0.002)
    half_open.inb(SYN, 0.003)
    established.inb(PSH | ACK, 0.5, b"x")
    closing.inb(FIN | ACK, 0.6)
    delivered = []
    t = m.next_timer()
    while t is not None and t <= 5:
        for _, data in m.due(t):
            b.receive(data, t)
            delivered.append(t)
        t = m.next_timer()
    assert delivered == [3.072]              # first record at 0.5 s, wake-ups 1.024 s apart
    got = {(c["client"], c["state"], c["dest"]) for c in snapshot(bd, 4.0)["connections"]}
    want = {(c["client"], c["state"], c["dest"]) for c in snapshot(md, 4.0)["connections"]
            if not c["client"].endswith(":1003")}
    assert got == want and len(got) == 2
    # a backup entry lives one state timeout after the message that carried it
    expires = {c["client"]: c["expires"] for c in snapshot(bd, 4.072)["connections"]}
    assert expires == {"10.0.0.5:1001": 899,
                       "10.0.0.5:1002": 119 if fwd == DROUTE else 59}
    # counts follow the master's INACTIVE flags: the closing one inactive (FIN_WAIT for
    # DR, CLOSE_WAIT for NAT), the half-open one nowhere
    want_counts = {int_to_ip(established.conn().daddr): (1, 0),
                   int_to_ip(closing.conn().daddr): (0, 1)}
    assert {rs: (a, i) for rs, a, i in counts(bd) if a or i} == want_counts


def test_jiffies_round_trip():
    assert [jiffies(k / HZ) for k in range(2000)] == list(range(2000))
    assert int_to_ip(ip("1.2.3.4")) == "1.2.3.4"


def test_idle_thread_sets_no_timer_and_keeps_its_phase():
    b = MessageBuilder(start=0.3)                # jiffy 75: wakes at 328, then every 256
    assert b.next_timer() is None and b.due(100.0) == []
    b.add(crec(0), 500.1)                # jiffy 125025: wake-ups at 125256, 125512, 125768
    assert b.next_timer() == pytest.approx(125256 / HZ)
    assert b.due(125767 / HZ) == [] and len(b.due(125768 / HZ)) == 1
    assert b.next_timer() is None


def test_fwmark_persistence_template_reaches_the_backup_and_serves_failover():
    from pyvs.core.craft import tcp

    def director():
        d = Director()
        svc = d.add_service(TCP, fwmark=7, scheduler="rr", flags=SVC_F_PERSISTENT,
                            timeout=300)
        for i in (1, 2):
            d.add_dest(svc, ip(f"192.168.10.{i}"), 0, DROUTE)
        return d

    md, bd = director(), director()
    m = SyncMaster(md, start=0.0)
    b = SyncBackup(bd)
    c, v = ip("10.0.0.5"), ip(VIP)
    for i, flags in enumerate((SYN, ACK, PSH | ACK)):
        md.receive(tcp(c, 40000, v, 443, flags, payload=b"x" if flags & PSH else b""),
                   0.1 * i, mark=7)
    recs = []
    for _, data in m.due(5.0):
        recs += decode(data).records
        b.receive(data, 3.0)
    tpl = recs[0]
    assert (tpl.protocol, tpl.vaddr, tpl.vport, tpl.fwmark, tpl.timeout) == (0, 7, 0, 7, 300)
    master_rs = md.find_conn(TCP, c, 40000, v, 443).daddr
    assert [(e[0], e[2], e[4]) for e in entries(bd, 3.0)] == [
        ("ESTABLISHED", f"{int_to_ip(master_rs)}:443", False),
        ("ASSURED", f"{int_to_ip(master_rs)}:0", True)]
    assert sum(x.persistconns for x in bd.services[0].dests) == 1
    # the backup takes over: the client's next connection goes where the master sent it
    bd.receive(tcp(c, 40001, v, 443, SYN), 10.0, mark=7)
    assert bd.find_conn(TCP, c, 40001, v, 443).daddr == master_rs


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([TCP, UDP]), st.integers(0, 10), st.integers(0, 10),
       st.integers(0, 300), st.integers(0, 5), st.sampled_from([0, 10, 50]),
       st.sampled_from([0, 0, 5]), st.integers(0, 3))
def test_the_masters_fast_path_agrees_with_sync_needed(protocol, state, old, pkts, thr,
                                                       period, refresh, retries):
    """The hook skips a packet only where ip_vs_sync_conn_needed() sends nothing and
    changes nothing."""
    from pyvs.core.sync import _surely_not_needed
    if period and thr >= period:
        thr = period - 1
    d = Director()
    d.add_dest(d.add_service(protocol, ip(VIP), 80, scheduler="rr"), ip("192.168.10.1"), 80,
               DROUTE)
    f = Flow(d, protocol=protocol)
    f.inb(SYN, 0.0)
    cp = f.conn()
    cp.state, cp.old_state, cp.sync_endtime = state, old, 1000
    sysctls = Sysctls(sync_threshold=thr, sync_period=period, sync_refresh_period=refresh,
                      sync_retries=retries)
    if _surely_not_needed(cp, pkts, sysctls):
        assert sync_needed(protocol, state, old, False, False, 900 * HZ, 1000, pkts, 2000,
                           sysctls) == Decision(False, old, 1000)


def test_an_invalidated_template_is_updated_by_its_own_ports():
    """A master's template whose realserver went away is rehashed with ports 0xffff and
    still sent (at its expire_later); the backup finds it again by those ports."""
    d, b = backup()
    dead = brec(flags=F_TEMPLATE | DROUTE, cport=0, vport=0xFFFF, dport=0xFFFF, state=0,
                timeout=60)
    assert [b.receive(msg(dead), t).actions for t in (0.0, 50.0)] == [["created"],
                                                                    ["updated"]]
    assert [e[2:] for e in entries(d, 50.0)] == [("192.168.10.1:65535", 60, True)]
