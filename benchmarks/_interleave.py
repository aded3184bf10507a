"""Interleaved timing for the fast-algorithm benchmarks (a noisy, shared machine).

Each repetition runs every candidate once, in turn, so that all candidates see the same load;
ratios are taken per repetition and their median reported, next to the median and minimum times.
The compiled-kernel benchmarks (``bench_narrow.py``, ``bench_gemv.py``) time a library layer
against its kernel form this way over several whole runs (:func:`kernel_args`, :func:`ab_runs`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from leanconv.algorithms import native
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare


def interleaved(
    fns: dict[str, Callable[[], object]], reps: int = 9, warmup: int = 2, alternate: bool = False
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, ``reps`` interleaved repetitions after ``warmup``;
    with ``alternate``, every other repetition runs the candidates in reverse order (so that none
    always runs right after another: a model that leaves the caches to the next one)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(reps):
        order = list(fns.items())
        for name, fn in reversed(order) if alternate and rep % 2 else order:
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


def kernel_args(batch: list[int]) -> argparse.Namespace:
    """The options of a kernel benchmark (``--batch`` defaulting to ``batch``, ``--threads``,
    ``--repeats``, ``--runs``), applied: torch's threads set, freed memory kept; prints the
    kernels' status."""
    p = argparse.ArgumentParser()
    p.add_argument("--batch", nargs="+", type=int, default=batch)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    print(f"kernels: {native.status()}; {args.threads} threads, torch {torch.__version__}")
    return args


def ab_runs(
    base: Callable[[torch.Tensor], object],
    fast: Callable[[torch.Tensor], object],
    x: torch.Tensor,
    runs: int,
    repeats: int,
) -> tuple[list[float], dict[str, float]]:
    """``runs`` whole interleaved runs of ``base(x)`` against ``fast(x)`` (no autograd): the ratio
    ``base / fast`` of the median times of each run, and the last run's median ms of each
    (``"base"``, ``"fast"``)."""
    ratios, ms_ = [], {}
    with torch.no_grad():
        for _ in range(runs):
            t = compare({"base": lambda: base(x), "fast": lambda: fast(x)}, warmup=3,
                        repeats=repeats)  # fmt: skip
            ratios.append(t["base"].ms / t["fast"].ms)
            ms_ = {k: v.ms for k, v in t.items()}
    return ratios, ms_
