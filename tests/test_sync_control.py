"""The sync daemons as control-plane state: start and stop through Director.apply with the
kernel's checks and libipvs's texts, -L --daemon, the sync sysctls' own checks, the
procfs Origin column and the metrics."""

from __future__ import annotations

import pytest

from pyvs.config import ConfigFileError, load
from pyvs.config.events import parse_event
from pyvs.core import commands as C
from pyvs.core.engine import ConfigError, Director
from pyvs.core.sync import SyncBackup, SyncMaster, encode_conn, record_from_conn
from pyvs.core.syncmsg import encode_v0_record, encode_v1_record
from pyvs.pyvsadm import Exit, parse
from pyvs.views import procfs
from pyvs.views.listing import list_daemon
from pyvs.views.snapshot import snapshot
from tests.helpers import ACK, DROUTE, FIN, MASQ, SYN, Flow, ip, make_director

GROUP = ip("224.0.0.81")


def start(d: Director, state: str = "master", ifn: str = "eth0", now: float = 0.0,
          **kw) -> None:
    d.apply(C.StartDaemon(state, ifn, **kw), now)


def listed(d: Director) -> str:
    return list_daemon(snapshot(d, 0.0, connections=False))


# ---------------------------------------------------------------------- start and stop
def test_start_fills_the_kernels_defaults_and_lists_as_ipvsadm_does() -> None:
    d = Director()
    start(d, "backup", syncid=7)
    start(d, "master", "eth1", syncid=7)
    # ip_vs_genl_dump_daemons(): the master first, whatever the order of the starts
    assert listed(d) == (
        "master sync daemon (mcast=eth1, syncid=7, maxlen=1472, group=224.0.0.81, "
        "port=8848, ttl=1)\n"
        "backup sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, "
        "port=8848, ttl=1)\n")
    assert isinstance(d.sync_master, SyncMaster) and isinstance(d.sync_backup, SyncBackup)
    assert d.sync == d.sync_master.hook


def test_start_options_reach_the_daemon() -> None:
    d = Director()
    start(d, syncid=200, sync_maxlen=500, mcast_group=ip("239.1.2.3"), mcast_port=9000,
          mcast_ttl=4)
    assert listed(d) == ("master sync daemon (mcast=eth0, syncid=200, maxlen=500, "
                         "group=239.1.2.3, port=9000, ttl=4)\n")
    assert d.sync_master.maxlen == 500 and d.sync_master.syncid == 200


@pytest.mark.parametrize("state,mtu,maxlen,want", [
    ("master", 9000, 0, 1472),      # the master assumes 1500 whatever the interface
    ("backup", 9000, 0, 8972),      # the backup's buffer follows the interface MTU ...
    ("backup", 1280, 0, 1472),      # ... clamped to 1500..65535
    ("backup", 1500, 100, 1024),    # a given maxlen: at least 1024 for a backup
    ("master", 1500, 100, 100),     # ... at least 1 for a master
])
def test_maxlen_from_the_interface_mtu(state, mtu, maxlen, want) -> None:
    d = Director()
    d.links = {"eth0": mtu}
    start(d, state, sync_maxlen=maxlen)
    daemon = d.sync_master if state == "master" else d.sync_backup
    assert daemon.maxlen == want and f"maxlen={want}," in listed(d)


def test_kernel_refusals_with_libipvs_texts() -> None:
    d = Director()
    d.links = {"eth0": 1500}
    with pytest.raises(ConfigError, match="^No such device$"):
        start(d, ifn="eth9")
    start(d)
    with pytest.raises(ConfigError, match="^Daemon has already run$"):
        start(d, syncid=3)
    start(d, "backup")                        # a master and a backup at once: failback
    with pytest.raises(ConfigError, match="^Daemon has already run$"):
        start(d, "backup")
    d.apply(C.StopDaemon("master"), 1.0)
    assert d.sync_master is None and d.sync is None
    with pytest.raises(ConfigError, match="^No daemon is running$"):
        d.apply(C.StopDaemon("master"), 1.0)
    d.apply(C.StopDaemon("backup"), 1.0)
    with pytest.raises(ConfigError, match="^No daemon is running$"):
        d.apply(C.StopDaemon("backup"), 1.0)
    assert listed(d) == ""


