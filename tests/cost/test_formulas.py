"""Closed forms against brute-force counting and PyTorch itself."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from leanconv import ConvSpec
from leanconv.cost import Convention, conv_cost, conv_macs, einsum_macs, linear_cost, matmul_macs
from leanconv.cost.formulas import deform_conv_cost

from .test_spec import conv_geometries


def brute_force_macs(spec: ConvSpec, valid_only: bool) -> int:
    """Loop over every (position, tap) and count the multiply-accumulates, one channel pair."""
    count = 0
    ranges = [range(n) for n in (spec.input_size if spec.transposed else spec.output_size)]
    for pos in itertools.product(*ranges):
        for tap in itertools.product(*[range(k) for k in spec.kernel_size]):
            inside = True
            for i in range(spec.ndim):
                idx = pos[i] * spec.stride[i] - spec.padding[i][0] + tap[i] * spec.dilation[i]
                limit = spec.output_size[i] if spec.transposed else spec.input_size[i]
                inside &= 0 <= idx < limit
            count += inside or not valid_only
    return count * spec.batch * spec.in_channels * spec.out_channels // spec.groups


def _spec_or_none(kw):
    try:
        return ConvSpec(**kw)
    except ValueError:
        return None


@given(conv_geometries(), st.booleans())
def test_macs_equal_brute_force_direct(kw, valid):
    spec = _spec_or_none(kw)
    if spec is not None:
        assert conv_macs(spec, valid_taps=valid) == brute_force_macs(spec, valid)


@given(conv_geometries(transposed=True), st.booleans())
def test_macs_equal_brute_force_transposed(kw, valid):
    spec = _spec_or_none(kw)
    if spec is not None:
        assert conv_macs(spec, valid_taps=valid) == brute_force_macs(spec, valid)


@given(conv_geometries())
def test_valid_taps_equal_a_convolution_of_ones(kw):
    """Convolving all-ones input with an all-ones kernel counts the valid taps at each output."""
    spec = _spec_or_none(kw)
    if spec is None or spec.ndim != 2:
        return
    x = torch.ones(1, 1, *spec.input_size, dtype=torch.float64)
    w = torch.ones(1, 1, *spec.kernel_size, dtype=torch.float64)
    pad = (spec.padding[1][0], spec.padding[1][1], spec.padding[0][0], spec.padding[0][1])
    taps = F.conv2d(F.pad(x, pad), w, stride=spec.stride, dilation=spec.dilation).sum().item()
    pairs = spec.in_channels * spec.out_channels // spec.groups
    assert conv_macs(spec, valid_taps=True) == int(taps) * pairs * spec.batch


def test_transposed_macs_count_input_positions():
    """Stride-2 transposed conv: input positions x C_in x C_out/g x taps, not output positions
    (thop, torchprofile and torchinfo count 4x too high here)."""
    spec = ConvSpec(
        64, 32, 4, input_size=(16, 16), stride=2, padding=1, transposed=True, bias=False
    )
    assert spec.output_size == (32, 32)
    assert conv_macs(spec) == 16 * 16 * 64 * 32 * 16
    assert conv_macs(spec) * 4 == 32 * 32 * 64 * 32 * 16


def test_params_bytes_and_intensity():
    spec = ConvSpec(64, 128, 3, input_size=(56, 56), padding=1, bias=True, dtype=torch.float16)
    cost = conv_cost(spec)
    assert cost.params == 64 * 128 * 9 + 128
    assert cost.macs == 56 * 56 * 128 * 64 * 9
    assert cost.flops == 2 * cost.macs
    assert cost.bytes == 2 * (cost.params + 64 * 56 * 56 + 128 * 56 * 56)
    assert cost.intensity == pytest.approx(cost.flops / cost.bytes)
    with_bias = conv_cost(spec, Convention(count_bias=True))
    assert with_bias.flops == 2 * cost.macs + 128 * 56 * 56


def test_grouped_is_one_over_g():
    dense = conv_cost(ConvSpec(256, 256, 3, input_size=(14, 14), padding=1, bias=False))
    grouped = conv_cost(ConvSpec(256, 256, 3, input_size=(14, 14), padding=1, groups=8, bias=False))
    assert grouped.params * 8 == dense.params
    assert grouped.macs * 8 == dense.macs


def test_linear_and_matmul():
    cost = linear_cost(512, 1000, (8,))
    assert cost.macs == 8 * 512 * 1000
    assert cost.params == 512 * 1000 + 1000
    assert matmul_macs((4, 5, 6), (6, 7)) == 4 * 5 * 6 * 7
    assert matmul_macs((2, 1, 5, 6), (3, 6, 2)) == 2 * 3 * 5 * 6 * 2
    assert matmul_macs((6,), (6,)) == 6


def test_einsum_exact_against_loops():
    a, b = torch.ones(3, 4, 5), torch.ones(5, 6)
    assert einsum_macs("ijk,kl->ijl", a.shape, b.shape) == 3 * 4 * 5 * 6
    # every term is one MAC: the sum of an all-ones product equals the MAC count
    assert torch.einsum("ijk,kl->ijl", a, b).sum().item() == einsum_macs(
        "ijk,kl->ijl", a.shape, b.shape
    )
    assert einsum_macs("bchw,dc->bdhw", (2, 8, 4, 4), (3, 8)) == 2 * 8 * 4 * 4 * 3


def test_deformable_counts_sampling():
    spec = ConvSpec(16, 32, 3, input_size=(10, 10), padding=1, bias=False)
    plain = conv_cost(spec)
    v1 = deform_conv_cost(spec, offset_groups=1)
    v2 = deform_conv_cost(spec, offset_groups=2, modulated=True)
    samples = 10 * 10 * 9
    assert v1.macs == plain.macs + samples * 16 * 4 + samples * 4
    assert v2.macs == plain.macs + samples * 16 * 5 + samples * 2 * 4
    assert v1.params == plain.params


def test_bytes_use_dtype_width():
    a = conv_cost(ConvSpec(8, 8, 3, input_size=(8, 8), dtype=torch.float32))
    b = conv_cost(ConvSpec(8, 8, 3, input_size=(8, 8), dtype=torch.bfloat16))
    assert a.bytes == 2 * b.bytes
    assert math.isclose(a.intensity * 2, b.intensity)
