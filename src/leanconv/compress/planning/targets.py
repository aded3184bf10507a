"""What a compression aims at: one typed target.

- :class:`Speedup` ``(factor)``: the compressed model, measured on this machine in its deployment
  form, runs ``factor`` times as fast as the original (the closed loop, :mod:`.closed_loop`);
- :class:`MacsRatio` ``(ratio)``: it keeps ``ratio`` of the original's multiply-accumulates
  (one allocation, :mod:`.allocate`);
- :class:`MaxDrop` ``(points)``: the fastest plan whose short fine-tuning trial loses at most
  ``points`` of the metric (a search, :mod:`.accuracy_budget`).

:func:`target_from` is the one rule that turns the command line's ``--speedup``, ``--macs-ratio``
and ``--max-drop`` (or the API's keywords) into a target: ``--speedup`` and ``--macs-ratio`` are
exclusive, ``--max-drop`` alone is the search, and with one of the others it is the accuracy
allowed (a note in the report when the result exceeds it); none given is :data:`DEFAULT_TARGET`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_TARGET", "MacsRatio", "MaxDrop", "Speedup", "Target", "target_from"]


@dataclass(frozen=True)
class Speedup:
    """Measured latency of the original / that of the compressed model, ``> 0``."""

    factor: float

    def __post_init__(self) -> None:
        if not (isinstance(self.factor, int | float) and self.factor > 0
                and math.isfinite(self.factor)):  # fmt: skip
            raise ValueError(f"--speedup {self.factor:g}: must be a positive factor, e.g. 2")

    @property
    def label(self) -> str:
        return f"speedup {self.factor:g}x"

    def settings(self) -> dict:
        """As the run record names it (the command line's flag)."""
        return {"speedup": self.factor}


@dataclass(frozen=True)
class MacsRatio:
    """The share of the original's multiply-accumulates the compressed model keeps, in (0, 1)."""

    ratio: float

    def __post_init__(self) -> None:
        if not (isinstance(self.ratio, int | float) and 0 < self.ratio < 1):
            raise ValueError(
                f"--macs-ratio {self.ratio:g}: the share of MACs to keep, between 0 and 1"
            )

    @property
    def label(self) -> str:
        return f"MACs ratio {self.ratio:g}"

    def settings(self) -> dict:
        return {"macs_ratio": self.ratio}


@dataclass(frozen=True)
class MaxDrop:
    """The most the metric may fall, in its own points, ``>= 0``: the fastest plan within it."""

    points: float

    def __post_init__(self) -> None:
        if not (isinstance(self.points, int | float) and self.points >= 0):
            raise ValueError(f"--max-drop {self.points:g}: must not be negative")

    @property
    def label(self) -> str:
        return f"drop <= {self.points:g} points"

    def settings(self) -> dict:
        return {"max_drop": self.points}


Target = Speedup | MacsRatio | MaxDrop

#: The target when none is given (the command line's, the Python API's and the config's).
DEFAULT_TARGET = Speedup(2.0)


def target_from(
    speedup: float | None = None, macs_ratio: float | None = None, max_drop: float | None = None
) -> tuple[Target, float | None]:
    """``(target, allowed drop)`` from the three optional settings (see the module docstring);
    the allowed drop is ``None`` where the target is itself a :class:`MaxDrop`."""
    if speedup is not None and macs_ratio is not None:
        raise ValueError("give --speedup or --macs-ratio, not both")
    if speedup is not None:
        return Speedup(speedup), max_drop
    if macs_ratio is not None:
        return MacsRatio(macs_ratio), max_drop
    if max_drop is not None:
        return MaxDrop(max_drop), None
    return DEFAULT_TARGET, None
