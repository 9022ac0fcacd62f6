"""Health checking as keepalived's checker process does it, sans I/O: check results in,
control-plane commands out.

keepalived's semantics, from its source (keepalived/check/):

* a checker (check_tcp.c tcp_epilog, check_http.c epilog/timeout_epilog, check_misc.c
  misc_check_child_thread) runs every `delay_loop`; a failure of a checker that is up is
  retried `retry` times, `delay_before_retry` apart, and the checker goes down at the
  (retry + 1)-th consecutive failure; before its first result the checker counts as having
  used its retries (check_data.c validate_check_config: retry_it = retry), so a failing
  first check takes it down at once; one success brings a TCP or MISC checker back, while
  HTTP_GET checks its urls one per `delay_loop` and, after a failure, needs the failed url
  and then a whole pass of the urls (two successes with one url);
* a realserver is alive while none of its checkers is down (ipwrapper.c
  update_svr_checker_state, num_failed_checkers); going down removes it from every
  service of its virtual server, or sets its weight to 0 with inhibit_on_failure
  (ipvswrapper.c ipvs_cmd); `alpha` starts its checkers down, so it only enters the table
  once a check passes (with inhibit_on_failure it enters at weight 0);
* a virtual server keeps a quorum state: the sum of the alive realservers' weights
  against `quorum` with `hysteresis` (gained at >= quorum + hysteresis, lost below
  quorum - hysteresis or at 0); while the quorum is lost its sorry server replaces every
  alive realserver (ipwrapper.c update_quorum_state, perform_quorum_state);
* MISC_CHECK with misc_dynamic: exit 0 or 2..255 is a success, and exit code N sets the
  weight to N - 2 (the effective weight is the configured one plus each checker's offset).

A driver (the live checkers in pyvs.drivers.health, the simulator) asks :meth:`Monitor.due`
which checks to run at `now` (each a :class:`Probe`: kind, address, port, timeout, url or
command), performs them, and feeds each result back with :meth:`Monitor.result`, which
returns the commands to apply (pyvs.core.commands AddDest/EditDest/DelDest) and the
transitions to log and count.  It sleeps until :meth:`Monitor.next_timer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from . import commands as C
from .limits import MAX_WEIGHT
from .packet import int_to_ip

TCP_CHECK: Final = "TCP_CHECK"
HTTP_GET: Final = "HTTP_GET"
MISC_CHECK: Final = "MISC_CHECK"


@dataclass(frozen=True)
class CheckKind:
    name: str
    retry: int                  # checker->default_retry (check_api.c queue_checker; MISC 0)
    delay_before_retry: float   # default_delay_before_retry (HTTP_GET 3 s, else 1 s)
    connects: bool              # has the connection options (connect_ip, bindto, ...)


KINDS: Final = {k.name: k for k in (
    CheckKind(TCP_CHECK, 1, 1.0, True),
    CheckKind(HTTP_GET, 1, 3.0, True),
    CheckKind(MISC_CHECK, 0, 1.0, False),
)}
DELAY_LOOP: Final = 60.0            # KEEPALIVED_DEFAULT_DELAY
CONNECT_TIMEOUT: Final = 5.0        # alloc_vs: connection_to = 5 s
BOOTSTRAP_DELAY: Final = 1.0        # lib/scheduler.h: the first check is 1 s after start
STATUS_DEFAULT: Final = ((200, 299),)   # HTTP_DEFAULT_STATUS_CODE_MIN..MAX
HTTP_PROTOCOLS: Final = ("1.0", "1.0C", "1.1")
MISC_TERM_GRACE: Final = 2.0        # a timed-out script gets SIGTERM, then SIGKILL 2 s later
USER_AGENT: Final = "KeepAliveClient"


@dataclass(frozen=True)
class Url:
    """One url of an HTTP_GET: the status codes it accepts and the optional MD5 of its
    body (lowercase hex)."""

    path: str
    status: tuple[tuple[int, int], ...] = STATUS_DEFAULT
    digest: str | None = None
    virtualhost: str | None = None


@dataclass(frozen=True)
class Check:
    """One checker of a realserver with every parameter resolved (keepalived takes each
    from the checker, else the realserver, else the virtual server, else the default)."""

    kind: str
    delay_loop: float = DELAY_LOOP
    retry: int = 1
    delay_before_retry: float = 1.0
    warmup: float = DELAY_LOOP        # the first check is at 1 s + random(0..warmup)
    alpha: bool = False
    connect_ip: int | None = None     # None: the realserver's address
    connect_port: int | None = None   # None: the realserver's port
    bindto: int | None = None
    bind_port: int | None = None
    fwmark: int = 0                   # SO_MARK on the checker's socket
    connect_timeout: float = CONNECT_TIMEOUT
    urls: tuple[Url, ...] = ()
    http_protocol: str = "1.0"
    virtualhost: str | None = None    # Host: for urls without their own
    fast_recovery: bool = False
    misc_path: tuple[str, ...] = ()   # argv
    misc_timeout: float = DELAY_LOOP
    misc_dynamic: bool = False


@dataclass(frozen=True)
class Server:
    """A realserver (or a sorry server) of a pool: in the table as one dest per service of
    the pool, on `ports[i]` in `services[i]`."""

    addr: int
    ports: tuple[int, ...]
    fwd: int
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    inhibit: bool = False
    checks: tuple[Check, ...] = ()
    name_port: int = 0                # the port keepalived names it by (as configured)

    @property
    def name(self) -> str:
        return f"{int_to_ip(self.addr)}:{self.name_port}"


@dataclass(frozen=True)
class Pool:
    """What keepalived calls a virtual server: its services (one, or a
    virtual_server_group's), realservers, quorum and sorry server."""

    name: str
    services: tuple[C.ServiceKey, ...]
    servers: tuple[Server, ...]
    quorum: int = 1
    hysteresis: int = 0
    sorry: Server | None = None


@dataclass(frozen=True)
class Probe:
    """A check to perform now: the driver runs it and reports with Monitor.result()."""

    checker: int                      # which checker (index in Monitor.checkers)
    seq: int                          # which run of it
    kind: str
    addr: int
    port: int
    timeout: float                    # connect/read timeout, or the script's
    started: float
    check: Check
    url: Url | None = None

    @property
    def target(self) -> str:
        return f"{int_to_ip(self.addr)}:{self.port}"


@dataclass(frozen=True)
class Transition:
    """A state change, for the log and the metrics."""

    at: float
    pool: str
    subject: str                      # "rs 192.0.2.11:80", "sorry 192.0.2.200:80", "quorum"
    event: str                        # UP, DOWN, GAINED, LOST, WEIGHT, ADDED, REMOVED
    detail: str = ""
    action: str = ""

    def text(self) -> str:
        out = f"{self.subject} {self.event}"
        if self.detail:
            out += f" ({self.detail})"
        if self.action:
            out += f", {self.action}"
        return f"{out} [{self.pool}]"


@dataclass
class Update:
    commands: list[C.Command] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


def real_weight(weight: int) -> int:
    """check_data.h real_weight(): the effective weight clamped to what IPVS takes."""
    return max(0, min(MAX_WEIGHT, weight))


# ---------------------------------------------------------------------- judging results
def http_request(probe: Probe) -> bytes:
    """check_http.c http_request(): the GET keepalived sends."""
    check, url = probe.check, probe.url
    assert url is not None
    host = url.virtualhost or check.virtualhost or probe.target
    minor = 1 if check.http_protocol == "1.1" else 0
    close = "Connection: close\r\n" if check.http_protocol in ("1.0C", "1.1") else ""
    return (f"GET {url.path} HTTP/1.{minor}\r\nUser-Agent: {USER_AGENT}\r\n{close}"
            f"Host: {host}\r\n\r\n").encode()


def http_verdict(url: Url, status: int | None, body_md5: str | None) -> tuple[bool, str]:
    """check_http.c http_handle_response(): the status code, then the digest."""
    if status is None:
        return False, "no data received"
    if not any(lo <= status <= hi for lo, hi in url.status):
        return False, f"status {status}"
    if url.digest is not None and body_md5 != url.digest:
        return False, "MD5 digest mismatch"
    return True, f"status {status}"


def misc_verdict(check: Check, exit_status: int | None) -> tuple[bool, str]:
    """check_misc.c: exit 0 passes; with misc_dynamic 2..255 too; None = timed out."""
    if exit_status is None:
        return False, "timed out"
    ok = exit_status == 0 or (check.misc_dynamic and 2 <= exit_status <= 255)
    return ok, f"exit {exit_status}"


# ---------------------------------------------------------------------- state
class _ServerState:
    def __init__(self, pool: _PoolState, spec: Server, sorry: bool = False) -> None:
        self.pool = pool
        self.spec = spec
        self.sorry = sorry
        self.alive = False
        self.set = False                    # in the table (ipvs_cmd's rs->set)
        self.num_failed = 0
        self.effective = spec.weight        # iweight + every MISC checker's offset
        self.checkers: list[_Checker] = []

    @property
    def subject(self) -> str:
        return f"{'sorry' if self.sorry else 'rs'} {self.spec.name}"


class _Checker:
    def __init__(self, index: int, server: _ServerState, check: Check, first: float) -> None:
        self.index = index
        self.server = server
        self.check = check
        self.is_up = True
        self.has_run = False
        self.retry_it = check.retry         # "one failure is enough initially"
        self.url_it = 0
        self.failed_url: int | None = None
        self.last_exit: int = 0
        self.cur_weight = 0
        self.next_at: float | None = first
        self.seq = 0
        self.in_flight: Probe | None = None
        self.runs = 0
        self.failures = 0
        self.last_ok: bool | None = None
        self.last_detail = ""

    def target(self) -> tuple[int, int]:
        spec = self.server.spec
        c = self.check
        return (spec.addr if c.connect_ip is None else c.connect_ip,
                spec.name_port if c.connect_port is None else c.connect_port)


class _PoolState:
    def __init__(self, spec: Pool) -> None:
        self.spec = spec
        self.servers: list[_ServerState] = []
        self.sorry: _ServerState | None = None
        self.quorum_up = False

    def live_weight(self) -> int:
        """ipwrapper.c weigh_live_realservers()."""
        return sum(real_weight(s.effective) for s in self.servers if s.alive)


class Monitor:
    """Every checker of a configuration, its realservers and their virtual servers.

    The table is assumed to hold what :attr:`initial` built (pyvs.config's
    Config.commands() applies it): realservers without alpha at their weight, alpha ones
    absent (or at 0 with inhibit_on_failure), the sorry server if the quorum is short.
    `rand` spreads the first checks over `warmup` as keepalived does (random() * warmup);
    without it every first check is at start + 1 s.
    """

    def __init__(self, pools: list[Pool], start: float = 0.0,
                 rand: Callable[[], float] | None = None) -> None:
        self.pools: list[_PoolState] = []
        self.checkers: list[_Checker] = []
        self.transitions_total = 0
        self.checks_total = 0
        self.failures_total = 0
        out = Update()
        for spec in pools:
            pool = _PoolState(spec)
            self.pools.append(pool)
            for s in spec.servers:
                server = _ServerState(pool, s)
                pool.servers.append(server)
                for check in s.checks:
                    spread = check.warmup * rand() if rand is not None and check.warmup else 0.0
                    checker = _Checker(len(self.checkers), server, check,
                                       start + BOOTSTRAP_DELAY + spread)
                    self.checkers.append(checker)
                    server.checkers.append(checker)
                    if check.alpha:                 # validate_check_config()
                        checker.is_up = False
                        server.num_failed += 1
            if spec.sorry is not None:
                pool.sorry = _ServerState(pool, spec.sorry, sorry=True)
            self._init_pool(pool, start, out)
        self.initial = out.commands

    # ------------------------------------------------------------------ driver API
    def next_timer(self) -> float | None:
        """When the next check is due (None: nothing will ever be due)."""
        times = [c.next_at for c in self.checkers if c.next_at is not None]
        return min(times) if times else None

    def due(self, now: float) -> list[Probe]:
        """The checks to start at `now`; each stays in flight until its result."""
        ready = sorted((c for c in self.checkers if c.next_at is not None and c.next_at <= now),
                       key=lambda c: (c.next_at, c.index))
        probes = []
        for c in ready:
            c.next_at = None
            c.seq += 1
            addr, port = c.target()
            check = c.check
            url = check.urls[c.url_it] if check.kind == HTTP_GET else None
            timeout = check.misc_timeout if check.kind == MISC_CHECK else check.connect_timeout
            probe = Probe(c.index, c.seq, check.kind, addr, port, timeout, now, check, url)
            c.in_flight = probe
            probes.append(probe)
        return probes

    def result(self, probe: Probe, ok: bool, now: float, detail: str = "",
               exit_status: int | None = None) -> Update:
        """A check's outcome: the commands it makes and what changed.  A result for a
        probe that is no longer in flight is ignored."""
        out = Update()
        c = self.checkers[probe.checker]
        if c.in_flight is None or c.in_flight.seq != probe.seq:
            return out
        c.in_flight = None
        c.runs += 1
        self.checks_total += 1
        if not ok:
            c.failures += 1
            self.failures_total += 1
        c.last_ok, c.last_detail = ok, detail
        detail = f"{c.check.kind} {detail}".rstrip()
        if c.check.kind == HTTP_GET:
            self._http(c, ok, now, detail, out)
        elif c.check.kind == MISC_CHECK:
            self._misc(c, ok, now, detail, exit_status, probe.started, out)
        else:
            self._tcp(c, ok, now, detail, out)
        self.transitions_total += len(out.transitions)
        return out

    # ------------------------------------------------------------------ checkers
    def _tcp(self, c: _Checker, ok: bool, now: float, detail: str, out: Update) -> None:
        """check_tcp.c tcp_epilog()."""
        delay = c.check.delay_loop
        if ok or ((c.is_up or not c.has_run) and c.retry_it >= c.check.retry):
            c.retry_it = 0
            if ok and (not c.is_up or not c.has_run):
                self._checker_state(c, True, now, detail, out)
            elif not ok and (c.is_up or not c.has_run):
                self._checker_state(c, False, now, detail, out)
        elif c.is_up:
            delay = c.check.delay_before_retry
            c.retry_it += 1
        c.has_run = True
        c.next_at = now + delay

    def _http(self, c: _Checker, ok: bool, now: float, detail: str, out: Update) -> None:
        """check_http.c: http_handle_response() -> epilog(NEW); a failure ->
        timeout_epilog() -> epilog(RETRY) while up, epilog(FAILED) once down."""
        check = c.check
        if ok:
            method = "new"
        elif c.is_up or not c.has_run:
            c.has_run = True
            method = "retry"
        else:
            method = "failed"
        if method == "new":
            c.url_it = c.url_it + 1 if c.url_it + 1 < len(check.urls) else -1
            c.retry_it = 0
        elif method == "retry":
            c.retry_it += 1
        if method == "new" and c.url_it == -1 and c.failed_url is None:
            if not c.is_up or not c.has_run:
                self._checker_state(c, True, now, detail, out)
                c.has_run = True
            c.url_it = 0
            c.retry_it = 0
        elif method == "retry" and c.retry_it > check.retry:
            if c.is_up or not c.has_run:
                self._checker_state(c, False, now, detail, out)
            c.failed_url = c.url_it
        elif method == "new" and c.failed_url is not None:
            c.failed_url = None             # the failed url passed: check them all again
            c.url_it = 0
            c.retry_it = 0
        if method == "new":
            delay = check.delay_loop
            if not c.has_run:
                c.retry_it = check.retry
        elif c.failed_url is not None:
            delay = max(check.delay_before_retry, check.delay_loop)
        else:
            delay = check.delay_before_retry
        if check.fast_recovery and (not c.has_run or (not c.is_up and c.failed_url is None)):
            delay = 0.0
        c.next_at = now + delay

    def _misc(self, c: _Checker, ok: bool, now: float, detail: str, exit_status: int | None,
              started: float, out: Update) -> None:
        """check_misc.c misc_check_child_thread(); the next run is timed from the start
        of this one."""
        server = c.server
        success = False
        failed = False
        if exit_status is not None:
            if ok:
                if exit_status != c.last_exit:
                    weight = server.effective - c.cur_weight
                    c.cur_weight = exit_status - 2 - server.spec.weight if exit_status else 0
                    self._set_weight(server, weight + c.cur_weight, now, detail, out)
                    c.last_exit = exit_status
                success = not c.is_up or not c.has_run
                c.retry_it = 0
            elif c.is_up or not c.has_run:
                if c.retry_it < c.check.retry:
                    c.retry_it += 1
                else:
                    c.retry_it = 0
                    server.effective -= c.cur_weight
                    c.cur_weight = 0
                    c.last_exit = exit_status
                    failed = True
            else:
                c.last_exit = exit_status
        elif c.is_up or not c.has_run:
            # killed (timed out): a failure; keepalived leaves the dynamic offset in the
            # effective weight here (only cur_weight is cleared), and so does pyvs
            if c.retry_it < c.check.retry:
                c.retry_it += 1
            else:
                c.retry_it = 0
                failed = True
        if success or failed:
            self._checker_state(c, success, now, detail, out)
            if failed:
                c.cur_weight = 0
        delay = c.check.delay_before_retry if c.retry_it else c.check.delay_loop
        c.next_at = max(started + delay, now + 1e-6)
        c.has_run = True

    # ------------------------------------------------------------------ ipwrapper.c
    def _checker_state(self, c: _Checker, alive: bool, now: float, detail: str,
                       out: Update) -> None:
        """update_svr_checker_state()."""
        if c.is_up == alive:
            c.has_run = True
            return
        c.has_run = True
        server = c.server
        at = len(out.transitions)       # the quorum changes it makes are listed after it
        if alive and server.num_failed <= 1:
            action = self._server_state(server, True, now, out)
        elif not alive and server.num_failed == 0:
            action = self._server_state(server, False, now, out)
        elif not alive:
            action = "already down (another check failed)"
        else:
            action = f"still down ({server.num_failed - 1} other check(s) failing)"
        c.is_up = alive
        server.num_failed += -1 if alive else 1
        out.transitions.insert(at, Transition(now, server.pool.spec.name, server.subject,
                                              "UP" if alive else "DOWN", detail, action))

    def _server_state(self, server: _ServerState, alive: bool, now: float,
                      out: Update) -> str:
        """perform_svr_state(): the change is made only while the quorum is up or no
        sorry server stands in."""
        pool = server.pool
        if server.alive == alive:
            return ""
        action = "sorry server in service: table unchanged"
        if pool.quorum_up or pool.sorry is None or not pool.sorry.alive:
            action = self._ipvs(server, "add" if alive else "del", out)
        server.alive = alive
        self._quorum(pool, now, False, out)
        return action

    def _set_weight(self, server: _ServerState, weight: int, now: float, detail: str,
                    out: Update) -> None:
        """update_svr_wgt()."""
        pool = server.pool
        new, old = real_weight(weight), real_weight(server.effective)
        server.effective = weight
        if new == old:
            return
        action = ""
        if server.set and server.alive and (pool.quorum_up or pool.sorry is None
                                            or not pool.sorry.alive):
            action = self._ipvs(server, "edit", out)
        out.transitions.append(Transition(now, pool.spec.name, server.subject, "WEIGHT",
                                          f"{detail}: {old} -> {new}", action))
        self._quorum(pool, now, False, out)

    def _quorum(self, pool: _PoolState, now: float, init: bool, out: Update) -> None:
        """update_quorum_state()."""
        spec = pool.spec
        weight = pool.live_weight()
        threshold = spec.quorum + (-spec.hysteresis if pool.quorum_up else spec.hysteresis)
        text = f"{weight} of quorum {spec.quorum}"
        if spec.hysteresis:
            text += f" (hysteresis {spec.hysteresis})"
        sorry = pool.sorry
        if not pool.quorum_up and weight >= threshold:
            pool.quorum_up = True
            out.transitions.append(Transition(now, spec.name, "quorum", "GAINED", text))
            if sorry is not None and sorry.alive:
                action = self._ipvs(sorry, "del", out)
                sorry.alive = False
                out.transitions.append(Transition(now, spec.name, sorry.subject, "REMOVED",
                                                  "quorum gained", action))
                self._whole_pool(pool, True, out)
        elif (pool.quorum_up and (not weight or weight < threshold)) or (
                init and not pool.quorum_up and sorry is not None and not sorry.alive):
            pool.quorum_up = False
            out.transitions.append(Transition(now, spec.name, "quorum", "LOST", text))
            if sorry is not None and not sorry.alive:
                self._whole_pool(pool, False, out)
                action = self._ipvs(sorry, "add", out)
                sorry.alive = True
                out.transitions.append(Transition(now, spec.name, sorry.subject, "ADDED",
                                                  "quorum lost", action))

    def _whole_pool(self, pool: _PoolState, add: bool, out: Update) -> None:
        """perform_quorum_state(): every alive realserver in or out."""
        for server in pool.servers:
            if server.alive:
                self._ipvs(server, "add" if add else "del", out)

    def _ipvs(self, server: _ServerState, op: str, out: Update) -> str:
        """ipvswrapper.c ipvs_cmd(): inhibit_on_failure turns a removal into weight 0 and
        the re-adding into an edit; returns what was done, for the log."""
        spec = server.spec
        weight = real_weight(server.effective)
        if op == "del" and spec.inhibit:
            op, weight, text = "edit", 0, "weight 0 (inhibit_on_failure)"
        elif op == "add" and spec.inhibit and server.set:
            op, text = "edit", f"weight {weight} (inhibit_on_failure)"
        elif op == "add" and not server.set:
            server.set = True
            if spec.inhibit and server.num_failed:
                weight = 0
            text = f"added, weight {weight}"
        elif op == "del":
            server.set = False
            text = "removed"
        else:
            text = f"weight {weight}"
        for key, port in zip(server.pool.spec.services, spec.ports):
            if op == "del":
                out.commands.append(C.DelDest(key, spec.addr, port))
            else:
                cls = C.EditDest if op == "edit" else C.AddDest
                out.commands.append(cls(key, spec.addr, port, spec.fwd, weight,
                                        spec.u_threshold, spec.l_threshold))
        return text

    def _init_pool(self, pool: _PoolState, now: float, out: Update) -> None:
        """init_service_vs(): realservers without failed checkers in, alpha ones out (in
        at weight 0 with inhibit_on_failure), then the quorum, then an inhibited sorry
        server at weight 0."""
        for server in pool.servers:
            if (not server.num_failed and not server.alive) or (server.spec.inhibit
                                                                and not server.set):
                self._ipvs(server, "add", out)
                if not server.num_failed:
                    server.alive = True
        self._quorum(pool, now, True, out)
        sorry = pool.sorry
        if sorry is not None and sorry.spec.inhibit and not sorry.set:
            sorry.num_failed = 1
            self._ipvs(sorry, "add", out)
            sorry.num_failed = 0

    # ------------------------------------------------------------------ views
    def status(self) -> dict[str, Any]:
        """Plain data for snapshots, logs and metrics."""
        pools = []
        for pool in self.pools:
            servers = []
            for s in pool.servers:
                servers.append({
                    "address": s.spec.name, "alive": s.alive, "in_table": s.set,
                    "weight": real_weight(s.effective), "inhibit": s.spec.inhibit,
                    "checks": [{"kind": c.check.kind, "target": "%s:%d" % (
                        int_to_ip(c.target()[0]), c.target()[1]), "up": c.is_up,
                        "runs": c.runs, "failures": c.failures, "last_ok": c.last_ok,
                        "last": c.last_detail, "retries_left": max(0, c.check.retry
                                                                   - c.retry_it)}
                        for c in s.checkers]})
            sorry = pool.sorry
            pools.append({
                "name": pool.spec.name, "quorum": pool.spec.quorum,
                "hysteresis": pool.spec.hysteresis, "quorum_up": pool.quorum_up,
                "live_weight": pool.live_weight(), "realservers": servers,
                "sorry_server": None if sorry is None else {
                    "address": sorry.spec.name, "active": sorry.alive, "in_table": sorry.set}})
        return {"pools": pools, "checks_total": self.checks_total,
                "failures_total": self.failures_total,
                "transitions_total": self.transitions_total}
