"""ipvsadm 1.31's listings, character for character (``ipvsadm.c``: list_all, print_title,
print_service_entry, print_largenum, list_conn, print_conn; ``libipvs.c``: the sort order).

Everything renders from a snapshot dict (see :mod:`pyvs.views.snapshot`).
"""

from __future__ import annotations

import socket
from enum import Flag, auto
from functools import cmp_to_key
from typing import Any

from ..core.forwarding import BY_WORD, TUNNEL
from ..core.limits import CONN_TAB_SIZE
from ..core.packet import PROTO_NAMES, ip_to_int

VERSION_LINE = f"IP Virtual Server version 1.2.1 (size={CONN_TAB_SIZE})"
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()} | {"FWM": 0}


class Fmt(Flag):
    """ipvsadm's FMT_* listing bits."""

    NONE = 0
    NUMERIC = auto()
    STATS = auto()
    RATE = auto()
    THRESHOLDS = auto()
    PERSISTENTCONN = auto()
    NOSORT = auto()
    EXACT = auto()
    RULE = auto()
    TUN_INFO = auto()


def _s32(value: int) -> int:
    """A u32 difference converted to int, as gcc does: the comparators wrap."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _cmp_services(a: dict, b: dict) -> int:
    r = _s32(a["fwmark"] - b["fwmark"])
    if r:
        return r
    r = PROTO_NUMBERS[a["proto"]] - PROTO_NUMBERS[b["proto"]]
    if r:
        return r
    r = _s32(ip_to_int(a["address"] or "0.0.0.0") - ip_to_int(b["address"] or "0.0.0.0"))
    if r:
        return r
    return a["port"] - b["port"]


def _cmp_dests(a: dict, b: dict) -> int:
    r = _s32(ip_to_int(a["address"]) - ip_to_int(b["address"]))
    if r:
        return r
    return a["port"] - b["port"]


def largenum(i: int, fmt: Fmt) -> str:
    if fmt & Fmt.EXACT:
        text = str(i)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    if i < 100_000_000:
        return f"{i:9d}"
    if i < 1_000_000_000:
        return f"{i // 1000:8d}K"
    if i < 100_000_000_000:
        return f"{i // 1_000_000:8d}M"
    if i < 100_000_000_000_000:
        return f"{i // 1_000_000_000:8d}G"
    return f"{i // 1_000_000_000_000:8d}T"


def _host(addr: str, fmt: Fmt) -> str:
    if fmt & Fmt.NUMERIC:
        return addr
    try:
        return socket.gethostbyaddr(addr)[0]
    except (OSError, UnicodeError):
        return addr


def _service_port(port: int, proto: str, fmt: Fmt) -> str:
    if fmt & Fmt.NUMERIC:
        return str(port)
    try:
        return socket.getservbyport(port, proto.lower())
    except (OSError, OverflowError):
        return str(port)


def addrport(addr: str, port: int, proto: str, fmt: Fmt) -> str:
    """addrport_to_anyname()."""
    return f"{_host(addr, fmt)}:{_service_port(port, proto, fmt)}"


def title(fmt: Fmt) -> str:
    if fmt & Fmt.STATS:
        return ("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes",
                   "OutBytes"))
    if fmt & Fmt.RATE:
        return ("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"))
    if fmt & Fmt.THRESHOLDS:
        return ("%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn",
                   "InActConn"))
    if fmt & Fmt.PERSISTENTCONN:
        return ("%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn",
                   "InActConn"))
    if fmt & Fmt.TUN_INFO:
        return ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn "
                "InActConn\n")
    return ("Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def _stats5(values: tuple, fmt: Fmt) -> str:
    return "".join(largenum(v, fmt) for v in values)


def _service_name(svc: dict, fmt: Fmt) -> str:
    """The service as the listing names it: `TCP  host:port` (33 columns), `FWM  N`, or as
    a rule's -t/-u/-f option."""
    proto = svc["proto"]
    if svc["fwmark"]:
        return f"-f {svc['fwmark']}" if fmt & Fmt.RULE else f"FWM  {svc['fwmark']}"
    vname = addrport(svc["address"], svc["port"], proto, fmt)
    if fmt & Fmt.RULE:
        return f"{'-t' if proto == 'TCP' else '-u'} {vname}"
    return f"{proto:<4s} {vname}"[:33]


