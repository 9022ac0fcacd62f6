"""The hosts a live comparison runs on: the namespace lab on this machine, or any cluster
reachable over ssh (the Vagrant VMs, through `vagrant ssh-config`).

Both give the same four things: run a command on a named host (`client`, `director`,
`rs1`..), the director's table as `pyvs list --json` prints it, a change of its timeouts,
and the lab's addresses (VIP, client, realserver address -> host).  Over ssh the addresses
are read off the cluster itself (the director's services, each host's `ip addr`), so any
cluster laid out like the lab works, whatever its addresses.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..control import request
from ..core.forwarding import BY_WORD
from . import netns

SS_NAMES = {"ESTAB": "ESTABLISHED", "SYN-RECV": "SYN_RECV", "SYN-SENT": "SYN_SENT",
            "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
            "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK", "CLOSING": "CLOSING"}


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


class ClusterError(Exception):
    """The cluster cannot run a comparison; the text says what is wrong."""


class Cluster:
    """A lab's hosts and its director.  Subclasses say how a command reaches a host."""

    python = "python3"
    mode: str
    vip: str
    client: str
    realservers: dict[str, str]           # realserver address -> host name

    def run(self, host: str, *argv: str, timeout: float = 30, check: bool = True) -> str:
        raise NotImplementedError

    def table(self) -> dict:
        """The director's snapshot with its connection list (`pyvs list --json`)."""
        raise NotImplementedError

    def set_timeouts(self, tcp: int, tcpfin: int = 0, udp: int = 0) -> None:
        """`ipvsadm --set` on the director (0 leaves a value as it is)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def sockets(self, host: str, ports: set[int]) -> list[tuple[str, str]]:
        """(state, peer) of every non-LISTEN TCP socket on `host` whose local port is one of
        `ports`, states named as the director names them."""
        text = self.run(host, "ss", "-Htan", check=False, timeout=10)
        socks = []
        for line in text.splitlines():
            f = line.split()
            if len(f) < 5 or f[0] == "LISTEN":
                continue
            if int(f[3].rsplit(":", 1)[1]) in ports:
                socks.append((SS_NAMES.get(f[0], f[0]), f[4]))
        return socks

    def wait_quiet(self, ports: set[int], limit: float) -> None:
        """Wait until the director's table holds no connection and no realserver holds a
        socket on `ports` (what the last scenario left: TIME_WAIT, FIN_WAIT...), so the
        next one starts from nothing; ClusterError past `limit` seconds."""
        start = time.monotonic()
        while True:
            busy = any(not c["template"] for c in self.table()["connections"]) or any(
                self.sockets(h, ports) for h in self.realservers.values())
            if not busy:
                return
            if time.monotonic() - start > limit:
                raise ClusterError(f"the cluster still holds connections after {limit:.0f} s "
                                   "(pyvsadm -Lnc on the director, ss -tan on the "
                                   "realservers)")
            time.sleep(1.0)


class Namespaces(Cluster):
    """The namespace lab of `pyvs lab up` (its state as `netns.up` returns it)."""

    python = sys.executable

    def __init__(self, state: dict) -> None:
        self.names = netns.hosts(state)
        self.mode = state["mode"]
        self.vip = state["vip"]
        self.client = state["clients"][0]
        self.realservers = {a: f"rs{i + 1}" for i, a in enumerate(state["realservers"])}

    def run(self, host: str, *argv: str, timeout: float = 30, check: bool = True) -> str:
        return netns.exec_in(self.names[host], *argv, check=check, timeout=timeout)

    def table(self) -> dict:
        return request(netns.SOCKET, {"op": "snapshot", "connections": True})["snapshot"]

    def set_timeouts(self, tcp: int, tcpfin: int = 0, udp: int = 0) -> None:
        request(netns.SOCKET, {"op": "apply", "commands": [
            {"cmd": "set", "timeouts": [tcp, tcpfin, udp]}]})


class Ssh(Cluster):
    """A cluster over ssh, named as the Vagrant lab names its VMs (`client`, `director`,
    `rs1`..) in an ssh_config file such as `vagrant ssh-config` writes.  One master
    connection per host (ControlMaster) keeps a sample's `ss` calls to milliseconds.
    Commands that need root run through `sudo -n` unless the login is root."""

    def __init__(self, config: str) -> None:
        try:
            text = Path(config).read_text()
        except OSError as exc:
            raise ClusterError(f"{config}: cannot read: {exc.strerror}") from None
        self.config = config
        hosts = [h for line in text.splitlines()
                 if (m := re.match(r"\s*Host\s+(.+)", line, re.I)) for h in m.group(1).split()]
        for need in ("client", "director"):
            if need not in hosts:
                raise ClusterError(f"{config}: no 'Host {need}' (hosts: "
                                   f"{', '.join(hosts) or 'none'}); write it with "
                                   "`vagrant ssh-config > FILE` in vagrant/")
        rs_hosts = sorted((h for h in hosts if re.fullmatch(r"rs\d+", h)),
                          key=lambda h: int(h[2:]))
        if not rs_hosts:
            raise ClusterError(f"{config}: no realserver hosts (Host rs1, rs2, ...)")
        self.control = tempfile.mkdtemp(prefix="pyvs-ssh-")
        self.sudo: dict[str, list[str]] = {}
        try:
            self._learn(self.table(), rs_hosts)
        except ClusterError:
            self.close()                    # no master connection left behind
            raise

    def _ssh(self, host: str, command: str, timeout: float) -> subprocess.CompletedProcess:
        argv = ["ssh", "-F", self.config, "-o", "BatchMode=yes",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control}/%h",
                "-o", "ControlPersist=120", "-o", "ConnectTimeout=10", host, command]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"ssh {host}: no answer in {timeout:.0f} s") from None

    def run(self, host: str, *argv: str, timeout: float = 30, check: bool = True) -> str:
        if host not in self.sudo:
            who = self._ssh(host, "id -u", timeout)
            if who.returncode:
                raise ClusterError(f"ssh {host}: {_one_line(who.stderr) or 'login failed'}")
            self.sudo[host] = [] if who.stdout.strip() == "0" else ["sudo", "-n"]
        proc = self._ssh(host, shlex.join([*self.sudo[host], *argv]), timeout)
        if check and proc.returncode:
            raise ClusterError(f"{host}: {shlex.join(argv)}: "
                               f"{_one_line(proc.stderr or proc.stdout)}")
        return proc.stdout

    def table(self) -> dict:
        text = self.run("director", "pyvs", "list", "--json")
        try:
            return json.loads(text)
        except ValueError:
            raise ClusterError(f"director: pyvs list --json printed no table: "
                               f"{text[:80]!r}") from None

    def set_timeouts(self, tcp: int, tcpfin: int = 0, udp: int = 0) -> None:
        self.run("director", "pyvsadm", "--set", str(tcp), str(tcpfin), str(udp))

    def _learn(self, snap: dict, rs_hosts: list[str]) -> None:
        """The lab's addresses, from the director's services and each host's addresses."""
        web = [s for s in snap["services"] if s.get("port") == 80 and s["dests"]]
        if not web:
            raise ClusterError("director: no TCP service on port 80 with realservers "
                               "(is it running the lab's config?)")
        self.vip = web[0]["address"]
        forwards = {d["forward"] for s in snap["services"] for d in s["dests"]}
        if len(forwards) != 1 or BY_WORD[next(iter(forwards))].mode is None:
            raise ClusterError(f"director: realservers forwarded as {sorted(forwards)}; "
                               "a comparison needs one mode (masq, route or tunnel)")
        self.mode = str(BY_WORD[forwards.pop()].mode)
        route = self.run("client", "ip", "-o", "-4", "route", "get", self.vip)
        m = re.search(r"\bsrc (\S+)", route)
        if not m:
            raise ClusterError(f"client: no route to the VIP {self.vip}: {route.strip()}")
        self.client = m.group(1)
        owned = {}
        for host in rs_hosts:
            for addr in re.findall(r"inet (\S+?)/", self.run(host, "ip", "-o", "-4", "addr")):
                owned[addr] = host
        dests = {d["address"] for s in snap["services"] for d in s["dests"]}
        missing = sorted(dests - set(owned))
        if missing:
            raise ClusterError(f"no ssh host (rs1..) holds the realserver address(es) "
                               f"{', '.join(missing)}")
        self.realservers = {a: owned[a] for a in sorted(dests)}

    def close(self) -> None:
        for host in self.sudo:
            subprocess.run(["ssh", "-F", self.config, "-o", f"ControlPath={self.control}/%h",
                            "-O", "exit", host], capture_output=True, timeout=10)
        shutil.rmtree(self.control, ignore_errors=True)
