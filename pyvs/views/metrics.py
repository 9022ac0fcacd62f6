"""Prometheus metrics: node_exporter's IPVS metrics (names, labels, help texts) computed
from the director's snapshot, plus what no kernel exports: drops by reason."""

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
                                   "The current backend weight.", labels=LABELS)
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
        drops = CounterMetricFamily("pyvs_drops", "Packets the director dropped, by reason.",
                                    labels=["reason"])
        for reason, n in sorted(s.get("drops", {}).items()):
            drops.add_metric([reason], n)
        yield drops
        yield GaugeMetricFamily("pyvs_connection_entries",
                                "Entries in the connection table (templates included).",
                                value=s.get("entries", 0))