def _persistence(svc: dict, persistent: str, mask: str) -> str:
    if svc["persistent"] is None:
        return ""
    text = f" {persistent} {svc['persistent']}"
    if svc["netmask"] != "255.255.255.255":
        text += f" {mask} {svc['netmask']}"
    return text


def _service_line(svc: dict, name: str, fmt: Fmt) -> str:
    # ipvsadm prints " -b " / " (...)" when any of the three bits is set, then the names
    # print_sched_flags() knows for the scheduler: sh or mh with flag-3 gives "-b " and "()"
    flagged, flags = svc["sched_flags"], ",".join(svc["flags"])
    if fmt & Fmt.RULE:
        return (f"-A {name} -s {svc['scheduler']}" + _persistence(svc, "-p", "-M")
                + (" -o" if svc["ops"] else "") + (" -b " + flags if flagged else ""))
    if fmt & Fmt.STATS:
        st = svc["stats"]
        return f"{name:<33s}" + _stats5(
            (st["conns"], st["inpkts"], st["outpkts"], st["inbytes"], st["outbytes"]), fmt)
    if fmt & Fmt.RATE:
        rt = svc["rate"]
        return f"{name:<33s}" + _stats5(
            (rt["cps"], rt["inpps"], rt["outpps"], rt["inbps"], rt["outbps"]), fmt)
    return (f"{name} {svc['scheduler']}" + (" (" + flags + ")" if flagged else "")
            + _persistence(svc, "persistent", "mask") + (" ops" if svc["ops"] else ""))


def _dest_line(d: dict, name: str, proto: str, fmt: Fmt) -> str:
    dname = addrport(d["address"], d["port"], proto, fmt)
    fwd = BY_WORD[d["forward"]]
    if fmt & Fmt.RULE:
        # print_tunnel_rule(): pyvs tunnels are IPIP, which -S spells out
        tunnel = " --tun-type ipip" if fwd.code == TUNNEL else ""
        return f"-a {name} -r {dname} {fwd.switch} -w {d['weight']}{tunnel}"
    dname = dname[:28]
    if fmt & Fmt.STATS:
        st = d["stats"]
        return f"  -> {dname:<28s}" + _stats5(
            (st["conns"], st["inpkts"], st["outpkts"], st["inbytes"], st["outbytes"]), fmt)
    if fmt & Fmt.RATE:
        rt = d["rate"]
        return (f"  -> {dname:<28s} {rt['cps']:8d} {rt['inpps']:8d} {rt['outpps']:8d}"
                + largenum(rt["inbps"], fmt) + largenum(rt["outbps"], fmt))
    counts = f"{d['active']:<10d} {d['inactive']:<10d}"
    if fmt & Fmt.THRESHOLDS:
        return f"  -> {dname:<28s} {d['uthreshold']:<10d} {d['lthreshold']:<10d} {counts}"
    if fmt & Fmt.PERSISTENTCONN:
        return f"  -> {dname:<28s} {d['weight']:<9d} {d['persistent']:<11d} {counts}"
    if fmt & Fmt.TUN_INFO:
        info = "ipip" if fwd.code == TUNNEL else "n/a"
        return f"  -> {dname:<28s} {fwd.name:<7s} {info:<13s} {d['weight']:<6d} {counts}"
    return f"  -> {dname:<28s} {fwd.name:<7s} {d['weight']:<6d} {counts}"


def service_entry(svc: dict, fmt: Fmt) -> str:
    """print_service_entry(): one service line and its realserver lines."""
    name = _service_name(svc, fmt)
    dests = svc["dests"]
    if not fmt & Fmt.NOSORT:
        dests = sorted(dests, key=cmp_to_key(_cmp_dests))
    lines = [_service_line(svc, name, fmt)]
    lines.extend(_dest_line(d, name, svc["proto"], fmt) for d in dests)
    return "".join(line + "\n" for line in lines)


