"""`pyvs lab`: an LVS cluster of network namespaces on this machine.

    pyvs-sw   the switch: bridges brc (client segment) and brr (realserver segment);
              the bridges live outside the director so its iptables never see bridged frames
    pyvs-d    the director, running `pyvs run` on the lab's config
    pyvs-d2   with --directors 2, a second director on the same segments, a sync daemon
              pair between them (pyvs.lab.vrrp moves the VIP: `pyvs lab failover`)
    pyvs-c1.. clients          pyvs-r1.. realservers (python -m pyvs.lab.backends)
(`pyvs` is the lab's name: PYVS_LAB=NAME builds NAME-sw, NAME-d, ... beside it.)

Addresses are the Vagrant lab's (vagrant/Vagrantfile):
    NAT  clients 198.51.100.2.. , director 198.51.100.1 + VIP 198.51.100.100 | 192.0.2.1,
         realservers 192.0.2.11.. (default route via 192.0.2.1)
    DR, TUN  one segment 203.0.113.0/24: director .1, clients .2.., realservers .11..,
         VIP 203.0.113.100 (on the realservers' lo / tunl0; routed via the director)
         (TUN on a kernel without the ipip driver: pyvs.lab.ipip decapsulates instead)
    two directors  the second at .254 of each segment; the VIP (/32 on eth0) is held by
         the active director, the clients reach it on-link; NAT's realservers route via
         192.0.2.100, floating with the VIP; both directors run a master and a backup
         sync daemon on eth0 (syncid 7), so either can take over and fail back
Each host is set up by the same provisioning scripts as the VMs (pyvs/data/provision/*.sh,
PYVS_INIT=none); the lab then starts the director and the backends itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..control import NoDirector, request
from ..core.forwarding import BY_MODE, MODES
from ..drivers.netfilter import alive
from ..resources import PROVISION
from . import ipip

PROJECT = Path(__file__).resolve().parents[2]
# PYVS_LAB names a lab (default "pyvs"): its namespaces are NAME-d, NAME-c1.., NAME-r1..,
# NAME-sw, so several labs (parallel test runs) can stand side by side.
PREFIX = os.environ.get("PYVS_LAB", "pyvs")
STATE_DIR = Path("/run/pyvs/lab" if PREFIX == "pyvs" else f"/run/pyvs/lab-{PREFIX}")
STATE = STATE_DIR / "lab.json"
SOCKET = "/run/pyvs/pyvs.sock" if PREFIX == "pyvs" else str(STATE_DIR / "pyvs.sock")


SYNCID = 7                  # the lab's sync daemons'
INSIDE_GATEWAY = "192.0.2.100"      # NAT with two directors: floats with the VIP
SECOND = {"dr": ("203.0.113.254", None), "nat": ("198.51.100.254", "192.0.2.254")}


def ns(host: str) -> str:
    """The namespace of a lab host: d (director), d2, sw (switch), c1.., r1.."""
    return f"{PREFIX}-{host}"


def director_socket(k: int) -> str:
    """Director k's control socket (0: the lab's SOCKET, as with one director)."""
    return SOCKET if k == 0 else str(STATE_DIR / f"pyvs-d{k + 1}.sock")


def directors(state: dict) -> list[dict]:
    """The lab's directors: host name, namespace, control socket, own addresses."""
    own = [(state["gateway"], state["dip"] if state["mode"] == "nat" else None)]
    if state.get("directors", 1) == 2:
        if state["mode"] == "nat":
            own[0] = (state["gateway"], "192.0.2.1")
        own.append(SECOND[state["mode"]])
    return [{"host": "director" if k == 0 else f"director{k + 1}",
             "ns": ns("d" if k == 0 else f"d{k + 1}"), "socket": director_socket(k),
             "eth0": eth0, "eth1": eth1} for k, (eth0, eth1) in enumerate(own)]


def floating(state: dict) -> list[tuple[str, str]]:
    """(device, address) that move with the active director: keepalived's
    virtual_ipaddress of the outside (and NAT's inside) VRRP instance."""
    out = [("eth0", state["vip"])]
    if state["mode"] == "nat":
        out.append(("eth1", INSIDE_GATEWAY))
    return out


