"""The streaming matrix-vector kernel for small-batch Linear layers (kernels/gemv.c):
against F.linear in float64, its fallbacks (more rows, other dtypes and devices, autograd),
GemvLinear as a drop-in nn.Linear, and accelerate() tuning Linear layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import leanconv
from leanconv.algorithms import gemv, native
from leanconv.nn import GemvLinear

needs_kernels = pytest.mark.skipif(not native.available(), reason=native.status())


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


@needs_kernels
@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, gemv.MAX_ROWS),
    k=st.integers(1, 300),
    o=st.integers(1, 70),
    bias=st.booleans(),
)
def test_equals_float64_linear(rows, k, o, bias):
    """Any K (vector tails), any O (row-block tails), 1-8 rows (one or two groups of x)."""
    g = torch.Generator().manual_seed(rows * 100_003 + k * 101 + o)
    x, w = torch.randn(rows, k, generator=g), torch.randn(o, k, generator=g)
    b = torch.randn(o, generator=g) if bias else None
    assert gemv.usable(x, w, b)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert _rel(gemv.linear(x, w, b), ref) <= 1e-5


@needs_kernels
def test_vgg_classifier_shape_and_strided_inputs():
    torch.manual_seed(0)
    w, b = torch.randn(512, 25088), torch.randn(512)
    x = torch.randn(2, 25088)
    ref = F.linear(x.double(), w.double(), b.double())
    assert _rel(gemv.linear(x, w, b), ref) <= 1e-5
    wide = torch.randn(3, 2 * 25088)[:, ::2]  # columns strided: copied first
    assert _rel(gemv.linear(wide, w, b), F.linear(wide.double(), w.double(), b.double())) <= 1e-5
    rows = torch.randn(4, 25088 + 7)[:, :25088]  # rows strided, columns contiguous: in place
    assert _rel(gemv.linear(rows, w, b), F.linear(rows.double(), w.double(), b.double())) <= 1e-5
    leading = torch.randn(2, 3, 64)  # leading dimensions flatten into 6 rows
    w2 = torch.randn(5, 64)
    y = gemv.linear(leading, w2)
    assert y.shape == (2, 3, 5) and _rel(y, F.linear(leading.double(), w2.double())) <= 1e-5


def test_falls_back_where_the_kernel_does_not_apply():
    torch.manual_seed(0)
    w, b = torch.randn(6, 10), torch.randn(6)
    many = torch.randn(gemv.MAX_ROWS + 1, 10)
    assert not gemv.usable(many, w, b)
    assert torch.equal(gemv.linear(many, w, b), F.linear(many, w, b))
    double = torch.randn(2, 10, dtype=torch.float64)
    y = gemv.linear(double, w.double(), b.double())
    assert y.dtype == torch.float64 and torch.equal(y, F.linear(double, w.double(), b.double()))
    on_meta = gemv.linear(torch.empty(1, 10, device="meta"), w.to("meta"))
    assert on_meta.device.type == "meta" and on_meta.shape == (1, 6)
    assert not gemv.usable(torch.randn(1, 10), torch.randn(10, 6).t())  # weight not contiguous


def test_autograd_records_through_f_linear():
    torch.manual_seed(0)
    layer = GemvLinear(10, 6)
    plain = nn.Linear(10, 6)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 10, requires_grad=True)
    layer(x).square().sum().backward()
    grads = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    x.grad = None
    plain(x).square().sum().backward()
    for got, want in zip(grads, (x.grad, plain.weight.grad, plain.bias.grad), strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_keeps_device_and_dtype():
    layer = GemvLinear(10, 6).cuda().half()
    y = layer(torch.randn(1, 10, device="cuda", dtype=torch.float16))
    assert y.device.type == "cuda" and y.dtype == torch.float16


def test_drop_in_for_nn_linear():
    torch.manual_seed(0)
    plain = nn.Linear(33, 7, bias=False)
    layer = GemvLinear.from_linear(plain)
    assert isinstance(layer, nn.Linear) and layer.bias is None
    assert layer.state_dict().keys() == plain.state_dict().keys()
    assert torch.equal(layer.weight, plain.weight) and layer.weight is not plain.weight
    x = torch.randn(3, 33)
    with torch.no_grad():
        assert _rel(layer(x), F.linear(x.double(), plain.weight.double())) <= 1e-5


@needs_kernels
def test_accelerate_tunes_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10),
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 16, 16)
    fast, report = leanconv.accelerate(model, x, use_cache=False, repeats=3)
    linear = {c.name: c for c in report.layers if "linear" in c.geometry}
    assert set(linear) == {"4", "6"}
    for name, choice in linear.items():
        assert choice.errors["gemv"] <= 1e-4 and "gemv" in choice.candidates
        kind = GemvLinear if choice.chosen == "gemv" else nn.Linear
        assert type(fast.get_submodule(name)) is kind
    with torch.no_grad():
        ref = model.double()(x.double())
        assert _rel(fast(x), ref) <= 1e-4
