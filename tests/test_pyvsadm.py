"""pyvsadm against a running director (a Runtime in this process, on a temporary control
socket): ipvsadm's syntax, error texts and exit codes, -S/-R round trips, pyvs list/states,
the procfs export read back by an independent parser and by node_exporter when installed."""

from __future__ import annotations

import io
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pyvs import pyvsadm as ipvsadm
from pyvs.cli import main as pyvs_main
from pyvs.core import craft
from pyvs.core.engine import IN, Director
from pyvs.core.packet import ip_to_int
from pyvs.drivers.daemon import Runtime

SAVE = """\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 192.168.10.1:80 -m -w 2
-a -t 10.0.0.100:80 -r 192.168.10.2:8080 -m -w 1
-A -u 10.0.0.100:53 -s wlc -p 360 -M 255.255.255.0 -o
-a -u 10.0.0.100:53 -r 192.168.10.3:53 -g -w 0
-A -f 1 -s sh -b sh-fallback,sh-port
-a -f 1 -r 192.168.10.2:0 -i -w 2 --tun-type ipip
"""


@pytest.fixture
def director(tmp_path, monkeypatch):
    path = str(tmp_path / "ctl.sock")
    monkeypatch.setenv("PYVS_SOCKET", path)
    rt = Runtime(Director(), path).start()
    thread = rt.run_in_thread()
    yield rt
    rt.loop.stop()
    thread.join(5)
    rt.close()


def adm(*args: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = (ipvsadm.sys.stdout, ipvsadm.sys.stderr)
    ipvsadm.sys.stdout, ipvsadm.sys.stderr = out, err
    try:
        rc = ipvsadm.main(["ipvsadm", *args], stdin=io.StringIO(stdin))
    finally:
        ipvsadm.sys.stdout, ipvsadm.sys.stderr = old
    return rc, out.getvalue(), err.getvalue()


def test_save_restore_round_trip_is_byte_identical(director) -> None:
    # a comment and a leading "ipvsadm" token, as ipvsadm-restore accepts them
    assert adm("-R", stdin="# saved by ipvsadm-save\nipvsadm " + SAVE)[0] == 0
    rc, out, _ = adm("-S", "-n")
    assert rc == 0 and out == SAVE
    assert adm("-C")[0] == 0
    assert adm("-S", "-n")[1] == ""
    assert adm("-R", stdin=out)[0] == 0
    assert adm("-S", "-n")[1] == SAVE


def test_listing_variants(director) -> None:
    adm("-R", stdin=SAVE)
    rc, out, _ = adm("-Ln")
    assert rc == 0 and out == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.0.0.100:80 rr\n"
        "  -> 192.168.10.1:80              Masq    2      0          0         \n"
        "  -> 192.168.10.2:8080            Masq    1      0          0         \n"
        "UDP  10.0.0.100:53 wlc persistent 360 mask 255.255.255.0 ops\n"
        "  -> 192.168.10.3:53              Route   0      0          0         \n"
        "FWM  1 sh (sh-fallback,sh-port)\n"
        "  -> 192.168.10.2:0               Tunnel  2      0          0         \n")
    assert adm("-l", "-n")[1] == out
    rc, single, _ = adm("-L", "-n", "-t", "10.0.0.100:80")
    assert single == out.split("\n", 1)[1].split("UDP")[0]       # no version line
    assert adm("-Lnc")[1] == ("IPVS connection entries\n"
                              "pro expire state       source             virtual"
                              "            destination\n")
    assert adm("-Ln", "--timeout")[1] == "Timeout (tcp tcpfin udp): 900 120 300\n"
    assert adm("--set", "100", "20", "30")[0] == 0
    assert adm("-L", "--timeout")[1] == "Timeout (tcp tcpfin udp): 100 20 30\n"
    assert adm("-Ln", "--daemon") == (0, "", "")
    assert adm("-Ln", "--thresholds")[1].splitlines()[4] == (
        "  -> 192.168.10.1:80              0          0          0          0         ")


