"""What the engine tells a driver to do with a packet, with a machine-readable reason."""

from __future__ import annotations

ACCEPT = "accept"
DROP = "drop"

# Reasons.  Accepts that are not IPVS traffic say why; every drop says why.
R_FORWARD = "forward"                 # IPVS traffic, forwarded (rewritten, marked or as is)
R_NOT_IPV4 = "not-ipv4"               # IPv6 or garbage version: not handled, passed on
R_NOT_TCP_UDP = "not-tcp-udp"         # other protocols: not IPVS traffic
R_FRAGMENT = "fragment"               # non-first fragment: no ports to match
R_NO_SERVICE = "no-service"           # no virtual service for this address:port/mark
R_NO_CONNECTION = "no-connection"     # TCP without SYN (or with RST) for an unknown connection
R_NOT_SCHEDULED = "not-scheduled"     # the kernel declines to schedule (FTP data port 20, ...)
R_MALFORMED = "malformed"             # header shorter than it claims, bad IHL, bad lengths
R_DEST_UNAVAILABLE = "dest-unavailable"   # connection's realserver removed, expire_nodest_conn=0
R_NO_DESTINATION = "no-destination"   # scheduler found no realserver: ICMP port unreachable


class Verdict:
    """accept / drop; `data` is the rewritten packet (None: unchanged); `mark` routes DR."""

    __slots__ = ("action", "data", "mark", "reason")

    def __init__(self, action: str, reason: str, data: bytes | bytearray | None = None,
                 mark: int = 0) -> None:
        self.action = action
        self.reason = reason
        self.data = data
        self.mark = mark

    @property
    def accepted(self) -> bool:
        return self.action == ACCEPT

    def __repr__(self) -> str:
        extra = f", mark={self.mark}" if self.mark else ""
        extra += f", data={len(self.data)}B" if self.data is not None else ""
        return f"Verdict({self.action}, {self.reason}{extra})"


def accept(reason: str) -> Verdict:
    return Verdict(ACCEPT, reason)


def drop(reason: str) -> Verdict:
    return Verdict(DROP, reason)
