"""Prometheus metrics of the health checks, from their status (pyvs.drivers.health
Checks.status(), or pyvs.core.health Monitor.status()): what keepalived's SNMP
checker MIB would tell, as metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class HealthCollector:
    """A prometheus_client collector; `status` returns a fresh status dict."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Any]:
        s = self.status()
        check_labels = ["service", "realserver", "check", "target"]
        quorum = GaugeMetricFamily("pyvs_quorum_up", "Whether the virtual service's alive "
                                   "realservers reach its quorum.", labels=["service"])
        live = GaugeMetricFamily("pyvs_quorum_live_weight", "The alive realservers' total "
                                 "weight, against the quorum.", labels=["service"])
        sorry = GaugeMetricFamily("pyvs_sorry_server_active", "Whether the sorry server "
                                  "stands in for the realservers.", labels=["service",
                                                                            "sorry_server"])
        alive = GaugeMetricFamily("pyvs_realserver_up", "Whether every check of the "
                                  "realserver passes.", labels=["service", "realserver"])
        up = GaugeMetricFamily("pyvs_check_up", "Whether the check passes (after its "
                               "retries).", labels=check_labels)
        runs = CounterMetricFamily("pyvs_checks", "Checks run.", labels=check_labels)
        failed = CounterMetricFamily("pyvs_check_failures", "Checks that failed.",
                                     labels=check_labels)
        for pool in s["pools"]:
            name = pool["name"]
            quorum.add_metric([name], int(pool["quorum_up"]))
            live.add_metric([name], pool["live_weight"])
            if pool["sorry_server"] is not None:
                sorry.add_metric([name, pool["sorry_server"]["address"]],
                                 int(pool["sorry_server"]["active"]))
            for rs in pool["realservers"]:
                alive.add_metric([name, rs["address"]], int(rs["alive"]))
                for c in rs["checks"]:
                    labels = [name, rs["address"], c["kind"], c["target"]]
                    up.add_metric(labels, int(c["up"]))
                    runs.add_metric(labels, c["runs"])
                    failed.add_metric(labels, c["failures"])
        yield from (quorum, live, sorry, alive, up, runs, failed)
        transitions = CounterMetricFamily("pyvs_health_transitions", "State changes of "
                                          "checks, realservers, quorums and sorry servers.",
                                          labels=["event"])
        for event, n in sorted(s.get("events", {}).items()):
            transitions.add_metric([event], n)
        yield transitions
