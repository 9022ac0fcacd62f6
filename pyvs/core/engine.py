"""The director: a sans-I/O IPVS engine (``ip_vs_core.c`` + ``ip_vs_conn.c`` + ``ip_vs_ctl.c``).

Drivers hand it packet bytes and the current time; it returns a :class:`Verdict`.  There are
no sockets, threads, sleeps or clocks in here: every call takes ``now`` (seconds, any epoch,
never decreasing).  Timers (connection expiry, the 2-second rate estimator) are exposed as
:meth:`Director.next_timer` / :meth:`Director.handle_timers`; :meth:`receive` also runs any
timer already due, so a driver that forgets cannot see a connection the kernel would have
dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from . import commands as C
from . import states as S
from .commands import ConfigError
from .conn import (
    CONN_KEY,
    INF,
    INVALID_PORT,
    UDP_KEY_PREFIX,
    Conn,
    MasqRewrite,
    Template,
    TimerWheel,
    conn_key,
    reply_key,
)
from .defense import (
    DEFENSE_PERIOD,
    ENTRY_BYTES,
    TODROP_RATE,
    Defense,
    availmem,
)
from .forwarding import DROUTE, MASQ, TUNNEL
from .limits import DEFAULT_SCHEDULER, NETMASK_ALL
from .packet import (
    IPIP_HEADER,
    IPPROTO_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_MIN_MTU,
    addr_bytes,
    icmp_frag_needed,
    icmp_port_unreachable,
    ipip_encapsulate,
    masq,
    port_bytes,
)
from .schedulers import SCHEDULERS, make_scheduler
from .service import (
    FTPDATA,
    FTPPORT,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    Dest,
    Service,
)
from .stats import ESTIMATOR_PERIOD, Counters, Estimator
from .sync import SyncBackup, SyncMaster, start_daemon, stop_daemon
from .sysctls import Sysctls, change_problem
from .verdict import (
    ACCEPT,
    DROP,
    R_BACKUP_ONLY,
    R_DEST_UNAVAILABLE,
    R_DROP_PACKET,
    R_FORWARD,
    R_FRAG_NEEDED,
    R_FRAGMENT,
    R_MALFORMED,
    R_NO_CONNECTION,
    R_NO_DESTINATION,
    R_NO_MEMORY,
    R_NO_SERVICE,
    R_NOT_IPV4,
    R_NOT_SCHEDULED,
    R_NOT_TCP_UDP,
    R_REUSE_CONNTRACK,
    R_TUNNEL_MTU,
    Verdict,
    accept,
    drop,
)
from .wheel import HZ, jiffies, wheel_fires

IN: Final = 0     # client -> virtual service (ip_vs_in_hook)
OUT: Final = 1    # realserver -> client (ip_vs_out_hook)

EXPIRE_LATER: Final = 60.0          # a template that still controls connections waits 60 s more
TRASH_PERIOD: Final = 120 * HZ      # IP_VS_DEST_TRASH_PERIOD (jiffies): idle removed realservers
                                    # are freed this long after a trash run found them idle; the
                                    # trash runs every half of it while it holds any
UNPRIVILEGED_PORT_START: Final = 1024

_ACCEPT_FORWARD: Final = accept(R_FORWARD)
_ACCEPT: Final = {r: accept(r) for r in (R_NOT_IPV4, R_NOT_TCP_UDP, R_FRAGMENT, R_NO_SERVICE,
                                  R_NO_CONNECTION, R_NOT_SCHEDULED, R_BACKUP_ONLY)}
_DROP: Final = {r: drop(r) for r in (R_MALFORMED, R_DEST_UNAVAILABLE, R_REUSE_CONNTRACK,
                                     R_NO_MEMORY, R_DROP_PACKET, R_TUNNEL_MTU)}
_DROP_FRAG_NEEDED: Final = drop(R_FRAG_NEEDED)       # a replay's: no ICMP built
DEFAULT_ROUTE_MTU: Final = 1500     # a route's MTU until the driver says otherwise (Ethernet)


@dataclass
class Timeouts:
    """`ipvsadm --set tcp tcpfin udp`."""

    tcp: int = S.TCP_TIMEOUTS[S.ESTABLISHED]
    tcpfin: int = S.TCP_TIMEOUTS[S.FIN_WAIT]
    udp: int = S.UDP_TIMEOUT


class Director:
    """One network namespace's IPVS: services, connection table, timers, counters."""

    def __init__(self, kernel: str = "modern", sysctls: Sysctls | None = None,
                 timeouts: Timeouts | None = None, tunnel_source: int | None = None,
                 route_mark_base: int = 1000, start: float = 0.0,
                 memory_limit: int | None = None, seed: int = 0,
                 route_mtu: int = DEFAULT_ROUTE_MTU) -> None:
        if kernel not in S.PROFILES:
            raise ConfigError(f"unknown kernel profile {kernel!r}")
        self.profile = S.PROFILES[kernel]
        self.sysctls = sysctls or Sysctls()
        self.tunnel_source = tunnel_source
        # the MTU of the route to each realserver (dst_mtu() of the kernel's cached route,
        # which a live driver reads and hands in with SetRouteMtu); route_mtu for the rest
        self.route_mtu = route_mtu
        self._route_mtus: dict[int, int] = {}
        self.route_mark_base = route_mark_base
        self.services: list[Service] = []
        self._svc_by_addr: dict[tuple[int, int, int], Service] = {}
        self._svc_by_mark: dict[int, Service] = {}
        self._ftp_services = 0
        self._null_services = 0
        self._in: dict[bytes, Conn] = {}         # client-side keys (conn_key)
        self._out: dict[bytes, Conn] = {}        # Masq replies: realserver -> client
        self._templates: dict[tuple, Template] = {}
        self._template_list: dict[Conn, None] = {}     # every live template, in creation order
        self._timers = TimerWheel()
        self._masq: dict[tuple[int, int, int, int], MasqRewrite] = {}
        self._trash: dict[tuple, Dest] = {}
        self._trash_run: int | None = None      # the trash timer's next run (jiffy)
        self._route_marks: dict[int, int] = {}
        self._tunnel_id = 0
        self.total_base = Counters()
        self.total_est = Estimator()
        self.drops: dict[str, int] = {}
        # connections by state, kept as they change: TCP states by index, UDP last
        self.state_counts: list[int] = [0] * (S.N_TCP_STATES + 1)
        self._build_packets = True        # False within a receive(headers_only=True)
        # Observer for drivers that track entries one by one (the simulator's truth
        # comparison): called with (conn, now) after a connection (not a template) is
        # created, changes state, or leaves the table (conn.alive is then False).
        self.watch: Callable[[Conn, float], None] | None = None
        # A master sync daemon (pyvs.core.sync.SyncMaster.hook): called with (entry, now,
        # True) after each inbound packet, as ip_vs_in_hook() calls ip_vs_sync_conn(), and
        # with (template, now, False) when a template still in use is put off 60 s.
        self.sync: Callable[[Conn, float, bool], None] | None = None
        # The sync daemons (ipvsadm --start-daemon), control-plane state like the services:
        # started and stopped by Director.apply, their sockets the drivers' business.
        self.sync_master: SyncMaster | None = None
        self.sync_backup: SyncBackup | None = None
        # The network interfaces a daemon may be started on, and their MTUs, as the driver
        # last saw them (the kernel looks the device up at start); None: not known (replay,
        # simulation), every name taken, with MTU 1500.
        self.links: dict[str, int] | None = None
        # sysctl_backup_only(): backup_only=1 while a backup daemon runs turns IPVS off
        self.passive = False
        self.start = start
        self._next_est = start + ESTIMATOR_PERIOD
        self._due = self._next_est
        # the defenses: a memory budget (bytes; None: unbounded) and what they decided
        self.memory_limit = memory_limit
        self.defense = Defense(seed)
        self._next_defense = start + DEFENSE_PERIOD
        self.timeouts = Timeouts()
        self._tcp_timeouts = [float(t) for t in S.TCP_TIMEOUTS]
        self._udp_timeout = float(S.UDP_TIMEOUT)
        if timeouts is not None:
            self.set_timeouts(timeouts.tcp, timeouts.tcpfin, timeouts.udp)
        self._update_defense()

    # ------------------------------------------------------------------ configuration
    def _select_tables(self) -> None:
        """tcp_timeout_change(): tcp_states_dos while secure_tcp reads 2 or 3 (3: always;
        1 becomes 2 while memory is short, and back)."""
        table = self.profile.dos if self.sysctls.secure_tcp > 1 else self.profile.normal
        # rows indexed by FLAG_ROW; index -1 (no RST/SYN/FIN/ACK) is an all-CLOSE row
        close = (S.CLOSE,) * S.N_TCP_STATES
        self._rows_input: S.Section = (*table[S.INPUT], close)
        self._rows_output: S.Section = (*table[S.OUTPUT], close)
        self._rows_input_only: S.Section = (*table[S.INPUT_ONLY], close)

    # ------------------------------------------------------------------ the control plane
    def apply(self, cmd: C.Command, now: float) -> None:
        """Make one control-plane change at `now`, as the kernel does; ConfigError with
        libipvs's text (or ipvsadm's, for values it never sends) when refused."""
        if now >= self._due:
            self.handle_timers(now)
        problem = C.check(cmd)
        if problem:
            raise ConfigError(problem)
        if isinstance(cmd, C.SETTINGS):
            self._apply_setting(cmd, now)
        elif isinstance(cmd, C.Flush):
            self.clear(now)
        elif isinstance(cmd, C.EditService):
            k = cmd.service
            self.edit_service(self._service(k, "No such service"), cmd.scheduler, cmd.flags,
                              cmd.timeout, cmd.netmask, now)
        elif isinstance(cmd, C.AddService):
            k = cmd.service
            self.add_service(k.protocol, k.addr, k.port, k.fwmark, cmd.scheduler, cmd.flags,
                             cmd.timeout, cmd.netmask, now)
        elif isinstance(cmd, C.DelService):
            self.del_service(self._service(cmd.service, "No such service"), now)
        elif isinstance(cmd, C.Zero):
            self.zero(None if cmd.service is None
                      else self._service(cmd.service, "No such service"))
        elif isinstance(cmd, C.EditDest):
            svc = self._service(cmd.service, "Service not defined")
            self.edit_dest(self._dest(svc, cmd.addr, cmd.port), cmd.fwd, cmd.weight,
                           cmd.u_threshold, cmd.l_threshold)
        elif isinstance(cmd, C.AddDest):
            svc = self._service(cmd.service, "Service not defined")
            self.add_dest(svc, cmd.addr, cmd.port, cmd.fwd, cmd.weight, cmd.u_threshold,
                          cmd.l_threshold, now)
        elif isinstance(cmd, C.DelDest):
            svc = self._service(cmd.service, "Service not defined")
            self.del_dest(self._dest(svc, cmd.addr, cmd.port), now)
        else:
            raise ConfigError(f"not a command: {cmd!r}")

    def _apply_setting(self, cmd: C.Command, now: float) -> None:
        """The commands that change no service: timeouts, sysctls, the sync daemons."""
        if isinstance(cmd, C.SetTimeouts):
            self.set_timeouts(cmd.tcp, cmd.tcpfin, cmd.udp)
        elif isinstance(cmd, C.SetSysctl):
            self.set_sysctl(cmd.name, cmd.value)
        elif isinstance(cmd, C.SetRouteMtu):
            self.set_route_mtu(cmd.addr, cmd.mtu)
        elif isinstance(cmd, C.SetSyncThreshold):
            self.sysctls.sync_threshold, self.sysctls.sync_period = cmd.threshold, cmd.period
        elif isinstance(cmd, C.StartDaemon):
            start_daemon(self, cmd, now)
        elif isinstance(cmd, C.StopDaemon):
            stop_daemon(self, cmd.state)
        self._update_passive()

    def _update_passive(self) -> None:
        self.passive = bool(self.sysctls.backup_only) and self.sync_backup is not None

    def _service(self, key: C.ServiceKey, missing: str) -> Service:
        svc = self.find_service(key.protocol, key.addr, key.port, key.fwmark)
        if svc is None:
            raise ConfigError(missing)
        return svc

    @staticmethod
    def _dest(svc: Service, addr: int, port: int) -> Dest:
        dest = svc.find_dest(addr, port)
        if dest is None:
            raise ConfigError("No such destination")
        return dest

    def set_sysctl(self, name: str, value: int) -> None:
        """A write to /proc/sys/net/ipv4/vs/NAME."""
        problem = change_problem(self.sysctls, name, value)
        if problem:
            raise ConfigError(problem)
        setattr(self.sysctls, name, int(value))
        self._update_defense()            # proc_do_defense_mode(): at once
        self._update_passive()

    def set_route_mtu(self, addr: int, mtu: int) -> None:
        """The MTU of the route to realserver `addr` (0: of every route not given one)."""
        problem = C.check(C.SetRouteMtu(addr, mtu))
        if problem:
            raise ConfigError(problem)
        if addr:
            self._route_mtus[addr] = mtu
        else:
            self.route_mtu = mtu

    def route_mtu_to(self, addr: int) -> int:
        return self._route_mtus.get(addr, self.route_mtu)

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        """ip_vs_set_timeout(): 0 leaves a value unchanged; tcpfin is FIN_WAIT only.  An
        entry keeps the timeout it was armed with until its next packet re-arms it."""
        problem = C.check(C.SetTimeouts(tcp, tcpfin, udp))
        if problem:
            raise ConfigError(problem)
        if tcp:
            self.timeouts.tcp = tcp
            self._tcp_timeouts[S.ESTABLISHED] = float(tcp)
        if tcpfin:
            self.timeouts.tcpfin = tcpfin
            self._tcp_timeouts[S.FIN_WAIT] = float(tcpfin)
        if udp:
            self.timeouts.udp = udp
            self._udp_timeout = float(udp)

    def find_service(self, protocol: int, addr: int, port: int, fwmark: int = 0
                     ) -> Service | None:
        if fwmark:
            return self._svc_by_mark.get(fwmark)
        return self._svc_by_addr.get((protocol, addr, port))

    def add_service(self, protocol: int, addr: int = 0, port: int = 0, fwmark: int = 0,
                    scheduler: str = DEFAULT_SCHEDULER, flags: int = 0, timeout: int = 0,
                    netmask: int = NETMASK_ALL, now: float = 0.0) -> Service:
        if self.find_service(protocol, addr, port, fwmark) is not None:
            raise ConfigError("Service already exists")
        if scheduler not in SCHEDULERS:
            raise ConfigError("Scheduler or persistence engine not found")
        if fwmark:
            protocol = IPPROTO_TCP if protocol == IPPROTO_IP else protocol
        svc = Service(protocol, 0 if fwmark else addr, 0 if fwmark else port, fwmark,
                      scheduler, make_scheduler(scheduler), flags, timeout, netmask)
        svc.scheduler.init_service(svc, now)
        self.services.append(svc)
        if fwmark:
            self._svc_by_mark[fwmark] = svc
        else:
            self._svc_by_addr[(protocol, addr, port)] = svc
            if port == FTPPORT:
                self._ftp_services += 1
            if port == 0:
                self._null_services += 1
        return svc

    def edit_service(self, svc: Service, scheduler: str | None = None, flags: int | None = None,
                     timeout: int | None = None, netmask: int | None = None,
                     now: float = 0.0) -> None:
        if scheduler is not None and scheduler != svc.sched_name:
            if scheduler not in SCHEDULERS:
                raise ConfigError("Scheduler or persistence engine not found")
            svc.sched_name = scheduler
            svc.scheduler = make_scheduler(scheduler)
            svc.scheduler.init_service(svc, now)
        if flags is not None:
            svc.flags = flags
        if timeout is not None:
            svc.timeout = timeout
        if netmask is not None:
            svc.netmask = netmask

    def del_service(self, svc: Service, now: float = 0.0) -> None:
        """Realservers go to the trash; their connections live out their timers."""
        self.total_base.add(svc.live_counters())
        for dest in list(svc.dests):
            self._unlink_dest(svc, dest, now, notify_scheduler=False)
        self.services.remove(svc)
        if svc.fwmark:
            del self._svc_by_mark[svc.fwmark]
        else:
            del self._svc_by_addr[(svc.protocol, svc.addr, svc.port)]
            if svc.port == FTPPORT:
                self._ftp_services -= 1
            if svc.port == 0:
                self._null_services -= 1

    def clear(self, now: float = 0.0) -> None:
        """ipvsadm -C."""
        for svc in list(self.services):
            self.del_service(svc, now)

    def _trash_key(self, svc: Service, addr: int, port: int) -> tuple:
        return (svc.fwmark, svc.protocol, svc.addr, svc.port, addr, port)

    def add_dest(self, svc: Service, addr: int, port: int, fwd: int = DROUTE, weight: int = 1,
                 u_threshold: int = 0, l_threshold: int = 0, now: float = 0.0) -> Dest:
        if svc.find_dest(addr, port) is not None:
            raise ConfigError("Destination already exists")
        self._purge_trash(now)
        dest = self._trash.pop(self._trash_key(svc, addr, port), None)
        if dest is None:
            dest = Dest(svc, addr, port, fwd, weight, u_threshold, l_threshold)
        dest.svc = svc
        dest.available = True
        dest.idle_since = None
        self._update_dest(dest, fwd, weight, u_threshold, l_threshold)
        dest.svc_offset = dest.counters()
        svc.dests.insert(0, dest)          # list_add_rcu(): newest first
        svc.scheduler.add_dest(svc, dest)
        return dest

    def _update_dest(self, dest: Dest, fwd: int, weight: int, u_threshold: int,
                     l_threshold: int) -> None:
        """__ip_vs_update_dest()."""
        dest.fwd = fwd
        dest.noout = fwd != MASQ
        dest.weight = weight
        if weight > 0:
            dest.last_weight = weight
        if u_threshold == 0 or u_threshold > dest.u_threshold:
            dest.overload = False
        dest.u_threshold = u_threshold
        dest.l_threshold = l_threshold
        if fwd == DROUTE:
            mark = self._route_marks.get(dest.addr)
            if mark is None:
                mark = self.route_mark_base + len(self._route_marks) + 1
                self._route_marks[dest.addr] = mark
            dest.mark = mark
            dest.route_verdict = Verdict(ACCEPT, R_FORWARD, mark=mark)
        # A dest edited away from Route keeps its mark verdict: its existing Route entries
        # still go to its address (each entry copied the forwarding method at creation).

    def edit_dest(self, dest: Dest, fwd: int | None = None, weight: int | None = None,
                  u_threshold: int | None = None, l_threshold: int | None = None) -> None:
        """ip_vs_edit_dest(): takes effect at the next scheduling; entries keep their
        forwarding method (it was copied into each at its creation)."""
        self._update_dest(dest, dest.fwd if fwd is None else fwd,
                          dest.weight if weight is None else weight,
                          dest.u_threshold if u_threshold is None else u_threshold,
                          dest.l_threshold if l_threshold is None else l_threshold)
        dest.svc.scheduler.upd_dest(dest.svc, dest)

    def del_dest(self, dest: Dest, now: float = 0.0) -> None:
        self._unlink_dest(dest.svc, dest, now, notify_scheduler=True)

    def _unlink_dest(self, svc: Service, dest: Dest, now: float,
                     notify_scheduler: bool) -> None:
        index = svc.dests.index(dest)
        del svc.dests[index]
        live = dest.counters()
        off = dest.svc_offset
        svc.base.add(Counters(live.conns - off.conns, live.inpkts - off.inpkts,
                              live.outpkts - off.outpkts, live.inbytes - off.inbytes,
                              live.outbytes - off.outbytes))
        if notify_scheduler:
            svc.scheduler.del_dest(svc, dest, index)
        dest.available = False
        self._purge_trash(now)
        if not self._trash:                # __ip_vs_del_dest(): the timer starts anew
            j = jiffies(now)
            self._trash_run = wheel_fires(j + TRASH_PERIOD // 2, j)
        self._trash[self._trash_key(svc, dest.addr, dest.port)] = dest
        dest.idle_start = None
        dest.idle_since = None if self._dest_refs(dest) else now
        if self.sysctls.expire_nodest_conn and self.profile.nodest_flush:
            self._expire_nodest_conns(now)

    @staticmethod
    def _dest_refs(dest: Dest) -> int:
        return dest.activeconns + dest.inactconns + dest.persistconns

    def _purge_trash(self, now: float) -> None:
        """The trash runs due by `now` (ip_vs_dest_trash_expire()), worked out when the trash
        is next used: a run notes when it first finds a realserver idle (no entry holds
        it) and frees it at the first run a trash period after that, counters and all, so
        120-180 s after it went idle; runs follow each other by half a period while the
        trash holds anything.  Nothing but a re-add sees the trash, so nothing else needs
        the runs at their own time."""
        trash = self._trash
        while self._trash_run is not None and self._trash_run <= jiffies(now):
            run = self._trash_run
            for key, dest in list(trash.items()):
                if dest.idle_since is None or jiffies(dest.idle_since) > run:
                    continue                       # refcnt > 1: entries still hold it
                if dest.idle_start is None:
                    dest.idle_start = run
                elif run >= dest.idle_start + TRASH_PERIOD:
                    del trash[key]
            self._trash_run = wheel_fires(run + TRASH_PERIOD // 2, run) if trash else None

    def _expire_nodest_conns(self, now: float) -> None:
        """ip_vs_expire_nodest_conn_flush(): delete every entry of a removed realserver
        that controls nothing, templates included (they share the kernel's hash table),
        and the controller each deleted connection leaves empty, ASSURED or not (the walk
        deletes it after ip_vs_conn_del() of its last child)."""
        for cp in list(self._in.values()):
            dest = cp.dest
            if dest.available or cp.n_control:
                continue
            ct = cp.control
            self._expire(cp, now)
            if ct is not None and ct.alive and not ct.n_control:
                self._expire(ct, now)
        for tpl in list(self._template_list):
            if not tpl.dest.available and not tpl.n_control:
                self._expire(tpl, now)

    def zero(self, svc: Service | None = None) -> None:
        """ipvsadm -Z: zero a service (and its realservers) or everything."""
        targets = [svc] if svc is not None else list(self.services)
        for s in targets:
            s.est.zero()
            for d in s.dests:
                d.est.zero()
        if svc is None:
            self.total_est.zero()

    # ------------------------------------------------------------------ timers
    def next_timer(self) -> float | None:
        """When handle_timers() next has work (expiry, estimator or defense tick)."""
        return self._due

    def handle_timers(self, now: float) -> None:
        """Fire every timer due at or before `now`, each at its own exact time.

        Estimation reads traffic counters and expiry changes only connection counters,
        so running all estimator ticks first gives the same result as interleaving them."""
        while self._next_est <= now:
            if not self._estimate():
                # nothing moved and every average rests: the ticks up to `now` change
                # nothing either, so an idle span of any length costs one tick
                idle = int((now - self._next_est) // ESTIMATOR_PERIOD) + 1
                self._next_est += idle * ESTIMATOR_PERIOD
        if self._defending():
            self._defense_until(now)
        self._expire_until(now)
        due = self._next_est
        t = self._timers.next_time()
        if t is not None and t < due:
            due = t
        if self._defending() and self._next_defense < due:
            due = self._next_defense
        self._due = due

    def _expire_until(self, now: float) -> None:
        timers = self._timers
        cp = timers.pop_due(now)
        while cp is not None:
            self._expire(cp, cp.expires)
            cp = timers.pop_due(now)

    # ------------------------------------------------------------------ defenses
    def _defending(self) -> bool:
        """The defense timer has work: a memory budget, or drop_entry=3 (always on)."""
        return self.memory_limit is not None or self.sysctls.drop_entry == 3

    def _update_defense(self) -> None:
        """update_defense_level() now, against the entries in the table."""
        self.defense.update(self.sysctls, availmem(self.memory_limit, self.connection_count()))
        self._select_tables()

    def _defense_until(self, now: float) -> None:
        """The 1 s defense ticks due by `now`, each after the expiries before it.  Ticks
        that can change nothing are skipped: while no level changes and no entry is one
        drop_entry could touch, only an expiry, a packet or an entry's 60 s of quiet can
        change that (a tick's random draws then decide nothing)."""
        while self._next_defense <= now:
            t = self._next_defense
            self._expire_until(t)
            before = (self.defense.short, self.sysctls.secure_tcp)
            still_until = self._defense_tick(t)
            self._next_defense = t + DEFENSE_PERIOD
            if before != (self.defense.short, self.sysctls.secure_tcp):
                continue
            nxt = self._timers.next_time()
            target = min(now, still_until, INF if nxt is None else nxt)
            skip = int((target - self._next_defense) // DEFENSE_PERIOD)
            if skip > 0:
                self._next_defense += skip * DEFENSE_PERIOD

    def _defense_tick(self, now: float) -> float:
        """defense_work_handler(): update the levels; drop entries while dropentry is on.
        Returns until when further ticks cannot touch an entry (`now`: they can)."""
        self._update_defense()
        return self._random_dropentry(now) if self.defense.dropentry else INF

    def _random_dropentry(self, now: float) -> float:
        """ip_vs_random_dropentry(): 128 times (1/32 of the 4096 hash buckets) draw a
        random bucket, repeats allowed, and walk its entries newest first
        (Defense.scan()), deleting
        half-open TCP entries, quiet ones at todrop_entry()'s rate, never one that
        controls others.  Templates (4.19+): a one-packet service's at todrop_entry()'s
        rate, others at once unless ASSURED; 4.9-4.18 only the one-packet ones; before 4.9
        none.  Returns until when no entry can be touched (`now` if one can)."""
        defense = self.defense
        entries: list[Conn] = list(self._in.values())
        entries.extend(self._template_list)
        dropped = 0
        for chain in defense.scan(len(entries)):
            for i in chain:
                cp = entries[i]
                if not cp.alive or cp.n_control:
                    continue
                rated = self._drop_candidate(cp)
                if rated < 0 or rated > 0 and not defense.todrop_entry(
                        cp.in_pkts, now - (cp.expires - cp.timeout)):
                    continue
                self._drop_entry(cp, now)
                dropped += 1
        defense.entries_dropped += dropped
        return now if dropped else self._untouchable_until(now)

    def _untouchable_until(self, now: float) -> float:
        """Until when drop_entry can touch no entry: `now` if one is touchable already,
        else when the first rated entry has been quiet for 60 s (INF: never)."""
        until = INF
        for entries in (self._in.values(), self._template_list):
            for cp in entries:
                rated = self._drop_candidate(cp)
                if rated < 0:
                    continue
                quiet_from = cp.expires - cp.timeout
                if rated == 0 or now - quiet_from >= 60.0:
                    return now
                if quiet_from + 60.0 < until:
                    until = quiet_from + 60.0
        return until

    def _drop_candidate(self, cp: Conn) -> int:
        """How ip_vs_random_dropentry() treats an entry: -1 never dropped, 0 dropped when
        seen, 1 at todrop_entry()'s rate (which needs 1..8 inbound packets)."""
        if cp.n_control:
            return -1
        rated = 0 < cp.in_pkts < len(TODROP_RATE)
        if cp.template:
            profile = self.profile
            if profile.drop_ops_templates and cp.dest.svc.flags & SVC_F_ONEPACKET:
                return 1 if rated else -1
            return 0 if profile.assure_templates and not cp.state & S.TEMPLATE_ASSURED else -1
        if cp.protocol == IPPROTO_TCP:
            if cp.state == S.SYN_RECV or cp.state == S.SYNACK:
                return 0
            if cp.state != S.ESTABLISHED:
                return -1
        return 1 if rated else -1

    def _drop_entry(self, cp: Conn, now: float) -> None:
        """What drop_entry does to an entry it picked.  4.19+: ip_vs_conn_del(), whose
        timeout 0 makes ip_vs_conn_expire() delete the controller it leaves empty unless
        that is an ASSURED template.  Before: ip_vs_conn_expire_now() of the entry and then
        of its controller; both timers fire at once, the controller's first (the timer
        wheel runs a bucket newest first), so a controller still counting the entry is put
        off for 60 s (expire_later)."""
        ct = cp.control
        if not self.profile.assure_templates:
            if ct is not None:
                self._expire(ct, now)
            self._expire(cp, now)
            return
        self._expire(cp, now)
        if (ct is not None and ct.alive and not ct.n_control
                and not (ct.template and ct.state & S.TEMPLATE_ASSURED)):
            self._expire(ct, now)

    def _full(self) -> bool:
        """ip_vs_conn_new() cannot allocate: the memory budget is spent."""
        limit = self.memory_limit
        return limit is not None and (self.connection_count() + 1) * ENTRY_BYTES > limit

    def set_memory_limit(self, limit: int | None, now: float) -> None:
        """The director's memory budget, in bytes (None: unbounded)."""
        self.memory_limit = limit
        self._next_defense = now + DEFENSE_PERIOD
        self._update_defense()
        if self._next_defense < self._due:
            self._due = self._next_defense

    def _estimate(self) -> bool:
        """estimation_timer(): every 2 s, copy counters to kstats and update the rates;
        False when no estimator changed."""
        total = Counters(*self.total_base.as_tuple())
        moved = False
        for svc in self.services:
            live = svc.live_counters()
            moved = svc.est.tick(live.as_tuple()) or moved
            total.add(live)
            for d in svc.dests:
                moved = d.est.tick((d.conns, d.inpkts, d.outpkts, d.inbytes,
                                    d.outbytes)) or moved
        moved = self.total_est.tick(total.as_tuple()) or moved
        self._next_est += ESTIMATOR_PERIOD
        return moved

    def _arm(self, cp: Conn, now: float) -> None:
        self._timers.arm(cp, now + cp.timeout)
        if cp.expires < self._due:
            self._due = cp.expires

    # ------------------------------------------------------------------ connection life
    def _new_conn(self, protocol: int, caddr: int, cport: int, vaddr: int, vport: int,
                  dest: Dest, dport: int, now: float) -> Conn:
        """ip_vs_conn_new() + ip_vs_bind_dest() + hashing."""
        key = conn_key(protocol, caddr, vaddr, cport, vport)
        cp = Conn(key, protocol, dest.addr, dport, dest)
        dest.inactconns += 1
        self.state_counts[0 if protocol == IPPROTO_TCP else S.N_TCP_STATES] += 1
        self._in[key] = cp
        if dest.fwd == MASQ:
            cp.out_key = conn_key(protocol, dest.addr, caddr, dport, cport)
            self._out[cp.out_key] = cp
            cp.masq = self._masq_rewrite(vaddr, vport, dest.addr, dport)
        dest.check_overload_on_bind()
        if self.watch is not None:
            self.watch(cp, now)
        return cp

    def _new_template(self, protocol: int, snet: int, vaddr: int, vport: int, dest: Dest,
                      dport: int, timeout: int) -> Template:
        """ip_vs_conn_new() of a template: bound to its dest as PersistConn, never hashed
        with the connections (it has its own table, keyed by client network)."""
        ct = Template(conn_key(protocol, snet, vaddr, 0, vport), protocol, dest.addr, dport,
                      dest)
        ct.timeout = float(timeout)
        dest.persistconns += 1
        dest.check_overload_on_bind()
        return ct

    def insert_entry(self, protocol: int, caddr: int, cport: int, vaddr: int, vport: int,
                     dest: Dest, dport: int, fwd: int, state: int, inactive: bool,
                     noout: bool, expires: float, timeout: float, in_pkts: int,
                     control: Template | None, now: float) -> Conn:
        """An entry made without a packet (a restored table, a synced entry): bound to
        `dest` with the forwarding method and flags it had, counted as its INACTIVE flag
        says, expiring at `expires`."""
        key = conn_key(protocol, caddr, vaddr, cport, vport)
        cp = Conn(key, protocol, dest.addr, dport, dest)
        cp.fwd, cp.state, cp.inactive, cp.noout = fwd, state, inactive, noout
        cp.timeout, cp.in_pkts = timeout, in_pkts
        if inactive:
            dest.inactconns += 1
        else:
            dest.activeconns += 1
        old = self._in.get(key)
        if old is not None:
            self._expire(old, now)
        self.state_counts[state if protocol == IPPROTO_TCP else S.N_TCP_STATES] += 1
        self._in[key] = cp
        if fwd == MASQ:
            cp.out_key = conn_key(protocol, dest.addr, caddr, dport, cport)
            self._out[cp.out_key] = cp
            cp.masq = self._masq_rewrite(vaddr, vport, dest.addr, dport)
        if control is not None:
            cp.control = control
            control.n_control += 1
        dest.check_overload_on_bind()
        self._arm_at(cp, expires)
        if self.watch is not None:
            self.watch(cp, now)
        return cp

    def insert_template(self, protocol: int, snet: int, vaddr: int, vport: int, dest: Dest,
                        dport: int, state: int, expires: float, timeout: float,
                        in_pkts: int) -> Template:
        """A persistence template made without a packet (restored or synced)."""
        ct = self._new_template(protocol, snet, vaddr, vport, dest, dport, 0)
        ct.state, ct.timeout, ct.in_pkts = state, timeout, in_pkts
        if vport != INVALID_PORT:
            self._templates[(protocol, snet, vaddr, vport)] = ct
        self._template_list[ct] = None
        self._arm_at(ct, expires)
        return ct

    def _arm_at(self, cp: Conn, expires: float) -> None:
        self._timers.arm(cp, expires)
        if expires < self._due:
            self._due = expires

    def _masq_rewrite(self, vaddr: int, vport: int, daddr: int, dport: int) -> MasqRewrite:
        """The rewrite material for vaddr:vport <-> daddr:dport, shared by its connections."""
        m = self._masq.get((vaddr, vport, daddr, dport))
        if m is None:
            m = self._masq[(vaddr, vport, daddr, dport)] = MasqRewrite(
                addr_bytes(vaddr), port_bytes(vport), addr_bytes(daddr), port_bytes(dport))
        return m

    def _expire(self, cp: Conn, at: float) -> None:
        """ip_vs_conn_expire(): a controlling entry waits; anything else is unlinked."""
        if cp.n_control:
            cp.timeout = EXPIRE_LATER
            self._timers.arm(cp, at + EXPIRE_LATER)
            if self.sync is not None:
                self.sync(cp, at, False)
            return
        cp.alive = False
        if cp.template:
            self._template_list.pop(cp, None)
            key = (cp.protocol, cp.caddr, cp.vaddr, cp.vport)
            if self._templates.get(key) is cp:
                del self._templates[key]
        else:
            self.state_counts[cp.state if cp.protocol == IPPROTO_TCP else S.N_TCP_STATES] -= 1
            if self._in.get(cp.key) is cp:
                del self._in[cp.key]
            if cp.out_key is not None and self._out.get(cp.out_key) is cp:
                del self._out[cp.out_key]
        ct = cp.control
        if ct is not None:
            ct.n_control -= 1
            cp.control = None
        dest = cp.dest
        if cp.template:
            dest.persistconns -= 1
        elif cp.inactive:
            dest.inactconns -= 1
        else:
            dest.activeconns -= 1
        dest.check_overload_on_unbind()
        if not dest.available and not self._dest_refs(dest):
            dest.idle_since = at
        if self.watch is not None and not cp.template:
            self.watch(cp, at)

    # ------------------------------------------------------------------ scheduling
    def _lookup_service(self, mark: int, protocol: int, vaddr: int, vport: int
                        ) -> Service | None:
        """ip_vs_service_find(): fwmark, exact, FTP data, then port-zero services."""
        if mark:
            svc = self._svc_by_mark.get(mark)
            if svc is not None:
                return svc
        svc = self._svc_by_addr.get((protocol, vaddr, vport))
        if svc is None and protocol == IPPROTO_TCP and self._ftp_services and (
                vport == FTPDATA or vport >= UNPRIVILEGED_PORT_START):
            svc = self._svc_by_addr.get((protocol, vaddr, FTPPORT))
        if svc is None and self._null_services:
            svc = self._svc_by_addr.get((protocol, vaddr, 0))
        return svc

    def _check_template(self, ct: Conn) -> bool:
        """ip_vs_check_template(): an unusable template is invalidated, not re-armed."""
        dest = ct.dest
        if (not dest.available
                or (self.sysctls.expire_quiescent_template and dest.weight == 0)):
            if ct.vport != INVALID_PORT:
                protocol, caddr, vaddr, vport = ct.protocol, ct.caddr, ct.vaddr, ct.vport
                if self._templates.get((protocol, caddr, vaddr, vport)) is ct:
                    del self._templates[(protocol, caddr, vaddr, vport)]
                ct.key = conn_key(protocol, caddr, vaddr, 0, INVALID_PORT)
                ct.dport = INVALID_PORT
            return False
        return True

    def _schedule(self, svc: Service, protocol: int, caddr: int, cport: int, vaddr: int,
                  vport: int, now: float) -> tuple[Conn | None, int]:
        """ip_vs_schedule(): (connection, ignored) with the kernel's `ignored` codes."""
        if vaddr == svc.addr:
            vaddr = svc.addr               # one int object per VIP, not one per connection
        if cport == FTPDATA:
            return None, 1
        if svc.flags & SVC_F_PERSISTENT:
            return self._schedule_persist(svc, protocol, caddr, cport, vaddr, vport, now)
        if not svc.fwmark and vport != svc.port:
            return None, 0
        dest = svc.scheduler.schedule(svc, caddr, cport, vaddr, now)
        if dest is None:
            return None, 0
        if self._full():
            return None, -1                # ip_vs_conn_new() failed: dropped
        cp = self._new_conn(protocol, caddr, cport, vaddr, vport, dest,
                            dest.port or vport, now)
        self._conn_stats(dest)
        return cp, 1

    def _schedule_persist(self, svc: Service, protocol: int, caddr: int, cport: int,
                          vaddr: int, vport: int, now: float) -> tuple[Conn | None, int]:
        """ip_vs_sched_persist(): find or make the template, then the connection."""
        snet = caddr & svc.netmask
        t_proto, t_vaddr, t_vport = protocol, vaddr, 0
        if vport == svc.port:
            if svc.port != FTPPORT:
                t_vport = vport
        elif svc.fwmark:
            t_proto, t_vaddr = IPPROTO_IP, svc.fwmark
        key = (t_proto, snet, t_vaddr, t_vport)
        ct = self._templates.get(key)
        if ct is None or not self._check_template(ct):
            dest = svc.scheduler.schedule(svc, caddr, cport, vaddr, now)
            if dest is None:
                return None, 0
            if self._full():
                return None, -1
            t_dport = dest.port if (vport == svc.port and svc.port != FTPPORT) else 0
            ct = self._new_template(t_proto, snet, t_vaddr, t_vport, dest, t_dport, svc.timeout)
            self._templates[key] = ct
            self._template_list[ct] = None
        else:
            dest = ct.dest
        dport = vport
        if dport == svc.port and dest.port:
            dport = dest.port
        if self._full():
            return None, -1
        cp = self._new_conn(protocol, caddr, cport, vaddr, vport, dest, dport, now)
        cp.control = ct
        ct.n_control += 1
        self._arm(ct, now)                 # ip_vs_conn_put(ct): re-arm with ct->timeout
        self._conn_stats(dest)
        return cp, 1

    @staticmethod
    def _conn_stats(dest: Dest) -> None:
        if dest.available:
            dest.conns += 1

    # ------------------------------------------------------------------ state
    def _state_change(self, cp: Conn, new: int, now: float) -> None:
        """The rare part of set_tcp_state(): INACTIVE bookkeeping and template ASSURED."""
        dest = cp.dest
        active = self.profile.active[new]
        if not cp.inactive and not active:
            dest.activeconns -= 1
            dest.inactconns += 1
            cp.inactive = True
        elif cp.inactive and active:
            dest.activeconns += 1
            dest.inactconns -= 1
            cp.inactive = False
        if new == S.ESTABLISHED and self.profile.assure_templates:
            ct = cp.control
            if ct is not None:
                ct.state |= S.TEMPLATE_ASSURED
        counts = self.state_counts
        counts[cp.state] -= 1
        counts[new] += 1
        cp.state = new
        if self.watch is not None:
            self.watch(cp, now)

    # ------------------------------------------------------------------ the packet path
    def receive(self, packet: bytes | bytearray, now: float,  # noqa: C901 (one call per packet)
                direction: int | None = None, mark: int = 0,
                headers_only: bool = False, tail: int = 0) -> Verdict:
        """Process one IPv4 packet seen by the director at time `now`.

        `direction` is IN (to a virtual service), OUT (a realserver's reply) or None to let
        the engine decide from its tables, as the kernel's two hooks do.  `mark` is the
        packet's netfilter mark, used to find fwmark services.  `headers_only`: for
        observers that send nothing (a capture replay): the bytes may stop before the IP
        total length (a capture's snaplen cut them), the packet is counted and tracked by
        its total length, as the kernel saw it, and needs only its IP and TCP/UDP headers;
        no forwarded packet is built (a Masq or Tunnel verdict carries none).

        A driver that holds the packet's bytes itself may hand over only its head (its IP
        and TCP/UDP headers, and 548 bytes for an ICMP error to quote): `tail` says how
        many bytes follow, and rewritten data is then the new head, to be sent followed
        by those bytes unchanged (the engine rewrites headers only).
        """
        if now >= self._due:
            self.handle_timers(now)
        if self.passive:
            return _ACCEPT[R_BACKUP_ONLY]
        self._build_packets = not headers_only
        # lookup keys are slices of the packet, so they must be bytes
        data = packet if isinstance(packet, bytes) else bytes(packet)
        n = len(data)
        if n < 20:
            return self._dropped(R_MALFORMED)
        b0 = data[0]
        if b0 >> 4 != 4:
            return _ACCEPT[R_NOT_IPV4]
        ihl = (b0 & 15) << 2
        # byte indexing, not struct: as fast in CPython, and native in the compiled build
        tot_len = (data[2] << 8) | data[3]
        protocol = data[9]
        if ihl < 20 or tot_len < ihl or (tail and tot_len != n + tail):
            return self._dropped(R_MALFORMED)
        seen = tot_len
        if tot_len > n:                         # a head (tail > 0) or a capture's cut
            if not (headers_only or tail):
                return self._dropped(R_MALFORMED)
            seen = n
        if protocol == IPPROTO_TCP:
            if seen - ihl < 20:
                return self._dropped(R_MALFORMED)
            flags = data[ihl + 13]
        elif protocol == IPPROTO_UDP:
            if seen - ihl < 8:
                return self._dropped(R_MALFORMED)
            flags = -1
        else:
            return _ACCEPT[R_NOT_TCP_UDP]
        if (data[6] & 0x1F) | data[7]:        # fragment offset: a non-first fragment
            return _ACCEPT[R_FRAGMENT]
        key = data[12:24] if ihl == 20 else data[12:20] + data[ihl:ihl + 4]
        if protocol != IPPROTO_TCP:
            key = UDP_KEY_PREFIX + key
        way = -1 if direction is None else direction     # a native int from here on
        if way != OUT:
            cp = self._in.get(key)
            if cp is not None:
                if flags & S.TH_SYN or not cp.dest.available:     # UDP's -1 goes here too
                    return self._in_existing(cp, data, ihl, tot_len, flags, now, mark)
                return self._in_forward(cp, data, ihl, tot_len, flags, now)
        if way != IN:
            cp = self._out.get(key)
            if cp is None and self.profile.route_replies:
                # a DR/TUN reply that crosses the director: the client-side key, reversed
                cp = self._in.get(reply_key(key))
                if cp is not None and cp.fwd == MASQ:
                    cp = None
            if cp is not None:
                return self._out_forward(cp, data, ihl, tot_len, flags, now)
            if way == OUT:
                return _ACCEPT[R_NO_CONNECTION]
        return self._in_new(data, ihl, tot_len, protocol, key, flags, now, mark)

    def reply_seen(self, cp: Conn, packet: bytes, now: float) -> Verdict:
        """A realserver's reply on entry `cp`, for an observer that has matched the two
        already and sends nothing (a capture replay seeing a NAT entry's reply from the
        VIP): what receive(packet as the realserver sent it, now, OUT, headers_only=True)
        does, without building that packet or looking the entry up.  `packet` is a
        valid IPv4 TCP/UDP head (the replay's classifier checked it)."""
        if now >= self._due:
            self.handle_timers(now)
        if self.passive:
            return _ACCEPT[R_BACKUP_ONLY]
        if not cp.alive:                   # expired at these timers: no entry to find
            return _ACCEPT[R_NO_CONNECTION]
        self._build_packets = False
        ihl = (packet[0] & 15) << 2
        flags = packet[ihl + 13] if packet[9] == IPPROTO_TCP else -1
        return self._out_forward(cp, packet, ihl, (packet[2] << 8) | packet[3], flags, now)

    def _dropped(self, reason: str) -> Verdict:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return _DROP[reason]

    def _in_existing(self, cp: Conn, data: bytes, ihl: int, tot_len: int, flags: int, now: float,
                     mark: int) -> Verdict:
        """ip_vs_in_hook() for an entry that a SYN reuses or whose realserver is gone."""
        dest = cp.dest
        sysctls, profile = self.sysctls, self.profile
        if flags >= 0 and flags & S.TH_SYN and (
                (sysctls.expire_nodest_conn and profile.nodest_on_syn and dest.weight == 0
                 and (profile.nodest_on_syn_always or sysctls.conn_reuse_mode))
                or (sysctls.conn_reuse_mode and profile.conn_reuse
                    and self._new_conn_expected(cp))):
            # is_new_conn(): this SYN starts a new connection on the entry's port
            if sysctls.conntrack and profile.reuse_drops_conntrack:
                self._expire(cp, now)      # conntrack must be redirected: drop this one SYN
                return self._dropped(R_REUSE_CONNTRACK)
            return self._reschedule(cp, data, ihl, tot_len, flags, now, mark)
        if not dest.available:
            if not sysctls.expire_nodest_conn:
                return self._dropped(R_DEST_UNAVAILABLE)    # blackholed until it expires
            if profile.nodest_reschedules and not sysctls.conntrack:
                return self._reschedule(cp, data, ihl, tot_len, flags, now, mark)
            self._expire(cp, now)          # 4.x, or its conntrack is the old one: dropped
            return self._dropped(R_DEST_UNAVAILABLE)
        return self._in_forward(cp, data, ihl, tot_len, flags, now)

    def _new_conn_expected(self, cp: Conn) -> bool:
        """is_new_conn_expected(): a controlled entry never; TCP in TIME_WAIT or CLOSE, or
        (conn_reuse_mode bit 2) FIN_WAIT of a DR/TUN entry; UDP never."""
        if cp.control is not None or cp.protocol != IPPROTO_TCP:
            return False
        return (cp.state == S.TIME_WAIT or cp.state == S.CLOSE or (
            bool(self.sysctls.conn_reuse_mode & 2) and cp.state == S.FIN_WAIT and cp.noout))

    def _reschedule(self, old: Conn, data: bytes, ihl: int, tot_len: int, flags: int, now: float,
                    mark: int) -> Verdict:
        """The old entry is expired right after the new one is scheduled: on a real
        director its timer fires in the next softirq, so the scheduler still counts it."""
        if self._in.get(old.key) is old:
            del self._in[old.key]
        if old.out_key is not None and self._out.get(old.out_key) is old:
            del self._out[old.out_key]
        verdict = self._in_new(data, ihl, tot_len, old.protocol, old.key, flags, now, mark)
        self._expire(old, now)             # ip_vs_conn_expire_now()
        return verdict

    def _in_new(self, data: bytes, ihl: int, tot_len: int, protocol: int, key: bytes, flags: int,
                now: float, mark: int) -> Verdict:
        """tcp_conn_schedule() / udp_conn_schedule() and ip_vs_leave()."""
        saddr, daddr, sport, dport = CONN_KEY.unpack(key[-12:])
        if protocol == IPPROTO_TCP and (flags & S.TH_RST or not (
                self.sysctls.sloppy_tcp or flags & S.TH_SYN)):
            return _ACCEPT[R_NO_CONNECTION]
        svc = self._lookup_service(mark, protocol, daddr, dport)
        if svc is None:
            return _ACCEPT[R_NO_SERVICE]
        if self.defense.drop_rate and self.defense.todrop():
            return self._dropped(R_DROP_PACKET)      # "we are very loaded"
        cp, ignored = self._schedule(svc, protocol, saddr, sport, daddr, dport, now)
        if cp is None:
            if ignored == 1:
                return _ACCEPT[R_NOT_SCHEDULED]
            if ignored < 0:
                self.defense.no_memory += 1
                return self._dropped(R_NO_MEMORY)
            if svc.port == FTPPORT and dport != FTPPORT:
                return _ACCEPT[R_NOT_SCHEDULED]
            # ip_vs_leave(): ICMP port unreachable (for TCP too), and the packet dropped
            self.drops[R_NO_DESTINATION] = self.drops.get(R_NO_DESTINATION, 0) + 1
            return Verdict(DROP, R_NO_DESTINATION,
                           reply=icmp_port_unreachable(data, tot_len))
        if svc.flags & SVC_F_ONEPACKET and protocol == IPPROTO_UDP:
            verdict = self._in_forward(cp, data, ihl, tot_len, flags, now)
            self._expire(cp, now)          # ONE_PACKET: timeout 0, never kept in the table
            return verdict
        return self._in_forward(cp, data, ihl, tot_len, flags, now)

    def _in_forward(self, cp: Conn, data: bytes, ihl: int, tot_len: int, flags: int,
                    now: float) -> Verdict:
        """ip_vs_in_stats(), ip_vs_set_state(INPUT), packet_xmit, ip_vs_conn_put()."""
        dest = cp.dest
        if dest.available:
            dest.inpkts += 1
            dest.inbytes += tot_len
        cp.in_pkts += 1
        # set_tcp_state(): INPUT, or INPUT-ONLY while no reply has been seen
        self._track(cp, self._rows_input_only if cp.noout else self._rows_input, flags, now)
        if self.sync is not None:
            self.sync(cp, now, True)
        fwd = cp.fwd
        if fwd == DROUTE:
            return dest.route_verdict
        if fwd == TUNNEL:                  # its MTU drops count in a replay too
            return self._tunnel(cp, data, tot_len)
        if not self._build_packets:
            return _ACCEPT_FORWARD
        if fwd == MASQ:
            m = cp.masq
            assert m is not None           # every Masq entry carries its rewrite
            return Verdict(ACCEPT, R_FORWARD,       # DNAT: destination -> realserver
                           masq(data, tot_len, ihl, 16, m.d_bytes, ihl + 2, m.dport_bytes,
                                 m.in_ip_delta, m.in_l4_delta))
        return _ACCEPT_FORWARD

    def _tunnel(self, cp: Conn, data: bytes, tot_len: int) -> Verdict:
        """ip_vs_tunnel_xmit(): the route's MTU less the outer header is the most the
        packet may be (__ip_vs_get_out_rt(): under 68, dropped); with pmtu_disc, a DF
        packet larger than that is dropped and its sender told the MTU in an ICMP
        "fragmentation needed" (ensure_mtu_is_adequate()); without, the outer header
        goes without DF, for the kernel to fragment.  (The kernel has counted the packet
        and moved the entry's state by then, as here.)"""
        mtu = self._route_mtus.get(cp.daddr, self.route_mtu) - IPIP_HEADER
        if mtu < IPV4_MIN_MTU:
            return self._dropped(R_TUNNEL_MTU)
        pmtu_disc = self.sysctls.pmtu_disc != 0
        if tot_len > mtu and data[6] & 0x40 and pmtu_disc:
            self.drops[R_FRAG_NEEDED] = self.drops.get(R_FRAG_NEEDED, 0) + 1
            if not self._build_packets:
                return _DROP_FRAG_NEEDED
            return Verdict(DROP, R_FRAG_NEEDED, reply=icmp_frag_needed(data, tot_len, mtu))
        if not self._build_packets:
            return _ACCEPT_FORWARD
        self._tunnel_id += 1
        src = self.tunnel_source if self.tunnel_source is not None else cp.vaddr
        return Verdict(ACCEPT, R_FORWARD, ipip_encapsulate(data[:tot_len], tot_len, src,
                                                           cp.daddr, self._tunnel_id,
                                                           pmtu_disc))

    def _track(self, cp: Conn, rows: S.Section, flags: int, now: float) -> None:
        """set_tcp_state() (UDP: flags -1, one state), then ip_vs_conn_put(): every packet
        re-arms its entry with the timeout of the state it leaves it in."""
        if flags >= 0:
            new = rows[S.FLAG_ROW[flags]][cp.state]
            if new != cp.state:
                self._state_change(cp, new, now)
            cp.timeout = self._tcp_timeouts[new]
        else:
            cp.timeout = self._udp_timeout
        self._arm(cp, now)

    def _out_forward(self, cp: Conn, data: bytes, ihl: int, tot_len: int, flags: int,
                     now: float) -> Verdict:
        """handle_response(): SNAT for Masq, then ip_vs_out_stats() and OUTPUT state."""
        dest = cp.dest
        if dest.available:
            dest.outpkts += 1
            dest.outbytes += tot_len
        if flags >= 0:
            cp.noout = False                    # a reply was seen: full tracking from now on
        elif self.profile.assure_templates:
            ct = cp.control                     # udp_state_transition(): every UDP reply
            if ct is not None:                  # assures the template (the TCP rule is in
                ct.state |= S.TEMPLATE_ASSURED  # _state_change())
        self._track(cp, self._rows_output, flags, now)
        if cp.fwd != MASQ or not self._build_packets:
            return _ACCEPT_FORWARD
        m = cp.masq
        assert m is not None               # every Masq entry carries its rewrite
        return Verdict(ACCEPT, R_FORWARD,           # SNAT: source -> virtual service
                       masq(data, tot_len, ihl, 12, m.v_bytes, ihl, m.vport_bytes,
                             m.out_ip_delta, m.out_l4_delta))

    # ------------------------------------------------------------------ views
    def find_conn(self, protocol: int, caddr: int, cport: int, vaddr: int, vport: int
                  ) -> Conn | None:
        """The connection a client->VIP packet with these fields belongs to."""
        return self._in.get(conn_key(protocol, caddr, vaddr, cport, vport))

    def find_reply_conn(self, protocol: int, saddr: int, sport: int, daddr: int,
                        dport: int) -> Conn | None:
        """The connection a realserver->client packet with these fields belongs to."""
        return self._out.get(conn_key(protocol, saddr, daddr, sport, dport))

    def route_marks(self) -> dict[int, int]:
        """Routing mark -> realserver address, as a driver installs its policy routes."""
        return {mark: addr for addr, mark in self._route_marks.items()}

    def connections(self) -> list[Conn]:
        """Every entry as /proc/net/ip_vs_conn lists it: connections, then templates."""
        return self.connection_list() + self.template_list()

    def connection_list(self) -> list[Conn]:
        return list(self._in.values())

    def template_list(self) -> list[Conn]:
        return list(self._template_list)

    def connection_count(self) -> int:
        return len(self._in) + len(self._template_list)

    def state_name(self, cp: Conn) -> str:
        """ip_vs_state_name()."""
        if cp.template and self.profile.assure_templates:
            # a synced template carries whatever state its message said
            return (S.TEMPLATE_STATE_NAMES[cp.state] if cp.state < len(S.TEMPLATE_STATE_NAMES)
                    else "ERR!")
        names = (S.TCP_STATE_NAMES if cp.protocol == IPPROTO_TCP
                 else S.UDP_STATE_NAMES if cp.protocol == IPPROTO_UDP else None)
        if names is None:
            return "NONE"
        return names[cp.state] if cp.state < len(names) else "ERR!"

