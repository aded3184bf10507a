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
from typing import ClassVar

__all__ = ["DEFAULT_TARGET", "MacsRatio", "MaxDrop", "Speedup", "Target", "target_from"]


@dataclass(frozen=True)
class _Target:
    """One number, ``value``, and the rule it must follow; ``key`` is the keyword (and, with
    dashes, the command line's flag) that gives it, ``label`` how reports name it."""

    value: float
    key: ClassVar[str] = ""
    rule: ClassVar[str] = ""
    text: ClassVar[str] = "{:g}"

    def __post_init__(self) -> None:
        flag = f"--{self.key.replace('_', '-')}"
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise ValueError(f"{flag} {self.value!r}: {self.rule}")
        if not self._valid(self.value):
            raise ValueError(f"{flag} {self.value:g}: {self.rule}")

    @staticmethod
    def _valid(value: float) -> bool:  # pragma: no cover - defined by each target
        raise NotImplementedError

    @property
    def label(self) -> str:
        return self.text.format(self.value)

    def settings(self) -> dict:
        """As the run record names it (the command line's flag, without dashes)."""
        return {self.key: self.value}


class Speedup(_Target):
    """Measured latency of the original / that of the compressed model, ``> 0``."""

    key, rule, text = "speedup", "must be a positive factor, e.g. 2", "speedup {:g}x"
    _valid = staticmethod(lambda v: v > 0 and math.isfinite(v))


class MacsRatio(_Target):
    """The share of the original's multiply-accumulates the compressed model keeps, in (0, 1)."""

    key, rule, text = "macs_ratio", "the share of MACs to keep, between 0 and 1", "MACs ratio {:g}"
    _valid = staticmethod(lambda v: 0 < v < 1)


class MaxDrop(_Target):
    """The most the metric may fall, in its own points, ``>= 0``: the fastest plan within it."""

    key, rule, text = "max_drop", "must not be negative", "drop <= {:g} points"
    _valid = staticmethod(lambda v: v >= 0)


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
