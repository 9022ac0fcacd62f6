"""/proc/net/ip_vs, ip_vs_conn, ip_vs_conn_sync and ip_vs_stats in the kernel's exact
formats (ip_vs_ctl.c ip_vs_info_seq_show / ip_vs_stats_show, ip_vs_conn.c
ip_vs_conn_seq_show / ip_vs_conn_sync_seq_show),
so tools that read them (node_exporter --path.procfs=DIR, scripts) read pyvs unchanged.

Two things the kernel leaves to its build: the persistence timeout is printed in jiffies
(`svc->timeout`), and pyvs assumes HZ=250 (Debian's and most distributions' kernels);
services come in creation order where the kernel walks its hash table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.forwarding import BY_WORD
from ..core.packet import ip_to_int
from .listing import VERSION_LINE

HZ = 250


def _hexaddr(text: str) -> str:
    return f"{ip_to_int(text):08X}"


def ip_vs(snap: dict[str, Any]) -> str:
    out = [VERSION_LINE + "\n", "Prot LocalAddress:Port Scheduler Flags\n",
           "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"]
    for svc in snap["services"]:
        ops = "ops " if svc["ops"] else ""
        if svc["fwmark"]:
            line = f"FWM  {svc['fwmark']:08X} {svc['scheduler']} {ops}"
        else:
            line = (f"{svc['proto']}  {_hexaddr(svc['address'])}:{svc['port']:04X} "
                    f"{svc['scheduler']} {ops} ")
        if svc["persistent"] is not None:
            line += f"persistent {svc['persistent'] * HZ} {_hexaddr(svc['netmask'])}\n"
        else:
            line += "\n"
        out.append(line)
        for d in svc["dests"]:
            out.append(f"  -> {_hexaddr(d['address'])}:{d['port']:04X}      "
                       f"{BY_WORD[d['forward']].name:<7s} {d['weight']:<6d} {d['active']:<10d} "
                       f"{d['inactive']:<10d}\n")
    return "".join(out)


def _endpoints(c: dict[str, Any]) -> str:
    fields = []
    for key in ("client", "virtual", "dest"):
        addr, port = c[key].rsplit(":", 1)
        fields.append(f"{_hexaddr(addr)} {int(port):04X}")
    return f"{c['proto']:<3s} {' '.join(fields)}"


def ip_vs_conn(snap: dict[str, Any]) -> str:
    out = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"]
    for c in snap.get("connections", []):
        out.append(f"{_endpoints(c)} {c['state']:<11s} {c['expires']:7d}\n")
    return "".join(out)


def ip_vs_conn_sync(snap: dict[str, Any]) -> str:
    """Every entry with its origin: SYNC if a backup daemon made it (IP_VS_CONN_F_SYNC,
    kept when this director later forwards it as master), else LOCAL."""
    out = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"]
    for c in snap.get("connections", []):
        origin = "SYNC" if c.get("synced") else "LOCAL"
        out.append(f"{_endpoints(c)} {c['state']:<11s} {origin:<6s} {c['expires']:7d}\n")
    return "".join(out)


def ip_vs_stats(snap: dict[str, Any]) -> str:
    st, rt = snap["total"]["stats"], snap["total"]["rate"]
    return ("   Total Incoming Outgoing         Incoming         Outgoing\n"
            "   Conns  Packets  Packets            Bytes            Bytes\n"
            f"{st['conns']:8X} {st['inpkts']:8X} {st['outpkts']:8X} {st['inbytes']:16X} "
            f"{st['outbytes']:16X}\n\n"
            " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
            f"{rt['cps']:8X} {rt['inpps']:8X} {rt['outpps']:8X} {rt['inbps']:16X} "
            f"{rt['outbps']:16X}\n")


def export(snap: dict[str, Any], root: str | Path) -> None:
    """Write DIR/net/ip_vs{,_conn,_conn_sync,_stats}; each file is replaced atomically."""
    net = Path(root) / "net"
    net.mkdir(parents=True, exist_ok=True)
    for name, text in (("ip_vs", ip_vs(snap)), ("ip_vs_conn", ip_vs_conn(snap)),
                       ("ip_vs_conn_sync", ip_vs_conn_sync(snap)),
                       ("ip_vs_stats", ip_vs_stats(snap))):
        tmp = net / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, net / name)
