"""IPVS's and ipvsadm's numeric limits and defaults, each defined once.

Sources: ipvsadm.c (MAX_TIMEOUT, the ranges its string_to_number() calls accept),
libipvs/libipvs.h (IPVS_SVC_PERSISTENT_TIMEOUT), include/uapi/linux/ip_vs.h (name lengths),
net/netfilter/ipvs/ip_vs_conn.c (the connection hash size printed in the version line).
"""

from __future__ import annotations

from typing import Final

MAX_TIMEOUT: Final = 86400 * 31         # ipvsadm: --set values and -p [timeout]
PERSISTENT_TIMEOUT: Final = 360         # -p with no value (the man page's 300 is wrong)
MAX_PORT: Final = 65535
MAX_WEIGHT: Final = 65535               # -w 0..65535
MAX_THRESHOLD: Final = 2**31 - 1        # -x / -y 0..INT_MAX
MAX_FWMARK: Final = 2**32 - 1           # -f 1..UINT_MAX
MAX_ADDR: Final = 2**32 - 1             # an IPv4 address as an integer
SCHEDNAME_MAXLEN: Final = 16            # IP_VS_SCHEDNAME_MAXLEN, with the NUL
NETMASK_ALL: Final = 0xFFFFFFFF         # -M default: one client, one template
CONN_TAB_SIZE: Final = 1 << 12          # CONFIG_IP_VS_TAB_BITS 12: "(size=4096)"
DEFAULT_SCHEDULER: Final = "wlc"        # ipvsadm's DEF_SCHED
