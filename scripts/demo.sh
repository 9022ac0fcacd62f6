#!/usr/bin/env bash
# The main job on the built-in sample: replay a client-side capture of HTTP/1.0 fetches and a
# held connection through an LVS-NAT director, and list the table as ipvsadm -L -n would,
# during the handshake, after the fetches, and after the TIME_WAIT entries expired.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
.venv/bin/pyvs replay samples/http-nat-client.pcap --config configs/nat.yaml \
  --at 0.0025 --at 4 --at 125
echo
.venv/bin/pyvs replay samples/http-nat-client.pcap --config configs/nat.yaml --at 4 -c
