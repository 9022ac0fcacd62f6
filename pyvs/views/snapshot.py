"""A plain-data picture of the director's table at one instant.

Every text view renders from this, so a table captured to JSON (a bug report, a CI artefact)
lists exactly as the live one did.  Taking it is O(services + realservers), plus
O(connections) only when the connection list is asked for.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from socket import inet_ntoa
from typing import Any

from ..core.conn import Conn
from ..core.engine import Director
from ..core.forwarding import BY_CODE
from ..core.packet import PROTO_NAMES, int_to_ip
from ..core.schedulers import SCHED_FLAG_BITS, sched_flag_names
from ..core.service import Service
from ..core.states import TCP_STATE_NAMES, UDP_STATE_NAMES
from ..core.sync import daemons

RATE_FIELDS = ("cps", "inpps", "outpps", "inbps", "outbps")


def expires_in(expires: float, now: float) -> int:
    """Whole seconds left, truncated as /proc/net/ip_vs_conn shows them."""
    return max(0, math.floor(expires - now + 1e-6))


def _service(svc: Service) -> dict[str, Any]:
    dests = []
    for d in svc.dests:
        dests.append({
            "address": int_to_ip(d.addr), "port": d.port,
            "forward": BY_CODE[d.fwd].word, "weight": d.weight,
            "active": d.activeconns, "inactive": d.inactconns, "persistent": d.persistconns,
            "uthreshold": d.u_threshold, "lthreshold": d.l_threshold,
            "stats": d.est.shown().as_dict(), "rate": dict(zip(RATE_FIELDS, d.est.rates())),
        })
    return {
        "proto": "FWM" if svc.fwmark else PROTO_NAMES[svc.protocol],
        "address": None if svc.fwmark else int_to_ip(svc.addr),
        "port": svc.port, "fwmark": svc.fwmark, "scheduler": svc.sched_name,
        "flags": sched_flag_names(svc.sched_name, svc.flags),
        "sched_flags": svc.flags & SCHED_FLAG_BITS,     # the bits, shown or not
        "persistent": svc.timeout if svc.persistent else None,
        "netmask": int_to_ip(svc.netmask), "ops": svc.ops,
        "stats": svc.est.shown().as_dict(), "rate": dict(zip(RATE_FIELDS, svc.est.rates())),
        "dests": dests,
    }


def snapshot(director: Director, now: float, connections: bool = True,
             time_label: float | None = None) -> dict[str, Any]:
    """The table at `now`; `time_label` is the time written into the result."""
    director.handle_timers(now)
    snap: dict[str, Any] = {
        "time": now if time_label is None else time_label,
        "kernel": director.profile.name,
        "timeouts": {"tcp": director.timeouts.tcp, "tcpfin": director.timeouts.tcpfin,
                     "udp": director.timeouts.udp},
        "sysctls": dataclasses.asdict(director.sysctls),
        "tunnel_source": (None if director.tunnel_source is None
                          else int_to_ip(director.tunnel_source)),
        "total": {"stats": director.total_est.shown().as_dict(),
                  "rate": dict(zip(RATE_FIELDS, director.total_est.rates()))},
        "services": [_service(svc) for svc in director.services],
        "entries": director.connection_count(),
        "states": _states(director),
        "drops": dict(director.drops),
        "defense": _defense(director),
        "daemons": _daemons(director),
    }
    if connections:
        snap["connections"] = [conn_entry(director, cp, now) for cp in director.connections()]
    return snap


def _states(director: Director) -> dict[str, int]:
    """Connections (not templates) by the state -Lnc shows, kept by the engine as they
    change (never counted by a scan)."""
    counts = director.state_counts
    out = {TCP_STATE_NAMES[i]: n for i, n in enumerate(counts[:-1]) if n}
    if counts[-1]:
        out[UDP_STATE_NAMES[0]] = counts[-1]
    return out


def _daemons(director: Director) -> list[dict[str, Any]]:
    """The sync daemons as ipvsadm -L --daemon lists them, with their counters: what a
    master queued and sent, what a backup received and what it did with each record
    (docs/sync.md)."""
    out = []
    for config in daemons(director):
        d: dict[str, Any] = {f.name: getattr(config, f.name)
                             for f in dataclasses.fields(config)}
        d["mcast_group"] = int_to_ip(config.mcast_group)
        m, b = director.sync_master, director.sync_backup
        if config.state == "master" and m is not None:
            d["counters"] = {"messages": m.messages, "records": m.records_sent(),
                             "queued": m.records, "queue_dropped": m.queue_dropped()}
        elif b is not None:
            d["counters"] = {"messages": b.messages, "records": b.records,
                             "results": dict(sorted(b.counts.items()))}
        out.append(d)
    return out


def _defense(director: Director) -> dict[str, Any]:
    d = director.defense
    return {"memory_limit": director.memory_limit, "memory_short": d.short,
            "dropentry": d.dropentry, "drop_rate": d.drop_rate,
            "entries_dropped": d.entries_dropped, "packets_dropped": d.packets_dropped,
            "no_memory": d.no_memory}


CONN_FIELDS = ("proto", "state", "expires", "client", "virtual", "dest", "template", "synced")


def conn_row(director: Director, cp: Conn, now: float) -> list[Any]:
    """One entry as /proc/net/ip_vs_conn shows it, in CONN_FIELDS order.  The addresses
    are formatted from the lookup key's own bytes: a listing of a million entries spends
    most of its time here."""
    key = cp.key
    return [PROTO_NAMES.get(cp.protocol, f"IP_{cp.protocol}"), director.state_name(cp),
            expires_in(cp.expires, now), f"{inet_ntoa(key[-12:-8])}:{(key[-4] << 8) | key[-3]}",
            f"{inet_ntoa(key[-8:-4])}:{(key[-2] << 8) | key[-1]}",
            f"{int_to_ip(cp.daddr)}:{cp.dport}", cp.template, cp.synced]


def conn_entry(director: Director, cp: Conn, now: float) -> dict[str, Any]:
    return dict(zip(CONN_FIELDS, conn_row(director, cp, now)))


def expand_rows(snap: dict[str, Any]) -> dict[str, Any]:
    """A streamed snapshot's connection rows as the entries snapshot() gives."""
    fields = snap.pop("connection_fields", None)
    if fields is not None:
        snap["connections"] = [dict(zip(fields, row)) for row in snap["connections"]]
    return snap


