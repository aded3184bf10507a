"""Building blocks against independent references.

Linear blocks are checked against one dense ``nn.functional.conv2d`` whose kernel is built from the
same weights (outer products, compositions, block-diagonal embeddings) in float64; non-linear ones
against a functional re-implementation or an exact property (the half of ShuffleNet V2 that passes
unchanged, the input channels a dense block keeps). Costs: ``leanconv.count`` at the dispatcher,
the block's analytic ``cost`` (closed forms of its convolutions) and hand-written formulas agree.
"""

from __future__ import annotations

import io
import warnings
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import leanconv
from leanconv.cost import conv_cost
from leanconv.nn.bottleneck import Bottleneck1x1, InvertedResidual
from leanconv.nn.dense import DenseBlock, DenseLayer, Transition
from leanconv.nn.grouped import (
    ChannelShuffle,
    GroupedConv2d,
    ShuffleNetV1Unit,
    ShuffleNetV2Unit,
    channel_shuffle,
)
from leanconv.nn.inception import (
    InceptionA,
    InceptionB,
    InceptionBlock,
    InceptionC,
    InceptionD,
    InceptionE,
)
from leanconv.nn.se import SqueezeExcite
from leanconv.nn.separable import DepthwiseSeparableConv2d, SpatiallySeparableConv2d
from leanconv.nn.stacked import StackedConv2d
from leanconv.spec import ConvSpec