class LabError(Exception):
    pass


def layout(mode: str, realservers: int, clients: int) -> dict:
    if mode == "nat":
        return {"mode": mode, "vip": "198.51.100.100", "dip": "192.0.2.1",
                "gateway": "198.51.100.1", "client_net": "198.51.100", "rs_net": "192.0.2",
                "clients": [f"198.51.100.{2 + i}" for i in range(clients)],
                "realservers": [f"192.0.2.{11 + i}" for i in range(realservers)]}
    return {"mode": mode, "vip": "203.0.113.100", "dip": "203.0.113.1",
            "gateway": "203.0.113.1", "client_net": "203.0.113", "rs_net": "203.0.113",
            "clients": [f"203.0.113.{2 + i}" for i in range(clients)],
            "realservers": [f"203.0.113.{11 + i}" for i in range(realservers)]}


def config_yaml(mode: str, realservers: int, sync_iface: str | None = None) -> str:
    """The lab director's services: www and telnet rr, an all-ports persistent service
    (ftp-like control and data) on the first realserver: the LVS-HOWTO's classic director.
    With `sync_iface`, a master and a backup sync daemon on it (the VMs' director pair;
    the namespace lab starts its daemons through the control socket, _start_sync)."""
    lay = layout(mode, realservers, 1)
    fwd = BY_MODE[mode].word
    vip, rs = lay["vip"], lay["realservers"]

    def dests(port: int, which: list[str]) -> str:
        return "".join(f"      - {{address: {a}:{port}, forward: {fwd}}}\n" for a in which)
    return (f"# pyvs lab, {mode.upper()}: generated by `pyvs lab config`\n"
            "kernel: modern\ntimeouts: {tcp: 900, tcpfin: 120, udp: 300}\n"
            f"tunnel_source: {lay['dip']}\nservices:\n"
            f"  - protocol: tcp\n    address: {vip}:80\n    scheduler: rr\n    realservers:\n"
            + dests(80, rs) +
            f"  - protocol: tcp\n    address: {vip}:23\n    scheduler: rr\n    realservers:\n"
            + dests(23, rs) +
            f"  - protocol: tcp\n    address: {vip}:0\n    scheduler: rr\n    persistent: 360\n"
            "    realservers:\n" + dests(0, rs[:1])
            + ("" if sync_iface is None else "sync_daemons:\n" + "".join(
                f"  - {{state: {state}, interface: {sync_iface}, syncid: {SYNCID}}}\n"
                for state in ("master", "backup"))))


def _sh(*args: str, check: bool = True, env: dict | None = None,
        timeout: float | None = None) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env,
                          timeout=timeout)
    if check and proc.returncode:
        raise LabError(f"{' '.join(args)}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def exec_in(ns: str, *args: str, check: bool = True, env: dict | None = None,
            timeout: float | None = None) -> str:
    """Run a command in a lab namespace; its stdout (LabError on failure if `check`)."""
    return _sh("ip", "netns", "exec", ns, *args, check=check, env=env, timeout=timeout)


def hosts(state: dict) -> dict[str, str]:
    """Host name -> namespace."""
    names = {d["host"]: d["ns"] for d in directors(state)}
    names.update({f"c{i + 1}": ns(f"c{i + 1}") for i in range(len(state["clients"]))})
    names.update({f"rs{i + 1}": ns(f"r{i + 1}") for i in range(len(state["realservers"]))})
    names["client"] = ns("c1")
    return names


def _provision(ns: str, role: str, lay: dict, **extra: str) -> None:
    env = {**os.environ, "PYVS_MODE": lay["mode"], "PYVS_VIP": lay["vip"],
           "PYVS_DIP": lay["dip"], "PYVS_INIT": "none", "PYVS_IFACE": "eth0",
           "PYVS_PROJECT": str(PROJECT), **extra}
    exec_in(ns, "bash", str(PROVISION / f"{role}.sh"), env=env)


