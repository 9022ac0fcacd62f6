"""What the engine tells a driver to do with a packet, with a machine-readable reason."""

from __future__ import annotations

from typing import Final

ACCEPT: Final = "accept"
DROP: Final = "drop"

# Reasons.  Accepts that are not IPVS traffic say why; every drop says why.
R_FORWARD: Final = "forward"                    # IPVS traffic: rewritten, marked or as is
R_NOT_IPV4: Final = "not-ipv4"                  # IPv6 or garbage version: passed on
R_NOT_TCP_UDP: Final = "not-tcp-udp"            # other protocols: not IPVS traffic
R_FRAGMENT: Final = "fragment"                  # non-first fragment: no ports to match
R_NO_SERVICE: Final = "no-service"              # no virtual service for address:port/mark
R_NO_CONNECTION: Final = "no-connection"        # TCP without SYN, or with RST, for no entry
R_NOT_SCHEDULED: Final = "not-scheduled"        # kernel declines (FTP data port 20, ...)
R_MALFORMED: Final = "malformed"                # shorter than it claims, bad IHL or lengths
R_DEST_UNAVAILABLE: Final = "dest-unavailable"  # its realserver removed, expire_nodest_conn=0
R_NO_DESTINATION: Final = "no-destination"      # scheduler found none: ICMP port unreachable
R_REUSE_CONNTRACK: Final = "reuse-conntrack"    # a SYN reusing an entry, conntrack=1 (4.9-5.8):
                                                # dropped once, the client retransmits
R_DROP_PACKET: Final = "drop-packet"            # the drop_packet defense: a new connection
R_NO_MEMORY: Final = "no-memory"                # the memory budget is spent: no new entry
R_BACKUP_ONLY: Final = "backup-only"            # backup_only=1 and a backup sync daemon:
                                                # IPVS does nothing (both hooks accept)


class Verdict:
    """accept / drop; `data` is the rewritten packet (None: unchanged); `mark` routes DR;
    `reply` is a packet the director's own stack sends back (ICMP port unreachable)."""

    __slots__ = ("action", "data", "mark", "reason", "reply")

    def __init__(self, action: str, reason: str, data: bytes | None = None,
                 mark: int = 0, reply: bytes | None = None) -> None:
        self.action = action
        self.reason = reason
        self.data = data
        self.mark = mark
        self.reply = reply

    @property
    def accepted(self) -> bool:
        return self.action == ACCEPT

    def __repr__(self) -> str:
        extra = f", mark={self.mark}" if self.mark else ""
        extra += f", data={len(self.data)}B" if self.data is not None else ""
        extra += f", reply={len(self.reply)}B" if self.reply is not None else ""
        return f"Verdict({self.action}, {self.reason}{extra})"


def accept(reason: str) -> Verdict:
    return Verdict(ACCEPT, reason)


def drop(reason: str) -> Verdict:
    return Verdict(DROP, reason)
