"""Direct convolution on a oneDNN-packed weight with a fused ReLU (``algorithms.packed``) and its
module ``nn.PackedConv2d``.

Reference: ``torch.nn.functional.conv2d`` (then ``relu``) in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanconv.algorithms import packed
from leanconv.errors import InvalidSpecError
from leanconv.nn import PackedConv2d

pytestmark = pytest.mark.skipif(packed.onednn_ops() is None, reason="no oneDNN in this build")


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    assert y.shape == ref.shape and y.dtype == torch.float32
    return ((y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


@st.composite
def geometries(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return {
        "batch": draw(st.sampled_from([1, 3])),
        "groups": groups,
        "cg": draw(st.sampled_from([1, 3, 8])),
        "kg": draw(st.sampled_from([1, 5, 8])),
        "kernel": k,
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": (draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        "dilation": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "size": (draw(st.integers(11, 17)), draw(st.integers(11, 17))),
        "relu": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "channels_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=60)
@given(p=geometries())
def test_packed_matches_conv2d(p):
    gen = torch.Generator().manual_seed(p["seed"])
    c, k = p["cg"] * p["groups"], p["kg"] * p["groups"]
    x = torch.randn(p["batch"], c, *p["size"], generator=gen)
    if p["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(k, p["cg"], *p["kernel"], generator=gen)
    b = torch.randn(k, generator=gen) if p["bias"] else None
    geometry = (p["stride"], p["padding"], p["dilation"], p["groups"])
    ref = F.conv2d(x.double(), w.double(), None if b is None else b.double(), *geometry)
    ref = ref.relu() if p["relu"] else ref
    weight = packed.pack(w, *geometry, tuple(x.shape))
    assert weight is not None
    y = packed.conv2d_packed(x, weight, b, *geometry, "relu" if p["relu"] else None)
    assert _relative_error(y, ref) < 1e-5


def test_usable_only_where_it_applies():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
    assert packed.usable(x, w)
    assert not packed.usable(x.double(), w.double())
    assert not packed.usable(x[0], w)  # unbatched
    with torch.enable_grad():
        assert not packed.usable(x, w.requires_grad_())  # the packed weight has no gradient
    with pytest.raises(ValueError, match="activation"):
        packed.conv2d_packed(x, packed.pack(w, (1, 1), (1, 1), (1, 1), 1, (1, 4, 8, 8)), None,
                             (1, 1), (1, 1), (1, 1), 1, "gelu")  # fmt: skip


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize(
    "conv",
    [
        torch.nn.Conv2d(6, 8, 3, 1, 1, groups=2),
        torch.nn.Conv2d(4, 4, (3, 5), 2, (1, 2), bias=False),
        torch.nn.Conv2d(4, 6, 1),
        torch.nn.Conv2d(4, 4, 3, 1, "same", dilation=2),  # string padding: F.conv2d path
    ],
)
def test_module_from_conv(conv, activation, monkeypatch):
    monkeypatch.setattr(packed, "MIN_MACS", 0)  # these small layers too take the packed path
    layer = PackedConv2d.from_conv(conv, activation=activation).eval()
    assert set(layer.state_dict()) == set(conv.state_dict())
    x = torch.randn(2, conv.in_channels, 13, 11)

    def reference() -> torch.Tensor:
        c = copy.deepcopy(conv).double()
        y = c(x.double())
        return y.relu() if activation else y

    with torch.no_grad():
        ref = reference()
        assert _relative_error(layer(x), ref) < 1e-5
        assert _relative_error(layer(x[:1].contiguous()), ref[:1]) < 1e-5  # another shape
        layer.weight.mul_(-2)  # a changed weight is packed again
        conv.weight.mul_(-2)
        assert _relative_error(layer(x), reference()) < 1e-5
    if isinstance(conv.padding, tuple):
        assert len(layer._cache) == 1  # stale packs dropped
        assert next(iter(layer._cache.values()))[1] is not None


def test_small_calls_stay_on_conv2d(monkeypatch):
    # the packed call has a fixed cost of ~20 us: below MIN_MACS per call F.conv2d is faster
    layer = PackedConv2d(16, 16, 3, padding=1, activation="relu").eval()
    small, large = (1, 16, 8, 8), (64, 16, 8, 8)  # 0.15 M and 9.4 M multiply-accumulates
    assert not packed.worth_packing((16, 16, 3, 3), (1, 1), (1, 1), (1, 1), small)
    assert packed.worth_packing((16, 16, 3, 3), (1, 1), (1, 1), (1, 1), large)
    with torch.no_grad():
        assert layer.packed_weight(small) is None and layer.packed_weight(large) is not None
        x = torch.randn(small)
        ref = F.relu(F.conv2d(x.double(), layer.weight.double(), layer.bias.double(), padding=1))
        assert _relative_error(layer(x), ref) < 1e-5


def test_module_caches_few_packs_and_copies(monkeypatch):
    monkeypatch.setattr(packed, "MIN_MACS", 0)
    layer = PackedConv2d(4, 4, 3, padding=1, activation="relu").eval()
    with torch.no_grad():
        for n in range(1, 8):
            layer(torch.randn(n, 4, 6, 6))
        assert len(layer._cache) == PackedConv2d.MAX_PACKS
        twin = copy.deepcopy(layer)  # packs stay behind, rebuilt on use
        x = torch.randn(2, 4, 6, 6)
        torch.testing.assert_close(twin(x), layer(x))


def test_module_trains_through_conv2d():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    layer = PackedConv2d.from_conv(conv, activation="relu")
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    layer(x).square().sum().backward()
    F.relu(conv(x)).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, conv.weight.grad)
    torch.testing.assert_close(layer.bias.grad, conv.bias.grad)


def test_module_rejects_unknown_activation():
    with pytest.raises(InvalidSpecError, match="activation='tanh'"):
        PackedConv2d(4, 4, 3, activation="tanh")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_module_on_cuda_keeps_device_and_dtype():
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).cuda().half()
    layer = PackedConv2d.from_conv(conv, activation="relu")
    x = torch.randn(2, 4, 8, 8, device="cuda", dtype=torch.half)
    y = layer(x)
    assert y.device == x.device and y.dtype == x.dtype
    torch.testing.assert_close(y, F.relu(conv(x)))
