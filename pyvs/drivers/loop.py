"""The director process's one thread: a selector over its file descriptors (the packet
queue, the control socket and its clients, a wakeup socket for other threads), timers,
and background jobs done in slices between packets.

The director is touched from this thread only, so nothing needs a lock.  The loop sleeps
until the next timer or file descriptor; a job (a listing of a million entries, a procfs
export, a state write) is a generator that does a bounded piece of work per step, and
the loop returns to the packet queue after each slice, so no job holds packets back for
more than a slice.  A job that must wait for something (a slow reader, another process's
answer) yields PAUSE and sleeps until `wake()`; a waiting job costs nothing.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

SLICE = 0.002           # seconds of background work between two looks at the queues
MAX_SLEEP = 3600.0      # nothing due: still wake once an hour


class Pause:
    """What a job yields to sleep until wake()."""


PAUSE = Pause()


class Loop:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._jobs: deque[Iterator[Any]] = deque()
        self._parked: list[Iterator[Any]] = []
        self._calls: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.add_reader(self._wake_r, self._drain_calls)
        self.next_deadline: Callable[[], float | None] = lambda: None
        self.on_deadline: Callable[[float], None] = lambda now: None
        self.running = False
        self.longest_slice = 0.0      # the longest a job held the loop, for the benches

    # ------------------------------------------------------------------ registration
    def add_reader(self, fileobj: Any, callback: Callable[[], Any]) -> None:
        self.selector.register(fileobj, selectors.EVENT_READ, (callback, None))

    def watch(self, fileobj: Any, on_read: Callable[[], Any] | None,
              on_write: Callable[[], Any] | None) -> None:
        """Read and/or write interest for `fileobj` (neither: forget it)."""
        events = (selectors.EVENT_READ if on_read else 0) | (
            selectors.EVENT_WRITE if on_write else 0)
        try:
            self.selector.get_key(fileobj)
            if events:
                self.selector.modify(fileobj, events, (on_read, on_write))
            else:
                self.selector.unregister(fileobj)
        except KeyError:
            if events:
                self.selector.register(fileobj, events, (on_read, on_write))

    def remove(self, fileobj: Any) -> None:
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def at(self, when: float, fn: Callable[[], Any]) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), fn))

    def spawn(self, job: Iterator[Any]) -> None:
        """Run `job` a step at a time between packets until it is exhausted."""
        self._jobs.append(job)

    def wake(self) -> None:
        """Run the paused jobs again (each pauses anew if what it waits for is not there)."""
        self._jobs.extend(self._parked)
        self._parked.clear()

    def call_soon_threadsafe(self, fn: Callable[[], Any]) -> None:
        """From another thread (health checks, metrics): run `fn` in the loop."""
        self._calls.put(fn)
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass                      # a wakeup is already pending

    def _drain_calls(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    # ------------------------------------------------------------------ running
    def _timeout(self, now: float) -> float:
        if self._jobs:
            return 0.0
        due = [t for t in (self.next_deadline(), self._timers[0][0] if self._timers
                           else None) if t is not None]
        if not due:
            return MAX_SLEEP
        return max(0.0, min(MAX_SLEEP, min(due) - now))

    def run_once(self) -> None:
        for key, mask in self.selector.select(self._timeout(self.clock())):
            on_read, on_write = key.data
            if mask & selectors.EVENT_READ and on_read is not None:
                on_read()
            if mask & selectors.EVENT_WRITE and on_write is not None:
                on_write()
        now = self.clock()
        deadline = self.next_deadline()
        if deadline is not None and deadline <= now:
            self.on_deadline(now)
        while self._timers and self._timers[0][0] <= now:
            heapq.heappop(self._timers)[2]()
        self._run_jobs()

    def _run_jobs(self) -> None:
        start = time.perf_counter()
        while self._jobs:
            job = self._jobs.popleft()
            step = time.perf_counter()
            try:
                step_result = next(job)
            except StopIteration:
                pass
            else:
                (self._parked if step_result is PAUSE else self._jobs).append(job)
            end = time.perf_counter()
            self.longest_slice = max(self.longest_slice, end - step)
            if end - start >= SLICE:
                return

    def run(self) -> None:
        self.running = True
        while self.running:
            self.run_once()

    def stop(self) -> None:
        self.running = False
        self.call_soon_threadsafe(lambda: None)

    def close(self) -> None:
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