def up(mode: str, realservers: int = 2, clients: int = 1, out=sys.stdout,
       director: bool = True, run_args: tuple[str, ...] = (), n_directors: int = 1) -> dict:
    """Build the lab; each director runs `pyvs run` with `run_args` besides its config."""
    if mode not in MODES:
        raise LabError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
    if n_directors not in (1, 2):
        raise LabError("--directors must be 1 or 2")
    if n_directors == 2 and mode not in SECOND:
        raise LabError(f"--directors 2: the pair runs NAT or DR, not {mode}")
    if STATE.exists():
        raise LabError(f"a lab is already up ({STATE}); run `pyvs lab down` first")
    if not 1 <= realservers <= 20 or not 1 <= clients <= 20:
        raise LabError("--realservers and --clients must be 1..20")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, iptables)")
    lay = layout(mode, realservers, clients)
    if n_directors == 2 and mode == "nat":
        lay["dip"] = INSIDE_GATEWAY        # the realservers' gateway floats with the VIP
    state = {**lay, "namespaces": [], "pids": {}, "run_args": list(run_args),
             "directors": n_directors, "active": 0}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state))
    try:
        _build(state, out, director)
    except BaseException:
        down(out=open(os.devnull, "w"))
        raise
    return state


def _save(state: dict) -> None:
    STATE.write_text(json.dumps(state, indent=1))


def _build(state: dict, out, start_director: bool = True) -> None:
    mode = state["mode"]
    pair = directors(state)
    nss = [ns("sw"), *[d["ns"] for d in pair],
           *[ns(f"c{i + 1}") for i in range(len(state["clients"]))],
           *[ns(f"r{i + 1}") for i in range(len(state["realservers"]))]]
    for name in nss:
        _sh("ip", "netns", "add", name)
        state["namespaces"].append(name)
        _save(state)
        exec_in(name, "ip", "link", "set", "lo", "up")
    bridges = ("brc", "brr") if mode == "nat" else ("brc",)
    for br in bridges:
        exec_in(ns("sw"), "ip", "link", "add", br, "type", "bridge")
        exec_in(ns("sw"), "ip", "link", "set", br, "up")

    def port(host: str, dev: str, peer: str, br: str, addr: str) -> None:
        _sh("ip", "link", "add", dev, "netns", host, "type", "veth", "peer", "name", peer,
            "netns", ns("sw"))
        exec_in(ns("sw"), "ip", "link", "set", peer, "master", br, "up")
        exec_in(host, "ip", "addr", "add", addr, "dev", dev)
        exec_in(host, "ip", "link", "set", dev, "up")

    rs_br = "brr" if mode == "nat" else "brc"
    for k, d in enumerate(pair):
        suffix = "" if k == 0 else str(k + 1)
        port(d["ns"], "eth0", f"d{suffix}0", "brc", f"{d['eth0']}/24")
        if mode == "nat":
            port(d["ns"], "eth1", f"d{suffix}1", "brr", f"{d['eth1']}/24")
    for i, addr in enumerate(state["clients"]):
        host = ns(f"c{i + 1}")
        port(host, "eth0", f"c{i + 1}", "brc", f"{addr}/24")
        if mode == "nat":
            exec_in(host, "ip", "route", "add", "default", "via", state["gateway"])
        # two directors: the VIP is on the segment, ARP finds its holder
        _provision(host, "client", state, PYVS_GATEWAY=state["gateway"],
                   PYVS_VIP_ONLINK="1" if len(pair) > 1 else "")
    for i, addr in enumerate(state["realservers"]):
        host = ns(f"r{i + 1}")
        port(host, "eth0", f"r{i + 1}", rs_br, f"{addr}/24")
        _provision(host, "realserver", state, PYVS_NAME=f"rs{i + 1}")
        if mode == "tun" and tun_device(host) == ipip.DEVICE:
            _start_ipip(state, host, f"ipip{i + 1}")
        log = open(STATE_DIR / f"rs{i + 1}.log", "w")
        proc = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-m",
                                 "pyvs.lab.backends", "--name", f"rs{i + 1}"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        state["pids"][f"rs{i + 1}"] = proc.pid
        _save(state)
    specs = " ".join(f"{dev}={addr}" for dev, addr in floating(state)) if len(pair) > 1 else ""
    for d in pair:
        _provision(d["ns"], "director", state, PYVS_VIP_IFACE="eth0", PYVS_FLOATING=specs)
    if len(pair) > 1:
        _hold_floating(state, 0)
    if not start_director:                      # bench/live.py runs its own
        _wait_listening(state)
        return
    _run_directors(state, pair, out)


