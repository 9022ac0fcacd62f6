"""The live director's Python per queued packet, offline (root: it binds a queue in a network
namespace of its own, then feeds it no real traffic).

Bursts of NFQNL_MSG_PACKET messages are laid out in the binding's receive buffer as
recvmmsg(2) leaves them (recvmmsg itself is replaced by "the buffer is full"), parsed by
pyvs.drivers.nfqueue, run through the engine (NAT, one established connection), and their
verdicts built and handed to a socket that discards them.  So the figures are the Python
side only: no system call, no kernel work.  Side by side, round-robin, best of --rounds:

  whole   each payload copied out whole and rewritten whole: `pyvs run`'s reader before
          it copied heads
  heads   `pyvs run`'s reader (pyvs.drivers.live.Packets.read): 576-byte heads copied,
          the engine rewriting the head, the rest sent from the receive buffer
(both complete partial checksums with finish_checksum, which needs the whole packet)
  bare / bare-heads   accept every packet, payloads copied whole / heads only

Mixes: `bulk` alternates 64 KiB GSO packets in (client -> VIP) with ACKs out (realserver
-> client, partial checksums, as a local stack leaves them); `small` is 40-byte packets
both ways, all with partial checksums (a connection's handshake and ACKs).

    .venv/bin/python bench/nfqueue_path.py [--rounds 15] [--burst 4]

Timings on a shared machine drift; instruction counts do not.  One reader and one mix at
a time, under callgrind, at two packet counts (the difference is the packets' own cost):

    valgrind --tool=callgrind .venv/bin/python bench/nfqueue_path.py --rounds 1 \
        --only heads --mix small --packets 500        # and --packets 2500
"""

from __future__ import annotations

import argparse
import ctypes
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import pyvs
from pyvs.core.craft import ACK, PSH, SYN, tcp
from pyvs.core.engine import IN, OUT, Director
from pyvs.core.forwarding import MASQ
from pyvs.core.packet import ip_to_int
from pyvs.drivers import nfqueue
from pyvs.drivers.live import Packets, open_queue

CLONE_NEWNET = 0x40000000
CLIENT, VIP, RS = ip_to_int("10.0.0.5"), ip_to_int("10.0.0.100"), ip_to_int("192.168.1.1")


def partial(packet: bytes) -> bytes:
    """The packet with the folded pseudo-header sum in its TCP checksum field, as a local
    sender that leaves the rest to the device writes it."""
    ihl = (packet[0] & 15) << 2
    total = sum(int.from_bytes(packet[i:i + 2], "big") for i in range(12, 20, 2))
    total += 6 + len(packet) - ihl
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return packet[:ihl + 16] + total.to_bytes(2, "big") + packet[ihl + 18:]


def message(packet_id: int, hook: int, payload: bytes, info: int) -> bytes:
    """An NFQNL_MSG_PACKET as nfqnl_build_packet_message() lays it out."""
    attrs = (struct.pack("=HH", 11, nfqueue.NFQA_PACKET_HDR)
             + struct.pack(">IHB", packet_id, 0x0800, hook) + b"\0"
             + struct.pack("=HH", 8, nfqueue.NFQA_IFINDEX_INDEV) + struct.pack(">I", 2)
             + struct.pack("=HH", 8, nfqueue.NFQA_SKB_INFO) + struct.pack(">I", info)
             + struct.pack("=HH", 4 + len(payload), nfqueue.NFQA_PAYLOAD) + payload)
    body = struct.pack("=BBH", 2, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), nfqueue.NFQNL_MSG_PACKET, 0, 0, 0) + body


def burst(mix: str, n: int) -> list[tuple[int, bytes, int]]:
    """(hook, packet, NFQA_SKB_INFO) for one burst."""
    gso_in = partial(tcp(CLIENT, 40000, VIP, 80, ACK | PSH, 1, 1, b"x" * 64960))
    ack_in = partial(tcp(CLIENT, 40000, VIP, 80, ACK, 1, 1))
    ack_out = partial(tcp(RS, 80, CLIENT, 40000, ACK, 1, 1))
    out = []
    for i in range(n):
        if mix == "bulk":
            out.append((0, gso_in, 3) if i % 2 == 0 else (4, ack_out, 1))
        else:
            out.append((0, ack_in, 1) if i % 2 == 0 else (4, ack_out, 1))
    return out


