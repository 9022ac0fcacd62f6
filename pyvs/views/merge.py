"""One director's snapshot from its workers' (pyvs run --queues N).

The kernel keeps one set of counters per service and realserver, summed over its CPUs
(ip_vs_stats's per-CPU counters); the workers are pyvs's CPUs.  Counts, counters and
rates add up; configuration (weights, schedulers, timeouts, sysctls) is the same in every
worker and is taken from the first.  The estimators' rates add up too: an EWMA is linear
in its input, so the sum of the workers' averages is the average of the sum, up to each
worker rounding its own.
"""

from __future__ import annotations

from typing import Any

from ..core.sync import ACTIONS


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _traffic(into: dict[str, Any], more: dict[str, Any]) -> None:
    _add(into["stats"], more["stats"])
    _add(into["rate"], more["rate"])


def _service_key(s: dict[str, Any]) -> tuple[Any, ...]:
    return s["proto"], s["address"], s["port"], s["fwmark"]


def merge(snaps: list[dict[str, Any]], time: float) -> dict[str, Any]:
    """The workers' snapshots (without connections) as one director's, at `time`."""
    first, rest = snaps[0], snaps[1:]
    out = {**first, "time": time, "total": _copy(first["total"]),
           "services": [_copy_service(s) for s in first["services"]],
           "states": dict(first["states"]), "drops": dict(first["drops"]),
           "defense": dict(first["defense"]),
           "daemons": [_copy_daemon(d) for d in first.get("daemons", [])]}
    services = {_service_key(s): s for s in out["services"]}
    for snap in rest:
        _traffic(out["total"], snap["total"])
        out["entries"] += snap["entries"]
        _add(out["states"], snap["states"])
        _add(out["drops"], snap["drops"])
        _defense(out["defense"], snap["defense"])
        _daemons(out["daemons"], snap.get("daemons", []))
        for s in snap["services"]:
            have = services.get(_service_key(s))
            if have is None:             # a change reached this worker first: list it
                out["services"].append(_copy_service(s))
                services[_service_key(s)] = out["services"][-1]
                continue
            _traffic(have, s)
            dests = {(d["address"], d["port"]): d for d in have["dests"]}
            for d in s["dests"]:
                mine = dests.get((d["address"], d["port"]))
                if mine is None:
                    have["dests"].append(_copy(d))
                    continue
                _traffic(mine, d)
                for k in ("active", "inactive", "persistent"):
                    mine[k] += d[k]
    return out


def _copy(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "stats": dict(d["stats"]), "rate": dict(d["rate"])}


def _copy_service(s: dict[str, Any]) -> dict[str, Any]:
    return {**_copy(s), "dests": [_copy(d) for d in s["dests"]]}


def _defense(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Budgets and what the defenses did add up; a level is the highest any worker is at."""
    for k in ("memory_limit", "entries_dropped", "packets_dropped", "no_memory"):
        if into.get(k) is not None and more.get(k) is not None:
            into[k] += more[k]
    for k in ("memory_short", "dropentry", "drop_rate"):
        into[k] = max(into.get(k) or 0, more.get(k) or 0)


def _copy_daemon(d: dict[str, Any]) -> dict[str, Any]:
    if "counters" not in d:
        return dict(d)
    c = dict(d["counters"])
    if "results" in c:
        c["results"] = dict(c["results"])
    return {**d, "counters": c}


def _daemons(into: list[dict[str, Any]], more: list[dict[str, Any]]) -> None:
    """Each worker's master sends its own entries: its counters add up.  Every worker's
    backup hears every datagram and applies its own clients' records: the records and
    what was done with them add up, the datagrams and their decoding are the same."""
    theirs = {d["state"]: d.get("counters", {}) for d in more}
    for d in into:
        c, other = d.get("counters"), theirs.get(d["state"])
        if not c or not other:
            continue
        for k, v in other.items():
            if k == "results":
                for what, n in v.items():
                    if what in ACTIONS:
                        c["results"][what] = c["results"].get(what, 0) + n
            elif d["state"] == "master" or k == "records":
                c[k] = c.get(k, 0) + v
