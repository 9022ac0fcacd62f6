"""pyvs replay as a sync daemon: --sync-master writes the datagrams the replayed director
would send as master; --sync-backup applies a capture's sync datagrams to a backup.  A
master's pcap fed to a backup gives the master's connections (the kernel record's test,
tests/test_sync_kernel.py, checks both against Linux)."""

import pytest

from pyvs.cli import main
from pyvs.core.packet import ip_to_int
from pyvs.core.syncmsg import decode
from pyvs.drivers.pcap import read_capture, write_pcap
from tests.test_replay_events import RULES, T0, opened

CONNS = [p for t, port in ((0, 40000), (0.5, 40001), (4, 40002)) for p in opened(T0 + t, port)]


def run(tmp_path, capsys, packets, *args: str, code: int = 0) -> tuple[str, str]:
    write_pcap(tmp_path / "c.pcap", packets)
    (tmp_path / "rules").write_text(RULES)
    assert main(["replay", str(tmp_path / "c.pcap"), "--config", str(tmp_path / "rules"),
                 *args]) == code
    return capsys.readouterr()


def rows(listing: str) -> list[str]:
    """-c rows without their expiry: what a master and its backup share."""
    return sorted(" ".join(line.split()[i] for i in (0, 2, 3, 4, 5))
                  for line in listing.splitlines()[2:])


def test_a_masters_datagrams_give_its_backup_the_same_connections(tmp_path, capsys):
    out, err = run(tmp_path, capsys, CONNS, "--sync-master", str(tmp_path / "m.pcap"),
                   "--syncid", "5", "--sync-source", "198.51.100.1", "-c", "--at", "6")
    sent = list(read_capture(tmp_path / "m.pcap"))
    assert f"sync master: {len(sent)} datagrams, 3 records, written to" in err
    assert "from 198.51.100.1:8848" in err
    msgs = [decode(p[28:]) for _, p in sent]
    assert [m.syncid for m in msgs] == [5] * len(msgs)
    assert sorted(r.cport for m in msgs for r in m.records) == [40000, 40001, 40002]
    for _, p in sent:            # 224.0.0.81:8848, TTL 1, no DF, the given source
        assert p[8] == 1 and p[6] & 0x40 == 0
        assert p[12:16] == ip_to_int("198.51.100.1").to_bytes(4, "big")
        assert p[16:20] == bytes((224, 0, 0, 81)) and p[22:24] == (8848).to_bytes(2, "big")
    # the first two connections are sent together (one buffer, flushed 2 s after its first
    # record, at a wake-up of the thread), the third 2-3 s after it was made
    times = [ns / 1e9 - T0 for ns, _ in sent]
    assert [len(m.records) for m in msgs] == [2, 1]
    assert 2.0 <= times[0] <= 3.1 and 6.0 <= times[1] <= 7.1
    # the backup, fed that pcap, lists the master's connections once the last has arrived
    backup = tmp_path / "b"
    backup.mkdir()
    (backup / "rules").write_text(RULES)
    assert main(["replay", str(tmp_path / "m.pcap"), "--config", str(backup / "rules"),
                 "--sync-backup", "-c", "--at", f"{times[1] - times[0] + 0.01}"]) == 0
    b_out, b_err = capsys.readouterr()
    assert "sync datagrams received by the backup daemon: 2" in b_err
    assert len(rows(out)) == 3 and rows(b_out) == rows(out)


def test_no_source_in_the_capture_and_none_given(tmp_path, capsys):
    _, err = run(tmp_path, capsys, CONNS, "--sync-master", str(tmp_path / "m.pcap"))
    assert ("from 0.0.0.0:8848 (give --sync-source: no sync datagram of the capture's own "
            "gave one)") in err


def test_datagrams_wait_for_a_source_only_so_long(tmp_path, monkeypatch):
    """A long capture without sync traffic of its own: the datagrams stop waiting for a
    source after HOLD seconds of capture time and stream out from 0.0.0.0."""
    from pyvs.config import rules
    from pyvs.core.commands import StartDaemon
    from pyvs.drivers import syncpcap
    from pyvs.drivers.replay import Replay

    def written_by(at: float) -> int:
        d = rules.parse(RULES, "rules").build(0.0)
        d.apply(StartDaemon("master", "eth0"), 0.0)
        rp = Replay(d)
        rec = syncpcap.SyncRecorder(d, str(tmp_path / "m.pcap"), rp.stats)
        rp.set_tick(rec.drain)
        for _ in rp.run([(round(t * 1e9), p) for t, p in CONNS], at=[at]):
            pass
        n = rec.writer.packets              # before finish(): what streamed out
        rec.finish(at)
        return n
    assert written_by(5.0) == 0              # the first datagram (2-3 s) still waits
    monkeypatch.setattr(syncpcap, "HOLD", 0.5)
    assert written_by(5.0) == 1              # waited 0.5 s, then went from 0.0.0.0