def test_sched_flags_ipvsadm_lists_as_it_does(director) -> None:
    """parse_sched_flags() takes flag-3 for any scheduler and strtok() skips empty items;
    print_sched_flags() shows only sh's or mh's own two names for sh or mh, so flag-3
    there lists as "()" and saves as a bare "-b "."""
    assert adm("-A", "-f", "2", "-s", "sh", "-b", "flag-3")[0] == 0
    assert adm("-A", "-f", "3", "-s", "mh", "-b", ",mh-port,,flag-3,")[0] == 0
    assert adm("-A", "-f", "4", "-s", "rr", "-b", "flag-1,,flag-3")[0] == 0
    assert adm("-Ln")[1] == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "FWM  2 sh ()\n"
        "FWM  3 mh (mh-port)\n"
        "FWM  4 rr (flag-1,flag-3)\n")
    assert adm("-S", "-n")[1] == ("-A -f 2 -s sh -b \n"
                                  "-A -f 3 -s mh -b mh-port\n"
                                  "-A -f 4 -s rr -b flag-1,flag-3\n")
    assert adm("-A", "-f", "5", "-b", ",,") == (2, "", "invalid scheduler flag `,,'\n")


def test_changes_edit_delete_and_their_errors(director) -> None:
    adm("-R", stdin=SAVE)
    assert adm("-E", "-t", "10.0.0.100:80", "-s", "wrr", "-p", "60")[0] == 0
    assert "TCP  10.0.0.100:80 wrr persistent 60" in adm("-Ln")[1]
    # -e sends a whole dest: forwarding falls back to -g when not given, as in ipvsadm
    assert adm("-e", "-t", "10.0.0.100:80", "-r", "192.168.10.1:80", "-w", "5")[0] == 0
    assert "  -> 192.168.10.1:80              Route   5" in adm("-Ln")[1]
    assert adm("-d", "-t", "10.0.0.100:80", "-r", "192.168.10.1")[0] == 0
    assert adm("-D", "-u", "10.0.0.100:53")[0] == 0
    assert adm("-S", "-n")[1] == ("-A -t 10.0.0.100:80 -s wrr -p 60\n"
                                  "-a -t 10.0.0.100:80 -r 192.168.10.2:8080 -m -w 1\n"
                                  "-A -f 1 -s sh -b sh-fallback,sh-port\n"
                                  "-a -f 1 -r 192.168.10.2:0 -i -w 2 --tun-type ipip\n")
    assert adm("-Z")[0] == 0 and adm("-Z", "-f", "1")[0] == 0


