"""`pyvs run`: the live director, a thin NFQUEUE driver around the engine.

Packets queued from mangle PREROUTING are client->VIP (IN); from POSTROUTING, NAT replies
(OUT).  The verdict is applied as the kernel's IPVS would: rewritten bytes for Masq and
Tunnel (set_payload), a routing mark for Route (set_mark, one policy route per
realserver), a drop with its reason counted.  Timers run on the monotonic clock from a
second thread; the control socket, procfs export and metrics come from the Runtime.
"""

from __future__ import annotations

import logging
import signal
import threading

from ..core.engine import IN, OUT, Director
from ..core.verdict import DROP
from . import netfilter
from .daemon import Runtime

log = logging.getLogger("pyvs")
NF_IP_POST_ROUTING = 4


def run(director: Director, socket_path: str, queue: int = 0, fail_closed: bool = False,
        procfs_dir: str | None = None, metrics: str | None = None) -> int:
    try:
        from netfilterqueue import NetfilterQueue
    except ImportError:
        raise netfilter.SetupError("the live director needs netfilterqueue: "
                                   "pip install 'pyvs[live]' (and libnetfilter-queue-dev)"
                                   ) from None
    runtime = Runtime(director, socket_path, procfs_dir, metrics)
    setup = netfilter.Setup(director, queue, fail_closed)
    stop = threading.Event()
    nfq = NetfilterQueue()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        raise SystemExit(0)

    lock, clock, receive = runtime.lock, runtime.now, director.receive

    def packet(pkt) -> None:
        direction = OUT if pkt.hook == NF_IP_POST_ROUTING else IN
        with lock:
            verdict = receive(pkt.get_payload(), clock(), direction, pkt.get_mark())
        if verdict.action == DROP:
            pkt.drop()
            return
        if verdict.data is not None:
            pkt.set_payload(verdict.data)
        elif verdict.mark:
            pkt.set_mark(verdict.mark)
        pkt.accept()

    def ticker() -> None:
        while not stop.wait(0.25):
            runtime.tick()

    try:
        setup.apply()
        runtime.start()
        nfq.bind(queue, packet, max_len=4096)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        threading.Thread(target=ticker, daemon=True, name="pyvs-timers").start()
        log.info("director running: queue %d, %d services", queue, len(director.services))
        nfq.run()
    finally:
        stop.set()
        try:
            nfq.unbind()
        except Exception:                           # never bound: nothing to release
            pass
        runtime.close()
        if setup.owned:
            for step in netfilter.undo(setup.path):
                log.info("removed: %s", step)
        drops = ", ".join(f"{k} {v}" for k, v in sorted(director.drops.items())) or "none"
        log.info("stopped; drops: %s", drops)
    return 0
