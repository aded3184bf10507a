"""Hardware-friendly ranks among the planner's candidates: each ratio's rank and the same rank
aligned to a multiple of 8, both measured (benchmarks/bench_ranks.py: aligned chains ran at a
median 1.10x the rate of the unaligned ones)."""

import torch
from torch import nn

from leanconv.compress.planning.candidates import aligned, rewrites
from leanconv.decompose.rank import budget_rank
from leanconv.spec import ConvSpec


def test_aligned_rounds_each_component_to_the_nearest_multiple():
    assert aligned(22, 8) == 24 and aligned(57, 8) == 56 and aligned(3, 8) == 8
    assert aligned((34, 17), 8) == (32, 16) and aligned((34, 17), 16) == (32, 16)
    assert aligned(22, 0) == 22 and aligned((5, 6, 7), 0) == (5, 6, 7)


def test_rewrites_hold_both_ranks_and_leave_multipliers_alone():
    torch.manual_seed(0)
    conv = nn.Conv2d(40, 56, 3, padding=1).eval()
    x = torch.randn(2, 40, 10, 10)
    spec = ConvSpec.from_module(conv, tuple(x.shape), "c")
    ratios = (0.1, 0.25)
    plain, _ = rewrites(conv, "c", x, ("tucker2", "depthwise"), ratios, torch.contiguous_format)
    both, errors = rewrites(conv, "c", x, ("tucker2", "depthwise"), ratios,
                            torch.contiguous_format, align=8)  # fmt: skip
    for ratio in ratios:
        r = budget_rank(spec, "tucker2", ratio)
        assert ("tucker2", r, "direct") in both and ("tucker2", aligned(r, 8), "direct") in both
    # the depth multiplier of `depthwise` counts no channels: never aligned
    assert {k for k in both if k[0] == "depthwise"} == {k for k in plain if k[0] == "depthwise"}
    assert set(plain) <= set(both) and len(both) > len(plain)
    # every candidate is a drop-in replacement of the layer, with its weight error
    for key, module in both.items():
        assert module(x).shape == conv(x).shape and 0 <= errors[key] < 1
