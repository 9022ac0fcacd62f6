#!/usr/bin/env bash
# The main job: simulate every built-in scenario in LVS-NAT and LVS-DR, compare the
# director's ActiveConn/InActConn with the realservers' own sockets, print the accuracy
# table and write the plot (compare.png) and the samples (compare.json).  No root, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
.venv/bin/pyvs compare --plot compare.png --json compare.json "$@"
