"""Interleaved timing for the fast-algorithm benchmarks (a noisy, shared machine).

Each repetition runs every candidate once, in turn, so that all candidates see the same load;
ratios are taken per repetition and their median reported, next to the median and minimum times.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def interleaved(
    fns: dict[str, Callable[[], object]], reps: int = 9, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, ``reps`` interleaved repetitions after ``warmup``."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(base: list[float], other: list[float]) -> float:
    """Median over repetitions of ``base / other`` (> 1: ``other`` is faster)."""
    return statistics.median(b / o for b, o in zip(base, other, strict=True))


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"
