"""Prometheus metrics: node_exporter's IPVS metrics (names, labels, help texts) computed
from the director's snapshot, plus what node_exporter does not export: each realserver's
packets, bytes and rates, the connections by state, drops by reason, the defenses, the
sync daemons' messages and records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LABELS = ["local_address", "local_port", "remote_address", "remote_port", "proto",
          "local_mark"]


class IpvsCollector:
    """A prometheus_client collector; `snap` returns a fresh snapshot (no connections)."""

    def __init__(self, snap: Callable[[], dict[str, Any]]) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        s = self.snap()
        st = s["total"]["stats"]
        for name, key, text in (
                ("connections", "conns", "The total number of connections made."),
                ("incoming_packets", "inpkts", "The total number of incoming packets."),
                ("outgoing_packets", "outpkts", "The total number of outgoing packets."),
                ("incoming_bytes", "inbytes", "The total amount of incoming data."),
                ("outgoing_bytes", "outbytes", "The total amount of outgoing data.")):
            yield CounterMetricFamily(f"node_ipvs_{name}", text, value=st[key])
        active = GaugeMetricFamily("node_ipvs_backend_connections_active",
                                   "The current active connections by local and remote "
                                   "address.", labels=LABELS)
        inactive = GaugeMetricFamily("node_ipvs_backend_connections_inactive",
                                     "The current inactive connections by local and remote "
                                     "address.", labels=LABELS)
        weight = GaugeMetricFamily("node_ipvs_backend_weight",
                                   "The current backend weight by local and remote address.",
                                   labels=LABELS)
        for svc in s["services"]:
            if svc["fwmark"]:
                local = ["", "0"]
                proto, mark = "FWM", f"{svc['fwmark']:08X}"
            else:
                local = [svc["address"], str(svc["port"])]
                proto, mark = svc["proto"], ""
            for d in svc["dests"]:
                labels = [*local, d["address"], str(d["port"]), proto, mark]
                active.add_metric(labels, d["active"])
                inactive.add_metric(labels, d["inactive"])
                weight.add_metric(labels, d["weight"])
        yield from (active, inactive, weight)
        yield from _backend_traffic(s)
        drops = CounterMetricFamily("pyvs_drops", "Packets the director dropped, by reason.",
                                    labels=["reason"])
        for reason, n in sorted(s.get("drops", {}).items()):
            drops.add_metric([reason], n)
        yield drops
        yield GaugeMetricFamily("pyvs_connection_entries",
                                "Entries in the connection table (templates included).",
                                value=s.get("entries", 0))
        states = GaugeMetricFamily("pyvs_connections", "Connections by state (as -Lnc "
                                   "shows them; templates not included).", labels=["state"])
        for state, n in sorted(s.get("states", {}).items()):
            states.add_metric([state], n)
        yield states
        yield from _defense(s.get("defense", {}))
        yield from _sync(s.get("daemons", []))


def _labels(svc: dict[str, Any], d: dict[str, Any]) -> list[str]:
    if svc["fwmark"]:
        return ["", "0", d["address"], str(d["port"]), "FWM", f"{svc['fwmark']:08X}"]
    return [svc["address"], str(svc["port"]), d["address"], str(d["port"]), svc["proto"], ""]


def _backend_traffic(s: dict[str, Any]) -> Iterator[Any]:
    """Each realserver's counters (as --stats shows them) and rates (as --rate shows)."""
    counters = {key: CounterMetricFamily(f"pyvs_backend_{name}", text, labels=LABELS)
                for key, name, text in (
                    ("conns", "connections", "Connections scheduled to the realserver."),
                    ("inpkts", "incoming_packets", "Packets from clients to the realserver."),
                    ("outpkts", "outgoing_packets", "Packets from the realserver to clients "
                     "that crossed the director (NAT)."),
                    ("inbytes", "incoming_bytes", "Bytes from clients to the realserver."),
                    ("outbytes", "outgoing_bytes", "Bytes from the realserver to clients "
                     "that crossed the director (NAT)."))}
    rates = {key: GaugeMetricFamily(f"pyvs_backend_{name}", text, labels=LABELS)
             for key, name, text in (
                 ("cps", "connections_per_second", "The 2 s estimator's connection rate."),
                 ("inpps", "incoming_packets_per_second", "... incoming packet rate."),
                 ("outpps", "outgoing_packets_per_second", "... outgoing packet rate."),
                 ("inbps", "incoming_bytes_per_second", "... incoming byte rate."),
                 ("outbps", "outgoing_bytes_per_second", "... outgoing byte rate."))}
    for svc in s["services"]:
        for d in svc["dests"]:
            labels = _labels(svc, d)
            for key, family in counters.items():
                family.add_metric(labels, d["stats"][key])
            for key, gauge in rates.items():
                gauge.add_metric(labels, d["rate"][key])
    yield from counters.values()
    yield from rates.values()


def _defense(d: dict[str, Any]) -> Iterator[Any]:
    """What the kernel's defenses (drop_entry, drop_packet, the memory budget) did."""
    for key, text in (("entries_dropped", "Entries dropped by drop_entry."),
                      ("packets_dropped", "New connections dropped by drop_packet."),
                      ("no_memory", "New connections refused: the memory budget was spent.")):
        yield CounterMetricFamily(f"pyvs_defense_{key}", text, value=d.get(key, 0))
    yield GaugeMetricFamily("pyvs_defense_memory_short", "1 while the memory left is below "
                            "amemthresh.", value=int(bool(d.get("memory_short"))))


APPLIED = ("created", "updated", "replaced")       # pyvs.core.sync.APPLIED


def _sync(daemons: list[dict[str, Any]]) -> Iterator[Any]:
    """The sync daemons (docs/sync.md): what a master sent, what a backup received, and
    why a backup dropped a datagram or a record (the kernel's drop points, the records
    pyvs cannot hold, stale and one-packet records), or what it did with the record.
    A daemon's counters start at 0 when it starts."""
    running = GaugeMetricFamily("pyvs_sync_daemon", "1 for each running sync daemon.",
                                labels=["state", "mcast_interface", "syncid"])
    families = {key: CounterMetricFamily(f"pyvs_sync_{key}", text, labels=["state"])
                for key, text in (
                    ("messages", "Sync datagrams a master sent or a backup received."),
                    ("records", "Connection records in them."))}
    queued = CounterMetricFamily("pyvs_sync_records_queued", "Records a master queued "
                                 "(sent within 2-3 s, unless dropped).")
    dropped = CounterMetricFamily("pyvs_sync_dropped", "Sync datagrams or records dropped, "
                                  "by reason.", labels=["state", "reason"])
    applied = CounterMetricFamily("pyvs_sync_records_applied", "Records a backup applied, "
                                  "by what it did.", labels=["action"])
    for d in daemons:
        state, c = d["state"], d.get("counters", {})
        running.add_metric([state, d["mcast_ifn"], str(d["syncid"])], 1)
        for key, family in families.items():
            family.add_metric([state], c.get(key, 0))
        if state == "master":
            queued.add_metric([], c.get("queued", 0))
            dropped.add_metric([state, "queue-full"], c.get("queue_dropped", 0))
        for reason in ("send-error", "receive-error"):
            if reason in c:
                dropped.add_metric([state, reason], c[reason])
        for what, n in sorted(c.get("results", {}).items()):
            if what in APPLIED:
                applied.add_metric([what], n)
            else:
                dropped.add_metric([state, what], n)
    yield running
    yield from families.values()
    yield from (queued, dropped, applied)
