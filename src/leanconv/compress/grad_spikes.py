"""Gradient spikes cut down to a multiple of the recent median gradient norm.

A decomposed model fine-tuned on a small training set can be thrown off by one step: a user's
ResNet-style model (six layers decomposed, relative output error 0.69, 180 training images)
had gradient norms 10.4, 21.9, 5.8, **47.2**, 5.7, ... in its first steps; after the fourth its
loss stayed near 1.0 and its accuracy fell from 100 % to 70 % for good, while another data order
(gradients 7.5, 7.5, 2.8, 3.7, ...) kept 100 %. A fixed bound would have to suit every model's
gradient scale; this one follows the run's own: the global norm of a step's gradients is scaled
down to ``factor`` times the median norm of the last :data:`WINDOW` steps (the rule of AutoClip,
Seetharaman et al. 2020, with the median and a multiple in place of a low percentile, so that
ordinary steps are never touched). The first step has no history and is left alone.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable

import torch
from torch import nn

#: Steps whose gradient norms set the median.
WINDOW = 100
#: The multiple of that median a step's gradient norm is cut to (fine-tuning's default).
FACTOR = 2.0


class SpikeClip:
    """Clips each step's gradients to ``factor`` x the median of the previous norms (and to
    ``bound`` when one is given); ``factor`` 0 leaves spikes alone. ``norms``: a history to
    continue from (a resumed run's)."""

    def __init__(self, factor: float, window: int = WINDOW, norms: Iterable[float] = ()):
        self.factor = factor
        self.norms: deque[float] = deque(norms, maxlen=window)

    def threshold(self) -> float:
        """The bound the next step's gradient norm is clipped to (infinite when none)."""
        if self.factor <= 0 or not self.norms:
            return math.inf
        return self.factor * statistics.median(self.norms)

    def __call__(self, parameters: Iterable[torch.Tensor], bound: float | None = None) -> float:
        """Clip the gradients of ``parameters`` in place; returns their norm before clipping
        (which joins the history when finite)."""
        limit = self.threshold() if bound is None else min(bound, self.threshold())
        parameters = list(parameters)
        total = nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        norm = float(total)
        if norm > limit:  # ordinary steps are not touched (no pass over the gradients)
            nn.utils.clip_grads_with_norm_(parameters, limit, total)
        if math.isfinite(norm):
            self.norms.append(norm)
        return norm

    def state(self) -> list[float]:
        return list(self.norms)
