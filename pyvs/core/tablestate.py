"""A director's connection table as plain data, so that a restarted director carries on
every flow: each entry with its realserver, forwarding method, state, flags and the time
it has left, persistence templates, and each realserver's traffic counters and rates.

The services come from the new director's configuration, not from the saved table (a
restart is how a changed configuration takes effect); an entry or a template whose
service or realserver is no longer configured is left out and counted.  Time spent
stopped is passed in as `elapsed`: an entry that would have expired meanwhile is left out,
the others keep what they have left minus that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from .conn import Conn, Template
from .engine import Director
from .service import Dest, Service

VERSION: Final = 1
COUNTERS: Final = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
ESTIMATES: Final = ("kstats", "kstats0", "last", "cps", "inpps", "outpps", "inbps",
                    "outbps")


class TableStateError(ValueError):
    """A saved table that cannot be loaded; the text says why."""


@dataclass
class Restored:
    entries: int = 0
    templates: int = 0
    expired: int = 0                     # would have expired while the director was down
    unconfigured: int = 0                # their service or realserver is no longer there
    reasons: list[str] = field(default_factory=list)


def _service_key(svc: Service) -> list[int]:
    return [svc.protocol, svc.addr, svc.port, svc.fwmark]


def _dest_ref(dest: Dest) -> list[int]:
    return [*_service_key(dest.svc), dest.addr, dest.port]


def header(director: Director, now: float) -> dict[str, Any]:
    """Everything but the entries: realservers' counters, estimator state, drops."""
    dests = []
    for svc in director.services:
        for d in svc.dests:
            est = d.est
            dests.append({"ref": _dest_ref(d), "counters": [getattr(d, c) for c in COUNTERS],
                          "estimator": [getattr(est, e) for e in ESTIMATES]})
    return {"version": VERSION, "saved_at": now, "kernel": director.profile.name,
            "estimator_phase": director._next_est - now, "drops": dict(director.drops),
            "dests": dests}


def rows(director: Director, now: float) -> Iterator[list[Any]]:
    """The table's rows: templates first (["T", ...]), then connections (["C", ...],
    naming their template by its place among the templates)."""
    index: dict[int, int] = {}
    for i, ct in enumerate(director._template_list):
        index[id(ct)] = i
        yield ["T", ct.protocol, ct.caddr, ct.vaddr, ct.vport, ct.dport, ct.state,
               max(0.0, ct.expires - now), ct.timeout, ct.in_pkts, _dest_ref(ct.dest)]
    for cp in list(director._in.values()):
        control = -1 if cp.control is None else index.get(id(cp.control), -1)
        yield ["C", cp.protocol, cp.caddr, cp.cport, cp.vaddr, cp.vport, cp.dport, cp.fwd,
               cp.state, cp.inactive, cp.noout, max(0.0, cp.expires - now), cp.timeout,
               cp.in_pkts, control, _dest_ref(cp.dest)]


def _find_dest(director: Director, ref: Any) -> Dest | None:
    protocol, addr, port, fwmark, daddr, dport = ref
    svc = director.find_service(protocol, addr, port, fwmark)
    return None if svc is None else svc.find_dest(daddr, dport)


def restore(director: Director, head: dict[str, Any], table: Iterator[list[Any]],
            now: float, elapsed: float, keep: Callable[[int], bool] | None = None,
            counters: bool = True, done: Restored | None = None) -> Restored:
    """Load a saved table into `director` (configured, no traffic yet) at `now`.

    A director split into workers (pyvs run --queues) loads from every worker's file the
    entries of its own clients (`keep(client address)`), and the counters of some files
    (`counters`); counters and estimator state add up, as the kernel's per-CPU counters
    do, so the sum over the workers is kept whatever the split."""
    if not isinstance(head, dict) or head.get("version") != VERSION:
        raise TableStateError(f"not a pyvs table of version {VERSION}")
    done = done or Restored()
    try:
        for rec in head.get("dests", []) if counters else ():
            dest = _find_dest(director, rec["ref"])
            if dest is not None:
                for name, value in zip(COUNTERS, rec["counters"]):
                    setattr(dest, name, getattr(dest, name) + int(value))
                for name, value in zip(ESTIMATES, rec["estimator"]):
                    setattr(dest.est, name, _add(getattr(dest.est, name), value))
        templates: list[Template | None] = []
        for row in table:
            if keep is not None and not keep(row[2]):       # another worker's client
                if row[0] == "T":
                    templates.append(None)         # the entries name templates by place
                continue
            if row[0] == "T":
                templates.append(_template(director, row, now, elapsed, done))
            else:
                _entry(director, row, templates, now, elapsed, done)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise TableStateError(f"a malformed row ({type(exc).__name__}: {exc})") from None
    for ct in templates:              # a template whose time ran out while down: expire it
        if ct is not None and ct.alive and ct.expires <= now and not ct.n_control:
            director._expire(ct, now)
    return done


def _add(have: Any, value: Any) -> Any:
    if isinstance(value, list):
        return tuple(int(a) + int(b) for a, b in zip(have, value))
    return have + int(value)


def _template(director: Director, row: list[Any], now: float, elapsed: float,
              done: Restored) -> Template | None:
    _, protocol, snet, vaddr, vport, dport, state, left, timeout, in_pkts, ref = row
    dest = _find_dest(director, ref)
    if dest is None:
        done.unconfigured += 1
        return None
    done.templates += 1
    return director.insert_template(protocol, snet, vaddr, vport, dest, dport, state,
                                    now + max(0.0, left - elapsed), float(timeout), in_pkts)


def _entry(director: Director, row: list[Any], templates: list[Template | None], now: float,
           elapsed: float, done: Restored) -> Conn | None:
    (_, protocol, caddr, cport, vaddr, vport, dport, fwd, state, inactive, noout, left,
     timeout, in_pkts, control, ref) = row
    if left - elapsed <= 0:
        done.expired += 1
        return None
    dest = _find_dest(director, ref)
    if dest is None:
        done.unconfigured += 1
        return None
    ct = templates[control] if control >= 0 else None
    done.entries += 1
    return director.insert_entry(protocol, caddr, cport, vaddr, vport, dest, dport, fwd,
                                 state, bool(inactive), bool(noout), now + left - elapsed,
                                 float(timeout), in_pkts, ct, now)
