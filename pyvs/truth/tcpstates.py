"""A TCP endpoint's states (RFC 9293 section 3.3.2) and what moves it between them: the one
table both the simulator's endpoints (pyvs/sim/tcp.py) and the inference from a capture
(pyvs/truth/capture.py) drive, so the truth means the same thing in both.

Numbers index STATE_NAMES; the names are the RFC's, which `ss -tan` prints with dashes
(SYN-RECV, FIN-WAIT-2) and `netstat` as here.  An RST, an abort (close with SO_LINGER 0) or
giving up (retransmissions, keepalive, the half-open SYN-ACK retries) closes an endpoint
from any state; they are not in the table because they do not depend on it.
"""

from __future__ import annotations

from typing import Final

CLOSED: Final = 0
LISTEN: Final = 1
SYN_SENT: Final = 2
SYN_RECV: Final = 3
ESTABLISHED: Final = 4
FIN_WAIT1: Final = 5
FIN_WAIT2: Final = 6
CLOSE_WAIT: Final = 7
CLOSING: Final = 8
LAST_ACK: Final = 9
TIME_WAIT: Final = 10
STATE_NAMES: Final = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT1",
                      "FIN_WAIT2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")

# The events: the application's calls, segments received, the state's own timer.
CONNECT: Final = 0            # connect(): the SYN goes out
CLOSE: Final = 1              # close(): a FIN goes out (or nothing, before the handshake)
RCV_SYN: Final = 2            # a SYN reaches a listener: the half-open (request) socket
RCV_SYNACK: Final = 3
RCV_ACK_OF_SYN: Final = 4
RCV_FIN: Final = 5
RCV_ACK_OF_FIN: Final = 6
TIMEOUT: Final = 7            # TIME_WAIT's 60 s, an orphaned FIN_WAIT2's tcp_fin_timeout

TRANSITIONS: Final[dict[tuple[int, int], int]] = {
    (CLOSED, CONNECT): SYN_SENT,
    (LISTEN, RCV_SYN): SYN_RECV,
    (SYN_SENT, RCV_SYNACK): ESTABLISHED,
    (SYN_SENT, CLOSE): CLOSED,
    (SYN_RECV, RCV_ACK_OF_SYN): ESTABLISHED,
    (SYN_RECV, CLOSE): FIN_WAIT1,
    (ESTABLISHED, CLOSE): FIN_WAIT1,
    (ESTABLISHED, RCV_FIN): CLOSE_WAIT,
    (FIN_WAIT1, RCV_ACK_OF_FIN): FIN_WAIT2,
    (FIN_WAIT1, RCV_FIN): CLOSING,
    (FIN_WAIT2, RCV_FIN): TIME_WAIT,
    (FIN_WAIT2, TIMEOUT): CLOSED,
    (CLOSING, RCV_ACK_OF_FIN): TIME_WAIT,
    (CLOSE_WAIT, CLOSE): LAST_ACK,
    (LAST_ACK, RCV_ACK_OF_FIN): CLOSED,
    (TIME_WAIT, TIMEOUT): CLOSED,
}

# States in which received data is accepted, in which the application may still send, and
# in which both sequence spaces are synchronized (keepalive runs, an abort sends an RST).
RECEIVING: Final = frozenset((ESTABLISHED, FIN_WAIT1, FIN_WAIT2))
SENDING: Final = frozenset((ESTABLISHED, CLOSE_WAIT))
SYNCHRONIZED: Final = frozenset((ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, CLOSING,
                                 LAST_ACK))
# After our FIN: the states an acknowledgement of it moves on.
FIN_SENT: Final = frozenset((FIN_WAIT1, CLOSING, LAST_ACK))
