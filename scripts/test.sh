#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite plus the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/mypy pyvs
# The suite runs on the compiled engine, then everything but the live tests (the lab's,
# tests/test_live*.py, and the binding's) again on the Python source (what
# `scripts/demo.sh` and a plain install run).
.venv/bin/python -c 'import pyvs, sys; sys.exit(pyvs.ENGINE != "compiled")' \
  || { echo "test: the compiled engine did not load" >&2; exit 1; }
.venv/bin/python -m pytest -q "$@"
PYVS_PURE=1 .venv/bin/python -m pytest -q --ignore-glob='tests/test_live*.py' \
  --ignore=tests/test_nfqueue.py "$@" || [ $? = 5 ]  # 5: none left
