"""Traffic counters and the kernel's 2-second EWMA rate estimator (``ip_vs_est.c``).

Live counters are bumped on the packet path.  What ipvsadm shows (``--stats``) is the
*kstats* copy, taken by the estimator every 2 s, minus the ``-Z`` zero point: the listing
lags by up to 2 s exactly as on a real director (docs/ipvs.md, "counters and rates").
"""

from __future__ import annotations

from typing import Final

ESTIMATOR_PERIOD: Final = 2.0

FIELDS: Final = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")


class Counters:
    """Five monotonically growing counters (struct ip_vs_kstats)."""

    __slots__ = FIELDS

    def __init__(self, conns: int = 0, inpkts: int = 0, outpkts: int = 0,
                 inbytes: int = 0, outbytes: int = 0) -> None:
        self.conns = conns
        self.inpkts = inpkts
        self.outpkts = outpkts
        self.inbytes = inbytes
        self.outbytes = outbytes

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def add(self, other: Counters) -> None:
        self.conns += other.conns
        self.inpkts += other.inpkts
        self.outpkts += other.outpkts
        self.inbytes += other.inbytes
        self.outbytes += other.outbytes

    def as_dict(self) -> dict[str, int]:
        return dict(zip(FIELDS, self.as_tuple()))


class Estimator:
    """One stats object as the kernel keeps it: kstats, zero point and EWMA rates."""

    __slots__ = ("kstats", "kstats0", "last", "cps", "inpps", "outpps", "inbps", "outbps")

    def __init__(self) -> None:
        self.kstats = (0, 0, 0, 0, 0)
        self.kstats0 = (0, 0, 0, 0, 0)
        self.last = (0, 0, 0, 0, 0)
        self.cps = self.inpps = self.outpps = self.inbps = self.outbps = 0

    def tick(self, live: tuple[int, int, int, int, int]) -> bool:
        """One 2-second estimation: copy the live counters, update the averages.  False
        when it changed nothing: no traffic, and every average already decayed to 0."""
        if live == self.last and not (self.cps or self.inpps or self.outpps or self.inbps
                                      or self.outbps):
            self.kstats = live
            return False
        self.kstats = live
        conns, inpkts, outpkts, inbytes, outbytes = live
        lc, li, lo, lib, lob = self.last
        self.last = live
        # rate scaled by 2^10 per second (delta << 9 over 2 s), EWMA weight 1/4
        self.cps += (((conns - lc) << 9) - self.cps) >> 2
        self.inpps += (((inpkts - li) << 9) - self.inpps) >> 2
        self.outpps += (((outpkts - lo) << 9) - self.outpps) >> 2
        # bytes scaled by 2^5 per second (delta << 4 over 2 s)
        self.inbps += (((inbytes - lib) << 4) - self.inbps) >> 2
        self.outbps += (((outbytes - lob) << 4) - self.outbps) >> 2
        return True

    def zero(self) -> None:
        """``ipvsadm -Z``: the current kstats become the zero point, rates restart."""
        self.kstats0 = self.kstats
        self.last = self.kstats
        self.cps = self.inpps = self.outpps = self.inbps = self.outbps = 0

    def shown(self) -> Counters:
        """The counters ipvsadm --stats prints."""
        return Counters(*(a - b for a, b in zip(self.kstats, self.kstats0)))

    def rates(self) -> tuple[int, int, int, int, int]:
        """(cps, inpps, outpps, inbps, outbps) as ipvsadm --rate prints them."""
        return ((self.cps + 0x1FF) >> 10, (self.inpps + 0x1FF) >> 10,
                (self.outpps + 0x1FF) >> 10, (self.inbps + 0xF) >> 5,
                (self.outbps + 0xF) >> 5)