def list_all(snap: dict[str, Any], fmt: Fmt = Fmt.NUMERIC) -> str:
    """`ipvsadm -L` (with the format bits), or `ipvsadm -S` with Fmt.RULE."""
    services = snap["services"]
    if not fmt & Fmt.NOSORT:
        services = sorted(services, key=cmp_to_key(_cmp_services))
    head = "" if fmt & Fmt.RULE else VERSION_LINE + "\n" + title(fmt)
    return head + "".join(service_entry(svc, fmt) for svc in services)


def list_conn(snap: dict[str, Any], fmt: Fmt = Fmt.NUMERIC) -> str:
    """`ipvsadm -L -c`."""
    out = ["IPVS connection entries\n"]
    if fmt & Fmt.PERSISTENTCONN:
        out.append("pro expire %-11s %-18s %-18s %-18s %-16s %s\n"
                   % ("state", "source", "virtual", "destination", "pe name", "pe_data"))
    else:
        out.append("pro expire %-11s %-18s %-18s %s\n"
                   % ("state", "source", "virtual", "destination"))
    for c in snap["connections"]:
        names = []
        for field in ("client", "virtual", "dest"):
            addr, port = c[field].rsplit(":", 1)
            names.append(addrport(addr, int(port), c["proto"], fmt))
        expires = c["expires"]
        expire = f"{expires // 60:02d}:{expires % 60:02d}"
        # print_conn(): the PE columns only for a line with persistence-engine data,
        # which pyvs never has (no persistence engines): the plain row under either header
        out.append(f"{c['proto']:<3s} {expire:<6s} {c['state']:<11s} "
                   f"{names[0]:<18s} {names[1]:<18s} {names[2]}\n")
    return "".join(out)


def list_timeout(snap: dict[str, Any]) -> str:
    t = snap["timeouts"]
    return f"Timeout (tcp tcpfin udp): {t['tcp']} {t['tcpfin']} {t['udp']}\n"


def list_daemon(snap: dict[str, Any]) -> str:
    """ipvsadm's list_daemon(): one line per running sync daemon, master first.  The
    kernel fills in every default at start, so every field is shown."""
    out = []
    for d in snap.get("daemons", []):
        line = f"{d['state']} sync daemon (mcast={d['mcast_ifn']}, syncid={d['syncid']}"
        if d["sync_maxlen"]:
            line += f", maxlen={d['sync_maxlen']}"
        line += f", group={d['mcast_group']}"
        if d["mcast_port"]:
            line += f", port={d['mcast_port']}"
        if d["mcast_ttl"]:
            line += f", ttl={d['mcast_ttl']}"
        out.append(line + ")\n")
    return "".join(out)


def render(snap: dict[str, Any], fmt: Fmt, connections: bool = False,
           timeout: bool = False) -> str:
    """The listing ipvsadm -L prints with these options (-c, --timeout, or the table)."""
    if connections:
        return list_conn(snap, fmt)
    if timeout:
        return list_timeout(snap)
    return list_all(snap, fmt)


def state_counts(snap: dict[str, Any], per_realserver: bool = False) -> str:
    """The director's entries counted by state, as `netstat -n | awk '{++S[$NF]}'` counts
    a host's sockets (templates left out), overall or per realserver."""
    groups: dict[str, dict[str, int]] = {}
    for c in snap["connections"]:
        if c["template"]:
            continue
        key = c["dest"].rsplit(":", 1)[0] if per_realserver else ""
        counts = groups.setdefault(key, {})
        counts[c["state"]] = counts.get(c["state"], 0) + 1
    out = []
    for key in sorted(groups):
        if per_realserver:
            out.append(f"realserver {key}:\n")
        out.extend(f"{state} {n}\n" for state, n in sorted(groups[key].items()))
    return "".join(out)
