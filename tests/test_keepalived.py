"""keepalived.conf as a configuration: keepalived's sample shapes (DR, NAT, fwmark and
groups, sorry server, persistence, old and new spellings) load to the table keepalived
builds and to the YAML `pyvs import` writes; every keyword maps or warns with its
file:line; includes and globs; one-line errors; ipvsadm-save files and their YAML load
alike; keepalived -> YAML -> model is lossless."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_pyvsadm import SAVE

from pyvs.config import ConfigFileError, detect, load, rules
from pyvs.config.yamlfile import dump, parse

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests/data/keepalived"


def check_config(path: Path | str) -> str:
    """`pyvs check-config` as a user runs it: ipvsadm -S text on stdout."""
    r = subprocess.run([sys.executable, "-m", "pyvs.cli", "check-config", str(path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


SAVED = {
    # the table keepalived sets up before its first check, as ipvsadm -S -n lists it
    "dr": """\
-A -t 203.0.113.100:80 -s wlc -p 360 -M 255.255.255.0
-a -t 203.0.113.100:80 -r 203.0.113.11:80 -g -w 3
-a -t 203.0.113.100:80 -r 203.0.113.12:80 -g -w 1
""",
    "nat": """\
-A -t 198.51.100.100:80 -s rr
-a -t 198.51.100.100:80 -r 192.0.2.11:80 -m -w 1
-a -t 198.51.100.100:80 -r 192.0.2.12:80 -m -w 2
-A -u 198.51.100.100:53 -s wrr -o
-a -u 198.51.100.100:53 -r 192.0.2.11:53 -m -w 1
-a -u 198.51.100.100:53 -r 192.0.2.12:5353 -m -w 1
""",
    "groups": "".join(
        f"-A -t {vip} -s sh -b sh-fallback,sh-port\n"
        f"-a -t {vip} -r 192.0.2.11:{vip.split(':')[1]} -g -w 1\n"
        f"-a -t {vip} -r 192.0.2.12:{vip.split(':')[1]} -i -w 1 --tun-type ipip\n"
        for vip in ("198.51.100.10:80", "198.51.100.20:80", "198.51.100.21:80",
                    "198.51.100.22:80", "198.51.100.32:443", "198.51.100.33:443")) + """\
-A -f 7 -s sh -b sh-fallback,sh-port
-a -f 7 -r 192.0.2.11:0 -g -w 1
-a -f 7 -r 192.0.2.12:0 -i -w 1 --tun-type ipip
-A -f 9 -s sh -p 600 -b sh-fallback
-a -f 9 -r 192.0.2.13:0 -g -w 1
""",
    # alpha: no realserver is trusted yet; the inhibited one is in at weight 0, and the
    # quorum (2 + hysteresis 1) is short, so the sorry server serves
    "sorry": """\
-A -t 10.0.0.100:443 -s wlc
-a -t 10.0.0.100:443 -r 10.0.1.2:443 -m -w 0
-a -t 10.0.0.100:443 -r 10.0.1.200:8443 -m -w 1
""",
}

IMPORTED = {
    "dr": """\
kernel: modern
timeouts: {tcp: 7200, tcpfin: 60, udp: 120}
sync_daemon: {interface: eth1, instance: VI_WEB, syncid: 51, maxlen: 1400}
services:
- protocol: tcp
  address: 203.0.113.100:80
  scheduler: wlc
  persistent: 360
  netmask: 255.255.255.0
  health: {delay_loop: 10}
  sorry_server: {address: '203.0.113.200:80', forward: route}
  realservers:
  - address: 203.0.113.11:80
    forward: route
    weight: 3
    inhibit_on_failure: true
    checks:
    - type: HTTP_GET
      connect_timeout: 3
      retry: 2
      delay_before_retry: 2
      url:
      - path: /health
        status_code: [200-299, 301]
      - {path: /index.html, digest: 5d41402abc4b2a76b9719d911017c592}
  - address: 203.0.113.12:80
    forward: route
    weight: 1
    checks:
    - {type: TCP_CHECK, connect_timeout: 2, connect_port: 8080}