def _run_directors(state: dict, pair: list[dict], out) -> None:
    """Each director's `pyvs run`; with two, their sync daemons."""
    mode = state["mode"]
    config = STATE_DIR / f"lab-{mode}.yaml"
    config.write_text(config_yaml(mode, len(state["realservers"])))
    state["config"] = str(config)
    for d in pair:
        _start_director(state, d)
    if len(pair) > 1:
        for d in pair:
            _start_sync(d)
    _wait_listening(state)
    logs = ", ".join(str(STATE_DIR / f"{d['host']}.log") for d in pair)
    print(f"lab up: {mode.upper()}, VIP {state['vip']}, {len(state['realservers'])} "
          f"realservers, {len(state['clients'])} client(s); "
          + (f"directors {pair[0]['eth0']} (active) and {pair[1]['eth0']}, sync daemons on "
             f"eth0; " if len(pair) > 1 else "")
          + f"director log{'s' if len(pair) > 1 else ''} {logs}", file=out)


def _start_director(state: dict, d: dict) -> None:
    log_path = STATE_DIR / f"{d['host']}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(["ip", "netns", "exec", d["ns"], sys.executable, "-m", "pyvs.cli",
                             "run", "--config", state["config"], "--socket", d["socket"],
                             *state["run_args"]],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state["pids"][d["host"]] = proc.pid
    _save(state)
    for _ in range(100):
        if proc.poll() is not None:
            raise LabError(f"the {d['host']} exited: " + log_path.read_text().strip()[-500:])
        try:
            request(d["socket"], {"op": "ping"}, timeout=1)
            return
        except NoDirector:
            time.sleep(0.1)
    raise LabError(f"the {d['host']} did not answer on its control socket within 10 s")


def _start_sync(d: dict) -> None:
    """A master and a backup sync daemon on eth0, as keepalived's lvs_sync_daemon runs
    one or the other: both at once let either director take over, and fail back."""
    commands = [{"op": "start-daemon", "state": state, "mcast_ifn": "eth0",
                 "syncid": SYNCID} for state in ("master", "backup")]
    errors = request(d["socket"], {"op": "apply", "commands": commands})["errors"]
    if any(errors):
        raise LabError(f"{d['host']}: the sync daemons did not start: {errors}")


def _hold_floating(state: dict, active: int) -> None:
    """The floating addresses on director `active` only, announced by gratuitous ARP
    (what keepalived's VRRP does at a transition, pyvs.lab.vrrp)."""
    pair = directors(state)
    specs = [f"{dev}={addr}" for dev, addr in floating(state)]
    for k, d in enumerate(pair):
        if k != active:
            exec_in(d["ns"], sys.executable, "-m", "pyvs.lab.vrrp", "backup", *specs)
    exec_in(pair[active]["ns"], sys.executable, "-m", "pyvs.lab.vrrp", "master", *specs)
    state["active"] = active
    _save(state)


def failover(out=sys.stdout) -> int:
    """`pyvs lab failover`: the floating addresses to the other director."""
    state = load_state()
    if state.get("directors", 1) < 2:
        raise LabError("the lab has one director (pyvs lab up --directors 2)")
    new = 1 - state.get("active", 0)
    _hold_floating(state, new)
    d = directors(state)[new]
    print(f"{d['host']} ({d['eth0']}) holds {', '.join(a for _, a in floating(state))} now",
          file=out)
    return 0


def tun_device(host: str) -> str:
    """The device that holds a TUN realserver's VIP: tunl0 where the kernel has the ipip
    driver, else pyvs.lab.ipip's."""
    return "tunl0" if exec_in(host, "ip", "-o", "link", "show", "tunl0", check=False) \
        else ipip.DEVICE


