"""Distribution summaries (min/max/mean/median/p5/p95) in bounded memory.

Exact for up to `capacity` values; beyond that, percentiles come from a seeded uniform reservoir sample
(min, max, mean and total stay exact), so a file with tens of millions of examples still summarises in a few MB.
"""

from __future__ import annotations

import random
from array import array

RESERVOIR = 200_000


class Distribution:
    def __init__(self, capacity: int | None = None, seed: int = 0):
        self.capacity = capacity or RESERVOIR
        self.n = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self._sample = array("q")
        self._rng = random.Random(seed)

    def add(self, value: int) -> None:
        self.n += 1
        self.total += value
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value
        if len(self._sample) < self.capacity:
            self._sample.append(value)
        else:  # Algorithm R: keep each value seen so far with equal probability.
            j = self._rng.randrange(self.n)
            if j < self.capacity:
                self._sample[j] = value

    @property
    def exact(self) -> bool:
        return self.n <= self.capacity

    def summary(self) -> dict:
        if not self.n:
            return {"min": None, "max": None, "mean": None, "median": None, "p5": None, "p95": None, "total": 0}
        values = sorted(self._sample)
        return {"min": self.min, "max": self.max, "mean": round(self.total / self.n, 2),
                "median": percentile(values, 50), "p5": percentile(values, 5), "p95": percentile(values, 95),
                "total": self.total}


def percentile(values: list[int], q: float) -> float:
    """Linear interpolation between closest ranks of sorted `values` (numpy's default method)."""
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return round(values[lo] + (values[hi] - values[lo]) * (pos - lo), 2)