""",
    "nat": """\
kernel: modern
services:
- protocol: tcp
  address: 198.51.100.100:80
  scheduler: rr
  health: {delay_loop: 5, retry: 2}
  realservers:
  - address: 192.0.2.11:80
    forward: masq
    weight: 1
    checks:
    - type: HTTP_GET
      url:
      - {path: /}
      http_protocol: '1.1'
      virtualhost: www.example.com
  - address: 192.0.2.12:80
    forward: masq
    weight: 2
    checks:
    - {type: TCP_CHECK, connect_port: 80}
- protocol: udp
  address: 198.51.100.100:53
  scheduler: wrr
  ops: true
  realservers:
  - address: 192.0.2.11:53
    forward: masq
    weight: 1
    checks:
    - type: MISC_CHECK
      misc_path: [/usr/local/bin/check-dns, --server, 192.0.2.11, a b]
      misc_timeout: 3
      misc_dynamic: true
  - address: 192.0.2.12:5353
    forward: masq
    weight: 1
    uthreshold: 100
    lthreshold: 50
    checks:
    - type: MISC_CHECK
      misc_path: [/usr/local/bin/check-dns]
""",
    "groups": """\
kernel: modern
services:
- group: WEB
  protocol: tcp
""" "  address: ['198.51.100.10:80', '198.51.100.20:80', '198.51.100.21:80', '198.51.100.22:80',"
    " '198.51.100.32:443',\n" """\
    '198.51.100.33:443']
  fwmark: [7]
  scheduler: sh
  flags: [sh-fallback, sh-port]
  health: {connect_timeout: 2}
  realservers:
  - address: 192.0.2.11:80
    forward: route
    weight: 1
    checks:
    - {type: TCP_CHECK}
  - address: 192.0.2.12:80
    forward: tunnel
    weight: 1
    checks:
    - {type: TCP_CHECK}
- protocol: fwmark
  fwmark: 9
  scheduler: sh
  flags: [sh-fallback]
  persistent: 600
  realservers:
  - address: 192.0.2.13:0
    forward: route
    weight: 1
    checks:
    - {type: TCP_CHECK, connect_port: 443}
""",
    "sorry": """\
kernel: modern
services:
- protocol: tcp
  address: 10.0.0.100:443
  scheduler: wlc
  health: {quorum: 2, hysteresis: 1, alpha: true}
  sorry_server: {address: '10.0.1.200:8443', forward: masq, inhibit: true}
  realservers:
  - address: 10.0.1.1:443
    forward: masq
    weight: 2
    checks:
    - {type: TCP_CHECK}
  - address: 10.0.1.2:443
    forward: masq
    weight: 1
    inhibit_on_failure: true
    checks:
    - {type: TCP_CHECK}
