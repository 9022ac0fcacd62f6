"""The simulator's virtual clock: a time-ordered queue of callbacks and a seeded RNG.

Nothing here reads the wall clock; hours of simulated time cost only the events in them.
Events at the same time run in the order they were scheduled, so a run is reproducible.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any


class Simulation:
    __slots__ = ("now", "queue", "seq", "random", "events")

    def __init__(self, seed: int = 1) -> None:
        self.now = 0.0
        self.queue: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self.seq = itertools.count()
        self.random = random.Random(seed)
        self.events = 0

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self.queue, (when, next(self.seq), fn, args))

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self.queue, (self.now + delay, next(self.seq), fn, args))

    def run_until(self, end: float) -> None:
        """Run every event due at or before `end`; the clock is left at `end`."""
        queue, pop = self.queue, heapq.heappop
        n = 0
        while queue and queue[0][0] <= end:
            when, _, fn, args = pop(queue)
            self.now = when
            fn(*args)
            n += 1
        self.events += n
        self.now = end
