"""IPv4 header work for the per-packet path: struct formats, RFC 1624 checksum updates, the
Masq rewrite, IPIP.

No scapy here: the director's hot path parses with :mod:`struct` and splices the rewritten
fields into a single copy of the packet.
"""

from __future__ import annotations

import struct
from typing import Final

IP_FIXED: Final = struct.Struct("!BBHHHBBHII")  # ver/ihl tos len id frag ttl proto csum src dst
IP_ADDRS: Final = struct.Struct("!2xH2xHxB2xII")    # tot_len, frag, proto, saddr, daddr
TCP_HEAD: Final = struct.Struct("!HH9xB")           # sport, dport, flags (offset 13)
PORTS: Final = struct.Struct("!HH")
U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")

IPPROTO_IP: Final = 0      # a fwmark service's protocol: any
IPPROTO_ICMP: Final = 1
IPPROTO_IPIP: Final = 4
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
# ip_vs_proto_name(): how listings name a protocol (fwmark templates are IP)
PROTO_NAMES: Final = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_IP: "IP"}


def csum_delta(old: bytes, new: bytes) -> int:
    """One's-complement sum of ~old + new over 16-bit words (RFC 1624 eqn. 3): a
    connection's fixed address/port change, computed once and added to each packet's checksum."""
    total = 0
    for i in range(0, len(old), 2):
        total += (~((old[i] << 8) | old[i + 1])) & 0xFFFF
        total += (new[i] << 8) | new[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum_update(check: int, delta: int) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + m' - m), with `delta` from csum_delta.  The delta is
    folded to 16 bits, so ~check + delta is at most 0x1FFFE: one end-around carry suffices."""
    c = ((~check) & 0xFFFF) + delta
    return ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF


def masq(data: bytes, tot_len: int, ihl: int, addr_at: int, addr: bytes, port_at: int,
         port: bytes, ip_delta: int, l4_delta: int) -> bytes:
    """The packet (without link padding) with one address and one port replaced and its IP
    and TCP/UDP checksums updated incrementally from the old ones.  A UDP checksum of 0 means
    "none" and stays 0; a computed 0 is sent as 0xFFFF (RFC 768).  `data` may be the
    packet's head only (up to tot_len bytes): then so is the result, and the rest of the
    packet follows it unchanged.

    The result is built in one allocation from slices of `data` (b"%b" formatting, which
    the compiled build turns into a single copy): cheaper in both builds than copying into
    a bytearray and assigning the six changed bytes one by one."""
    ip_check = csum_update((data[10] << 8) | data[11], ip_delta).to_bytes(2, "big")
    tcp = data[9] == IPPROTO_TCP
    off = ihl + 16 if tcp else ihl + 6
    check = (data[off] << 8) | data[off + 1]
    if check or tcp:
        c = csum_update(check, l4_delta)
        l4_check = (c if c or tcp else 0xFFFF).to_bytes(2, "big")
    else:
        l4_check = b"\0\0"
    return b"%b%b%b%b%b%b%b%b%b" % (
        data[:10], ip_check, data[12:addr_at], addr, data[addr_at + 4:port_at], port,
        data[port_at + 2:off], l4_check, data[off + 2:tot_len])


def ip_checksum(header: bytes | bytearray) -> int:
    """Full Internet checksum of an IP header (used only for headers pyvs builds)."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ipip_encapsulate(inner: bytes, tot_len: int, src: int, dst: int, ident: int,
                     df: bool = True) -> bytes:
    """Wrap an IPv4 packet of `tot_len` bytes (`inner`: all of it, or its head, which the
    rest then follows) in an outer IPv4 header, protocol 4 (ip_vs_tunnel_xmit): TOS and TTL
    copied, and DF too unless `df` is False (pmtu_disc=0: the outer packet may be
    fragmented)."""
    tos = inner[1]
    frag = (inner[6] & 0x40) << 8 if df else 0
    ttl = inner[8]
    header = bytearray(IP_FIXED.pack(0x45, tos, 20 + tot_len, ident & 0xFFFF, frag,
                                     ttl, IPPROTO_IPIP, 0, src, dst))
    U16.pack_into(header, 10, ip_checksum(header))
    return bytes(header) + inner


