"""The before/after measurement in rounds: each latency the median of the rounds'."""

import pytest
from torch import nn

from leanconv.compress import measure
from leanconv.compress.measure import ModelFigures, measure_formats


def test_each_latency_is_the_median_of_the_rounds(monkeypatch):
    scripted = iter([10.0, 50.0, 12.0])  # the second round hit by a burst of load

    def fake(variants, shape, batch_sizes, repeats, images=None):
        ms = next(scripted)
        return {v: {b: ms * (2 if v.endswith("channels_last") else 1) for b in batch_sizes}
                for v in variants}  # fmt: skip

    monkeypatch.setattr(measure, "measure_latency", fake)
    figures = {"m": ModelFigures(0, 0, 0)}
    measure_formats({"m": nn.Identity()}, figures, (1, 4, 4), (1, 8), rounds=3)
    assert figures["m"].latency_ms == {1: 12.0, 8: 12.0}
    assert figures["m"].latency_by_format["channels_last"] == {1: 24.0, 8: 24.0}
    with pytest.raises(ValueError, match="rounds=0"):
        measure_formats({"m": nn.Identity()}, figures, (1, 4, 4), (1,), rounds=0)
