"""Small drivers for tests: a director with one service, and flows that speak TCP to it."""

from __future__ import annotations

from pyvs.core import states as S
from pyvs.core.craft import ACK, FIN, PSH, RST, SYN, tcp, udp
from pyvs.core.engine import IN, OUT, Director
from pyvs.core.forwarding import DROUTE, MASQ
from pyvs.core.packet import ip_to_int

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "IN", "OUT", "MASQ", "DROUTE", "ip",
           "make_director", "Flow", "udp", "S"]

VIP = "10.0.0.100"


def ip(text: str) -> int:
    return ip_to_int(text)


def make_director(fwd: int = MASQ, n: int = 2, scheduler: str = "rr", kernel: str = "modern",
                  port: int = 80, **svc_kwargs) -> Director:
    """A director with TCP VIP:port and realservers 192.168.10.1..n (added in that order)."""
    d = Director(kernel=kernel)
    svc = d.add_service(6, ip(VIP), port, scheduler=scheduler, **svc_kwargs)
    for i in range(1, n + 1):
        d.add_dest(svc, ip(f"192.168.10.{i}"), port, fwd)
    return d


class Flow:
    """One client connection; sends packets in either direction through the director."""

    def __init__(self, d: Director, client: str = "10.0.0.5", cport: int = 40000,
                 vip: str = VIP, vport: int = 80, protocol: int = 6) -> None:
        self.d = d
        self.c, self.cport = ip(client), cport
        self.v, self.vport = ip(vip), vport
        self.protocol = protocol

    def conn(self):
        return self.d.find_conn(self.protocol, self.c, self.cport, self.v, self.vport)

    def inb(self, flags: int, now: float, payload: bytes = b""):
        if self.protocol == 17:
            self.last_sent = udp(self.c, self.cport, self.v, self.vport, payload)
        else:
            self.last_sent = tcp(self.c, self.cport, self.v, self.vport, flags,
                                 payload=payload)
        return self.d.receive(self.last_sent, now)

    def out(self, flags: int, now: float, payload: bytes = b""):
        """A realserver's reply as the director would see it (NAT: from the RIP)."""
        cp = self.conn()
        src, sport = (cp.daddr, cp.dport) if cp.fwd == MASQ else (self.v, self.vport)
        if self.protocol == 17:
            return self.d.receive(udp(src, sport, self.c, self.cport, payload), now, OUT)
        return self.d.receive(tcp(src, sport, self.c, self.cport, flags, payload=payload),
                              now, OUT)

    def state(self) -> str:
        cp = self.conn()
        return "gone" if cp is None else self.d.state_name(cp)


def counts(d: Director) -> list[tuple[str, int, int]]:
    """(realserver, ActiveConn, InActConn) in address order."""
    from pyvs.core.packet import int_to_ip
    rows = []
    for svc in d.services:
        for dest in svc.dests:
            rows.append((int_to_ip(dest.addr), dest.activeconns, dest.inactconns))
    return sorted(rows)