@pytest.mark.parametrize("cmd,text", [
    (C.StartDaemon("primary", "eth0"), "illegal start-daemon parameter specified"),
    (C.StopDaemon("primary"), "illegal start_daemon specified"),
    (C.StartDaemon("master", "eth0", syncid=256), "illegal syncid specified"),
    (C.StartDaemon("master", "eth0", sync_maxlen=65508), "illegal sync-maxlen specified"),
    (C.StartDaemon("master", "eth0", mcast_group=ip("10.0.0.1")),
     "invalid IPv4 mcast-group `10.0.0.1'"),
    (C.StartDaemon("master", "eth0", mcast_port=65536), "illegal mcast-port specified"),
    (C.StartDaemon("master", "eth0", mcast_ttl=256), "illegal mcast-ttl specified"),
    (C.StartDaemon("master", "x" * 16), "longer than 15 bytes"),
])
def test_values_ipvsadm_never_sends_are_refused(cmd, text) -> None:
    with pytest.raises(ConfigError) as exc:
        Director().apply(cmd, 0.0)
    assert text in str(exc.value)


def test_threads_are_fixed_by_the_first_daemon() -> None:
    d = Director()
    d.apply(C.SetSysctl("sync_ports", 4), 0.0)
    start(d, "backup")
    d.apply(C.SetSysctl("sync_ports", 2), 0.0)
    start(d, "master")                        # the backup's 4 threads, not sync_ports' 2
    assert len(d.sync_master.builders) == 4
    assert [x["threads"] for x in snapshot(d, 0.0, False)["daemons"]] == [4, 4]
    d.apply(C.StopDaemon("master"), 0.0)
    d.apply(C.StopDaemon("backup"), 0.0)
    start(d, "master")
    assert len(d.sync_master.builders) == 2


def test_a_started_master_syncs_the_packet_path_and_a_stop_unhooks_it() -> None:
    d = make_director(DROUTE)
    start(d, syncid=9)
    f = Flow(d)
    for flags in (SYN, ACK, ACK):             # ESTABLISHED at its third packet: queued
        f.inb(flags, 0.0)
    (_, dg), = d.sync_master.due(3.0)
    assert dg[1] == 9 and dg[4] == 1          # syncid, nr_conns
    d.apply(C.StopDaemon("master"), 3.0)
    f.inb(FIN, 3.5)                           # no daemon: no hook
    assert d.sync is None


def test_commands_cross_the_control_socket_as_dicts() -> None:
    for cmd in (C.StartDaemon("backup", "eth1", 7, 0, GROUP, 8848, 1),
                C.StopDaemon("master"), C.SetSyncThreshold(10, 100)):
        assert C.from_dict(C.to_dict(cmd)) == cmd
    with pytest.raises(C.CommandError, match="start-daemon: missing field 'mcast_ifn'"):
        C.from_dict({"op": "start-daemon", "state": "master"})
    with pytest.raises(C.CommandError, match="start-daemon.syncid: '7' is not an integer"):
        C.from_dict({"op": "start-daemon", "state": "master", "mcast_ifn": "eth0",
                     "syncid": "7"})


def test_backup_only_turns_ipvs_off_while_a_backup_daemon_runs() -> None:
    d = make_director(DROUTE)
    d.apply(C.SetSysctl("backup_only", 1), 0.0)
    assert Flow(d).inb(SYN, 0.0).reason == "forward"      # no backup daemon: no effect
    start(d, "backup")
    v = Flow(d, cport=40001).inb(SYN, 1.0)
    assert (v.action, v.reason) == ("accept", "backup-only")
    assert Flow(d).inb(ACK, 1.0).reason == "backup-only"  # entries too: both hooks accept
    d.apply(C.SetSysctl("backup_only", 0), 2.0)
    assert Flow(d).inb(ACK, 2.0).reason == "forward"
    d.apply(C.SetSysctl("backup_only", 1), 2.0)
    d.apply(C.StopDaemon("backup"), 3.0)
    assert Flow(d, cport=40001).inb(SYN, 3.0).reason == "forward"