class Discard:
    """Where the verdicts go."""

    def send(self, data: bytes) -> int:
        return len(data)

    def sendmsg(self, parts: list[Any]) -> int:
        return len(parts)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


class Runtime:
    """What Packets needs of a daemon's runtime."""

    class loop:  # noqa: N801 (an attribute, as Runtime.loop)
        @staticmethod
        def add_reader(*_: object) -> None:
            pass

    @staticmethod
    def now() -> float:
        return 1.0


def director() -> Director:
    d = Director()
    svc = d.add_service(6, VIP, 80)
    d.add_dest(svc, RS, 80, MASQ)
    d.receive(tcp(CLIENT, 40000, VIP, 80, SYN), 0.0)
    return d


def loaded(heads: bool, mix: str, n: int) -> nfqueue.Queue:
    """A bound queue whose receive buffer holds one burst, every receive() returning it."""
    q = open_queue(0, True) if heads else nfqueue.Queue(0, fail_open=False)
    q.burst = n
    q.sock.close()
    q.sock = Discard()              # type: ignore[assignment]
    for i, (hook, packet, info) in enumerate(burst(mix, n)):
        m = message(i + 1, hook, packet, info)
        q._buf[i * q._slot:i * q._slot + len(m)] = m
    return q


def whole(q: nfqueue.Queue, d: Director) -> Callable[[], None]:
    receive, finish = d.receive, nfqueue.finish_checksum

    def read() -> None:
        for p in q.receive():
            v = receive(p.payload, 1.0, OUT if p.hook == nfqueue.NF_INET_POST_ROUTING else IN,
                        p.mark)
            if v.action != "accept":
                q.drop(p.id)
            elif v.data is not None:
                q.accept(p.id, payload=finish(v.data) if p.needs_checksum else v.data)
            else:
                q.accept(p.id, mark=v.mark or None)
        q.flush()
    return read


def bare(q: nfqueue.Queue, d: Director) -> Callable[[], None]:
    def read() -> None:
        for p in q.receive():
            q.accept(p.id)
        q.flush()
    return read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--burst", type=int, default=4, help="packets per receive()")
    ap.add_argument("--packets", type=int, default=2000, help="per round and reader")
    ap.add_argument("--only", choices=("whole", "heads", "bare", "bare-heads"),
                    help="this reader only")
    ap.add_argument("--mix", choices=("bulk", "small"), help="this mix only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/nfqueue_path.py needs root (it binds a queue in a namespace of its own)")
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET):
        sys.exit(f"bench/nfqueue_path.py: unshare: {os.strerror(ctypes.get_errno())}")
    nfqueue._recvmmsg = lambda fd, vec, n, flags, timeout: n    # the buffer is full
    print(f"pyvs engine {pyvs.ENGINE}; {args.burst} packets a burst, best of {args.rounds} "
          f"rounds of {args.packets} packets; us of Python per queued packet")
    for mix in [args.mix] if args.mix else ["bulk", "small"]:
        readers: dict[str, Callable[[], None]] = {}
        for name, heads, make in (("whole", False, whole), ("heads", True, None),
                                  ("bare", False, bare), ("bare-heads", True, bare)):
            if args.only and name != args.only:
                continue
            d, q = director(), loaded(heads, mix, args.burst)
            if make is None:
                readers[name] = Packets(q, d, Runtime()).read     # type: ignore[arg-type]
            else:
                readers[name] = make(q, d)
        best = dict.fromkeys(readers, float("inf"))
        bursts = max(1, args.packets // args.burst)
        for _ in range(args.rounds):
            for name, read in readers.items():
                t0 = time.perf_counter()
                for _ in range(bursts):
                    read()
                best[name] = min(best[name], (time.perf_counter() - t0) / (bursts * args.burst))
        ratio = (f"   heads/whole {best['heads'] / best['whole']:.2f}"
                 if "heads" in best and "whole" in best else "")
        print(f"{mix:5}  " + "  ".join(f"{name} {t * 1e6:6.2f}" for name, t in best.items())
              + ratio)


if __name__ == "__main__":
    main()
