"""Compile the per-packet path with mypyc: the same Python source, built as C extensions.

    .venv/bin/python scripts/compile.py           build if stale (needs mypy and a C compiler)
    .venv/bin/python scripts/compile.py --clean   remove the build; pyvs runs as plain Python

The extensions are written next to their sources (``pyvs/core/engine.cpython-*.so`` ...),
with one shared library, ``pyvs/_native__mypyc*.so``, and ``pyvs/_native.json``: the SHA-256
of each compiled source.  ``pyvs/__init__.py`` compares those hashes at import and runs the
Python source of any module edited since, so a stale build is never used.  PYVS_PURE=1 runs
the Python source whatever is built.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["PYVS_PURE"] = "1"     # importing pyvs must not judge the build being replaced
from pyvs import NATIVE_MANIFEST, native_digests  # noqa: E402


def clean() -> None:
    for path in ROOT.glob("pyvs/**/*.so"):
        path.unlink()
    (ROOT / NATIVE_MANIFEST).unlink(missing_ok=True)


def up_to_date() -> bool:
    """Built for this Python, from exactly the sources now on disk."""
    path = ROOT / NATIVE_MANIFEST
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if not path.exists():
        return False
    digests = native_digests()
    return (json.loads(path.read_text()) == digests
            and all((ROOT / src).with_suffix(suffix).exists() for src in digests))


def build(opt_level: str) -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    clean()
    os.chdir(ROOT)
    setup(name="pyvs-native", packages=[], py_modules=[],
          ext_modules=mypycify(list(native_digests()), group_name="pyvs._native",
                               opt_level=opt_level),
          script_args=["-q", "build_ext", "--inplace", "--build-temp", "build/native"])
    (ROOT / NATIVE_MANIFEST).write_text(json.dumps(native_digests(), indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled build")
    ap.add_argument("--opt-level", default="1", choices="0123",
                    help="C optimisation level (default 1; 3 took 4x as long to build here)")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args()
    if args.clean:
        clean()
    elif args.force or not up_to_date():
        build(args.opt_level)
    else:
        print("compile: the build is up to date with the sources", file=sys.stderr)


if __name__ == "__main__":
    main()
