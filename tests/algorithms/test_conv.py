"""Every algorithm against ``torch.nn.functional.conv2d`` in float64, over many geometries."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanconv.algorithms import (
    AlgorithmFallbackWarning,
    choose,
    conv2d,
    fft,
    im2col,
    native,
    winograd,
)
from leanconv.nn.fast import FFTConv2d, WinogradConv2d


def _reference(x, w, b, stride, padding, dilation, groups):
    if isinstance(padding, tuple) and len(padding) == 4:  # (left, right, top, bottom)
        return F.conv2d(F.pad(x, padding), w, b, stride, 0, dilation, groups)
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):  # ((top, bottom), ...)
        (top, bottom), (left, right) = padding
        return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride, 0, dilation, groups)
    return F.conv2d(x, w, b, stride, padding, dilation, groups)


@st.composite
def geometries(draw, max_stride=3, max_kernel=5):
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    r, s = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["int", "pair", "ltrb", "pairs"]))
    if kind == "int":
        padding = draw(st.integers(0, 3))
    elif kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    elif kind == "ltrb":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    else:
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    h = draw(st.integers(dilation[0] * (r - 1) + 1, dilation[0] * (r - 1) + 12))
    w = draw(st.integers(dilation[1] * (s - 1) + 1, dilation[1] * (s - 1) + 12))
    return {
        "batch": draw(st.integers(1, 2)),
        "groups": groups,
        "cg": cg,
        "kg": kg,
        "kernel": (r, s),
        "stride": stride,
        "dilation": dilation,
        "padding": padding,
        "size": (h, w),
        "bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def _tensors(g):
    gen = torch.Generator().manual_seed(g["seed"])
    x = torch.randn(
        g["batch"], g["cg"] * g["groups"], *g["size"], generator=gen, dtype=torch.float64
    )
    k = g["kg"] * g["groups"]
    w = torch.randn(k, g["cg"], *g["kernel"], generator=gen, dtype=torch.float64)
    b = torch.randn(k, generator=gen, dtype=torch.float64) if g["bias"] else None
    return x, w, b


def _close(y, ref):
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("tile", [2, 4, 6])
@settings(max_examples=60)
@given(g=geometries())
def test_winograd_matches_conv2d(tile, g):
    x, w, b = _tensors(g)
    args = (g["stride"], g["padding"], g["dilation"], g["groups"])
    _close(winograd.conv2d(x, w, b, *args, tile=tile), _reference(x, w, b, *args))


@settings(max_examples=60)
@given(g=geometries(max_stride=1, max_kernel=7), tile=st.sampled_from([None, "full", 1, 3, 8]))
def test_fft_matches_conv2d(g, tile):
    x, w, b = _tensors(g)
    args = (g["stride"], g["padding"], g["dilation"], g["groups"])
    _close(fft.conv2d(x, w, b, *args, tile=tile), _reference(x, w, b, *args))


@settings(max_examples=60)
@given(g=geometries())
def test_im2col_matches_conv2d(g):
    x, w, b = _tensors(g)
    args = (g["stride"], g["padding"], g["dilation"], g["groups"])
    _close(im2col.conv2d(x, w, b, *args), _reference(x, w, b, *args))


@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col", "winograd", "fft"])
def test_entry_point(algorithm):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 13, 11, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    y = conv2d(x, w, b, 1, ((1, 2), (0, 1)), 1, 2, algorithm=algorithm)
    _close(y, F.conv2d(F.pad(x, (0, 1, 1, 2)), w, b, groups=2))
    _close(
        conv2d(x[0], w, b, 1, "same", 1, 2, algorithm=algorithm),
        F.conv2d(x[0], w, b, 1, "same", 1, 2),
    )


def test_auto_policy():
    x = torch.randn(1, 256, 28, 28, device="meta")
    w3 = torch.randn(256, 256, 3, 3, device="meta")
    assert choose(x, w3, padding=1).algorithm == "winograd"
    assert choose(x[:, :, :14, :14], w3, padding=1).algorithm == "direct"  # 16 tiles
    assert choose(x[:, :128], w3[:128, :128], padding=1).algorithm == "direct"  # not compiled
    # float32 on the CPU with the compiled transforms: from 128 channels per group
    x128, w128 = torch.empty(1, 128, 28, 28), torch.empty(128, 128, 3, 3)
    expected = "winograd" if native.available() else "direct"
    assert choose(x128, w128, padding=1).algorithm == expected
    assert choose(x128.double(), w128.double(), padding=1).algorithm == "direct"
    assert choose(x, w3, stride=2, padding=1).algorithm == "direct"
    assert choose(x, torch.randn(64, 256, 15, 15, device="meta"), padding=7).algorithm == "fft"
    assert choose(x, torch.randn(64, 256, 5, 5, device="meta"), dilation=3).algorithm == "fft"
    assert choose(x, torch.randn(64, 256, 9, 9, device="meta"), padding=4).algorithm == "direct"
    depthwise = {k: torch.randn(256, 1, k, k, device="meta") for k in (13, 17)}
    assert choose(x, depthwise[13], padding=6, groups=256).algorithm == "direct"
    assert choose(x, depthwise[17], padding=8, groups=256).algorithm == "fft"
    assert choose(x, torch.randn(256, 1, 3, 3, device="meta"), groups=256).algorithm == "direct"
    assert choose(x.half(), w3.half(), padding=1).algorithm == "direct"


def test_auto_falls_back_on_non_finite_input():
    x = torch.randn(1, 8, 20, 20, dtype=torch.float64)
    x[0, 3, 5, 5] = float("inf")
    w = torch.randn(8, 8, 13, 13, dtype=torch.float64)
    with pytest.warns(AlgorithmFallbackWarning, match="NaN or infinity"):
        y = conv2d(x, w, padding=6)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=6), equal_nan=True)


def test_half_precision_is_computed_in_float32():
    x, w = torch.randn(1, 8, 12, 12), torch.randn(8, 8, 3, 3)
    ref = F.conv2d(x, w, padding=1)
    for algorithm in ("winograd", "fft"):
        y = conv2d(x.bfloat16(), w.bfloat16(), padding=1, algorithm=algorithm)
        assert y.dtype == torch.bfloat16
        assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_channels_last_in_channels_last_out():
    x = torch.randn(2, 8, 10, 10, dtype=torch.float64).to(memory_format=torch.channels_last)
    w = torch.randn(8, 8, 3, 3, dtype=torch.float64)
    y = winograd.conv2d(x, w, padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _close(y, F.conv2d(x, w, padding=1))


@pytest.mark.parametrize(
    ("make", "conv"),
    [
        (lambda c: WinogradConv2d.from_conv(c, tile=4), torch.nn.Conv2d(6, 8, 3, 1, 1, groups=2)),
        (lambda c: WinogradConv2d.from_conv(c, tile=2), torch.nn.Conv2d(4, 4, (3, 5), 2, (1, 2))),
        (lambda c: WinogradConv2d.from_conv(c), torch.nn.Conv2d(4, 4, 3, 1, "same", dilation=2)),
        (lambda c: FFTConv2d.from_conv(c), torch.nn.Conv2d(4, 6, 9, 1, 4, bias=False)),
        (lambda c: FFTConv2d.from_conv(c, tile=5), torch.nn.Conv2d(4, 4, 7, 1, 3, groups=4)),
        (lambda c: FFTConv2d.from_conv(c, tile="full"), torch.nn.Conv2d(4, 4, 5, padding="same")),
    ],
)
def test_modules_from_conv(make, conv):
    conv = conv.double()
    layer = make(conv)
    x = torch.randn(2, conv.in_channels, 17, 15, dtype=torch.float64)
    with torch.no_grad():
        _close(layer(x), conv(x))
        cached = layer.transformed_filter() if isinstance(layer, WinogradConv2d) else None
        _close(layer(x), conv(x))
        if cached is not None:
            assert layer.transformed_filter() is cached
        # Changing the weight in place invalidates the cache.
        layer.weight.mul_(2)
        conv.weight.mul_(2)
        _close(layer(x), conv(x))
        _close(copy.deepcopy(layer)(x), conv(x))  # copies leave the cache behind
    assert set(layer.state_dict()) == set(conv.state_dict())


@pytest.mark.parametrize("cls", [WinogradConv2d, FFTConv2d])
def test_modules_backpropagate(cls):
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    layer = cls.from_conv(conv)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    conv(x_ref).square().sum().backward()
    _close(layer.weight.grad, conv.weight.grad)
    _close(layer.bias.grad, conv.bias.grad)
    _close(x.grad, x_ref.grad)


@pytest.mark.parametrize("chunk_bytes", [1, 3000, 20000, 1 << 30])
@pytest.mark.parametrize(("batch", "size", "groups"), [(3, (13, 11), 1), (2, (5, 7), 2)])
def test_winograd_chunks(monkeypatch, chunk_bytes, batch, size, groups):
    # Tiles are processed in chunks of whole tile rows (several images, or part of one).
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    ref = F.conv2d(x, w, b, padding=1, groups=groups)
    _close(winograd.conv2d(x, w, b, padding=1, groups=groups, tile=3), ref)
    xg = x.clone().requires_grad_(True)
    winograd.conv2d(xg, w, b, padding=1, groups=groups, tile=4).sum().backward()
    xr = x.clone().requires_grad_(True)
    F.conv2d(xr, w, b, padding=1, groups=groups).sum().backward()
    _close(xg.grad, xr.grad)


def test_winograd_stage_timings():
    x, w = torch.randn(2, 8, 12, 12), torch.randn(8, 8, 3, 3)
    filt = winograd.transform_filter(w, 4)
    timings: dict[str, float] = {}
    y = winograd._winograd_valid(
        x, filt.phases[(0, 0)], (4, 4), (3, 3), 1, (1, 1, 1, 1), None, timings
    )
    assert set(timings) == {"input", "gemm", "output"}
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