def _start_ipip(state: dict, host: str, name: str) -> None:
    """No ipip driver on this realserver: pyvs.lab.ipip decapsulates onto its TUN device
    (pyvs/data/provision/realserver.sh leaves it to the lab); wait until it holds the VIP."""
    log = open(STATE_DIR / f"{name}.log", "w")
    proc = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-m",
                             "pyvs.lab.ipip", "--vip", state["vip"]],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state["pids"][name] = proc.pid
    _save(state)
    for _ in range(100):
        if f" {state['vip']}/32 " in exec_in(host, "ip", "-4", "-o", "addr", "show", "dev",
                                             ipip.DEVICE, check=False):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise LabError(f"{host}: pyvs.lab.ipip did not come up: "
                   + (STATE_DIR / f"{name}.log").read_text().strip()[-300:])


def _wait_listening(state: dict) -> None:
    for i in range(len(state["realservers"])):
        for _ in range(100):
            if ":80 " in exec_in(ns(f"r{i + 1}"), "ss", "-Htln", check=False):
                break
            time.sleep(0.05)


def load_state() -> dict:
    if not STATE.exists():
        raise LabError("no lab is up (pyvs lab up --mode nat|dr|tun)")
    return json.loads(STATE.read_text())


def _kill(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def down(out=sys.stdout) -> None:
    """Stop everything the lab started and delete its namespaces; safe to repeat."""
    state = json.loads(STATE.read_text()) if STATE.exists() else {"namespaces": [], "pids": {}}
    running = [pid for name, pid in state["pids"].items() if name.startswith("director")]
    for pid in running:
        _kill(pid)
    for pid in running:
        for _ in range(50):
            if not alive(pid):
                break
            time.sleep(0.1)
        _kill(pid, signal.SIGKILL)
    listed = _sh("ip", "netns", "list", check=False).split()
    for name in (ns("d"), ns("d2")):
        if name in listed:
            exec_in(name, sys.executable, "-m", "pyvs.cli", "cleanup", "--table", check=False)
    for name, pid in state["pids"].items():
        if not name.startswith("director"):
            _kill(pid, signal.SIGKILL)
    existing = _sh("ip", "netns", "list", check=False)
    existing_names = [n.split()[0] for n in existing.splitlines() if n.strip()]
    for name in reversed(state["namespaces"] or [n for n in existing_names
                                                 if n.startswith(f"{PREFIX}-")]):
        if name in existing_names:
            _sh("ip", "netns", "del", name, check=False)
    if STATE.exists():
        STATE.unlink()
    shutil.rmtree(STATE_DIR / "ssh", ignore_errors=True)
    print("lab down", file=out)


def status(out=sys.stdout) -> int:
    state = load_state()
    print(f"mode {state['mode']}, VIP {state['vip']}", file=out)
    for name, pid in state["pids"].items():
        print(f"  {name:<9} pid {pid:<7} {'running' if alive(pid) else 'DEAD'}", file=out)
    for host, ns in hosts(state).items():
        if host != "client":
            addrs = exec_in(ns, "ip", "-4", "-o", "addr", "show", check=False).split("\n")
            shown = [a.split()[3] for a in addrs if a and " lo " not in a or "/32" in a]
            print(f"  {host:<9} {ns:<9} {' '.join(shown)}", file=out)
    return 0


def check(out=sys.stdout) -> int:
    """The classic LVS mistakes, host by host (the LVS-HOWTO's 'incorrect routing' among
    them)."""
    state = load_state()
    mode, vip, problems = state["mode"], state["vip"], 0

    def report(ok: bool, host: str, text: str) -> None:
        nonlocal problems
        problems += not ok
        print(f"{'ok     ' if ok else 'PROBLEM'} {host}: {text}", file=out)

    def sysctl(host: str, name: str) -> str:
        return exec_in(host, "cat", f"/proc/sys/{name.replace('.', '/')}", check=False).strip()

    for d in directors(state):
        report(sysctl(d["ns"], "net.ipv4.ip_forward") == "1", d["host"], "ip_forward=1")
        report(alive(state["pids"].get(d["host"], 0) or 0), d["host"], "pyvs run is running")
    for i, addr in enumerate(state["realservers"]):
        rns, host = ns(f"r{i + 1}"), f"rs{i + 1} {addr}"
        if mode == "nat":
            route = exec_in(rns, "ip", "route", "show", "default", check=False)
            report(f"via {state['dip']} " in route, host,
                   f"default route via the director {state['dip']} (else replies bypass it: "
                   "incorrect routing, handshakes never complete)")
        else:
            dev = "lo" if mode == "dr" else tun_device(rns)
            have = exec_in(rns, "ip", "-4", "-o", "addr", "show", "dev", dev, check=False)
            report(f" {vip}/32 " in have, host, f"VIP {vip} on {dev} (else it drops the "
                   "director's packets for the VIP)")
            if mode == "dr":
                for name, want in (("arp_ignore", "1"), ("arp_announce", "2")):
                    got = sysctl(rns, f"net.ipv4.conf.all.{name}")
                    report(got == want, host, f"{name}={want} (is {got}; else it answers "
                           "ARP for the VIP and steals the traffic)")
            rp = sysctl(rns, "net.ipv4.conf.all.rp_filter")
            report(rp in ("0", "2"), host, f"rp_filter is {rp} (1 drops packets for the VIP "
                   "arriving on the wrong interface)")
    print(f"{problems} problem(s)", file=out)
    return 1 if problems else 0


SSHD = "/usr/sbin/sshd"
SSHD_CONFIG = """HostKey {dir}/host_key
AuthorizedKeysFile {dir}/id.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv PATH={path} PYVS_SOCKET={socket}
"""


def ssh_config() -> str:
    """An ssh_config for the lab's hosts, as `vagrant ssh-config` writes one for the VMs:
    each host is reached by a real sshd started in its namespace for the session (inetd
    mode, through ProxyCommand), logging in as root with a key made for the lab.  So
    whatever drives the VMs over ssh (pyvs compare --ssh-config) runs here unchanged."""
    state = load_state()
    if not os.access(SSHD, os.X_OK):
        raise LabError(f"{SSHD} is missing: install openssh-server (the daemon is only "
                       "started per session, in the lab's namespaces)")
    ssh = STATE_DIR / "ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)    # sshd's privilege-separation dir
    for key in ("host_key", "id"):
        if not (ssh / key).exists():
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pyvs-lab-{key}",
                "-f", str(ssh / key))
    path = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:" \
           "/usr/bin:/sbin:/bin"
    blocks = []
    for host, ns in hosts(state).items():
        socket = _socket_of(state, host)        # director2's pyvsadm talks to director2
        config = ssh / ("sshd_config" if socket == SOCKET else f"sshd_config-{host}")
        config.write_text(SSHD_CONFIG.format(dir=ssh, path=path, socket=socket))
        blocks.append(f"Host {host}\n  User root\n  IdentityFile {ssh}/id\n"
                      f"  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
                      f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
                      f"  ProxyCommand ip netns exec {ns} {SSHD} -i -f {config}\n")
    return "\n".join(blocks)


def _socket_of(state: dict, host: str) -> str:
    """The control socket pyvsadm finds on `host`: its own on a director, else the lab's."""
    return next((d["socket"] for d in directors(state) if d["host"] == host), SOCKET)


def lab_exec(host: str, cmd: list[str]) -> int:
    state = load_state()
    names = hosts(state)
    if host not in names:
        raise LabError(f"unknown host {host!r} (hosts: {', '.join(sorted(names))})")
    if not cmd:
        raise LabError("nothing to run: pyvs lab exec HOST -- CMD...")
    # pyvsadm and pyvs list on the director find the lab's control socket
    return subprocess.call(["ip", "netns", "exec", names[host], *cmd],
                           env={**os.environ, "PYVS_SOCKET": os.environ.get(
                               "PYVS_SOCKET", _socket_of(state, host))})