""",
}


@pytest.mark.parametrize("name", sorted(SAVED))
def test_samples_build_keepalived_table(name: str) -> None:
    path = DATA / f"{name}.conf"
    assert detect(path.read_text()) == "keepalived"
    assert check_config(path) == SAVED[name]


@pytest.mark.parametrize("name", sorted(IMPORTED))
def test_samples_import_as_yaml(name: str, tmp_path: Path) -> None:
    cfg = load(str(DATA / f"{name}.conf"))
    text = dump(cfg)
    assert text == IMPORTED[name]
    # keepalived -> YAML -> model: the same model, the same table, the same YAML again
    again = parse(yaml.safe_load(text), "again.yaml")
    assert again.services == cfg.services
    assert (again.timeouts, again.sync_daemon) == (cfg.timeouts, cfg.sync_daemon)
    assert dump(again) == text
    (tmp_path / "x.yaml").write_text(text)
    assert check_config(tmp_path / "x.yaml") == SAVED[name]


def test_checker_parameters_resolve_as_keepalived() -> None:
    """virtual server -> realserver -> checker defaults, and keepalived's own defaults
    (HTTP_GET delay_before_retry 3 s, MISC_CHECK retry 0 and misc_timeout the virtual
    server's delay_loop, warmup = delay_loop, a checker on the port written)."""
    dr = load(str(DATA / "dr.conf")).services[0]
    http, tcp = dr.realservers[0].checks[0], dr.realservers[1].checks[0]
    assert (http.delay_loop, http.connect_timeout, http.retry, http.delay_before_retry,
            http.warmup) == (10, 3, 2, 2, 10)
    assert [(u.path, u.status, u.digest) for u in http.urls] == [
        ("/health", ((200, 299), (301, 301)), None),
        ("/index.html", ((200, 299),), "5d41402abc4b2a76b9719d911017c592")]
    assert (tcp.delay_loop, tcp.connect_timeout, tcp.retry, tcp.delay_before_retry,
            tcp.connect_port) == (10, 2, 1, 1, 8080)
    assert dr.health.sorry is not None and dr.health.sorry.port == 80
    nat = load(str(DATA / "nat.conf")).services
    web, dns = nat[0].realservers[0].checks[0], nat[1].realservers[1].checks[0]
    assert (web.retry, web.delay_before_retry, web.delay_loop, web.virtualhost,
            web.http_protocol) == (2, 3, 5, "www.example.com", "1.1")
    assert (dns.retry, dns.misc_timeout, dns.delay_loop, dns.misc_dynamic) == (0, 60, 60, False)


WARNINGS = [
    "warn.conf:6: vrrp_script (and any other VRRP, BFD, static address/route blocks): read "
    "and ignored; pyvs models the LVS part",
    "warn.conf:2: nftables_ipvs: not modelled (fwmark services built from nftables for "
    "virtual server groups: pyvs adds the group's addresses as services)",
    "warn.conf:3: net_namespace_ipvs: not modelled (IPVS in another network namespace: "
    "pyvs's director is its own table)",
    "warn.conf:12: SSL: the SSL_GET context; pyvs does not perform SSL_GET",
    "warn.conf:15: unknown keyword 'frobnicate' (keepalived ignores it too)",
    "warn.conf:18: lvs_method TUN type gue port 6080: pyvs tunnels with IPIP only",
    "warn.conf:20: persistence_engine: persistence engines (sip) are not modelled",
    "warn.conf:21: persistence_granularity 24: a prefix length; keepalived reads it as the "
    "address 0.0.0.24 for an IPv4 service, pyvs as /24 (255.255.255.0)",
    "warn.conf:22: ha_suspend: checks are not suspended while the VIP is absent",
    "warn.conf:23: quorum_up: quorum scripts are not run (and 1 more: {d}/warn.conf:24)",
    "warn.conf:25: mh-port: ignored, as keepalived ignores it, because `lvs_sched mh` does "
    "not come before it in the block",
    "warn.conf:26: unknown keyword 'shiny' in virtual_server (keepalived ignores it too)",
    "warn.conf:28: notify_up: notify scripts are not run (and 1 more: {d}/warn.conf:29)",
    "warn.conf:30: SSL_GET: not performed by pyvs; a realserver whose checks are all of "
    "this kind stays in service",
    "warn.conf:36: bind_if: checks are not bound to an interface",
    "warn.conf:38: path /x;: keepalived has no ';' separator, so the ';' is part of the path",
    "warn.conf:39: regex: regex matching of the body is not performed",
    "warn.conf:43: misc_path: only '/usr/local/bin/check' is the command (keepalived "
    "ignores the words after it; quote the whole command line)",
    "warn.conf:44: user: scripts run as the user running pyvs",
    "warn.conf:46: DNS_CHECK: not performed by pyvs; a realserver whose checks are all of "
    "this kind stays in service",
    "warn.conf:50: TCP_CHECK of real server 10.0.1.2 (no port) connects to port 0, as "
    "keepalived's does: give connect_port",
    "warn.conf:55: protocol SCTP: pyvs has no SCTP; virtual server skipped",
    "warn.conf:59: virtual_server 2001:db8::1: IPv6 is not modelled; virtual server skipped",
    "warn.conf:63: virtual_server 10.0.0.3 0: no protocol set: UDP, as keepalived defaults "
    "it (the kernel's 0)",
    "warn.conf:63: virtual_server 10.0.0.3 0: zero port only valid for persistent "
    "services: persistence_timeout 360 set, as keepalived does",
    "warn.conf:63: virtual_server 10.0.0.3 0: no forwarding method set: NAT, keepalived's "
    "default",
]


def test_every_unmodelled_keyword_warns_once_with_file_and_line() -> None:
    cfg = load(str(DATA / "warn.conf"))
    assert cfg.warnings == [f"{DATA}/{w.format(d=DATA)}" for w in WARNINGS]
    assert check_config(DATA / "warn.conf") == """\
-A -t 10.0.0.1:80 -s rr -p 360 -M 255.255.255.0
-a -t 10.0.0.1:80 -r 10.0.1.1:80 -i -w 1 --tun-type ipip
-a -t 10.0.0.1:80 -r 10.0.1.2:80 -i -w 1 --tun-type ipip
-A -u 10.0.0.3:0 -s rr -p 360
-a -u 10.0.0.3:0 -r 10.0.1.3:0 -m -w 1
"""


def test_modelled_keywords_do_not_warn() -> None:
    for name in ("nat", "sorry"):
        assert load(str(DATA / f"{name}.conf")).warnings == []
    assert load(str(DATA / "dr.conf")).warnings == [
        f"{DATA}/dr.conf:8: vrrp_instance (and any other VRRP, BFD, static address/route "
        "blocks): read and ignored; pyvs models the LVS part",
        f"{DATA}/dr.conf:44: real server 203.0.113.12:8080 and its virtual server's port 80 "
        "differ: DR uses the service's port, as keepalived does"]


def write(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_include_globs_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path, {
        "keepalived.conf": "global_defs {\n    include globals.inc\n}\n"
                           "include services/*.conf\ninclude missing/*.conf\n",
        "globals.inc": "lvs_timeouts tcp 600\n",
        "services/a-web.conf": "virtual_server 10.0.0.1 80 {\n  lvs_sched rr\n"
                               "  lvs_method NAT\n  protocol TCP\n"
                               "  include ../realservers/web-{1,2}.inc\n}\n",
        "services/b-mail.conf": "virtual_server 10.0.0.1 25 {\n  lb_algo wlc\n  lb_kind DR\n"
                                "  protocol TCP\n  real_server 10.0.1.9 25 {\n"
                                "    SMTP_CHECK {\n    }\n  }\n}\n",
        "realservers/web-1.inc": "real_server 10.0.1.1 8080 {\n  weight 2\n}\n",
        "realservers/web-2.inc": "real_server 10.0.1.2 8080 {\n}\n",
    })
    cfg = load(str(tmp_path / "keepalived.conf"))
    assert cfg.timeouts.tcp == 600
    assert check_config(tmp_path / "keepalived.conf") == """\
-A -t 10.0.0.1:25 -s wlc
-a -t 10.0.0.1:25 -r 10.0.1.9:25 -g -w 1
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 2
-a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 1
"""
    assert cfg.warnings == [
        f"{tmp_path}/keepalived.conf:5: include missing/*.conf: no file matches",
        f"{tmp_path}/services/b-mail.conf:6: SMTP_CHECK: not performed by pyvs; a "
        "realserver whose checks are all of this kind stays in service"]


def test_parser_details_as_keepalived_reads_them(tmp_path: Path) -> None:
    """Comments (# and !, not inside quotes), braces anywhere, `\\` continuations,
    $definitions, quoted words, conditional @lines."""
    write(tmp_path, {"k.conf": """\
$VIP=10.0.0.5
$PORT=80
virtual_server $VIP ${PORT} {   ! the service
    lvs_sched rr ; lvs_method NAT
    lvs_method \\
        NAT
    protocol "TCP"
    real_server 10.0.1.1 80 { weight 4 }
    @nosuchhost real_server 10.0.1.2 80 {
    @nosuchhost }
    @^nosuchhost real_server 10.0.1.3 80 { HTTP_GET { url { path "/a b#c" } } }
}
"""})
    cfg = load(str(tmp_path / "k.conf"))
    vs = cfg.services[0]
    assert (vs.address, vs.port, vs.scheduler) == (0x0A000005, 80, "rr")
    assert [(rs.address & 255, rs.weight) for rs in vs.realservers] == [(1, 4), (3, 1)]
    assert vs.realservers[1].checks[0].urls[0].path == "/a b#c"


@pytest.mark.parametrize("text, line, reason", [
    ("virtual_server 10.0.0.300 80 {\n}\n", 1,
     "virtual server address '10.0.0.300' is not an IPv4 address"),
    ("virtual_server 10.0.0.1 80 {\n  lb_algo fast\n}\n", 2,
     "lb_algo 'fast' is not one of rr, wrr, lc, wlc, lblc, sh, mh, dh, fo, ovf, lblcr, sed, "
     "nq, twos"),
    ("virtual_server 10.0.0.1 80 {\n  lvs_sched twos\n}\n", 2,
     "lvs_sched twos: pyvs has no twos scheduler"),
    ("virtual_server 10.0.0.1 80 {\n  lvs_method NAT2\n}\n", 2,
     "lvs_method 'NAT2' is not one of NAT, DR, TUN"),
    ("virtual_server 10.0.0.1 80 {\n  real_server 10.0.1.1 80 {\n    weight 70000\n  }\n}\n",
     3, "weight '70000' is not an integer in 0..65535"),
    ("virtual_server 10.0.0.1 80 {\n  delay_loop soon\n}\n", 2,
     "delay_loop 'soon' is not a positive number of seconds"),
    ("virtual_server 10.0.0.1 80 {\n  persistence_timeout 0\n}\n", 2,
     "persistence_timeout '0' is not an integer in 1..2678400"),
    ("virtual_server 10.0.0.1 80 {\n  real_server 10.0.1.1 80 {\n    HTTP_GET {\n"
     "      url {\n        path /\n        status_code 700\n      }\n    }\n  }\n}\n", 6,
     "status_code '700' is not a code or a range in 100..599"),
    ("virtual_server 10.0.0.1 80 {\n  real_server 10.0.1.1 80 {\n    HTTP_GET {\n"
     "      url {\n        digest 12ab\n      }\n    }\n  }\n}\n", 5,
     "digest '12ab' is not 32 hex digits"),
    ("virtual_server 10.0.0.1 80 {\n  protocol \"TCP\n}\n", 2, "unterminated quote"),
    ("virtual_server 10.0.0.1 80 {\n}\n}\n", 3, "'}' closes no block"),
    ("virtual_server 10.0.0.1 80 {\n  real_server 10.0.1.1 80 {\n}\n", 1,
     "block not closed: '}' missing"),
    ("include other.conf\n", 1, "include other.conf: {d}/other.conf: no such file"),
    ("virtual_server group NOPE {\n  real_server 10.0.1.1 80 {\n  }\n}\n", 1,
     "virtual_server group NOPE: no virtual_server_group of that name before it"),
    ("virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.1.1 80 {\n }\n}\n"
     "virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.1.2 80 {\n }\n}\n", 6,
     "virtual_server 10.0.0.1 80: service TCP 10.0.0.1:80 is already defined at {f}:1"),
    ("~SEQ(n, 1, 3)\n", 1, "~SEQ: keepalived's sequence blocks are not supported by pyvs; "
     "write the blocks out"),
    ("global_defs {\n  lvs_timeouts tcp\n}\n", 2,
     "lvs_timeouts: expected [tcp SECS] [tcpfin SECS] [udp SECS]"),
    ("global_defs {\n  lvs_sync_daemon eth1 group 10.1.1.1\n}\n", 2,
     "lvs_sync_daemon group 10.1.1.1 is not multicast"),
])
def test_errors_are_one_line_with_file_and_line(tmp_path: Path, text: str, line: int,
                                                reason: str) -> None:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as err:
        load(str(path), "keepalived")
    reason = reason.replace("{d}", str(tmp_path)).replace("{f}", str(path))
    assert str(err.value) == f"{path}:{line}: {reason}"
    r = subprocess.run([sys.executable, "-m", "pyvs.cli", "check-config", str(path),
                        "--config-format", "keepalived"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", str(err.value) + "\n")


SAVE_YAML = """\
services:
  - {address: 10.0.0.100:80, scheduler: rr,
     realservers: [{address: 192.168.10.1:80, forward: masq, weight: 2},
                   {address: 192.168.10.2:8080, forward: masq}]}
  - {protocol: udp, address: 10.0.0.100:53, persistent: 360, netmask: 255.255.255.0,
     ops: true, realservers: [{address: 192.168.10.3, weight: 0}]}
  - {protocol: fwmark, fwmark: 1, scheduler: sh, flags: [sh-fallback, sh-port],
     realservers: [{address: 192.168.10.2, forward: tunnel, weight: 2}]}
"""
SAVE_N_YAML = """\
services:
  - address: 10.0.0.100:23
    realservers:
      - {address: 192.168.10.3, forward: tunnel, weight: 0}
      - {address: 10.1.0.2}
  - address: 10.0.0.100:80
    scheduler: rr
    realservers:
      - {address: 192.168.10.1:80, forward: masq}
      - {address: 192.168.10.2:80, forward: masq, weight: 2}
  - {protocol: udp, address: 10.0.0.100:53, persistent: true, netmask: 255.255.255.0,
     ops: true, realservers: [{address: 192.168.10.1:53, forward: masq}]}
  - {protocol: fwmark, fwmark: 1, scheduler: sh, flags: [sh-fallback, sh-port],
     realservers: [{address: 192.168.10.2, weight: 2}]}
"""


@pytest.mark.parametrize("saved, text", [
    (SAVE, SAVE_YAML), ((ROOT / "tests/golden/save_n.txt").read_text(), SAVE_N_YAML)])
def test_ipvsadm_save_files_load_as_their_yaml(tmp_path: Path, saved: str, text: str) -> None:
    (tmp_path / "rules").write_text(saved)
    (tmp_path / "c.yaml").write_text(text)
    from_rules = load(str(tmp_path / "rules"))
    from_yaml = load(str(tmp_path / "c.yaml"))
    assert from_rules.services == from_yaml.services
    assert from_yaml.warnings == []
    assert check_config(tmp_path / "rules") == check_config(tmp_path / "c.yaml") == saved
    assert rules.parse(saved, "x").services == parse(yaml.safe_load(dump(from_rules)),
                                                     "y").services


@pytest.mark.parametrize("text, message", [
    ("services:\n  - address: 10.0.0.1:80\n    realservers:\n      - address: 10.0.1.1\n"
     "        checks: [{type: PING_CHECK}]\n",
     "services[0].realservers[0].checks[0].type: 'PING_CHECK' is not one of TCP_CHECK, "
     "HTTP_GET, MISC_CHECK"),
    ("services:\n  - address: 10.0.0.1:80\n    realservers:\n      - address: 10.0.1.1\n"
     "        checks: [{type: HTTP_GET}]\n",
     "services[0].realservers[0].checks[0].url: an HTTP_GET needs at least one url"),
    ("services:\n  - address: 10.0.0.1:80\n    realservers:\n      - address: 10.0.1.1\n"
     "        checks: [{type: TCP_CHECK, misc_path: [x]}]\n",
     "services[0].realservers[0].checks[0].misc_path: unknown field"),
    ("services:\n  - address: 10.0.0.1:80\n    health: {delay_loop: 0}\n",
     "services[0].health.delay_loop: must be more than 0 seconds"),
    ("services:\n  - address: 10.0.0.1:80\n    sorry_server: {forward: masq}\n",
     "services[0].sorry_server.address: required"),
    ("services:\n  - {group: G, address: [10.0.0.1:80]}\n  - {group: G, address: "
     "[10.0.0.2:80]}\n", "services[1].group: 'G' is used by an earlier service"),
    ("sync_daemon: {interface: eth1, group: 10.0.0.1}\n",
     "sync_daemon.group: 10.0.0.1 is not a multicast address"),
])
def test_yaml_health_errors_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as err:
        load(str(path))
    assert str(err.value).startswith(f"{path}: {message}")
    assert "\n" not in str(err.value)


def test_yaml_health_defaults_and_groups(tmp_path: Path) -> None:
    """A hand-written YAML: the service's health: defaults its checks, group: makes one
    pool of several services, and the quorum is lowered (with a warning) as keepalived
    lowers it."""
    (tmp_path / "h.yaml").write_text("""\
services:
  - group: web
    address: [10.0.0.1:80, 10.0.0.2:80]
    fwmark: [5]
    scheduler: rr
    health: {delay_loop: 2, retry: 0, quorum: 9, inhibit_on_failure: true}
    sorry_server: {address: 10.0.9.9, forward: masq}
    realservers:
      - address: 10.0.1.1:8080
        forward: masq
        checks:
          - {type: TCP_CHECK}
          - {type: MISC_CHECK, misc_path: "/bin/check -q 'x y'", retry: 3}
      - {address: 10.0.1.2, inhibit_on_failure: false, checks: [{type: TCP_CHECK}]}
""")
    cfg = load(str(tmp_path / "h.yaml"))
    assert cfg.warnings == [f"{tmp_path}/h.yaml: services[0].health: quorum 9 exceeds the "
                            "realservers' total weight 2: lowered to 2"]
    assert [(vs.address & 255, vs.port, vs.fwmark) for vs in cfg.services] == [
        (1, 80, 0), (2, 80, 0), (0, 0, 5)]
    pools = cfg.pools()
    assert len(pools) == 1 and pools[0].name == "group web" and pools[0].quorum == 2
    rs1, rs2 = pools[0].servers
    assert (rs1.ports, rs2.ports, rs1.inhibit, rs2.inhibit) == ((8080, 8080, 8080),
                                                                (80, 80, 0), True, False)
    tcp, misc = rs1.checks
    assert (tcp.delay_loop, tcp.retry, tcp.warmup, misc.retry, misc.misc_timeout,
            misc.misc_path) == (2, 0, 2, 3, 2, ("/bin/check", "-q", "x y"))
    assert pools[0].sorry is not None and pools[0].sorry.ports == (0, 0, 0)
    again = parse(yaml.safe_load(dump(cfg)), "again")
    assert again.services == cfg.services


def test_every_check_option_survives_the_round_trip(tmp_path: Path) -> None:
    (tmp_path / "k.conf").write_text("""\
virtual_server 10.0.0.1 80 {
  lvs_sched lblcr
  lvs_method TUN
  protocol TCP
  virtualhost vs.example
  warmup 3
  delay_before_retry 4
  real_server 10.0.1.1 80 {
    alpha on
    inhibit_on_failure no
    weight 2
    delay_loop 7
    HTTP_GET {
      connect_ip 10.0.2.1
      connect_port 8081
      bindto 10.0.0.254
      bind_port 40000
      fwmark 17
      http_protocol 1.0C
      fast_recovery
      url {
        path /a
        virtualhost u.example
        status_code 200 204-206
      }
      url {
        path /b
      }
    }
    MISC_CHECK {
      misc_path "/bin/sh -c 'exit 0'"
      warmup 0
      alpha off
    }
  }
}
""")
    cfg = load(str(tmp_path / "k.conf"))
    http, misc = cfg.services[0].realservers[0].checks
    assert (http.connect_ip, http.connect_port, http.bindto, http.bind_port, http.fwmark) == (
        0x0A000201, 8081, 0x0A0000FE, 40000, 17)
    assert (http.http_protocol, http.fast_recovery, http.virtualhost, http.alpha,
            http.warmup, http.delay_before_retry, http.delay_loop) == (
        "1.0C", True, "vs.example", True, 3, 4, 7)
    assert (misc.misc_path, misc.warmup, misc.alpha, misc.virtualhost, misc.misc_timeout) == (
        ("/bin/sh", "-c", "exit 0"), 0, False, None, 60)
    again = parse(yaml.safe_load(dump(cfg)), "again")
    assert again.services == cfg.services