IPIP_HEADER: Final = 20                    # the outer header ip_vs_tunnel_xmit adds
IPV4_MIN_MTU: Final = 68
ICMP_DEST_UNREACH: Final = 3
ICMP_PORT_UNREACH: Final = 3
ICMP_FRAG_NEEDED: Final = 4
ICMP_ERROR_ROOM: Final = 576 - 20 - 8      # icmp_send(): an error fits in 576 bytes


def icmp_error(packet: bytes, tot_len: int, code: int, info: int) -> bytes:
    """The ICMP destination unreachable a Linux host sends back for `packet` (icmp_send()):
    from the address the packet was sent to (the VIP, local on a director), TOS the
    packet's TOS bits with precedence "internetwork control", TTL 64, the 32-bit field
    after the checksum `info`, quoting the original datagram up to 576 bytes in all."""
    quoted = packet[:min(tot_len, ICMP_ERROR_ROOM)]
    icmp = bytearray(struct.pack("!BBHI", ICMP_DEST_UNREACH, code, 0, info) + quoted)
    U16.pack_into(icmp, 2, ip_checksum(icmp + (b"\0" if len(icmp) & 1 else b"")))
    src, dst = U32.unpack_from(packet, 16)[0], U32.unpack_from(packet, 12)[0]
    tos = (packet[1] & 0x1E) | 0xC0        # RT_TOS(tos) | IPTOS_PREC_INTERNETCONTROL
    header = bytearray(IP_FIXED.pack(0x45, tos, 20 + len(icmp), 0, 0, 64, IPPROTO_ICMP, 0,
                                     src, dst))
    U16.pack_into(header, 10, ip_checksum(header))
    return bytes(header) + bytes(icmp)


def icmp_port_unreachable(packet: bytes, tot_len: int) -> bytes:
    """What ip_vs_leave() sends for a connection no realserver can take."""
    return icmp_error(packet, tot_len, ICMP_PORT_UNREACH, 0)


def icmp_frag_needed(packet: bytes, tot_len: int, mtu: int) -> bytes:
    """What ensure_mtu_is_adequate() sends for a DF packet larger than `mtu`: "fragmentation
    needed", the next-hop MTU in the low 16 bits of the field (RFC 1191)."""
    return icmp_error(packet, tot_len, ICMP_FRAG_NEEDED, mtu)


def addr_bytes(addr: int) -> bytes:
    return U32.pack(addr)


def port_bytes(port: int) -> bytes:
    return U16.pack(port)


def ip_to_int(text: str) -> int:
    """Dotted quad to int; ValueError on anything else (no hostnames, no shorthand)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise ValueError(f"{text!r} is not an IPv4 address")
    values = [int(p) for p in parts]
    if any(v > 255 for v in values):
        raise ValueError(f"{text!r} is not an IPv4 address")
    return (values[0] << 24) | (values[1] << 16) | (values[2] << 8) | values[3]


def int_to_ip(addr: int) -> str:
    return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"


def udp_datagram(src: int, sport: int, dst: int, dport: int, payload: bytes, ttl: int,
                 ident: int) -> bytes:
    """IPv4/UDP as a Linux socket sends it to a multicast group: no DF, the UDP checksum
    over the pseudo-header (a sync master's datagrams)."""
    length = 8 + len(payload)
    pseudo = IP_FIXED.pack(0, 0, 0, 0, 0, 0, 0, 0, src, dst)[12:] + bytes(
        (0, IPPROTO_UDP)) + U16.pack(length)
    udp = U16.pack(sport) + U16.pack(dport) + U16.pack(length) + b"\0\0" + payload
    body = pseudo + udp + (b"\0" if len(udp) & 1 else b"")
    check = ip_checksum(body) or 0xFFFF          # 0 means "no checksum": sent as all ones
    header = bytearray(IP_FIXED.pack(0x45, 0, 20 + length, ident & 0xFFFF, 0, ttl,
                                     IPPROTO_UDP, 0, src, dst))
    U16.pack_into(header, 10, ip_checksum(header))
    return bytes(header) + udp[:6] + U16.pack(check) + udp[8:]
