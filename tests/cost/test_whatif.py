"""The figures practitioners argue about, reproduced exactly."""

from fractions import Fraction

import pytest

from leanconv import ConvSpec
from leanconv.cost.algorithms import fft_multiplications, winograd_multiplications
from leanconv.cost.whatif import stacked_3x3, whatif
from leanconv.errors import InvalidSpecError


def test_5x5_vs_two_3x3_same_padding():
    table = whatif(ConvSpec(1, 1, 5, input_size=(32, 32), padding="same", bias=False))
    assert table.row("original").per_output == 25
    assert table.row("stacked_3x3").per_output == 18


def test_5x5_vs_two_3x3_unpadded_corner_case():
    table = whatif(ConvSpec(1, 1, 5, input_size=(5, 5), padding=0, bias=False))
    assert table.row("original").macs == 25
    assert table.row("stacked_3x3").macs == 90


def test_bottleneck_at_256_channels():
    table = whatif(ConvSpec(256, 256, 3, input_size=(56, 56), padding=1, bias=False), squeeze=4)
    assert table.row("original").params == 589_824
    assert table.row("bottleneck_1x1 (squeeze 4)").params == 69_632


def test_depthwise_separable_3_to_256():
    table = whatif(ConvSpec(3, 256, 3, input_size=(56, 56), padding=1, bias=False))
    assert table.row("original").params == 6_912
    assert table.row("depthwise_separable (multiplier 1)").params == 795


def test_depth_multiplier():
    table = whatif(ConvSpec(3, 256, 3, input_size=(56, 56), padding=1, bias=False), multiplier=2)
    assert table.row("depthwise_separable (multiplier 2)").params == 3 * 2 * 9 + 6 * 256


def test_groups_cut_weights_by_g():
    table = whatif(ConvSpec(256, 256, 3, input_size=(14, 14), padding=1, bias=False), groups=8)
    row = table.row("grouped (g=8) + shuffle")
    assert Fraction(row.params, table.row("original").params) == Fraction(1, 8)


def test_winograd_f2x2_3x3_tile():
    w = winograd_multiplications(ConvSpec(1, 1, 3, input_size=(4, 4), bias=False), 2)
    assert (w.per_tile, w.direct_per_tile) == (16, 36)
    assert w.multiplications == 16


@pytest.mark.parametrize(
    "m, per_output", [(2, Fraction(4)), (4, Fraction(9, 4)), (6, Fraction(16, 9))]
)
def test_winograd_multiplications_per_output(m, per_output):
    """REFERENCES: 9 direct; F(2x2) 4, F(4x4) 2.25, F(6x6) 1.78 per output."""
    spec = ConvSpec(1, 1, 3, input_size=(m * 6 + 2,) * 2, bias=False)
    w = winograd_multiplications(spec, m)
    assert Fraction(w.multiplications, spec.output_size[0] * spec.output_size[1]) == per_output


def test_winograd_rejects_strides():
    with pytest.raises(InvalidSpecError, match="stride"):
        winograd_multiplications(ConvSpec(1, 1, 3, input_size=(8, 8), stride=2), 2)


def test_fft_counts_are_positive_and_reject_small_tiles():
    spec = ConvSpec(32, 32, 15, input_size=(64, 64), padding=7)
    cost = fft_multiplications(spec, tile=32)
    assert cost.tiles == 4 * 4  # 18 outputs per tile side: ceil(64 / 18) = 4
    assert cost.per_tile == 32 * 17 * 4
    with pytest.raises(InvalidSpecError, match="smaller than the kernel"):
        fft_multiplications(spec, tile=8)


def test_stacked_keeps_output_shape_with_stride_and_padding():
    spec = ConvSpec(8, 16, 7, input_size=(31, 29), stride=2, padding=3)
    layers = stacked_3x3(spec)
    assert len(layers) == 3 and layers[-1].output_shape == spec.output_shape


def test_inapplicable_rows_say_why():
    table = whatif(ConvSpec(3, 8, 3, input_size=(16, 16), stride=2, padding=1))
    row = table.row("winograd F(2x2,3x3)")
    assert row.skipped and "stride" in row.skipped
