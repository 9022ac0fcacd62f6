"""The kernel's clock as IPVS timers see it: jiffies at the HZ pyvs models, and the timer
wheel's rounding (kernel/time/timer.c), for the timers whose phase users can observe (the
sync master thread, the realserver trash)."""

from __future__ import annotations

import math
from typing import Final

HZ: Final = 250                 # the kernel build pyvs models (Debian's CONFIG_HZ)


def jiffies(now: float) -> int:
    """The jiffy `now` falls in (a hair of slack so that k/HZ maps back to k)."""
    return math.floor(now * HZ + 1e-6)


# A timer lands in a bucket of its level's granularity, rounded up so that it never fires
# early.
WHEEL_BITS: Final = 6           # LVL_BITS: 64 buckets a level
WHEEL_CLK_SHIFT: Final = 3      # LVL_CLK_SHIFT: each level 8 times coarser
WHEEL_DEPTH: Final = 9          # LVL_DEPTH for HZ > 100


def wheel_fires(expires: int, clk: int) -> int:
    """The jiffy a timer due at `expires`, armed at `clk`, fires (calc_wheel_index()):
    level 0 (under 63 jiffies) one jiffy late, level 1 (under 504) at the next multiple of
    8 jiffies.  So the master thread's 1 s sleep (HZ=250) lasts 251-258 jiffies, and
    exactly 256 once the thread runs on a bucket boundary, as it does when the wheel woke
    it: the sync thread wakes every 1.024 s, not every second.  A 60 s timer (level 3)
    lands on a multiple of 512 jiffies (2.048 s)."""
    delta = expires - clk
    if delta < 0:
        return clk
    level = 0
    while (level < WHEEL_DEPTH - 1
           and delta >= ((1 << WHEEL_BITS) - 1) << (level * WHEEL_CLK_SHIFT)):
        level += 1
    shift = level * WHEEL_CLK_SHIFT
    return ((expires >> shift) + 1) << shift