# ---------------------------------------------------------------------- pyvsadm
def test_pyvsadm_parses_the_daemon_commands_as_ipvsadm() -> None:
    c = parse(["--start-daemon", "backup", "--mcast-interface", "eth1", "--syncid", "7",
               "--mcast-group", "239.0.0.9", "--mcast-port", "9999", "--mcast-ttl", "3",
               "--sync-maxlen", "1400"])
    assert c.command() == C.StartDaemon("backup", "eth1", 7, 1400, ip("239.0.0.9"), 9999, 3)
    assert parse(["--start-daemon", "master"]).command() == C.StartDaemon("master", "eth0")
    assert parse(["--stop-daemon", "master", "--syncid", "1"]).command() == \
        C.StopDaemon("master")


@pytest.mark.parametrize("argv,status,text", [
    (["--start-daemon", "primary"], 2, "illegal start-daemon parameter specified"),
    (["--stop-daemon", "both"], 2, "illegal start_daemon specified"),
    (["--start-daemon", "master", "--syncid", "256"], 2, "illegal syncid specified"),
    (["--start-daemon", "master", "--mcast-port", "0"], 2, "illegal mcast-port specified"),
    (["--start-daemon", "master", "--mcast-ttl", "x"], 2, "illegal mcast-ttl specified"),
    (["--start-daemon", "master", "--sync-maxlen", "65508"], 2,
     "illegal sync-maxlen specified"),
    (["--start-daemon", "master", "--mcast-group", "10.1.1.1"], 2,
     "invalid IPv4 mcast-group `10.1.1.1'"),
    (["--start-daemon", "master", "--mcast-group", "224.1"], 2,
     "invalid IPv4 mcast-group `224.1'"),          # inet_pton, not inet_aton
    (["--start-daemon", "master", "--mcast-group", "fe80::1"], 2,
     "invalid IPv6 mcast-group `fe80::1'"),
    (["--start-daemon", "master", "--mcast-group", "ff02::81"], 255,
     "pyvs does not do IPv6"),
    (["--stop-daemon", "master", "--mcast-interface", "eth0"], 2,
     "Illegal 'mcast-interface' option with the 'stop-daemon' command"),
    (["--start-daemon", "master", "-t", "10.0.0.1:80"], 2,
     "Illegal 'service-address' option with the 'start-daemon' command"),
])
def test_pyvsadm_refuses_bad_daemon_options(argv, status, text) -> None:
    with pytest.raises(Exit) as exc:
        parse(argv)
    assert exc.value.status == status and text in exc.value.message


# ---------------------------------------------------------------------- sysctls
@pytest.mark.parametrize("cmds,text", [
    ([C.SetSysctl("sync_threshold", 50)], "the threshold must be below the period"),
    ([C.SetSysctl("sync_period", 3)], "the threshold must be below the period"),
    ([C.SetSysctl("sync_threshold", -1)], "sync_threshold: -1 is out of range"),
    ([C.SetSyncThreshold(5, 5)], "sync_threshold: '5 5' refused"),
    ([C.SetSysctl("sync_ports", 3)], "sync_ports: 3 is not a power of 2"),
    ([C.SetSysctl("sync_ports", 0)], "sync_ports: 0 is out of range"),
])
def test_proc_do_sync_threshold_and_sync_ports_refuse(cmds, text) -> None:
    d = Director()
    with pytest.raises(ConfigError) as exc:
        for cmd in cmds:
            d.apply(cmd, 0.0)
    assert text in str(exc.value)
    assert (d.sysctls.sync_threshold, d.sysctls.sync_period, d.sysctls.sync_ports) == (3, 50, 1)


def test_the_threshold_pair_is_written_at_once() -> None:
    d = Director()
    with pytest.raises(ConfigError):          # one at a time, 60 is above the period 50
        d.apply(C.SetSysctl("sync_threshold", 60), 0.0)
    for cmd in parse_event("0 sysctl sync_threshold='60 100'"):
        d.apply(cmd.command, 0.0)
    d.apply(C.SetSysctl("sync_period", 0), 0.0)      # period 0: any threshold
    d.apply(C.SetSysctl("sync_ports", 64), 0.0)
    assert (d.sysctls.sync_threshold, d.sysctls.sync_period, d.sysctls.sync_ports) == (
        60, 0, 64)