def test_a_failed_replay_leaves_no_sync_pcap(tmp_path, capsys):
    write_pcap(tmp_path / "c.pcap", CONNS)
    (tmp_path / "rules").write_text(RULES)
    assert main(["replay", str(tmp_path / "c.pcap"), "--config", str(tmp_path / "rules"),
                 "--sync-master", str(tmp_path / "m.pcap"),
                 "--event", "1 ipvsadm -d -t 198.51.100.100:80 -r 192.0.2.99:80"]) == 2
    assert "an event was refused: No such destination" in capsys.readouterr().err
    assert not (tmp_path / "m.pcap").exists()


def test_a_master_started_by_an_event_sends_nothing_before(tmp_path, capsys):
    _, err = run(tmp_path, capsys, CONNS, "--sync-master", str(tmp_path / "m.pcap"),
                 "--event", "3 ipvsadm --start-daemon master --mcast-interface eth1 "
                 "--syncid 9 --mcast-port 9000 --mcast-ttl 3")
    sent = list(read_capture(tmp_path / "m.pcap"))
    # the connections opened before 3 s are established and idle: nothing to send for
    # them (ESTABLISHED is synced again only by packet counts); the third one is
    assert [r.cport for _, p in sent for r in decode(p[28:]).records] == [40002]
    (_, p), = sent
    assert decode(p[28:]).syncid == 9 and p[8] == 3 and p[22:24] == (9000).to_bytes(2, "big")


def test_a_stopped_master_loses_what_it_had_not_sent(tmp_path, capsys):
    """stop_sync_thread(): the queue and the current buffer are released unsent."""
    _, err = run(tmp_path, capsys, CONNS, "--sync-master", str(tmp_path / "m.pcap"),
                 "--event", "1 ipvsadm --stop-daemon master")
    assert "sync master: 0 datagrams, 0 records" in err


def test_a_backup_with_another_syncid_keeps_nothing(tmp_path, capsys):
    run(tmp_path, capsys, CONNS, "--sync-master", str(tmp_path / "m.pcap"), "--syncid", "5")
    (tmp_path / "rules").write_text(RULES)
    assert main(["replay", str(tmp_path / "m.pcap"), "--config", str(tmp_path / "rules"),
                 "--sync-backup", "--syncid", "6", "-c"]) == 0
    out, _ = capsys.readouterr()
    assert out == ("IPVS connection entries\n"
                   "pro expire state       source             virtual            destination\n")


def test_sync_datagrams_without_a_backup_are_counted_not_applied(tmp_path, capsys):
    run(tmp_path, capsys, CONNS, "--sync-master", str(tmp_path / "m.pcap"))
    (tmp_path / "rules").write_text(RULES)
    assert main(["replay", str(tmp_path / "m.pcap"), "--config", str(tmp_path / "rules"),
                 "-c"]) == 0
    _, err = capsys.readouterr()
    assert "2 sync datagrams (no backup daemon running)" in err


@pytest.mark.parametrize("args, message", [
    (["--sync-master", "/nonexistent/m.pcap"],
     "--sync-master /nonexistent/m.pcap: cannot write: No such file or directory"),
    (["--sync-master", "m.pcap", "--sync-source", "10.0.0.300"],
     "argument --sync-source: '10.0.0.300': '10.0.0.300' is not an IPv4 address"),
    (["--sync-master", "m.pcap", "--sync-source", "10.0.0.1:0"],
     "argument --sync-source: '10.0.0.1:0': '0' is not a port (1-65535)"),
    (["--sync-backup", "--syncid", "256"], "argument --syncid: '256' is not a syncid (0-255)"),
])
def test_bad_sync_flags_get_one_line(tmp_path, capsys, args, message):
    _, err = run(tmp_path, capsys, CONNS, *args, code=2)
    assert err.count("\n") == 1 and message in err, err
