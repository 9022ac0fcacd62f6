"""The simulated LVS cluster: clients, an optional firewall, the director, realservers.

    clients --(client_delay, [firewall])-- director --(lan_delay)-- realservers
       ^                                                                  |
       +------------------ direct_delay (DR/TUN replies) -----------------+

The director is the engine itself, as the live driver uses it: client-side packets are
handed to it as IN, realserver-side packets (NAT replies) as OUT, and its verdict is
applied (rewritten bytes routed by destination, a routing mark sent to that realserver,
IPIP decapsulated by the realserver).  Packets it does not take (no service, no connection)
are routed by destination like any Linux router; those for the director's own addresses
reach its own TCP stack, which has no listeners and answers with RST, as a real director
answers a client whose idle entry it has expired.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..core.engine import IN, OUT, Director
from ..core.forwarding import MASQ
from ..core.packet import ip_to_int
from ..core.verdict import DROP, R_FORWARD
from .apps import ClientApp, Registry, ServerApp, Session
from .events import Simulation
from .tcp import ACK, RST, SEGMENT, SYN, Socket, Stack, TcpParams, reset

_DST = struct.Struct("!16xI")                  # an IPv4 packet's destination address
CLIENT_BASE = (198 << 24) | (18 << 16) | 1          # 198.18.0.1, .2, ... (benchmark range)
DIRECTOR_DIP = (192 << 24) | (0 << 16) | (2 << 8) | 1  # 192.0.2.1, the realservers' gateway
CHECK_SESSION = Session(requests=0, end="none")         # a health check's server side


@dataclass
class LabParams:
    """Topology, links and middleboxes of one simulated lab."""

    client_delay: float = 0.005     # client <-> director (and firewall), one way
    lan_delay: float = 0.0002       # director <-> realserver, one way
    direct_delay: float = 0.005     # realserver -> client, one way (DR and TUN replies)
    loss: float = 0.0               # probability that a packet on a client link is lost
    firewall_idle: float = 0.0      # >0: a firewall in front of the clients forgets flows
                                    # idle this long and answers their packets with RST
    bad_routing: bool = False       # realservers' replies never reach the client


class IdleFirewall:
    """A stateful firewall that silently forgets idle flows.

    A packet of a forgotten or unknown flow (other than a client's SYN) is dropped and
    answered with an RST to its sender, as if from the other end."""

    __slots__ = ("sim", "idle", "flows", "resets")

    def __init__(self, sim: Simulation, idle: float) -> None:
        self.sim = sim
        self.idle = idle
        self.flows: dict[tuple[int, int, int, int], float] = {}
        self.resets = 0

    def check(self, pkt: bytes, from_client: bool) -> bytes | None:
        """None if the packet may pass, else the RST to send back to its sender."""
        (_, _, tot_len, _, _, _, proto, _, src, dst, sport, dport, seq, ack, _, flags, _, _,
         _) = SEGMENT.unpack_from(pkt)
        if proto != 6:
            return None
        key = (src, sport, dst, dport) if from_client else (dst, dport, src, sport)
        now = self.sim.now
        last = self.flows.get(key)
        if last is not None and now - last <= self.idle:
            self.flows[key] = now
            return None
        if last is not None:
            del self.flows[key]
        if from_client and flags & (SYN | ACK | RST) == SYN:
            self.flows[key] = now
            return None
        if flags & RST:
            return b""
        self.resets += 1
        return reset(dst, dport, src, sport, flags, seq, ack, tot_len - 40)


class Lab:
    """Hosts, links and the director for one run; counts every packet sent."""

    def __init__(self, sim: Simulation, director: Director, params: LabParams,
                 tcp: TcpParams, clients: int) -> None:
        self.sim = sim
        self.director = director
        self.params = params
        self.registry = Registry()
        self.client_app: Callable[..., ClientApp] = ClientApp    # runs each client session
        # several directors (pyvs.sim.directors): the front that hands a packet to one
        self.front: Callable[[bytes, int], None] | None = None
        self.packets = 0
        self.lost = 0
        self.drops: dict[str, int] = {}
        self.started = 0                            # client sessions opened
        self.ended: dict[str, int] = {}             # ... ended, by how (ClientApp.closed)
        self.connect_delays: list[float] = []       # SYN to ESTABLISHED, seconds
        self.firewall = IdleFirewall(sim, params.firewall_idle) if params.firewall_idle else None
        self.vips = {svc.addr for svc in director.services if not svc.fwmark}
        self.masq = any(d.fwd == MASQ for svc in director.services for d in svc.dests)
        self.director_stack = Stack(sim, self.vips | {DIRECTOR_DIP}, tcp, self._director_send)
        self.realservers: dict[int, Stack] = {}
        for svc in director.services:
            for dest in svc.dests:
                if dest.addr not in self.realservers:
                    addrs = {dest.addr} if dest.fwd == MASQ else {dest.addr} | self.vips
                    rs = Stack(sim, addrs, tcp, self._rs_sender(dest.addr))
                    self.realservers[dest.addr] = rs
        # bound methods made once: _deliver batches by their identity
        self.mark_to_rx: dict[int, Callable[[bytes], None]] = {
            mark: self.realservers[addr].receive for mark, addr in director.route_marks().items()
            if addr in self.realservers}
        self.rs_rx: dict[int, Callable[[bytes], None]] = {
            addr: rs.receive for addr, rs in self.realservers.items()}
        self._inside_rx = self._inside
        self._from_rs_rx = self._from_realserver
        self._batch: tuple[float, Callable[[bytes], None], list[bytes]] | None = None
        self.clients: dict[int, Stack] = {}
        self.client_list: list[Stack] = []
        for i in range(clients):
            addr = CLIENT_BASE + i
            stack = Stack(sim, {addr}, tcp, self._client_send)
            self.clients[addr] = stack
            self.client_list.append(stack)
        self.client_rx = {addr: stack.receive for addr, stack in self.clients.items()}

    # ------------------------------------------------------------------ sessions
    def listen(self, port: int, keepalive: bool) -> None:
        for rs in self.realservers.values():
            if port not in rs.listeners or (keepalive and port not in rs.keepalive_ports):
                rs.listen(port, self._accept, keepalive or port in rs.keepalive_ports)

    def _accept(self, sock: Socket) -> ServerApp:
        # no session: the director's health check, which connects and closes
        return ServerApp(self.sim, self.registry.by_client.get((sock.raddr, sock.rport),
                                                               CHECK_SESSION))

    def start_session(self, session: Session, client: int) -> None:
        """Open the session's connection from client `client` to the (first) VIP now."""
        stack = self.client_list[client]
        if not stack.alive:
            return
        self.listen(session.port, session.keepalive)
        vip = self.vip_for(session.port)
        sock = stack.connect(next(iter(stack.addrs)), vip, session.port,
                             self.client_app(self.sim, session, self), session.cport)
        self.started += 1
        self.registry.by_client[(sock.laddr, sock.lport)] = session
        if session.crash is not None:
            self.sim.after(session.crash, stack.crash)

    def session_connected(self, delay: float) -> None:
        self.connect_delays.append(delay)

    def session_ended(self, how: str) -> None:
        self.ended[how] = self.ended.get(how, 0) + 1

    # ------------------------------------------------------------------ faults
    def realserver(self, name: str) -> Stack:
        """A realserver by name (rs1.. in address order) or by its address."""
        by_name = {f"rs{i + 1}": addr for i, addr in enumerate(sorted(self.realservers))}
        addr = by_name.get(name)
        if addr is None:
            try:
                addr = ip_to_int(name)
            except ValueError:
                addr = -1
        if addr not in self.realservers:
            raise KeyError(f"no realserver {name!r} (realservers: "
                           f"{', '.join(sorted(by_name))} in address order, or an address)")
        return self.realservers[addr]

    def fault(self, name: str, kind: str) -> None:
        """crash: the host stops, its sockets gone; blackhole: its network is cut, it runs
        on; refuse: its services stop listening (SYNs get RST); recover: back from any."""
        rs = self.realserver(name)
        if kind == "crash":
            rs.crash()
        elif kind == "blackhole":
            rs.cut = True
        elif kind == "refuse":
            rs.refusing = True
        else:
            rs.recover()

    def vip_for(self, port: int) -> int:
        director = self.director
        for svc in director.services:
            if svc.port == port and not svc.fwmark:
                return svc.addr
        for svc in director.services:
            if svc.port == 0 and not svc.fwmark:
                return svc.addr
        return director.services[0].addr

    # ------------------------------------------------------------------ links
    def _deliver(self, delay: float, fn: Callable[[bytes], None], pkt: bytes) -> None:
        """Hand `pkt` to `fn` after `delay`.  Packets sent back to back to the same place
        (a TCP burst, its ACKs) arrive together and share one event, in order."""
        when = self.sim.now + delay
        batch = self._batch
        if batch is not None and batch[0] == when and batch[1] is fn:
            batch[2].append(pkt)
            return
        pkts = [pkt]
        self._batch = (when, fn, pkts)
        self.sim.at(when, _run_batch, fn, pkts)

    def _from_realserver(self, pkt: bytes) -> None:
        self._director(pkt, OUT)

    def _client_send(self, pkt: bytes) -> None:
        self.packets += 1
        sim = self.sim
        if self.params.loss and sim.random.random() < self.params.loss:
            self.lost += 1
            return
        if self.firewall is not None:
            rst = self.firewall.check(pkt, from_client=True)
            if rst is not None:
                if rst:
                    self._to_client(rst, self.params.client_delay)
                return
        self._deliver(self.params.client_delay, self._inside_rx, pkt)

    def _inside(self, pkt: bytes) -> None:
        """A packet from the client side reaches the realservers' segment (in NAT the
        realservers sit behind the director)."""
        if not self.masq:
            rx = self.rs_rx.get(_DST.unpack_from(pkt)[0])
            if rx is not None:
                self._deliver(self.params.lan_delay, rx, pkt)
                return
        self._director(pkt, IN)

    def _rs_sender(self, addr: int) -> Callable[[bytes], None]:
        def send(pkt: bytes) -> None:
            self.packets += 1
            if self.params.bad_routing:
                self.lost += 1
            elif _DST.unpack_from(pkt)[0] == DIRECTOR_DIP and not self.masq:
                self._deliver(self.params.lan_delay, self.director_stack.receive, pkt)
            elif self.masq:
                self._deliver(self.params.lan_delay, self._from_rs_rx, pkt)
            else:
                self._to_client(pkt, self.params.direct_delay)
        return send

    def _director_send(self, pkt: bytes) -> None:
        self.packets += 1
        self._route(pkt)

    def _director(self, pkt: bytes, direction: int) -> None:
        if self.front is not None:
            self.front(pkt, direction)
            return
        self._through(self.director, self.director_stack, self.mark_to_rx, pkt, direction)

    def _through(self, director: Director, stack: Stack,
                 mark_to_rx: dict[int, Callable[[bytes], None]], pkt: bytes,
                 direction: int) -> None:
        """A director's netfilter hooks: its engine's verdict, applied (`stack`: its own
        TCP, `mark_to_rx`: its routing marks' realservers)."""
        verdict = director.receive(pkt, self.sim.now, direction)
        if verdict.action == DROP:
            self.drops[verdict.reason] = self.drops.get(verdict.reason, 0) + 1
            if verdict.reply is not None:           # ICMP from the director's own stack
                self.packets += 1
                self._to_client(verdict.reply, self.params.client_delay)
            return
        if verdict.reason == R_FORWARD:
            if verdict.data is not None:    # rewritten by Masq or wrapped by Tunnel
                pkt = verdict.data
            if verdict.mark:
                self._deliver(self.params.lan_delay, mark_to_rx[verdict.mark], pkt)
            elif direction == OUT:          # a reply the director forwards: to the client
                self._to_client(pkt, self.params.client_delay)
            else:
                self._route(pkt)
        elif _DST.unpack_from(pkt)[0] in stack.addrs:
            stack.receive(pkt)
        else:
            self._route(pkt)

    def _route(self, pkt: bytes) -> None:
        """The director forwards by destination address."""
        rx = self.rs_rx.get(_DST.unpack_from(pkt)[0])
        if rx is not None:
            self._deliver(self.params.lan_delay, rx, pkt)
        else:
            self._to_client(pkt, self.params.client_delay)

    def _to_client(self, pkt: bytes, delay: float) -> None:
        sim = self.sim
        if self.firewall is not None:
            rst = self.firewall.check(pkt, from_client=False)
            if rst is not None:
                if rst:
                    self._deliver(delay, self._inside_rx, rst)
                return
        if self.params.loss and sim.random.random() < self.params.loss:
            self.lost += 1
            return
        rx = self.client_rx.get(_DST.unpack_from(pkt)[0])
        if rx is not None:
            self._deliver(delay, rx, pkt)


def _run_batch(fn: Callable[[bytes], None], pkts: list[bytes]) -> None:
    for pkt in pkts:
        fn(pkt)
