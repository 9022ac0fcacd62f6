"""The forwarding methods, one row each: the kernel's code and every name a front end or a
view gives it.  Nothing else in pyvs spells these names.

Codes are IP_VS_CONN_F_FWD_MASK values (include/uapi/linux/ip_vs.h); names are
ipvsadm.c's fwd_name() and its switches (-m -g -i; Local saves as -g); keepalived's
lvs_method words (NAT is keepalived's default, DR ipvsadm's); the LVS mode of a cluster
whose realservers are all forwarded that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MASQ: Final = 0
LOCALNODE: Final = 1
TUNNEL: Final = 2
DROUTE: Final = 3


@dataclass(frozen=True)
class Forwarding:
    code: int                 # IP_VS_CONN_F_MASQ, _LOCALNODE, _TUNNEL, _DROUTE
    word: str                 # config files, snapshots, JSON
    name: str                 # the Forward column of ipvsadm -L, /proc/net/ip_vs
    switch: str               # ipvsadm -a / -S
    keepalived: str | None    # keepalived.conf lvs_method / lb_kind
    mode: str | None          # the lab/simulator mode: nat, dr, tun


FORWARDING: Final = (
    Forwarding(MASQ, "masq", "Masq", "-m", "NAT", "nat"),
    Forwarding(DROUTE, "route", "Route", "-g", "DR", "dr"),
    Forwarding(TUNNEL, "tunnel", "Tunnel", "-i", "TUN", "tun"),
    Forwarding(LOCALNODE, "local", "Local", "-g", None, None),
)
BY_CODE: Final = {f.code: f for f in FORWARDING}
BY_WORD: Final = {f.word: f for f in FORWARDING}
BY_MODE: Final = {f.mode: f for f in FORWARDING if f.mode is not None}
MODES: Final = tuple(BY_MODE)                        # nat, dr, tun
CONFIG_WORDS: Final = tuple(f.word for f in FORWARDING if f.mode is not None)
