"""ipvsadm rules files -> the configuration model.

What `ipvsadm -S [-n]` (ipvsadm-save) writes and `ipvsadm -R` (ipvsadm-restore) reads: one
ipvsadm command line per line, with or without a leading `ipvsadm`, `#` comments.  Lines
are parsed by pyvsadm's own parser (so addresses are read as ipvsadm reads them, with
inet_aton: 010.0.0.1 is 8.0.0.1) and applied in order to a scratch director, which refuses
what the kernel would (a second -A of one service, a -a to no service) with libipvs's
text; the configuration is then read back from that director, so -E, -e, -d, -D and -C
lines mean what they mean to ipvsadm -R.  Listing commands (-L, -S) are not rules.
"""

from __future__ import annotations

from ..core.engine import ConfigError, Director
from ..pyvsadm import Exit, Invocation, rules
from ..views.snapshot import snapshot
from .model import Config, ConfigFileError, from_snapshot

NOT_RULES = ("list", "save", "restore")


def parse(text: str, path: str) -> Config:
    director = Director()
    for n, inv in _commands(text, path):
        try:
            director.apply(inv.command(), 0.0)
        except ConfigError as exc:
            raise ConfigFileError(f"{path}: line {n}: {exc}") from None
    return from_snapshot(snapshot(director, 0.0, connections=False), path)


def _commands(text: str, path: str) -> list[tuple[int, Invocation]]:
    lines = text.splitlines()
    try:
        found = list(rules(lines, "ipvsadm"))
    except Exit as exc:
        reason = exc.message.strip().splitlines()[0] if exc.message else "not a rule"
        raise ConfigFileError(f"{path}: line {exc.line}: {reason}") from None
    for n, inv in found:
        if inv.cmd in NOT_RULES:
            raise ConfigFileError(f"{path}: line {n}: `{lines[n - 1].strip()}` is not a "
                                  "rule (a rules file holds changes such as -A and -a)")
    return found


def looks_like(text: str) -> bool:
    """A rules file: its first line that is not blank or a comment is an ipvsadm command."""
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "ipvsadm":
            return True
        return words[0].startswith("-")
    return False
