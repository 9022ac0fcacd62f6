"""Connection sync against a real kernel: the `sync-dr` record (Debian 12's Linux 6.1 under
qemu, two DR directors, d1 master and d2 backup with syncid 7; see docs/kernel-check.md).

A pyvs backup fed the datagrams d2 received, when it received them, holds what d2 listed;
a pyvs master replaying d1's traffic sends the datagrams d1 sent, byte for byte, at the
kernel thread's wake-ups."""

import json

import pytest

from pyvs.config import rules
from pyvs.core.sync import SyncBackup, SyncMaster
from pyvs.core.syncmsg import SYNC_PORT, decode
from pyvs.drivers.pcap import read_capture
from pyvs.drivers.replay import Replay
from pyvs.lab import kernel_check as kc
from pyvs.views.snapshot import snapshot

REC = kc.RECORDS / "sync-dr"
NS = kc.NS
pytestmark = pytest.mark.skipif(not (REC / "record.json").exists(),
                                reason="needs the kernel record tests/kernel/records/sync-dr")


def load():
    rec = json.loads((REC / "record.json").read_text())
    inputs = kc.pyvs_inputs(rec, REC)
    return rec, inputs, rules.parse(inputs.rules, "sync-dr rules").build(now=0.0)


def sync_datagrams(capture, first):
    """(seconds after the director capture's first packet, UDP payload) to port 8848."""
    out = []
    for ns, pkt in read_capture(capture):
        ihl = (pkt[0] & 15) << 2
        if pkt[9] == 17 and int.from_bytes(pkt[ihl + 2:ihl + 4], "big") == SYNC_PORT:
            out.append((ns / NS - first, pkt[ihl + 8:]))
    return out


def d2_views(rec, first):
    """(observation, view, kernel output, t before, t after) of every backup listing."""
    for done in rec["timeline"]:
        if "observe" not in done["event"]:
            continue
        for c in done["result"]["commands"]:
            if c["host"] == "d2" and (c["view"] in kc.COLUMNS
                                      or c["view"] == "/proc/net/ip_vs_conn_sync"):
                yield (done["event"]["observe"], c["view"], c["out"], c["t0"] - first,
                       c["t1"] - first)


def conn_sync(director, now):
    """/proc/net/ip_vs_conn_sync (ip_vs_conn_sync_seq_show()): rows without the expiry,
    and the expiry, for comparing."""
    rows = []
    for cp in director.connections():
        row = " ".join([{6: "TCP", 17: "UDP"}.get(cp.protocol, "IP"),
                        f"{cp.caddr:08X}", f"{cp.cport:04X}", f"{cp.vaddr:08X}",
                        f"{cp.vport:04X}", f"{cp.daddr:08X}", f"{cp.dport:04X}",
                        director.state_name(cp), "SYNC" if cp.synced else "LOCAL"])
        rows.append((row, max(0, int(cp.expires - now))))
    return rows


def kernel_conn_sync(text):
    rows = []
    for line in text.splitlines()[1:]:
        *fields, expires = line.split()
        rows.append((" ".join(fields), int(expires)))
    return rows


class Views:
    """What kernel_check's comparisons ask of pyvs: a view's text at an instant."""

    def __init__(self, snaps):
        self.snaps = snaps

    def text(self, view, t):
        return kc.render(view, self.snaps[round(t, 6)])


def test_backup_fed_the_kernel_masters_datagrams_holds_what_the_kernel_backup_held():
    rec, inputs, director = load()
    backup = SyncBackup(director, syncid=7)
    datagrams = sync_datagrams(REC / rec["captures"]["sync"]["file"], inputs.first)
    views = list(d2_views(rec, inputs.first))
    assert len(datagrams) == 2 and len(views) >= 20
    snaps, sync_rows, i = {}, {}, 0
    for t in sorted({round(t, 6) for v in views for t in v[3:]}):
        while i < len(datagrams) and datagrams[i][0] <= t:
            received = backup.receive(datagrams[i][1], datagrams[i][0])
            assert received.decoded.error is None and received.decoded.skipped == []
            i += 1
        snaps[t] = snapshot(director, t)
        sync_rows[t] = conn_sync(director, t)
    pv = Views(snaps)
    failures = []
    for observation, view, kernel, t0, t1 in views:
        if view == "/proc/net/ip_vs_conn_sync":       # Origin SYNC on every entry
            got = kernel_conn_sync(kernel)
            ours = {row: (e0, e1) for (row, e0), (_, e1) in
                    zip(sorted(sync_rows[round(t0, 6)]), sorted(sync_rows[round(t1, 6)]))}
            ok = sorted(r for r, _ in got) == sorted(ours) and all(
                ours[r][1] - 1 <= e <= ours[r][0] + 1 for r, e in got)
            note = f"kernel {got}, pyvs {ours}"
        else:
            ok, note = kc.compare_view(view, kernel, pv, t0, t1)
        if not ok:
            failures.append(f"{observation} {view}: {note}")
    assert not failures, "\n".join(failures)
    assert backup.counts == {"created": 2, "updated": 2}


def test_master_replaying_the_traffic_sends_the_kernel_masters_datagrams():
    rec, inputs, director = load()
    start = next(c for c in rec["log"] if c["host"] == "d1" and "master" in c["argv"])
    master = SyncMaster(director, syncid=7, start=(start["t0"] + start["t1"]) / 2 - inputs.first)
    packets = list(read_capture(inputs.capture))
    replayer = Replay(director)
    sent = []

    def run_master(until):
        t = master.next_timer()
        while t is not None and t <= until:
            sent.extend((t, data) for _, data in master.due(t))
            t = master.next_timer()

    for ns, pkt in packets:
        now = (ns - packets[0][0]) / NS
        run_master(now)
        replayer.packet(ns, now, pkt)
    run_master(30.0)
    kernel = sync_datagrams(inputs.capture, inputs.first)      # what d1 itself sent
    assert [d for _, d in sent] == [d for _, d in kernel]      # byte for byte
    assert [[(r.state, r.timeout) for r in decode(d).records] for _, d in sent] == [
        [(1, 900), (4, 120), (1, 900)], [(6, 10)]]
    # sent at the thread's wake-ups: 1.024 s apart (the timer wheel), the phase set when
    # the daemon started (within its ipvsadm command, to the wheel's 8 jiffies)
    for (ours, _), (theirs, _) in zip(sent, kernel):
        assert abs(ours - theirs) < 0.1
    assert abs((sent[1][0] - sent[0][0]) - (kernel[1][0] - kernel[0][0])) < 0.01
