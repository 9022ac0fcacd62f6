"""What the live director adds to the kernel, and how it takes all of it away again.

Everything lives in chains of pyvs's own (PYVS in raw, PYVS-PRE / PYVS-POST in mangle),
policy rules at preferences 1001.. and routing tables numbered like the realservers'
marks, so nothing pyvs did not add is ever touched.  Every change is written to a state
file (one per network namespace) *before* it is made; `undo()` reverses the file, so
`pyvs cleanup` after a SIGKILL removes exactly what the dead director added.

Why each piece (see ../shared/reference/nfqueue-lab.md):
  raw PYVS          CT --notrack on queued flows: conntrack would see client->VIP and
                    RS->client as unrelated flows and drop the replies as INVALID
  mangle PYVS-PRE   client->VIP to the queue (dst rewritten or marked before routing)
  mangle PYVS-POST  NAT replies to the queue after routing (a VIP source rewritten in
                    PREROUTING would be dropped as a martian)
  ip rule fwmark    DR: one table per realserver routes the unchanged packet to its MAC
  sysctls           ip_forward=1; send_redirects=0 (DR forwards out the way it came in);
                    TUN: accept_local=1 (the IPIP packet, rewritten before routing, has
                    the director's own address as its source: else a martian, dropped)
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

from ..core.engine import Director
from ..core.packet import int_to_ip
from ..core.service import DROUTE, MASQ, PROTO_NAMES, TUNNEL

log = logging.getLogger("pyvs")
CHAINS = (("raw", "PREROUTING", "PYVS"), ("mangle", "PREROUTING", "PYVS-PRE"),
          ("mangle", "POSTROUTING", "PYVS-POST"))
RULE_PREF_BASE = 1000
LOCAL_PREF = 2000


class SetupError(Exception):
    pass


def state_path() -> Path:
    """One state file per network namespace (/run is shared between namespaces)."""
    ino = os.stat("/proc/self/ns/net").st_ino
    return Path(f"/run/pyvs/netfilter-{ino}.json")


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True)
    if check and proc.returncode:
        raise SetupError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


class Setup:
    """Apply the kernel side of a director; `undo` on any exit."""

    def __init__(self, director: Director, queue: int = 0, fail_closed: bool = False) -> None:
        self.director = director
        self.queue = queue
        self.fail_closed = fail_closed
        self.path = state_path()
        self.state: dict[str, list] = {"undo": []}
        self.owned = False              # True once this director has written its state

    # -------------------------------------------------------------- bookkeeping
    def _record(self, undo: list[str] | dict) -> None:
        self.owned = True
        self.state["undo"].append(undo)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.path)

    def _do(self, args: list[str], undo: list[str]) -> None:
        self._record(undo)
        _run(args)

    def _sysctl(self, name: str, value: str) -> None:
        path = Path("/proc/sys") / name.replace(".", "/")
        old = path.read_text().strip()
        if old != value:
            self._record({"sysctl": name, "value": old})
            path.write_text(value)
            log.info("sysctl %s=%s (was %s)", name, value, old)

    # -------------------------------------------------------------- apply
    def apply(self) -> None:
        if self.path.exists():
            raise SetupError(f"{self.path} exists: a director runs in this network namespace "
                             "or one died; run `pyvs cleanup` first")
        d = self.director
        queue = ["-j", "NFQUEUE", "--queue-num", str(self.queue)]
        if not self.fail_closed:
            queue.append("--queue-bypass")
        for table, hook, chain in CHAINS:
            self._do(["iptables", "-t", table, "-N", chain],
                     ["iptables", "-t", table, "-X", chain])
            self._do(["iptables", "-t", table, "-F", chain],
                     ["iptables", "-t", table, "-F", chain])
            self._do(["iptables", "-t", table, "-A", hook, "-j", chain],
                     ["iptables", "-t", table, "-D", hook, "-j", chain])
        route_dests: dict[int, int] = {}
        for svc in d.services:
            if svc.fwmark:
                log.warning("fwmark service %d: mark its packets yourself before "
                            "mangle PYVS-PRE; pyvs queues only address:port services",
                            svc.fwmark)
                continue
            proto = PROTO_NAMES[svc.protocol].lower()
            match = ["-d", f"{int_to_ip(svc.addr)}/32", "-p", proto]
            if svc.port:
                match += ["--dport", str(svc.port)]
            _run(["iptables", "-t", "raw", "-A", "PYVS", *match, "-j", "CT", "--notrack"])
            _run(["iptables", "-t", "mangle", "-A", "PYVS-PRE", *match, *queue])
            for dest in svc.dests:
                if dest.fwd == MASQ:
                    back = ["-s", f"{int_to_ip(dest.addr)}/32", "-p", proto]
                    if dest.port:
                        back += ["--sport", str(dest.port)]
                    _run(["iptables", "-t", "raw", "-A", "PYVS", *back, "-j", "CT",
                          "--notrack"])
                    _run(["iptables", "-t", "mangle", "-A", "PYVS-POST", *back, *queue])
                elif dest.fwd == DROUTE:
                    route_dests[dest.mark] = dest.addr
        log.info("iptables: chains %s queue %d%s", ", ".join(c for _, _, c in CHAINS),
                 self.queue, " (fail closed)" if self.fail_closed else " (--queue-bypass)")
        self._sysctl("net.ipv4.ip_forward", "1")
        if any(dest.fwd == TUNNEL for svc in d.services for dest in svc.dests):
            self._sysctl("net.ipv4.conf.all.accept_local", "1")
        if route_dests:
            self._routes(route_dests)

    def _routes(self, route_dests: dict[int, int]) -> None:
        for name in sorted(os.listdir("/proc/sys/net/ipv4/conf")):
            self._sysctl(f"net.ipv4.conf.{name}.send_redirects", "0")
        vips = {int_to_ip(s.addr) for s in self.director.services if not s.fwmark}
        local = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
        if any(f" {vip}/" in local for vip in vips):
            # a VIP local on the director: the local table must come after the marks
            self._do(["ip", "rule", "add", "pref", str(LOCAL_PREF), "lookup", "local"],
                     ["ip", "rule", "del", "pref", str(LOCAL_PREF), "lookup", "local"])
            self._do(["ip", "rule", "del", "pref", "0", "lookup", "local"],
                     ["ip", "rule", "add", "pref", "0", "lookup", "local"])
            log.info("VIP is local: moved the local routing rule after the fwmark rules")
        for mark, addr in sorted(route_dests.items()):
            pref = str(RULE_PREF_BASE + mark % 1000)
            self._do(["ip", "rule", "add", "pref", pref, "fwmark", str(mark), "lookup",
                      str(mark)],
                     ["ip", "rule", "del", "pref", pref, "fwmark", str(mark), "lookup",
                      str(mark)])
            self._do(["ip", "route", "replace", "default", "via", int_to_ip(addr), "table",
                      str(mark)], ["ip", "route", "flush", "table", str(mark)])
            log.info("DR: mark %d -> table %d -> via %s", mark, mark, int_to_ip(addr))


def undo(path: Path | None = None) -> list[str]:
    """Reverse a state file, newest change first; returns what was done."""
    path = path or state_path()
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    done = []
    for step in reversed(state.get("undo", [])):
        if isinstance(step, dict):
            p = Path("/proc/sys") / step["sysctl"].replace(".", "/")
            try:
                p.write_text(step["value"])
                done.append(f"sysctl {step['sysctl']}={step['value']}")
            except OSError:
                pass
            continue
        if _run(step, check=False).returncode == 0:
            done.append(" ".join(step))
    path.unlink()
    return done
