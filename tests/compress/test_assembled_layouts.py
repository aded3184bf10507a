"""The closed loop times the assembled plan in both memory layouts and credits the faster, as the
pipeline deploys the faster (planning/closed_loop.py). The layouts' times are made known by
sleeps on top of the model: they do not depend on the machine's load."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from leanconv.compress.planning import Candidate, allocate, closed_loop


class Slow(nn.Module):
    """A small network whose forward sleeps ``contiguous`` or ``channels_last`` seconds after
    it, by the layout of its convolution's weight (which ``.to(memory_format=...)`` sets)."""

    def __init__(self, contiguous: float, channels_last: float):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.delays = {True: contiguous, False: channels_last}

    def forward(self, x):
        y = self.conv(x)
        time.sleep(self.delays[self.conv.weight.is_contiguous()])
        return y


def _keep_plan():
    cands = {"conv": [Candidate("conv", "keep", None, 100, 1, 1.0, 0.0)]}
    return allocate(cands, 0.0, 1.0, 100, speedup=1.0)


@pytest.mark.parametrize(("contiguous", "channels_last"), [(0.004, 0.012), (0.012, 0.004)])
def test_the_assembled_model_is_credited_with_its_faster_layout(contiguous, channels_last):
    model = Slow(contiguous, channels_last).eval()
    reference = Slow(0.010, 0.010).eval()
    x = torch.randn(2, 3, 6, 6)
    plan = closed_loop.time_assembled(model, _keep_plan(), x, batch=2, repeats=3,
                                      reference=reference)  # fmt: skip
    assert plan.assembled_ms == pytest.approx(4.0, abs=1.5)  # the faster layout's 4 ms
    assert plan.original_ms == pytest.approx(10.0, abs=1.5)
