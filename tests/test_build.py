"""The mypyc build is used only when it matches its source; PYVS_PURE=1 always runs the source.

Each case imports a copy of the package in a fresh interpreter, so editing a source file
cannot disturb the tree the rest of the suite runs on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyvs

ROOT = Path(pyvs.__file__).resolve().parent.parent
BUILT = (ROOT / pyvs.NATIVE_MANIFEST).exists()
PROBE = ("import pyvs, pyvs.core.engine as e, pyvs.sim.tcp as t; "
         "print(pyvs.ENGINE, e.__file__, t.__file__)")


def _import_copy(tmp_path: Path, edit: bool = False, pure: bool = False
                 ) -> tuple[str, list[str]]:
    shutil.copytree(ROOT / "pyvs", tmp_path / "pyvs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if edit:
        with open(tmp_path / "pyvs/core/engine.py", "a") as f:
            f.write("\n# edited after the build\n")
    env = {k: v for k, v in os.environ.items() if k != "PYVS_PURE"}
    env["PYTHONPATH"] = str(tmp_path)
    if pure:
        env["PYVS_PURE"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True, timeout=60)
    engine, *files = out.stdout.split()
    assert all(f.startswith(str(tmp_path)) for f in files), files
    return engine + "|" + out.stderr, files


def test_a_fresh_build_is_used_whole(tmp_path):
    result, files = _import_copy(tmp_path)
    if BUILT:
        assert result == "compiled|"
        assert all(f.endswith(".so") for f in files)
    else:
        assert result == "python|"
        assert all(f.endswith(".py") for f in files)


def test_an_edited_source_runs_as_python_with_one_warning(tmp_path):
    result, files = _import_copy(tmp_path, edit=True)
    assert all(f.endswith(".py") for f in files)       # all or none: one shared library
    if BUILT:
        assert result == ("python|pyvs: compiled build older than its source "
                          "(pyvs.core.engine); running the Python source. Rebuild: "
                          ".venv/bin/python scripts/compile.py\n")
    else:
        assert result == "python|"


def test_pyvs_pure_runs_the_source(tmp_path):
    result, files = _import_copy(tmp_path, pure=True)
    assert result == "python|"
    assert all(f.endswith(".py") for f in files)
