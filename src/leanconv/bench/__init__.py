"""Measuring on the machine at hand: timing harness (medians, warm-up, threads) and roofline."""

from .timing import Timing, compare, measure, threads

__all__ = ["Timing", "compare", "measure", "threads"]