def test_yaml_sysctls_are_checked_as_the_kernel_checks_them(tmp_path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("sysctls: {sync_threshold: 60, sync_period: 100, sync_ports: 8}\n")
    cfg = load(str(path))
    assert (cfg.sysctls.sync_threshold, cfg.sysctls.sync_period) == (60, 100)
    for text, why in (("sync_threshold: 60", "the threshold must be below the period"),
                      ("sync_ports: 6", "6 is not a power of 2")):
        path.write_text(f"sysctls: {{{text}}}\n")
        with pytest.raises(ConfigFileError) as exc:
            load(str(path))
        assert why in str(exc.value) and str(path) in str(exc.value)
        assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------- views
def test_ip_vs_conn_sync_shows_the_origin() -> None:
    md, bd = make_director(MASQ), make_director(MASQ)
    start(md)
    start(bd, "backup")
    f = Flow(md)
    for flags in (SYN, ACK, ACK):
        f.inb(flags, 0.0)
    for _, dg in md.sync_master.due(3.0):
        bd.sync_backup.receive(dg, 3.0)
    Flow(bd, "10.0.0.6", 40001).inb(SYN, 3.0)       # one of the backup's own
    text = procfs.ip_vs_conn_sync(snapshot(bd, 3.0))
    assert text == (
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"
        "TCP 0A000005 9C40 0A000064 0050 C0A80A02 0050 ESTABLISHED SYNC       900\n"
        "TCP 0A000006 9C41 0A000064 0050 C0A80A02 0050 SYN_RECV    LOCAL       60\n")


def test_snapshot_counts_what_the_daemons_did() -> None:
    md, bd = make_director(DROUTE), make_director(DROUTE)
    start(md)
    start(bd, "backup", syncid=4)             # a syncid filter: the master's 0 is refused
    for i in range(3):
        f = Flow(md, "10.0.0.5", 40000 + i)
        for flags in (SYN, ACK, ACK):
            f.inb(flags, 0.0)
    sent = md.sync_master.due(3.0)
    for _, dg in sent:
        bd.sync_backup.receive(dg, 3.0)
    bd.sync_backup.receive(b"\x00", 3.0)
    master, backup = snapshot(md, 3.0, False)["daemons"][0], snapshot(bd, 3.0)["daemons"][0]
    assert master["counters"] == {"messages": 1, "records": 3, "queued": 3,
                                  "queue_dropped": 0}
    assert backup["counters"] == {"messages": 2, "records": 0,
                                  "results": {"short": 1, "syncid": 1}}


def test_prometheus_families_for_the_daemons() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pyvs.views.metrics import IpvsCollector
    md, bd = make_director(DROUTE), make_director(DROUTE)
    start(md, syncid=3)
    start(bd, "backup", "eth1")
    f = Flow(md)
    for flags in (SYN, ACK, ACK):
        f.inb(flags, 0.0)
    for _, dg in md.sync_master.due(3.0):
        bd.sync_backup.receive(dg, 3.0)
        bd.sync_backup.receive(dg[:-1], 3.0)
    text = ""
    for d in (md, bd):
        registry = CollectorRegistry()
        registry.register(IpvsCollector(lambda d=d: snapshot(d, 3.0, False)))
        text += generate_latest(registry).decode()
    lines = {line for line in text.splitlines() if line.startswith("pyvs_sync")}
    assert {'pyvs_sync_daemon{mcast_interface="eth0",state="master",syncid="3"} 1.0',
            'pyvs_sync_messages_total{state="master"} 1.0',
            'pyvs_sync_records_total{state="master"} 1.0',
            'pyvs_sync_records_queued_total 1.0',
            'pyvs_sync_dropped_total{reason="queue-full",state="master"} 0.0',
            'pyvs_sync_daemon{mcast_interface="eth1",state="backup",syncid="0"} 1.0',
            'pyvs_sync_messages_total{state="backup"} 2.0',
            'pyvs_sync_records_total{state="backup"} 1.0',
            'pyvs_sync_dropped_total{reason="size-mismatch",state="backup"} 1.0',
            'pyvs_sync_records_applied_total{action="created"} 1.0'} <= lines


# ---------------------------------------------------------------------- the master's encoder
def test_the_masters_encoder_writes_what_the_record_encoders_write() -> None:
    """encode_conn() is the per-record fast path: the same bytes as a SyncRecord."""
    d = make_director(MASQ, flags=1, timeout=360)          # persistent
    dns = d.add_service(17, ip("10.0.0.100"), 53)
    d.add_dest(dns, ip("192.168.10.1"), 53, MASQ)
    fw = d.add_service(6, fwmark=5, flags=1, timeout=60)
    d.add_dest(fw, ip("192.168.10.9"), 0, DROUTE)
    Flow(d).inb(SYN, 0.0)
    Flow(d, vport=53, protocol=17).inb(0, 0.0)
    from pyvs.core.craft import tcp
    d.receive(tcp(ip("10.0.0.7"), 999, ip("10.0.0.200"), 443, SYN), 0.0, mark=5)
    entries = d.connections()
    assert len(entries) == 5 and sum(cp.template for cp in entries) == 2
    for cp in entries:
        rec = record_from_conn(cp)
        assert encode_conn(cp, 1) == encode_v1_record(rec)
        assert encode_conn(cp, 0) == encode_v0_record(rec)


def test_workers_backups_apply_their_own_clients_and_their_counters_merge() -> None:
    """pyvs run --queues N: every worker's backup hears every datagram, each applies its
    own clients' records; merged, the datagrams count once and the records add up."""
    from pyvs.views.merge import merge
    md = make_director(DROUTE)
    start(md)
    for i, client in enumerate(("10.0.0.5", "10.0.0.6", "10.0.0.7")):
        f = Flow(md, client, 40000 + i)
        for flags in (SYN, ACK, ACK):
            f.inb(flags, 0.0)
    sent = md.sync_master.due(3.0)
    workers = [make_director(DROUTE), make_director(DROUTE)]
    for k, w in enumerate(workers):
        start(w, "backup")
        w.sync_backup.owns = lambda addr, k=k: addr % 2 == k        # the split
        for _, dg in sent:
            w.sync_backup.receive(dg, 3.0)
        w.sync_backup.receive(b"\x00", 3.0)
    assert [[c.caddr for c in w.connections()] for w in workers] == [
        [ip("10.0.0.6")], [ip("10.0.0.5"), ip("10.0.0.7")]]
    (merged,) = merge([snapshot(w, 3.0, False) for w in workers], 3.0)["daemons"]
    assert merged["counters"] == {"messages": 2, "records": 3,
                                  "results": {"created": 3, "short": 1}}


# ---------------------------------------------------------------------- configuration files
def test_yaml_sync_daemons_start_with_the_director_and_round_trip(tmp_path) -> None:
    from pyvs.config import from_snapshot
    from pyvs.config.yamlfile import dump
    path = tmp_path / "d.yaml"
    path.write_text("services: []\nsync_daemons:\n"
                    "  - {state: master, interface: eth0, syncid: 7}\n"
                    "  - {state: backup, interface: eth1, syncid: 7, group: 239.0.0.9, "
                    "port: 9000, ttl: 2, maxlen: 2000}\n")
    cfg = load(str(path))
    d = cfg.build(0.0, {"eth0": 1500, "eth1": 9000})
    assert listed(d) == (
        "master sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, "
        "port=8848, ttl=1)\n"
        "backup sync daemon (mcast=eth1, syncid=7, maxlen=2000, group=239.0.0.9, "
        "port=9000, ttl=2)\n")
    text = dump(cfg)
    assert "sync_daemons:" in text
    path.write_text(text)
    assert load(str(path)).daemons == cfg.daemons
    # a running director's daemons are saved with their values (pyvs list --save-yaml)
    back = from_snapshot(snapshot(d, 0.0, False))
    assert listed(back.build()) == listed(d)
    with pytest.raises(ConfigFileError, match=r"master sync daemon on eth0: No such device$"):
        cfg.build(0.0, {"eth1": 1500})


@pytest.mark.parametrize("entry,text", [
    ("{state: primary, interface: eth0}", "sync_daemons[0].state: 'primary' is not one of"),
    ("{state: master}", "sync_daemons[0].interface: the interface the daemon multicasts on"),
    ("{state: master, interface: eth0, syncid: 300}",
     "sync_daemons[0].syncid: 300 is out of range 0..255"),
    ("{state: master, interface: eth0, group: 10.0.0.1}",
     "sync_daemons[0]: invalid IPv4 mcast-group `10.0.0.1'"),
    ("{state: master, interface: eth0, colour: red}", "sync_daemons[0].colour: unknown field"),
])
def test_yaml_sync_daemons_bad_input_is_one_line(tmp_path, entry, text) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(f"services: []\nsync_daemons:\n  - {entry}\n")
    with pytest.raises(ConfigFileError) as exc:
        load(str(path))
    assert text in str(exc.value) and "\n" not in str(exc.value)


def test_a_second_daemon_of_one_kind_in_a_file_is_refused(tmp_path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("services: []\nsync_daemons:\n  - {state: master, interface: eth0}\n"
                    "  - {state: master, interface: eth1}\n")
    with pytest.raises(ConfigFileError, match=r"sync_daemons\[1\]: a master daemon is already"):
        load(str(path))


def test_an_ipvsadm_rules_file_may_start_daemons(tmp_path) -> None:
    path = tmp_path / "rules"
    path.write_text("-A -t 10.0.0.100:80 -s rr\n"
                    "--start-daemon backup --mcast-interface eth1 --syncid 3\n")
    assert listed(load(str(path)).build()) == (
        "backup sync daemon (mcast=eth1, syncid=3, maxlen=1472, group=224.0.0.81, "
        "port=8848, ttl=1)\n")


def test_keepalived_sync_daemon_starts_the_master_daemon(tmp_path) -> None:
    """keepalived's lvs_sync_daemon runs the master daemon while its VRRP instance is
    MASTER; a pyvs director is always the master."""
    path = tmp_path / "d.yaml"
    path.write_text("services: []\nsync_daemon: {interface: eth1, instance: VI_1, syncid: 51, "
                    "maxlen: 1400}\n")
    assert listed(load(str(path)).build()) == (
        "master sync daemon (mcast=eth1, syncid=51, maxlen=1400, group=224.0.0.81, "
        "port=8848, ttl=1)\n")
    path.write_text("services: []\nsync_daemon: {interface: eth1}\n"
                    "sync_daemons: [{state: backup, interface: eth1}]\n")
    with pytest.raises(ConfigFileError, match="give sync_daemon .* or sync_daemons, not both"):
        load(str(path))


def test_a_full_socket_holds_the_masters_datagrams_in_order() -> None:
    """EAGAIN: the kernel's master thread waits until its socket is writable and sends
    the same message again (sync_thread_master()); nothing is lost or reordered."""
    import socket

    from pyvs.drivers.loop import Loop
    from pyvs.drivers.syncsock import SyncSockets
    d = make_director(DROUTE)
    start(d, sync_maxlen=100)                  # two records a message: many messages
    for i in range(60):
        f = Flow(d, "10.0.0.5", 20000 + i)
        for flags in (SYN, ACK, ACK):
            f.inb(flags, 0.0)
    loop = Loop(lambda: 3.0)
    out, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)        # the minimum: a few
    out.setblocking(False)
    try:
        io = SyncSockets(d, loop, loop.clock)
        io.master, io.sending = d.sync_master, [out]
        io.send_due(3.0)                       # 30 messages; the peer's queue holds fewer
        assert 0 in io.waiting and io.errors["master"] == 0
        got = []
        peer.setblocking(False)
        for _ in range(100):
            try:
                while True:
                    got.append(peer.recv(200))
            except BlockingIOError:          # read all there is: the socket drains
                pass
            if not io.waiting:
                break
            loop.run_once()                  # writable again: the waiting ones go out
        assert len(got) == 30 and io.errors["master"] == 0
        cports = [int.from_bytes(dg[8 + 10:8 + 12], "big") for dg in got]
        assert cports == list(range(20000, 20060, 2))     # the first record of each, in order
    finally:
        out.close()
        peer.close()
        loop.close()