CHUNK = 256         # entries serialised per step of a streamed listing (about 1-2 ms)
_HOLE = "@connections@"


def stream(director: Director, now: float, connections: bool, parts: bool = False
           ) -> Iterator[bytes]:
    """The control socket's snapshot reply, {"ok": true, "snapshot": {...}}\\n, in pieces:
    the header at `now`, then the entries CHUNK at a time, as rows (`connection_fields`
    names their columns; pyvs.control.request expands them).  Entries are taken from a
    copy of the table's list made at `now`; one that leaves before its piece is written is
    left out, one that changes shows its state then (as a kernel's /proc read goes bucket
    by bucket).  Expiry is counted from `now`.

    With `parts` (a director's workers answering it, pyvs.drivers.workers) the reply is
    lines: the header, then each piece's rows as a JSON list, then [] at the end."""
    snap = snapshot(director, now, connections=False)
    if not connections:
        yield json.dumps({"ok": True, "snapshot": snap}).encode() + b"\n"
        return
    snap["connection_fields"] = CONN_FIELDS
    if parts:
        yield json.dumps(snap).encode() + b"\n"
        for part in _pieces(director, now):
            yield json.dumps(part).encode() + b"\n"
        yield b"[]\n"
        return
    snap["connections"] = _HOLE
    head, tail = json.dumps({"ok": True, "snapshot": snap}).split(f'"{_HOLE}"')
    yield (head + "[").encode()
    first = True
    for part in _pieces(director, now):
        text = json.dumps(part)[1:-1]
        yield (text if first else "," + text).encode()
        first = False
    yield ("]" + tail + "\n").encode()


def _pieces(director: Director, now: float) -> Iterator[list[list[Any]]]:
    for entries in (director.connection_list(), director.template_list()):
        for i in range(0, len(entries), CHUNK):
            part = [conn_row(director, cp, now) for cp in entries[i:i + CHUNK] if cp.alive]
            if part:
                yield part


class SnapshotError(Exception):
    """A saved snapshot that cannot be read; the text says why."""


def read_saved(path: str, connections: bool) -> dict[str, Any]:
    """A table saved by `pyvs list --json` (or replay/simulate --json, or the control
    socket's reply); SnapshotError naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{path}: not a JSON snapshot ({exc})") from None
    if isinstance(data, dict) and "snapshot" in data:
        data = data["snapshot"]
    if not isinstance(data, dict) or "services" not in data:
        raise SnapshotError(f"{path}: not a pyvs snapshot (no 'services')")
    if connections and "connections" not in data:
        raise SnapshotError(f"{path}: snapshot has no connection list")
    return data