F64 = torch.float64
BN = nn.BatchNorm2d
RELU = partial(nn.ReLU, inplace=True)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random batch-norm statistics (so eval mode is not the identity)."""
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


# --------------------------------------------------------------------------- the blocks, by name
# name -> (factory, in_channels, smallest input side)
BLOCKS = {
    "dwsep": (
        lambda: DepthwiseSeparableConv2d(6, 10, 3, 2, depth_multiplier=2, norm=BN, activation=RELU),
        6,
        1,
    ),
    "dwsep_k5_dil": (lambda: DepthwiseSeparableConv2d(4, 8, 5, dilation=2, bias=True), 4, 1),
    "spatial": (lambda: SpatiallySeparableConv2d(5, 7, 5, intermediate_channels=3, stride=2), 5, 1),
    "stacked": (lambda: StackedConv2d(5, 8, 7, 6, norm=BN, activation=RELU), 5, 1),
    "bottleneck": (lambda: Bottleneck1x1(8, 16, 3, 4, stride=2, norm=BN, activation=RELU), 8, 1),
    "inverted": (lambda: InvertedResidual(8, 8, 1, 6), 8, 1),
    "inverted_s2": (lambda: InvertedResidual(8, 12, 2, 1), 8, 1),
    "grouped": (lambda: GroupedConv2d(6, 9, 3, groups=3), 6, 1),
    "shuffle": (lambda: ChannelShuffle(3), 6, 1),
    "shufflev1": (lambda: ShuffleNetV1Unit(24, 24, 3, 1), 24, 1),
    "shufflev1_s2": (lambda: ShuffleNetV1Unit(12, 60, 3, 2, first_grouped=False), 12, 1),
    "shufflev2": (lambda: ShuffleNetV2Unit(8, 8, 1), 8, 1),
    "shufflev2_s2": (lambda: ShuffleNetV2Unit(6, 16, 2), 6, 1),
    "inception": (lambda: InceptionBlock(6, 4, 3, 5, 2, 3, 2), 6, 1),
    "inception_a": (lambda: InceptionA(8, 4, width=0.1), 8, 1),
    "inception_b": (lambda: InceptionB(8, width=0.05), 8, 3),
    "inception_c": (lambda: InceptionC(8, 4, width=0.05), 8, 1),
    "inception_c_stacked": (lambda: InceptionC(8, 4, width=0.05, seven="stacked"), 8, 1),
    "inception_d": (lambda: InceptionD(8, width=0.05), 8, 3),
    "inception_e": (lambda: InceptionE(8, width=0.05), 8, 1),
    "dense": (lambda: DenseBlock(3, 6, growth_rate=4, bn_size=2), 6, 1),
    "transition": (lambda: Transition(6, 3), 6, 2),
    "se": (lambda: SqueezeExcite(16, 4), 16, 1),
}  # fmt: skip


def _build(name: str, dtype=torch.float32) -> nn.Module:
    factory, _, _ = BLOCKS[name]
    return _randomise(factory()).to(dtype).eval()


def _input(name: str, n=2, h=9, w=7, dtype=torch.float32, seed=1) -> torch.Tensor:
    c = BLOCKS[name][1]
    return torch.randn(n, c, h, w, generator=_gen(seed)).to(dtype)


# --------------------------------------------------------------------------- exact equivalences
@settings(max_examples=25)
@given(
    c_in=st.integers(1, 4),
    c_mid=st.integers(1, 4),
    c_out=st.integers(1, 4),
    k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 3),
    bias=st.booleans(),
    hw=st.tuples(st.integers(9, 13), st.integers(9, 13)),
)
def test_spatially_separable_is_dense_conv_with_outer_product_kernel(
    c_in, c_mid, c_out, k, stride, dilation, pad, bias, hw
):
    m = SpatiallySeparableConv2d(c_in, c_out, k, c_mid, stride, pad, dilation, bias).to(F64)
    _randomise(m)
    u = m.vertical.weight[:, :, :, 0]  # (M, C_in, k)
    v = m.horizontal.weight[:, :, 0, :]  # (C_out, M, k)
    dense = torch.einsum("mia,omb->oiab", u, v)
    x = torch.randn(2, c_in, *hw, dtype=F64, generator=_gen(3))
    b = m.horizontal.bias
    expected = F.conv2d(x, dense, b, stride, pad, dilation)
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=25)
@given(
    c_in=st.integers(1, 4),
    mult=st.integers(1, 3),
    c_out=st.integers(1, 5),
    k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
)
def test_depthwise_separable_is_dense_conv(c_in, mult, c_out, k, stride, dilation, bias):
    m = DepthwiseSeparableConv2d(
        c_in, c_out, k, stride, dilation=dilation, depth_multiplier=mult, bias=bias
    ).to(F64)
    _randomise(m)
    dw = m.depthwise.weight[:, 0]  # (C_in * m, k, k); channel c*m + j reads input c
    pw = m.pointwise.weight[:, :, 0, 0]  # (C_out, C_in * m)
    dense = torch.zeros(c_out, c_in, k, k, dtype=F64)
    for c in range(c_in):
        for j in range(mult):
            dense[:, c] += pw[:, c * mult + j, None, None] * dw[c * mult + j]
    b = pw @ m.depthwise.bias + m.pointwise.bias if bias else None
    x = torch.randn(3, c_in, 11, 10, dtype=F64, generator=_gen(4))
    expected = F.conv2d(x, dense, b, stride, dilation * (k - 1) // 2, dilation)
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)


def _compose(k2: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    """Kernel of ``conv(conv(x, k1), k2)`` (cross-correlations, stride 1): sizes add minus one."""
    a, b = k1.shape[-1], k2.shape[-1]
    out = torch.zeros(k2.shape[0], k1.shape[1], a + b - 1, a + b - 1, dtype=k1.dtype)
    for i in range(b):
        for j in range(b):
            out[:, :, i : i + a, j : j + a] += torch.einsum("om,mixy->oixy", k2[:, :, i, j], k1)
    return out


@pytest.mark.parametrize("k", [3, 5, 7, 9])
@pytest.mark.parametrize("stride", [1, 2])
def test_linear_stack_of_3x3_is_kxk_away_from_the_border(k, stride):
    m = _randomise(StackedConv2d(3, 4, k, intermediate_channels=5, stride=stride, bias=False))
    m = m.to(F64)
    kernel = m.convs[0].weight
    for conv in m.convs[1:]:
        kernel = _compose(conv.weight, kernel)
    assert kernel.shape == (4, 3, k, k)
    x = torch.randn(2, 3, 17, 16, dtype=F64, generator=_gen(5))
    expected = F.conv2d(x, kernel, None, stride, (k - 1) // 2)
    got = m(x)
    assert got.shape == expected.shape
    # rows/cols whose receptive field stays clear of the intermediate zero padding
    n = (k - 1) // 2
    lo = -(-(n - 1) // stride)
    hi_r = (x.shape[2] - n) // stride
    hi_c = (x.shape[3] - n) // stride
    inner = (..., slice(lo, hi_r), slice(lo, hi_c))
    torch.testing.assert_close(got[inner], expected[inner], rtol=1e-12, atol=1e-12)
    if k > 3:  # and the border really differs: the equivalence is not vacuous
        assert not torch.allclose(got, expected)


def test_linear_bottleneck_is_dense_conv():
    m = _randomise(Bottleneck1x1(6, 8, 3, squeeze=2, stride=2, bias=True)).to(F64)
    r, c, e = m.reduce, m.conv, m.expand
    dense = torch.einsum("om,mnxy,ni->oixy", e.weight[:, :, 0, 0], c.weight, r.weight[:, :, 0, 0])
    # the bias of the 1x1 reduce is constant only inside the image: test without padding effects
    bias = e.weight[:, :, 0, 0] @ (c.weight.sum((2, 3)) @ r.bias + c.bias) + e.bias
    x = torch.randn(2, 6, 9, 9, dtype=F64, generator=_gen(6))
    expected = F.conv2d(x, dense, bias, 2, 1)
    got = m(x)
    torch.testing.assert_close(
        got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-12
    )
    m.reduce.bias.data.zero_()
    bias = e.weight[:, :, 0, 0] @ c.bias + e.bias
    torch.testing.assert_close(m(x), F.conv2d(x, dense, bias, 2, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_grouped_conv_is_block_diagonal_dense_conv(groups):
    m = _randomise(GroupedConv2d(6, 12, 3, groups=groups, bias=True)).to(F64)
    dense = torch.zeros(12, 6, 3, 3, dtype=F64)
    ci, co = 6 // groups, 12 // groups
    for g in range(groups):
        dense[g * co : (g + 1) * co, g * ci : (g + 1) * ci] = m.weight[g * co : (g + 1) * co]
    x = torch.randn(2, 6, 8, 8, dtype=F64, generator=_gen(7))
    torch.testing.assert_close(m(x), F.conv2d(x, dense, m.bias, 1, 1), rtol=1e-12, atol=1e-12)
    assert leanconv.count(m, x.shape).total.macs == 2 * 64 * 12 * ci * 9  # N H W O (C/g) k^2


@settings(max_examples=40)
@given(groups=st.integers(1, 6), per=st.integers(1, 5), n=st.integers(1, 3))
def test_channel_shuffle_against_brute_force_permutation(groups, per, n):
    c = groups * per
    x = torch.randn(n, c, 2, 3, generator=_gen(8))
    y = channel_shuffle(x, groups)
    for i in range(groups):
        for j in range(per):
            assert torch.equal(y[:, j * groups + i], x[:, i * per + j])
    assert torch.equal(channel_shuffle(y, per), x)  # shuffling back with C/g groups inverts it
    assert torch.equal(ChannelShuffle(groups)(x), y)


def test_channel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="groups=4"):
        channel_shuffle(torch.zeros(1, 6, 2, 2), 4)
    with pytest.raises(ValueError, match="groups=0"):
        ChannelShuffle(0)


def test_shufflenet_v1_unit_against_functional_reference():
    m = _build("shufflev1_s2").double()
    x = _input("shufflev1_s2", dtype=F64)

    def bn(t, mod):
        return F.batch_norm(
            t, mod.running_mean, mod.running_var, mod.weight, mod.bias, False, 0, mod.eps
        )

    y = F.relu(bn(F.conv2d(x, m.reduce[0].weight, groups=1), m.reduce[1]))  # first 1x1 dense
    n, c, h, w = y.shape
    y = y.view(n, 3, c // 3, h, w).transpose(1, 2).reshape(n, c, h, w)
    y = bn(F.conv2d(y, m.depthwise[0].weight, None, 2, 1, groups=c), m.depthwise[1])
    y = bn(F.conv2d(y, m.expand[0].weight, groups=3), m.expand[1])
    expected = F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), y], 1))
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)


def test_shufflenet_v2_unit_passes_half_the_channels_unchanged():
    m = _build("shufflev2")
    x = _input("shufflev2")
    y = m(x)
    assert torch.equal(y[:, 0::2], x[:, :4])  # after the 2-group shuffle the kept half is even
    assert not torch.allclose(y[:, 1::2], x[:, 4:])


def test_dense_block_keeps_its_input_and_grows():
    m = _build("dense")
    x = _input("dense")
    y = m(x)
    assert y.shape == (2, 6 + 3 * 4, 9, 7)
    assert torch.equal(y[:, :6], x)
    # the second layer's output depends on the first layer's: recompute by hand
    f1 = m.layers[0](x)
    f2 = m.layers[1](torch.cat([x, f1], 1))
    torch.testing.assert_close(y[:, 6:10], f1)
    torch.testing.assert_close(y[:, 10:14], f2)


def test_squeeze_excite_against_manual_formula():
    m = _build("se", F64)
    x = _input("se", dtype=F64)
    w1, b1 = m.reduce.weight[:, :, 0, 0], m.reduce.bias
    w2, b2 = m.expand.weight[:, :, 0, 0], m.expand.bias
    s = x.mean((2, 3))
    gate = torch.sigmoid(torch.relu(s @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(m(x), x * gate[:, :, None, None], rtol=1e-12, atol=1e-12)


def test_inception_branches_concatenate_in_order():
    m = _build("inception")
    x = _input("inception")
    y = m(x)
    assert y.shape == (2, 4 + 5 + 3 + 2, 9, 7)
    torch.testing.assert_close(y[:, 4:9], m.branches[1](x))
    torch.testing.assert_close(y[:, 12:], m.branches[3](x))


# --------------------------------------------------------------------------- costs
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_count_equals_closed_forms_of_the_convolutions(name):
    if name == "shuffle":
        assert leanconv.count(_build(name), (2, 6, 4, 4)).total.macs == 0
        return
    m = _build(name)
    shape = (2, BLOCKS[name][1], 11, 9)
    report = leanconv.count(m, shape)
    cost = m.cost(shape)
    assert not report.uncounted
    assert report.total.macs == cost.macs > 0
    assert report.total.macs == sum(conv_cost(s).macs for s in m.conv_specs(shape))
    conv_params = sum(
        p.numel()
        for mod in m.modules()
        if isinstance(mod, nn.Conv2d)
        for p in mod.parameters(recurse=False)
    )
    assert cost.params == conv_params
    assert tuple(m(torch.zeros(shape)).shape) == m.output_shape(shape) == cost.output_shape


@settings(max_examples=20)
@given(
    name=st.sampled_from(sorted(set(BLOCKS) - {"shuffle"})),
    n=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
)
def test_any_batch_and_input_size(name, n, h, w):
    lo = BLOCKS[name][2]
    h, w = max(h, lo), max(w, lo)
    m = BLOCKS[name][0]().eval()
    shape = (n, BLOCKS[name][1], h, w)
    y = m(torch.randn(shape))
    assert tuple(y.shape) == m.output_shape(shape)
    assert leanconv.count(m, shape).total.macs == m.cost(shape).macs


def test_hand_formulas():
    h, w = 14, 12
    # depthwise separable, stride 1: H W (C m k^2 + C m O)
    m = DepthwiseSeparableConv2d(16, 32, 5, depth_multiplier=2)
    assert leanconv.count(m, (1, 16, h, w)).total.macs == h * w * (16 * 2 * 25 + 32 * 32)
    # spatially separable stride 2: first factor keeps width, halves height
    m = SpatiallySeparableConv2d(16, 32, 7, intermediate_channels=8, stride=2)
    assert m.cost((1, 16, h, w)).macs == 7 * w * 16 * 8 * 7 + 7 * 6 * 8 * 32 * 7
    # stacked 7x7 = three 3x3: 9 H W (C M + M^2 + M O)
    m = StackedConv2d(16, 32, 7, intermediate_channels=8)
    assert m.cost((1, 16, h, w)).macs == 9 * h * w * (16 * 8 + 8 * 8 + 8 * 32)
    # bottleneck: H W C M + H W (9 M^2 + M O)
    m = Bottleneck1x1(64, 256, 3, squeeze=4)
    assert m.cost((1, 64, h, w)).macs == h * w * (64 * 64 + 9 * 64 * 64 + 64 * 256)
    # GoogLeNet inception 3a at 28x28: H W (C (c1 + r3 + r5 + p) + 9 r3 c3 + 25 r5 c5)
    m = InceptionBlock(192, 64, 96, 128, 16, 32, 32)
    expected = 28 * 28 * (192 * (64 + 96 + 16 + 32) + 9 * 96 * 128 + 25 * 16 * 32)
    assert (
        leanconv.count(m, (1, 192, 28, 28)).total.macs == expected == 128_049_152
    )  # table 1: 128M
    # dense block: H W b k (L C + k L (L - 1) / 2 + 9 k L)
    b, k, L, C = 4, 32, 6, 64
    m = DenseBlock(L, C, k, b)
    assert m.cost((1, C, 7, 7)).macs == 49 * b * k * (L * C + k * L * (L - 1) // 2 + 9 * k * L)
    # squeeze-excite: 2 N C^2 / r MACs, 2 C^2 / r + C / r + C params
    m = SqueezeExcite(256, 16)
    r = leanconv.count(m, (3, 256, 5, 5))
    assert r.total.macs == 2 * 3 * 256 * 16
    assert r.total.params == 2 * 256 * 16 + 16 + 256


def test_factorisation_ratios_of_the_inception_paper():
    """Section 3: 5x5 -> two 3x3 saves 28%; n x n -> 1 x n + n x 1 costs 2/n (same channels)."""
    c, hw = 64, (17, 17)
    dense5 = conv_cost(ConvSpec(c, c, 5, hw, padding=2, bias=False)).macs
    stacked5 = StackedConv2d(c, c, 5).cost((1, c, *hw)).macs
    assert stacked5 / dense5 == pytest.approx(18 / 25)
    dense7 = conv_cost(ConvSpec(c, c, 7, hw, padding=3, bias=False)).macs
    assert SpatiallySeparableConv2d(c, c, 7).cost((1, c, *hw)).macs / dense7 == pytest.approx(2 / 7)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: StackedConv2d(4, 4, 4), "kernel_size=4"),
        (lambda: StackedConv2d(4, 4, 1), "kernel_size=1"),
        (lambda: SqueezeExcite(8, 16), "reduction=16"),
        (lambda: SqueezeExcite(0), "channels=0"),
        (lambda: DepthwiseSeparableConv2d(4, 4, 4), "kernel_size=4"),
        (lambda: DepthwiseSeparableConv2d(4, 4, depth_multiplier=0), "depth_multiplier=0"),
        (
            lambda: SpatiallySeparableConv2d(4, 4, 3, intermediate_channels=0),
            "intermediate_channels=0",
        ),
        (lambda: GroupedConv2d(6, 8, groups=4), "in_channels=6"),
        (lambda: GroupedConv2d(8, 6, groups=4), "out_channels=6"),
        (lambda: Bottleneck1x1(8, 3, squeeze=4), "squeeze=4"),
        (lambda: ShuffleNetV1Unit(24, 48, 3, 1), "in_channels=24"),
        (lambda: ShuffleNetV1Unit(24, 40, 3, 2), "groups=3"),
        (lambda: ShuffleNetV2Unit(8, 9, 2), "out_channels=9"),
        (lambda: InceptionC(8, 4, seven="5x5"), "seven='5x5'"),
        (lambda: DenseLayer(8, 0), "growth_rate=0"),
    ],
)
def test_invalid_arguments_are_named(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


# ----------------------------------------------------------------------- dtypes, devices, export
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_is_kept(dtype):
    for name in BLOCKS:
        m = _build(name, dtype)
        x = _input(name, dtype=dtype)
        y = m(x)
        assert y.dtype == dtype, name
        assert torch.isfinite(y.float()).all(), name


def test_bfloat16_close_to_float32():
    for name in ("dwsep", "shufflev1", "inception_c", "se"):
        m32, x = _build(name), _input(name)
        y32 = m32(x)
        y16 = _build(name, torch.bfloat16)(x.bfloat16()).float()
        err = (y16 - y32).abs().max() / y32.abs().max()
        assert err < 0.05, name


def test_blocks_run_on_the_meta_device():
    """Nothing is pinned to the CPU: built and run on 'meta', the output stays there."""
    with torch.device("meta"):
        for name, (factory, c, _) in BLOCKS.items():
            y = factory()(torch.empty(2, c, 9, 9))
            assert y.device.type == "meta", name


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_torch_export(name):
    m, x = _build(name), _input(name)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_onnx_export_matches_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime")
    m, x = _build(name), _input(name)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
        )  # fmt: skip
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x2 = _input(name, n=3, h=11, w=8, seed=9)  # another batch and size than exported with
    (y,) = session.run(None, {"x": x2.numpy()})
    np.testing.assert_allclose(y, m(x2).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_extra_repr_names_the_geometry():
    for name, (factory, c, _) in BLOCKS.items():
        text = factory().extra_repr()
        assert text, name
        if name != "shuffle":
            assert str(c) in text, name
    assert "depth_multiplier=2" in BLOCKS["dwsep"][0]().extra_repr()
    assert "groups=3" in repr(ChannelShuffle(3))


def test_residual_sum_in_place_only_outside_autograd():
    from leanconv.nn.residual import BasicBlock, add_relu

    branch, shortcut = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    ref = torch.relu(branch.double() + shortcut.double())
    out = add_relu(branch.clone().requires_grad_(), shortcut)
    torch.testing.assert_close(out.double(), ref)
    with torch.no_grad():
        b = branch.clone()
        assert add_relu(b, shortcut) is b  # in place: no new tensor
        torch.testing.assert_close(b.double(), ref)
    block = BasicBlock(4, 4).eval()
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    y = block(x)
    y.sum().backward()  # the recorded path differentiates
    with torch.no_grad():
        torch.testing.assert_close(block(x), y.detach())
    assert x.grad is not None
