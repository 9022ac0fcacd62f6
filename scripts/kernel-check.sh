#!/usr/bin/env bash
# The real-kernel check (slow; not part of scripts/test.sh).  See docs/kernel-check.md.
#   scripts/kernel-check.sh [SCENARIO...]        as root: build the guest image if needed, boot
#                                                Debian 12's kernel under qemu, record each
#                                                scenario afresh, compare pyvs with it
#   scripts/kernel-check.sh --out DIR [...]      keep the new records in DIR (e.g.
#                                                tests/kernel/records to commit them)
#   scripts/kernel-check.sh --records-only [...] compare the committed records, no qemu
# Prints a table scenarios x views: match, known (docs/kernel-check.md), DIFF; exits 1 on a DIFF.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh >&2
records_only=0
for arg in "$@"; do [ "$arg" = --records-only ] && records_only=1; done
if [ "$records_only" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "kernel-check: recording needs root (debootstrap, qemu); --records-only compares the committed records" >&2
  exit 2
fi
exec .venv/bin/python -m pyvs.lab.kernel_check "$@"
