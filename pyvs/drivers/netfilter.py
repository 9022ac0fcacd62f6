"""What the live director adds to the kernel, how the rules follow its table, and how it
takes all of it away again.

Everything lives in chains of pyvs's own (PYVS in raw, PYVS-PRE / PYVS-POST in mangle),
policy rules at preferences 1001.. and routing tables numbered like the realservers'
marks, so nothing pyvs did not add is ever touched.  Every change outside the chains is
written to a state file (one per network namespace) *before* it is made; `undo()`
reverses the file, so `pyvs cleanup` after a SIGKILL removes exactly what the dead
director added.  The chains' contents are rewritten whole, in one `iptables-restore
--noflush` transaction, after every control-plane change that touches the services: a
service or realserver added with pyvsadm is forwarded from the moment the change is
acknowledged.

Why each piece (docs/live.md):
  raw PYVS          CT --notrack on queued flows: conntrack would see client->VIP and
                    RS->client as unrelated flows and drop the replies as INVALID
  mangle PYVS-PRE   client->VIP to the queue (dst rewritten or marked before routing)
  mangle PYVS-POST  NAT replies to the queue after routing (a VIP source rewritten in
                    PREROUTING would be dropped as a martian)
  mangle PYVS-QIN/QOUT  with --queues N: each client's requests and replies to its
                    worker's queue (pyvs.drivers.queues)
  ip rule fwmark    DR: one table per realserver routes the unchanged packet to its MAC
  sysctls           ip_forward=1; send_redirects=0 (DR forwards out the way it came in);
                    TUN: accept_local=1 (the IPIP packet, rewritten before routing, has
                    the director's own address as its source: else a martian, dropped)

A stop holds the queued traffic for a grace period (`hold`): the queue rules stay, without
--queue-bypass and only until a deadline (`-m time --datestop`), so while no director
reads the queue its packets are dropped, not answered with RST by the local stack, and
TCP retransmits them; a director started within the grace period takes the rules over
and, with the saved table, every flow carries on.  After the deadline the rules match
nothing and the traffic goes on as if no director had been there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

from ..control import namespace_id
from ..core.engine import Director
from ..core.forwarding import DROUTE, MASQ, TUNNEL
from ..core.packet import PROTO_NAMES, int_to_ip
from .queues import Split

log = logging.getLogger("pyvs")
CHAINS = (("raw", "PREROUTING", "PYVS"), ("mangle", "PREROUTING", "PYVS-PRE"),
          ("mangle", "POSTROUTING", "PYVS-POST"))
RULE_PREF_BASE = 1000
LOCAL_PREF = 2000


class SetupError(Exception):
    pass


def state_path() -> Path:
    """One state file per network namespace (/run is shared between namespaces)."""
    return Path(f"/run/pyvs/netfilter-{namespace_id()}.json")


def _run(args: list[str], check: bool = True, stdin: str | None = None
         ) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, input=stdin)
    except FileNotFoundError:
        raise SetupError(f"{args[0]} is not installed") from None
    if check and proc.returncode:
        raise SetupError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


SPLIT_CHAINS = ("PYVS-QIN", "PYVS-QOUT")


def rules(director: Director, queue: list[str], until: str | None = None,
          split: Split | None = None) -> str:
    """The chains' contents for `director`'s services, as iptables-restore input that
    replaces them (--noflush leaves the rest of each table alone).  With a `split`,
    `queue` has "{queue}" for the number and the services jump to the split's chains."""
    raw, pre, post = [], [], []
    into, back_to = (queue, queue) if split is None else (["-j", "PYVS-QIN"],
                                                          ["-j", "PYVS-QOUT"])
    for svc in director.services:
        if svc.fwmark:
            continue        # marked by the user's own rules before mangle PYVS-PRE
        proto = PROTO_NAMES[svc.protocol].lower()
        match = f"-d {int_to_ip(svc.addr)}/32 -p {proto}"
        if svc.port:
            match += f" --dport {svc.port}"
        raw.append(f"-A PYVS {match} -j CT --notrack")
        pre.append(f"-A PYVS-PRE {match}{until or ''} {' '.join(into)}")
        for dest in svc.dests:
            if dest.fwd != MASQ:
                continue
            back = f"-s {int_to_ip(dest.addr)}/32 -p {proto}"
            if dest.port:
                back += f" --sport {dest.port}"
            raw.append(f"-A PYVS {back} -j CT --notrack")
            post.append(f"-A PYVS-POST {back}{until or ''} {' '.join(back_to)}")
    spread: list[str] = []
    if split is not None:
        spread = [*(f":{c} - [0:0]" for c in SPLIT_CHAINS),
                  *split.rules("PYVS-QIN", "-s", queue), *split.rules("PYVS-QOUT", "-d", queue)]
    return "\n".join(["*raw", ":PYVS - [0:0]", *raw, "COMMIT",
                      "*mangle", ":PYVS-PRE - [0:0]", ":PYVS-POST - [0:0]", *spread, *pre,
                      *post, "COMMIT", ""])


