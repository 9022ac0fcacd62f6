"""The metrics endpoint speaks node_exporter's IPVS metrics word for word."""

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from pyvs.views.metrics import IpvsCollector
from pyvs.views.snapshot import snapshot
from tests.helpers import make_director

# prometheus/node_exporter collector/ipvs_linux.go, newIPVSCollector(): name -> help
NODE_EXPORTER = {
    "node_ipvs_connections_total": "The total number of connections made.",
    "node_ipvs_incoming_packets_total": "The total number of incoming packets.",
    "node_ipvs_outgoing_packets_total": "The total number of outgoing packets.",
    "node_ipvs_incoming_bytes_total": "The total amount of incoming data.",
    "node_ipvs_outgoing_bytes_total": "The total amount of outgoing data.",
    "node_ipvs_backend_connections_active":
        "The current active connections by local and remote address.",
    "node_ipvs_backend_connections_inactive":
        "The current inactive connections by local and remote address.",
    "node_ipvs_backend_weight": "The current backend weight by local and remote address.",
}


def test_node_exporter_help_texts() -> None:
    d = make_director()
    registry = CollectorRegistry()
    registry.register(IpvsCollector(lambda: snapshot(d, 0.0, connections=False)))
    text = generate_latest(registry).decode()
    helps = dict(line[len("# HELP "):].split(" ", 1) for line in text.splitlines()
                 if line.startswith("# HELP node_ipvs_"))
    assert helps == NODE_EXPORTER
