"""One eligibility rule per fast algorithm, shared by "auto", the tuner, the benchmark and the
planner: each caller's limits, and the callers agreeing where their limits do."""

import pytest
import torch
from torch import nn

from leanconv.algorithms import choose, eligibility, native
from leanconv.algorithms.eligibility import FFTLimits, WinogradLimits
from leanconv.compress.algorithms import eligible
from leanconv.selection import eligibility as module_rules
from leanconv.selection.benchmark import benchmark_conv
from leanconv.selection.tuner import candidate_builders


def test_defaults_are_what_the_algorithms_compute():
    assert eligibility.winograd((7, 5), (3, 2), (2, 1), 4, 8, 8)
    assert eligibility.fft((1, 1), 1, 1, 1, 3)
    refused = eligibility.fft((3, 3), (2, 2), 1, 1, 3)
    assert not refused and "stride 1" in refused.reason


def test_limits_narrow_the_one_rule():
    three = WinogradLimits(3, 3, max_stride=1, max_dilation=1, grouped=False, min_channels=16)
    assert eligibility.winograd((3, 3), 1, 1, 1, 16, 32, three)
    assert not eligibility.winograd((3, 3), 1, 1, 2, 32, 32, three)
    assert not eligibility.winograd((1, 3), 1, 1, 1, 32, 32, three)
    both = FFTLimits(13, 17)
    assert eligibility.fft((13, 13), 1, 1, 1, 8, both)
    assert not eligibility.fft((13, 13), 1, 1, 8, 8, both)  # depthwise needs 17
    assert not eligibility.fft((7, 13), 1, 1, 1, 8, both)  # both sides count
    assert eligibility.fft((7, 13), 1, 1, 1, 8, FFTLimits(13, side="larger"))
    assert eligibility.fft((7, 7), 1, 2, 1, 8, both)  # dilation 2: 13x13
    with pytest.raises(ValueError, match="side"):
        FFTLimits(side="both")


def test_module_checks_come_first():
    assert not module_rules.winograd(nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"))
    assert not module_rules.fft(nn.Conv1d(16, 16, 3))

    class MyConv(nn.Conv2d):
        pass

    assert not module_rules.packed(MyConv(16, 16, 3))
    assert module_rules.packed(nn.Conv2d(16, 16, 3))


def test_callers_agree_where_their_limits_do():
    conv = nn.Conv2d(256, 256, 3, padding=1)
    x = torch.randn(2, 256, 28, 28)
    assert choose(x, conv.weight).algorithm == "winograd"
    assert eligible(conv)
    assert {"winograd2", "winograd4", "winograd6"} <= set(candidate_builders(conv))
    strided = nn.Conv2d(256, 256, 3, stride=2, padding=1)
    assert choose(x, strided.weight, 2, 1).algorithm == "direct" and not eligible(strided)
    assert "winograd4" in candidate_builders(strided)  # the tuner times stride 2 too
    big = nn.Conv2d(16, 16, 13, padding=6)
    assert choose(torch.randn(1, 16, 32, 32), big.weight, padding=6).algorithm == "fft"
    assert "fft" in candidate_builders(big)


def test_padding_same_layers_are_tuned_as_the_planner_converts_them():
    # Before one rule, the tuner refused every layer with padding="same" while the planner
    # converted the same layer: the fast forms compute it exactly.
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding="same").eval()
    x = torch.randn(1, 16, 12, 12)
    assert eligible(conv)
    builders = candidate_builders(conv)
    narrow = {"narrow"} if native.available() else set()
    assert set(builders) == {"packed", "winograd2", "winograd4", "winograd6"} | narrow
    with torch.no_grad():
        ref = conv(x)
        for build in builders.values():
            assert (build()(x) - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_benchmark_skips_what_the_rule_refuses():
    x, w = torch.randn(1, 8, 16, 16), torch.randn(8, 8, 3, 3)
    rows = {r.name: r for r in benchmark_conv(x, w, stride=2, padding=1, repeats=1)}
    assert "stride 1" in rows["fft"].skipped
    assert not rows["winograd F(4x4)"].skipped
