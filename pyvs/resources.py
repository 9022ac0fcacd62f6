"""Files pyvs ships inside its package (found the same way from a clone or an install):
the sample configurations, the sample capture, and the hosts' provisioning scripts that
both the namespace lab and the Vagrant VMs run."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
CONFIGS = DATA / "configs"
PROVISION = DATA / "provision"


def bundled_configs() -> list[str]:
    """The names of the shipped configurations (usable as `--config NAME`)."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def find_config(name: str) -> str:
    """`name` itself if it is a file, else the shipped configuration of that name."""
    path = Path(name)
    if path.exists() or path.suffix or "/" in name:
        return name
    shipped = CONFIGS / f"{name}.yaml"
    return str(shipped) if shipped.exists() else name