class Setup:
    """The kernel side of a live director: installed at start (or taken over from one
    that stopped), following the table, held or removed at stop."""

    def __init__(self, director: Director, queue: int = 0, fail_closed: bool = False,
                 split: Split | None = None) -> None:
        self.director = director
        self.queue = queue
        self.split = split
        self.fail_closed = fail_closed
        self.path = state_path()
        self.state: dict = {"undo": [], "pid": os.getpid()}
        self.owned = False              # True once this director has written its state
        self.routed: set[int] = set()
        self._last = ""

    def _queue(self, bypass: bool) -> list[str]:
        out = ["-j", "NFQUEUE", "--queue-num", "{queue}" if self.split else str(self.queue)]
        return out + ["--queue-bypass"] if bypass else out

    # -------------------------------------------------------------- bookkeeping
    def _save(self) -> None:
        self.owned = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.path)

    def _record(self, undo: list[str] | dict) -> None:
        self.state["undo"].append(undo)
        self._save()

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

    # -------------------------------------------------------------- start
    def apply(self) -> str:
        """Install, or take over what a stopped (or dead) director left; says which."""
        taken = self._take_over()
        if taken is None:
            for table, hook, chain in CHAINS:
                self._do(["iptables", "-t", table, "-N", chain],
                         ["iptables", "-t", table, "-X", chain])
                self._do(["iptables", "-t", table, "-F", chain],
                         ["iptables", "-t", table, "-F", chain])
                self._do(["iptables", "-t", table, "-A", hook, "-j", chain],
                         ["iptables", "-t", table, "-D", hook, "-j", chain])
            self._sysctl("net.ipv4.ip_forward", "1")
        if self.split is not None:
            self._own_split_chains()
        self.update()
        return taken or "installed"

    def _take_over(self) -> str | None:
        if not self.path.exists():
            return None
        try:
            old = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise SetupError(f"{self.path}: unreadable ({exc}); run `pyvs cleanup`") from None
        pid = int(old.get("pid", 0))
        if pid and pid != os.getpid() and alive(pid):
            raise SetupError(f"a director (pid {pid}) runs in this network namespace "
                             f"({self.path}); stop it first")
        self.state = {"undo": old.get("undo", []), "pid": os.getpid()}
        self._save()
        held = old.get("held_until")
        if held:
            until = time.strftime("%H:%M:%S", time.localtime(held))
            how = (f"held by a director that stopped, until {until}" if held > time.time()
                   else "of a director that stopped (the hold lapsed)")
        else:
            how = f"left by director pid {pid}, which died (no clean stop)"
        log.info("taking over the rules %s", how)
        return f"took over the rules {how}"

    def _own_split_chains(self) -> None:
        """The split's chains, created by the first rules transaction: recorded so that
        undo flushes the chains that jump to them, then removes them."""
        steps = [json.dumps(step) for step in self.state["undo"]]
        for chain in SPLIT_CHAINS:
            gone = ["iptables", "-t", "mangle", "-X", chain]
            if json.dumps(gone) in steps:
                continue
            self._record(gone)
            self._record(["iptables", "-t", "mangle", "-F", chain])
            for user in ("PYVS-PRE", "PYVS-POST"):
                self._record(["iptables", "-t", "mangle", "-F", user])

    # -------------------------------------------------------------- following the table
    def update(self) -> None:
        """Rewrite the chains (one transaction) and add routes for new Route marks."""
        text = rules(self.director, self._queue(not self.fail_closed), split=self.split)
        route_dests = {d.mark: d.addr for svc in self.director.services
                       for d in svc.dests if d.fwd == DROUTE}
        if set(route_dests) - self.routed:
            self._routes({m: a for m, a in route_dests.items() if m not in self.routed})
        if any(d.fwd == TUNNEL for svc in self.director.services for d in svc.dests):
            self._sysctl("net.ipv4.conf.all.accept_local", "1")
        if text != self._last:
            _run(["iptables-restore", "--noflush"], stdin=text)
            self._last = text

    def _routes(self, route_dests: dict[int, int]) -> None:
        if not self.routed:
            for name in sorted(os.listdir("/proc/sys/net/ipv4/conf")):
                self._sysctl(f"net.ipv4.conf.{name}.send_redirects", "0")
            rule_list = _run(["ip", "rule", "show"], check=False).stdout
            if f"{LOCAL_PREF}:" not in rule_list:
                # a VIP local on the director, now or later (keepalived's VRRP adds it when
                # this director becomes master): the local table must come after the marks
                self._do(["ip", "rule", "add", "pref", str(LOCAL_PREF), "lookup", "local"],
                         ["ip", "rule", "del", "pref", str(LOCAL_PREF), "lookup", "local"])
                self._do(["ip", "rule", "del", "pref", "0", "lookup", "local"],
                         ["ip", "rule", "add", "pref", "0", "lookup", "local"])
                log.info("moved the local routing rule after the fwmark rules (for a local "
                         "VIP)")
        for mark, addr in sorted(route_dests.items()):
            pref = str(RULE_PREF_BASE + mark % 1000)
            if f"{pref}:" not in _run(["ip", "rule", "show"], check=False).stdout:
                self._do(["ip", "rule", "add", "pref", pref, "fwmark", str(mark), "lookup",
                          str(mark)],
                         ["ip", "rule", "del", "pref", pref, "fwmark", str(mark), "lookup",
                          str(mark)])
            self._do(["ip", "route", "replace", "default", "via", int_to_ip(addr), "table",
                      str(mark)], ["ip", "route", "flush", "table", str(mark)])
            self.routed.add(mark)
            log.info("DR: mark %d -> table %d -> via %s", mark, mark, int_to_ip(addr))

    # -------------------------------------------------------------- stop
    def hold(self, grace: float) -> None:
        """Stop with the queued traffic held (dropped, not reset) for `grace` seconds, for
        a director that starts again to take over; then the rules lapse."""
        until = time.time() + grace
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(until))
        _run(["iptables-restore", "--noflush"],
             stdin=rules(self.director, self._queue(False), f" -m time --datestop {stamp}",
                         self.split))
        self.state["held_until"] = until
        self.state["pid"] = 0
        self._save()
        log.info("holding the queued traffic until %s UTC for a restart "
                 "(pyvs cleanup releases it)", stamp)


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
