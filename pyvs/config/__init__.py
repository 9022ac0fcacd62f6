"""Configuration files -> the one model (:class:`Config`), whatever their format.

Formats: pyvs YAML, ipvsadm rules (`ipvsadm -S` output, as `ipvsadm -R` reads it) and
keepalived.conf, detected from the content or named with `--config-format`.
"""

from __future__ import annotations

from pathlib import Path

from ..resources import bundled_configs, find_config
from . import keepalived, rules, yamlfile
from .model import Config, ConfigFileError, RealServer, VirtualService, from_snapshot

FORMATS = ("yaml", "ipvsadm", "keepalived")

__all__ = ["Config", "ConfigFileError", "RealServer", "VirtualService", "FORMATS",
           "detect", "from_snapshot", "load"]


def detect(text: str) -> str:
    """The format of a configuration file's text."""
    if rules.looks_like(text):
        return "ipvsadm"
    if keepalived.looks_like(text):
        return "keepalived"
    return "yaml"


def load(path: str, fmt: str | None = None) -> Config:
    """A configuration file in any format (a shipped one by name: `nat`, `dr`, ...)."""
    path = find_config(str(path))
    if not Path(path).exists() and Path(path).name == path and "." not in path:
        raise ConfigFileError(f"{path}: no such file, nor a configuration pyvs ships "
                              f"({', '.join(bundled_configs())})")
    text = yamlfile.read_text(path)
    fmt = fmt or detect(text)
    if fmt == "ipvsadm":
        return rules.parse(text, path)
    if fmt == "keepalived":
        return keepalived.parse(path, lambda p: text if p == path else yamlfile.read_text(p))
    return yamlfile.load(path, text)
