"""Configuration files and the command line: what loads, and one-line errors with exit 2."""

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import CookedLinux, Ether
from scapy.utils import wrpcap, wrpcapng

from pyvs.cli import main
from pyvs.config import ConfigFileError, load
from pyvs.core.forwarding import DROUTE, MASQ
from pyvs.drivers.pcap import read_capture

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "pyvs/data/samples/http-nat-client.pcap")

MINIMAL = """\
kernel: modern                       # modern | "4.4" | "2.6"
timeouts: {tcp: 900, tcpfin: 120, udp: 300}
services:
  - protocol: tcp                    # tcp | udp | fwmark (then `fwmark: N` instead of address)
    address: 10.0.0.100:80
    scheduler: rr
    persistent: 360                  # optional; netmask: 255.255.255.0 optional
    realservers:
      - {address: 192.168.10.1:80, forward: masq, weight: 1}
"""


def write(tmp_path, text, name="x.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_minimal_shape_loads(tmp_path):
    cfg = load(write(tmp_path, MINIMAL))
    d = cfg.build()
    svc = d.services[0]
    assert (svc.sched_name, svc.timeout, svc.persistent) == ("rr", 360, True)
    assert svc.dests[0].fwd == MASQ


@pytest.mark.parametrize("name", ["nat.yaml", "dr.yaml", "www-telnet-ftp.yaml"])
def test_shipped_configs_load(name):
    assert load(ROOT / "pyvs/data/configs" / name).build().services


def test_defaults_follow_ipvsadm(tmp_path):
    cfg = load(write(tmp_path, "services:\n  - address: 10.0.0.1:80\n    persistent: true\n"
                               "    realservers: [{address: 10.0.1.1}]\n"))
    d = cfg.build()
    svc = d.services[0]
    assert (svc.sched_name, svc.timeout) == ("wlc", 360)
    dest = svc.dests[0]
    assert (dest.fwd, dest.weight, dest.port) == (DROUTE, 1, 80)


@pytest.mark.parametrize("text,message", [
    ("services:\n  - address: 10.0.0.1:80\n    realservers:\n      - {address: 1.1.1.1:80}\n"
     "      - {address: 1.1.1.2:80, forward: nat2}\n",
     "services[0].realservers[1].forward: 'nat2' is not one of masq, route, tunnel"),
    ("kernel: 5.9\n", "kernel: '5.9' is not one of modern, 5.15, 4.19, 4.9, 4.4, 3.18, 2.6"),
    ("services:\n  - address: 10.0.0.300:80\n",
     "services[0].address: '10.0.0.300' is not an IPv4 address"),
    ("services:\n  - address: 10.0.0.1\n", "services[0].address: '10.0.0.1' needs a port"),
    ("services:\n  - address: 10.0.0.1:0\n",
     "services[0].address: Zero port specified for non-persistent service"),
    ("services:\n  - address: 10.0.0.1:80\n    scheduler: fast\n",
     "services[0].scheduler: 'fast' is not one of rr, wrr"),
    ("services:\n  - address: 10.0.0.1:80\n    realservers: [{address: 1.1.1.1, weight: -1}]\n",
     "services[0].realservers[0].weight: -1 is out of range 0..65535"),
    ("services:\n  - address: 10.0.0.1:80\n    colour: red\n",
     "services[0].colour: unknown field"),
    ("timeouts: {tcp: abc}\n", "timeouts.tcp: 'abc' is not an integer"),
    ("services: [\n", "line 2: not valid YAML"),
    ("services:\n  - {protocol: fwmark}\n", "services[0].fwmark: required for protocol fwmark"),
    ("services:\n  - {address: 10.0.0.1:80, flags: [sh-port]}\n",
     "services[0].flags[0]: 'sh-port' needs scheduler sh"),
])
def test_bad_config_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as err:
        load(path)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: {message}")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pyvs.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=60)


def test_cli_bad_config_exit_2_no_traceback(tmp_path):
    path = write(tmp_path, "kernel: 9\n")
    r = run_cli("replay", SAMPLE, "--config", path)
    assert r.returncode == 2
    assert r.stderr == (f"{path}: kernel: '9' is not one of "
                        "modern, 5.15, 4.19, 4.9, 4.4, 3.18, 2.6\n")


def test_cli_bad_flag_and_capture(tmp_path):
    r = run_cli("replay", "--bogus")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    junk = write(tmp_path, "not a capture", "junk.pcap")
    r = run_cli("replay", junk, "--config", "nat")
    assert r.returncode == 2 and r.stderr == f"{junk}: not a pcap or pcapng file\n"
    r = run_cli("replay", SAMPLE, "--config", "nat",
                "-c", "--stats")
    assert r.returncode == 2 and r.stderr == "options conflicts in the list command\n"


def test_replay_sample_golden():
    r = run_cli("replay", SAMPLE, "--config", "nat",
                "--at", "0.0025", "--at", "4", "--at", "125")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (ROOT / "tests/golden/replay_sample.txt").read_text()


def test_replay_json_shape(capsys):
    assert main(["replay", SAMPLE, "--config", "nat",
                 "--json", "--at", "4"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert snap["time"] == 4
    svc = snap["services"][0]
    assert {"proto", "address", "port", "fwmark", "scheduler", "persistent", "netmask",
            "stats", "rate", "dests"} <= svc.keys()
    # kernel list order (newest-added first), as /proc/net/ip_vs has it
    assert [(d["address"], d["active"], d["inactive"]) for d in svc["dests"]] == [
        ("192.0.2.12", 0, 2), ("192.0.2.11", 1, 1)]
    conn = snap["connections"][0]
    assert conn == {"proto": "TCP", "state": "TIME_WAIT", "expires": 116,
                    "client": "198.51.100.2:40000", "virtual": "198.51.100.100:80",
                    "dest": "192.0.2.12:80", "template": False, "synced": False}


def test_capture_formats_read_the_same(tmp_path):
    """pcap with Ethernet, pcapng, and Linux cooked (tcpdump -i any) give the same packets."""
    base = list(read_capture(ROOT / SAMPLE))
    pkts = [IP(p) for _, p in base]
    for pkt, (ts, _) in zip(pkts, base):
        pkt.time = Decimal(ts) / 10**9
    eth = [Ether() / p for p in pkts]
    sll = [CookedLinux(proto=0x0800) / p for p in pkts]
    for frames, name, writer in ((eth, "eth.pcap", wrpcap), (eth, "eth.pcapng", wrpcapng),
                                 (sll, "sll.pcap", wrpcap)):
        for frame, (ts, _) in zip(frames, base):
            frame.time = Decimal(ts) / 10**9
        writer(str(tmp_path / name), frames)
        got = list(read_capture(tmp_path / name))
        assert [p for _, p in got] == [p for _, p in base], name
        assert [t for t, _ in got] == [t for t, _ in base], name


ELSEWHERE = ("services:\n  - {address: 10.9.9.9:8080, scheduler: rr, realservers: "
             "[{address: 192.0.2.11:8080, forward: masq}]}\n")


def test_compare_with_a_config_no_scenario_traffic_reaches(tmp_path):
    """No perfect score for traffic that reaches no service: one line, exit 2."""
    path = write(tmp_path, ELSEWHERE)
    r = run_cli("compare", "telnet", "--config", path)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"{path}: no service takes scenario telnet's connections (TCP port "
                        "23); its services: TCP 10.9.9.9:8080\n")


def test_replay_of_a_capture_that_reaches_no_service_warns(tmp_path):
    path = write(tmp_path, ELSEWHERE)
    r = run_cli("replay", SAMPLE, "--config", path)
    assert r.returncode == 0
    assert r.stderr.splitlines()[0] == (
        f"pyvs: warning: {SAMPLE}: no packet reached a realserver of a service in {path} "
        "(the capture's traffic goes to 198.51.100.100:80 (TCP)); the table shows none of it")
    # the rest is the replay's summary
    assert all(line.startswith("pyvs replay: ") for line in r.stderr.splitlines()[1:])
    assert "warning" not in run_cli("replay", SAMPLE, "--config", "nat").stderr


def test_an_unknown_config_name_lists_the_shipped_ones(capsys):
    assert main(["check-config", "natt"]) == 2
    assert capsys.readouterr().err == (
        "natt: no such file, nor a configuration pyvs ships (dr, nat, www-telnet-ftp)\n")


@pytest.mark.parametrize("argv", [
    ["compare", "telnet", "--modes", "nat", "--json", "/nonexistent/dir/out.json"],
    ["compare", "telnet", "--modes", "nat", "--plot", "/nonexistent/out.png"],
    ["replay", "x.pcap", "--config", "nat", "--plot", "/nonexistent/out.png"],
    ["compare", "telnet", "--modes", "nat", "--json", "/tmp"],
])
def test_an_output_that_cannot_be_written_is_refused_before_the_run(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err      # refused before any run printed
    assert err.startswith(f"{argv[-2]} {argv[-1]}: "), err