@pytest.mark.parametrize("args, status, message", [
    (("-A", "-t", "10.0.0.100:80"), 255, "Service already exists\n"),
    (("-A", "-t", "10.0.0.9:80", "-s", "nope"), 255, "Scheduler or persistence engine not found\n"),
    (("-E", "-t", "10.0.0.9:80"), 255, "No such service\n"),
    (("-D", "-t", "10.0.0.9:80"), 255, "No such service\n"),
    (("-Z", "-t", "10.0.0.9:80"), 255, "No such service\n"),
    (("-a", "-t", "10.0.0.9:80", "-r", "1.2.3.4"), 255, "Service not defined\n"),
    (("-a", "-t", "10.0.0.100:80", "-r", "192.168.10.1:80"), 255,
     "Destination already exists\n"),
    (("-e", "-t", "10.0.0.100:80", "-r", "1.2.3.4"), 255, "No such destination\n"),
    (("-d", "-t", "10.0.0.100:80", "-r", "1.2.3.4"), 255, "No such destination\n"),
    (("-L", "-t", "10.0.0.9:80"), 1, "No such service\n"),
    (("-A",), 2, "You need to supply the 'service-address' option for the 'add-service' "
                 "command\n"),
    (("-a", "-t", "10.0.0.100:80"), 2, "You need to supply the 'real-server' option for the "
                                       "'add-server' command\n"),
    (("-A", "-t", "10.0.0.1:80", "-w", "3"), 2, "Illegal 'weight' option with the "
                                                "'add-service' command\n"),
    (("-L", "-c", "--timeout"), 2, "The option 'timeout' conflicts with the 'connection' "
                                   "option in the 'list' command\n"),
    (("-L", "-c", "--stats"), 2, "options conflicts in the list command\n"),
    (("-A", "-t", "10.0.0.1:0"), 2, "Zero port specified for non-persistent service\n"),
    (("-A", "-t", "10.0.0.1:80", "-o"), 2, "One-Packet Scheduling is only for UDP virtual "
                                            "services\n"),
    (("-A", "-t", "10.0.0.1:80", "-s", "rr", "-s", "wlc"), 2,
     "multiple 'scheduler' options specified\n"),
    (("-A", "-t", "nosuchhost.invalid:80"), 2,
     "illegal virtual server address[:port] specified\n"),
    (("-a", "-t", "10.0.0.100:80", "-r", "1.2.3.4", "-w", "70000"), 2,
     "illegal weight specified\n"),
    (("-A", "-t", "10.0.0.1:80", "-p", "0"), 2, "invalid timeout value `0' specified\n"),
    (("-A", "-f", "0"), 2, "invalid fwmark value `0' specified\n"),
    (("-A", "-t", "10.0.0.1:80", "-b", "sh-port"), 2, "incompatible scheduler flag "
                                                      "`sh-port'\n"),
    (("--set", "1", "2"), 2, "--set option requires 3 timeout values\n"),
    (("-L", "extra"), 2, "unexpected argument extra\n"),
    (("-L", "-A"), 2, "invalid option `-A'\n"),
    (("-L", "--bogus"), 255, "--bogus: unknown option\n"),
    (("-n",), 255, "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"),
])
def test_error_texts_and_exit_codes(director, args, status: int, message: str) -> None:
    adm("-R", stdin=SAVE)
    rc, out, err = adm(*args)
    assert (rc, err) == (status, message)
    assert out == ""


def test_help_version_and_no_arguments(director) -> None:
    adm("-R", stdin=SAVE)
    rc, out, _ = adm("-v")
    assert (rc, out) == (0, "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n")
    rc, out, _ = adm("-h")
    assert rc == 0 and out.startswith("ipvsadm v1.31") and "  ipvsadm -S [-n]\n" in out
    rc, out, _ = ipvsadm.main(["ipvsadm"]), None, None
    assert rc == 0


