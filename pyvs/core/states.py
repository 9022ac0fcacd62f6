"""All of IPVS's TCP connection-state logic, as data.

The tables are the kernel's (``net/netfilter/ipvs/ip_vs_proto_tcp.c``), cell for cell, so a
reader can hold them against the C source.  The engine never branches on a state name: it
indexes these tables.  Kernel-version differences (docs/ipvs.md, "kernel versions") are expressed as
:class:`KernelProfile` values that select or patch tables, not as ``if`` trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- TCP states (include/net/ip_vs.h), index = kernel enum value -----------------------------
NONE: Final = 0
ESTABLISHED: Final = 1
SYN_SENT: Final = 2
SYN_RECV: Final = 3
FIN_WAIT: Final = 4
TIME_WAIT: Final = 5
CLOSE: Final = 6
CLOSE_WAIT: Final = 7
LAST_ACK: Final = 8
LISTEN: Final = 9
SYNACK: Final = 10
N_TCP_STATES: Final = 11

TCP_STATE_NAMES: Final = (
    "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
)

# tcp_timeouts[] in seconds.  `--set tcp tcpfin udp` patches ESTABLISHED and FIN_WAIT only.
TCP_TIMEOUTS: Final = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
UDP_TIMEOUT: Final = 300

# UDP has a single state, shown as "UDP"; templates show NONE / ASSURED.
UDP_NORMAL: Final = 0
UDP_STATE_NAMES: Final = ("UDP",)
TEMPLATE_NONE: Final = 0
TEMPLATE_ASSURED: Final = 1
TEMPLATE_STATE_NAMES: Final = ("NONE", "ASSURED")

# --- Direction sections (tcp_state_off[]) ------------------------------------------------------
INPUT: Final = 0          # client -> VIP, connection fully tracked
OUTPUT: Final = 1         # realserver -> client, seen by the director
INPUT_ONLY: Final = 2     # client -> VIP while the connection is NOOUTPUT (DR / TUN)

# --- Flag rows, chosen by tcp_state_idx(): RST > SYN > FIN > ACK, else -1 ---------------------
ROW_SYN: Final = 0
ROW_FIN: Final = 1
ROW_ACK: Final = 2
ROW_RST: Final = 3
ROW_NONE: Final = -1      # no RST/SYN/FIN/ACK: set_tcp_state() keeps its initial CLOSE

TH_FIN: Final = 0x01
TH_SYN: Final = 0x02
TH_RST: Final = 0x04
TH_ACK: Final = 0x10


# Typed so that the compiled build indexes them natively on the per-packet path.
Row = tuple[int, ...]          # the next state, indexed by the current state
Section = tuple[Row, ...]      # rows, indexed by FLAG_ROW
Table = tuple[Section, ...]    # sections: INPUT, OUTPUT, INPUT_ONLY
Active = tuple[bool, ...]      # whether a state counts as ActiveConn, indexed by state


def _flag_row(flags: int) -> int:
    if flags & TH_RST:
        return ROW_RST
    if flags & TH_SYN:
        return ROW_SYN
    if flags & TH_FIN:
        return ROW_FIN
    if flags & TH_ACK:
        return ROW_ACK
    return ROW_NONE


#: TCP flags byte -> table row, precomputed for the per-packet path.
FLAG_ROW: Final[Row] = tuple(_flag_row(f) for f in range(256))

sNO, sES, sSS, sSR, sFW, sTW, sCL, sCW, sLA, sLI, sSA = range(N_TCP_STATES)

# tcp_states[]: [section][row][state]
TCP_STATES_NORMAL: Final[Table] = (
    (  # INPUT
        #  sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
        (sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR),  # syn
        (sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW),  # fin
        (sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES),  # ack
        (sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR),  # rst
    ),
    (  # OUTPUT
        (sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR),
        (sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW),
        (sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES),
        (sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL),
    ),
    (  # INPUT-ONLY
        (sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR),
        (sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW),
        (sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES),
        (sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL),
    ),
)

# tcp_states_dos[]: used while secure_tcp is in force.
TCP_STATES_DOS: Final[Table] = (
    (  # INPUT
        (sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSA),
        (sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sSA),
        (sES, sES, sSS, sSR, sFW, sTW, sCL, sCW, sCL, sLI, sSA),
        (sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL),
    ),
    (  # OUTPUT
        (sSS, sES, sSS, sSA, sSS, sSS, sSS, sSS, sSS, sLI, sSA),
        (sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW),
        (sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES),
        (sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL),
    ),
    (  # INPUT-ONLY
        (sSA, sES, sES, sSR, sSA, sSA, sSA, sSA, sSA, sSA, sSA),
        (sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW),
        (sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES),
        (sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL),
    ),
)


def _legacy(table: Table) -> Table:
    """2.6.x-3.x: `ack` in sNO goes to sCL (not sES) in INPUT and INPUT-ONLY."""
    out: list[Section] = []
    for section_idx, section in enumerate(table):
        rows = [list(r) for r in section]
        if section_idx in (INPUT, INPUT_ONLY):
            rows[ROW_ACK][sNO] = sCL
        out.append(tuple(tuple(r) for r in rows))
    return tuple(out)


# Active states: tcp_state_active_table[] (4.9+) versus `== ESTABLISHED` (4.4 and older).
ACTIVE_MODERN: Final[Active] = tuple(s in (ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK)
                                     for s in range(N_TCP_STATES))
ACTIVE_ESTABLISHED_ONLY: Final[Active] = tuple(s == ESTABLISHED for s in range(N_TCP_STATES))


@dataclass(frozen=True)
class KernelProfile:
    """What differs between the kernels users compare against (docs/ipvs.md, "kernel
    versions": each field's kernel commit, and the trees each row was read in)."""

    name: str
    kernels: str              # the mainline versions it stands for
    normal: Table
    dos: Table
    active: Active
    assure_templates: bool    # 4.19+: a template turns ASSURED (a TCP child reaches
                              # ESTABLISHED, a UDP child's reply), shows NONE/ASSURED, and
                              # drop_entry or a deleted child takes it only while not ASSURED
    conn_reuse: bool          # the conn_reuse_mode sysctl exists (4.2+)
    route_replies: bool       # 5.10+: DR/TUN replies that cross the director match (VIP source)
    nodest_on_syn: bool       # 4.2+: with expire_nodest_conn, a SYN to a weight-0 dest's
                              # entry is scheduled anew ...
    nodest_on_syn_always: bool  # ... 5.16+ even with conn_reuse_mode 0 (before: only not 0)
    reuse_drops_conntrack: bool  # 4.9-5.8: with conntrack=1 a SYN that must start a new
                                 # entry is dropped once ("drop first packet to redirect
                                 # conntrack"); 5.9+ keeps it unless its conntrack is old
    nodest_reschedules: bool  # 5.9+: expire_nodest_conn schedules the packet anew (before:
                              # the entry is expired and the packet dropped)
    nodest_flush: bool        # 5.9+: removing a destination with expire_nodest_conn=1
                              # expires all its entries at once
    drop_ops_templates: bool  # 4.9+: drop_entry takes a one-packet service's idle templates
                              # at todrop_entry()'s rate (before: no template at all)


DEFAULT_PROFILE: Final = "modern"
PROFILES: Final = {
    "modern": KernelProfile("modern", "5.16 and later (6.x)", TCP_STATES_NORMAL,
                            TCP_STATES_DOS, ACTIVE_MODERN, assure_templates=True,
                            conn_reuse=True, route_replies=True, nodest_on_syn=True,
                            nodest_on_syn_always=True, reuse_drops_conntrack=False,
                            nodest_reschedules=True, nodest_flush=True,
                            drop_ops_templates=True),
    "5.15": KernelProfile("5.15", "5.10 to 5.15", TCP_STATES_NORMAL, TCP_STATES_DOS,
                          ACTIVE_MODERN, assure_templates=True, conn_reuse=True,
                          route_replies=True, nodest_on_syn=True, nodest_on_syn_always=False,
                          reuse_drops_conntrack=False, nodest_reschedules=True,
                          nodest_flush=True, drop_ops_templates=True),
    "4.19": KernelProfile("4.19", "4.19 to 5.8", TCP_STATES_NORMAL, TCP_STATES_DOS,
                          ACTIVE_MODERN, assure_templates=True, conn_reuse=True,
                          route_replies=False, nodest_on_syn=True, nodest_on_syn_always=False,
                          reuse_drops_conntrack=True, nodest_reschedules=False,
                          nodest_flush=False, drop_ops_templates=True),
    "4.9": KernelProfile("4.9", "4.9 to 4.18", TCP_STATES_NORMAL, TCP_STATES_DOS,
                         ACTIVE_MODERN, assure_templates=False, conn_reuse=True,
                         route_replies=False, nodest_on_syn=True, nodest_on_syn_always=False,
                         reuse_drops_conntrack=True, nodest_reschedules=False,
                         nodest_flush=False, drop_ops_templates=True),
    "4.4": KernelProfile("4.4", "4.2 to 4.4", TCP_STATES_NORMAL, TCP_STATES_DOS,
                         ACTIVE_ESTABLISHED_ONLY, assure_templates=False, conn_reuse=True,
                         route_replies=False, nodest_on_syn=True, nodest_on_syn_always=False,
                         reuse_drops_conntrack=False, nodest_reschedules=False,
                         nodest_flush=False, drop_ops_templates=False),
    "3.18": KernelProfile("3.18", "3.18 to 4.1", TCP_STATES_NORMAL, TCP_STATES_DOS,
                          ACTIVE_ESTABLISHED_ONLY, assure_templates=False, conn_reuse=False,
                          route_replies=False, nodest_on_syn=False,
                          nodest_on_syn_always=False, reuse_drops_conntrack=False,
                          nodest_reschedules=False, nodest_flush=False,
                          drop_ops_templates=False),
    "2.6": KernelProfile("2.6", "2.6 to 3.17", _legacy(TCP_STATES_NORMAL),
                         _legacy(TCP_STATES_DOS), ACTIVE_ESTABLISHED_ONLY,
                         assure_templates=False, conn_reuse=False, route_replies=False,
                         nodest_on_syn=False, nodest_on_syn_always=False,
                         reuse_drops_conntrack=False, nodest_reschedules=False,
                         nodest_flush=False, drop_ops_templates=False),
}
KERNELS: Final = tuple(PROFILES)        # the profile names, for front ends
