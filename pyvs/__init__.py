"""pyvs: a userspace Linux Virtual Server director and connection-table emulator.

The per-packet modules below may be compiled by mypyc (``scripts/compile.py``) from this
same source.  ``ENGINE`` says which build runs: "compiled", or "python" when nothing is
built, when PYVS_PURE=1, or when a module's source no longer matches its build (then that
module's source runs, never stale machine code).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

__version__ = "0.2.0"

NATIVE_MODULES = (
    "pyvs.core.conn", "pyvs.core.defense", "pyvs.core.engine", "pyvs.core.forwarding",
    "pyvs.core.packet", "pyvs.core.service",
    "pyvs.core.states", "pyvs.core.stats", "pyvs.core.sync", "pyvs.core.syncmsg",
    "pyvs.core.verdict",
    "pyvs.sim.events", "pyvs.sim.network", "pyvs.sim.tcp", "pyvs.truth.tcpstates",
    "pyvs.drivers.copies", "pyvs.drivers.pcap", "pyvs.drivers.replay",
)
NATIVE_MANIFEST = "pyvs/_native.json"

_ROOT = Path(__file__).resolve().parent.parent


def _source(name: str) -> str:
    """A module's source file, relative to the project root."""
    return f"{name.replace('.', '/')}.py"


def native_digests() -> dict[str, str]:
    """Source path (from the project root) -> SHA-256, for each module the build compiles."""
    return {_source(name): hashlib.sha256((_ROOT / _source(name)).read_bytes()).hexdigest()
            for name in NATIVE_MODULES}


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the named modules from their .py files, ahead of any extension beside them."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, _ROOT / _source(fullname))


def _select_build() -> str:
    manifest = _ROOT / NATIVE_MANIFEST
    if not manifest.exists():
        return "python"
    if os.environ.get("PYVS_PURE"):
        sys.meta_path.insert(0, _SourceFirst(set(NATIVE_MODULES)))
        return "python"
    built, now = json.loads(manifest.read_text()), native_digests()
    stale = sorted(name for name in NATIVE_MODULES
                   if built.get(_source(name)) != now[_source(name)])
    if stale:
        print(f"pyvs: compiled build older than its source ({', '.join(stale)}); "
              "running the Python source. Rebuild: .venv/bin/python scripts/compile.py",
              file=sys.stderr)
        # mypyc modules share one library and call each other natively: all or none
        sys.meta_path.insert(0, _SourceFirst(set(NATIVE_MODULES)))
        return "python"
    return "compiled"


ENGINE = _select_build()