def test_no_director_running(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYVS_SOCKET", str(tmp_path / "nothing.sock"))
    rc, _, err = adm("-Ln")
    assert rc == 2 and err.startswith("Can't initialize ipvs: no pyvs director at ")


def _traffic(rt: Runtime) -> None:
    """:40000 ESTABLISHED, :40001 established then reset (CLOSE), :40002 SYN only.
    On the modern kernel ESTABLISHED and SYN_RECV are ActiveConn (2), CLOSE InActConn (1)."""
    vip, c = ip_to_int("10.0.0.100"), ip_to_int("172.16.0.5")
    packets = [(40000, craft.SYN), (40001, craft.SYN), (40002, craft.SYN),
               (40000, craft.ACK), (40001, craft.ACK), (40001, craft.RST)]
    def send() -> None:
        for port, flags in packets:
            rt.director.receive(craft.tcp(c, port, vip, 80, flags), rt.now(), IN)
        # counters reach -L --stats and ip_vs_stats at the estimator's next 2 s tick
        rt.director.handle_timers(rt.now() + 2.0)
    rt.call(send)


def test_pyvs_list_states_and_snapshot_file(director, tmp_path, capsys) -> None:
    adm("-R", stdin=SAVE)
    _traffic(director)
    assert pyvs_main(["list", "-c"]) == 0
    listing = capsys.readouterr().out
    assert listing == adm("-Lnc")[1]
    assert listing.count("SYN_RECV") == 1 and listing.count("ESTABLISHED") == 1
    assert pyvs_main(["list", "--json"]) == 0
    saved = tmp_path / "table.json"
    saved.write_text(capsys.readouterr().out)
    assert pyvs_main(["list", "--from", str(saved), "--stats"]) == 0
    assert capsys.readouterr().out == adm("-Ln", "--stats")[1]
    assert pyvs_main(["states", "--from", str(saved)]) == 0
    assert capsys.readouterr().out == "CLOSE 1\nESTABLISHED 1\nSYN_RECV 1\n"
    assert pyvs_main(["states", "--per-realserver", "--from", str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("realserver 192.168.10.")
    assert pyvs_main(["list", "--from", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot read" in capsys.readouterr().err


def test_control_socket_is_private(director) -> None:
    assert Path(director.control.path).stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------- procfs
def parse_ip_vs(text: str) -> list[dict]:
    """An independent reader, written from prometheus/procfs ipvs.go's rules."""
    backends, local = [], None
    for line in text.splitlines()[3:]:
        f = line.split()
        if f[0] in ("TCP", "UDP"):
            addr, port = f[1].split(":")
            local = (f[0], str(int.from_bytes(bytes.fromhex(addr), "big")), int(port, 16), "")
        elif f[0] == "FWM":
            local = ("FWM", "", 0, f[1])
        elif f[0] == "->":
            addr, port = f[1].split(":")
            backends.append({"local": local, "remote": (bytes.fromhex(addr), int(port, 16)),
                             "weight": int(f[3]), "active": int(f[4]), "inactive": int(f[5])})
    return backends


def test_procfs_export_formats(director, tmp_path) -> None:
    adm("-R", stdin=SAVE)
    _traffic(director)
    assert pyvs_main(["export", "procfs", str(tmp_path)]) == 0
    ip_vs = (tmp_path / "net/ip_vs").read_text()
    assert ip_vs.splitlines()[:4] == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn",
        "TCP  0A000064:0050 rr  "]
    assert "UDP  0A000064:0035 wlc ops  persistent 90000 FFFFFF00\n" in ip_vs
    assert "FWM  00000001 sh \n" in ip_vs
    backends = parse_ip_vs(ip_vs)
    assert sum(b["active"] for b in backends) == 2
    assert sum(b["inactive"] for b in backends) == 1
    conn = (tmp_path / "net/ip_vs_conn").read_text().splitlines()
    assert conn[0] == ("Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires "
                       "PEName PEData")
    assert re.fullmatch(r"TCP AC100005 9C40 0A000064 0050 (C0A80A01 0050|C0A80A02 1F90) "
                        r"ESTABLISHED +89[89]", conn[1])
    stats = (tmp_path / "net/ip_vs_stats").read_text().splitlines()
    assert stats[2] == f"{3:8X} {6:8X} {0:8X} {240:16X} {0:16X}"
    assert stats[3] == "" and len(stats) == 6


def test_node_exporter_reads_the_export(director, tmp_path) -> None:
    exe = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if exe is None:
        pytest.skip("node_exporter is not installed (Debian: prometheus-node-exporter); "
                    "the format is checked by test_procfs_export_formats")
    adm("-R", stdin=SAVE)
    _traffic(director)
    assert pyvs_main(["export", "procfs", str(tmp_path)]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, f"--path.procfs={tmp_path}", "--collector.disable-defaults",
                             "--collector.ipvs", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        text = ""
        for _ in range(50):
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(5)
    assert 'node_scrape_collector_success{collector="ipvs"} 1' in text
    active = re.findall(r"node_ipvs_backend_connections_active\{(.*)\} (\S+)", text)
    inactive = re.findall(r"node_ipvs_backend_connections_inactive\{(.*)\} (\S+)", text)
    assert sum(float(v) for _, v in active) == 2
    assert sum(float(v) for _, v in inactive) == 1
    assert re.search(r"^node_ipvs_connections_total 3$", text, re.M)
    assert any('proto="FWM"' in labels and 'local_mark="00000001"' in labels
               for labels, _ in active)
