"""Dilated-convolution helpers and ASPP against independent references: receptive fields and
holes from the gradient of one output, ASPP against a functional re-implementation in float64,
costs against ``leanconv.count`` and a hand-written formula, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import leanconv
from leanconv.nn.dilated import (
    ASPP,
    dilated_conv_bn,
    effective_kernel_size,
    has_gridding,
    reachable_offsets,
    receptive_field,
)

F64 = torch.float64


def _support(layers, length: int = 96) -> list[int]:
    """Input positions that the first output of a stack of 1-D all-ones convolutions depends on
    (``(kernel, stride, dilation)`` per layer), from the gradient."""
    x = torch.zeros(1, 1, length, dtype=F64, requires_grad=True)
    y = x
    for k, s, d in layers:
        y = F.conv1d(y, torch.ones(1, 1, k, dtype=F64), stride=s, dilation=d)
    y[0, 0, 0].backward()
    return torch.nonzero(x.grad[0, 0]).flatten().tolist()


layer = st.tuples(st.integers(1, 4), st.integers(1, 2), st.integers(1, 3))


@settings(max_examples=40, deadline=None)
@given(st.lists(layer, min_size=1, max_size=4))
def test_receptive_field_matches_gradient_support(layers):
    support = _support(layers)
    assert receptive_field(layers) == support[-1] + 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(1, 4))
def test_reachable_offsets_and_gridding_match_gradient_support(dilations, k):
    support = _support([(k, 1, d) for d in dilations])
    assert reachable_offsets(dilations, k) == support
    assert has_gridding(dilations, k) == (len(support) != support[-1] + 1)


def test_gridding_examples_of_wang_et_al():
    assert has_gridding([2, 2, 2]) and has_gridding([1, 2, 9])
    assert not has_gridding([1, 2, 5]) and not has_gridding([1, 2, 3])
    assert effective_kernel_size(3, 6) == 13 and receptive_field([(3, 1, 1)] * 3) == 7


def test_dilated_conv_bn_keeps_size_and_names_bad_values():
    block = dilated_conv_bn(4, 8, 3, dilation=5)
    assert block(torch.randn(1, 4, 7, 9)).shape == (1, 8, 7, 9)
    with pytest.raises(ValueError, match="kernel_size=4 is even"):
        dilated_conv_bn(4, 8, 4)
    with pytest.raises(ValueError, match="dilation=0"):
        dilated_conv_bn(4, 8, 3, 0)
    with pytest.raises(ValueError, match=r"rates=\(6, 0\)"):
        ASPP(4, 8, rates=(6, 0))
    with pytest.raises(ValueError, match="dropout=1.5"):
        ASPP(4, 8, dropout=1.5)


def _randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen, dtype=F64))
            m.running_var.copy_(torch.rand(c, generator=gen, dtype=F64) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=gen, dtype=F64))
            m.bias.data.copy_(torch.randn(c, generator=gen, dtype=F64))


def _reference(m: ASPP, x):
    """DeepLab v3's ASPP written out with ``F`` calls on the module's weights (eval mode)."""

    def bn_relu(y, bn):
        y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var + bn.eps)[
            :, None, None
        ]
        return torch.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])

    outs = [bn_relu(F.conv2d(x, m.branches[0][0].weight), m.branches[0][1])]
    for i, r in enumerate(m.rates, start=1):
        conv, bn = m.branches[i][0], m.branches[i][1]
        outs.append(bn_relu(F.conv2d(x, conv.weight, padding=r, dilation=r), bn))
    if m.image_pooling:
        pool = m.branches[-1]
        y = bn_relu(F.conv2d(x.mean(dim=(2, 3), keepdim=True), pool.conv.weight), pool.post[0])
        outs.append(F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False))
    cat = torch.cat(outs, dim=1)
    return bn_relu(F.conv2d(cat, m.project[0].weight), m.project[1])


@pytest.mark.parametrize("image_pooling", [True, False])
def test_aspp_matches_functional_reference(image_pooling):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = ASPP(6, 5, rates=(2, 3, 7), image_pooling=image_pooling).double().eval()
    _randomise_norms(m, gen)
    x = torch.randn(2, 6, 11, 9, generator=gen, dtype=F64)
    torch.testing.assert_close(m(x), _reference(m, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("image_pooling", [True, False])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_aspp_count_equals_formula(image_pooling, device):
    n, c, f, h, w = 2, 32, 16, 17, 15
    rates = (6, 12, 18)
    with torch.device(device):
        m = ASPP(c, f, rates, image_pooling=image_pooling)
    report = leanconv.count(m, (n, c, h, w))
    b = len(rates)
    branches = b + 1 + (1 if image_pooling else 0)
    expected = n * (h * w * c * f * (1 + 9 * b) + h * w * branches * f * f)
    expected += n * c * f if image_pooling else 0
    assert report.total.macs == expected == m.cost((n, c, h, w)).macs
    assert not report.uncounted
    assert report.total.params == sum(p.numel() for p in m.parameters())


def test_aspp_torch_export_and_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    m = ASPP(8, 4, rates=(1, 2)).eval()
    x = torch.randn(1, 8, 10, 12)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))
    path = tmp_path / "aspp.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=True, verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-4, atol=1e-5)


def test_aspp_bfloat16_and_extra_repr():
    torch.manual_seed(2)
    m = ASPP(8, 4, rates=(2, 4)).eval()
    x = torch.randn(2, 8, 9, 9)
    ref = m.double()(x.double())
    y = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert (y.double() - ref).abs().max() <= 3e-2 * ref.abs().max()
    assert "8->4, rates=(2, 4)" in repr(m)
