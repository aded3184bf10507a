"""Timing that survives a shared, noisy machine.

- warm-up calls first (allocator, caches, lazy initialisation), then ``repeats`` timed calls;
- the median is reported with the 10th and 90th percentiles, never a single run or the mean;
- a fixed thread count for the duration (``threads(n)``), restored afterwards;
- :func:`compare` interleaves the candidates round-robin, so a burst of load from elsewhere hits
  all of them alike and their *ratio* stays meaningful;
- CUDA work is synchronised before every clock read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the spread of ``runs`` measurements."""

    median: float
    p10: float
    p90: float
    runs: int
    best: float = 0.0

    @property
    def ms(self) -> float:
        return self.median * 1e3


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (no change for None)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sync(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _summary(samples: list[float]) -> Timing:
    samples = sorted(samples)
    if len(samples) >= 3:
        deciles = statistics.quantiles(samples, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10, p90 = samples[0], samples[-1]
    return Timing(statistics.median(samples), p10, p90, len(samples), samples[0])


def measure(
    fn: Callable[[], object],
    warmup: int = 3,
    repeats: int = 10,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
    min_time: float = 0.0,
) -> Timing:
    """Median wall time of ``fn()``; repeats more (up to 10x) until ``min_time`` seconds elapse."""
    return compare({"fn": fn}, warmup, repeats, num_threads, device, min_time)["fn"]


def compare(
    fns: dict[str, Callable[[], object]],
    warmup: int = 3,
    repeats: int = 10,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
    min_time: float = 0.0,
) -> dict[str, Timing]:
    """Time several candidates interleaved round-robin; returns a :class:`Timing` per name."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    samples: dict[str, list[float]] = {name: [] for name in fns}
    with threads(num_threads), torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        _sync(device)
        start = time.perf_counter()
        rounds = 0
        while rounds < repeats or (
            time.perf_counter() - start < min_time and rounds < 10 * repeats
        ):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                _sync(device)
                samples[name].append(time.perf_counter() - t0)
            rounds += 1
    return {name: _summary(s) for name, s in samples.items()}
