"""The compiled Winograd transforms and the oneDNN element-wise stage (float32, CPU).

Reference: ``torch.nn.functional.conv2d`` in float64. An indexing mistake in the C kernels gives
errors of the order of the output itself; float32 Winograd with these tiles stays below 1e-4 of it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from leanconv.algorithms import native, tile_gemm, winograd
from leanconv.errors import InvalidSpecError

pytestmark = pytest.mark.skipif(not native.available(), reason=native.status())


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    assert y.shape == ref.shape and y.dtype == torch.float32
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


@st.composite
def problems(draw):
    groups = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))  # left, right, top, bottom
    return {
        "batch": draw(st.integers(1, 3)),
        "groups": groups,
        "cg": draw(st.sampled_from([1, 5, 16, 19])),  # whole and partial 16-channel blocks
        "kg": draw(st.sampled_from([1, 7, 16, 17])),
        "kernel": kernel,
        "padding": padding,
        "size": (draw(st.integers(kernel[0], 19)), draw(st.integers(kernel[1], 19))),
        "tile": (draw(st.integers(1, 5)), draw(st.integers(1, 5))),
        "channels_last": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "relu": draw(st.booleans()),
        "chunk": draw(st.sampled_from([1, 5000, 1 << 30])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=80)
@given(p=problems())
def test_compiled_path_matches_conv2d(p):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "NATIVE_CHUNK_BYTES", p["chunk"])
        _check_problem(p)


def _check_problem(p):
    gen = torch.Generator().manual_seed(p["seed"])
    c, k = p["cg"] * p["groups"], p["kg"] * p["groups"]
    x = torch.randn(p["batch"], c, *p["size"], generator=gen)
    w = torch.randn(k, p["cg"], *p["kernel"], generator=gen)
    b = torch.randn(k, generator=gen) if p["bias"] else None
    if p["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    ref = F.conv2d(
        F.pad(x.double(), p["padding"]), w.double(), None if b is None else b.double(), 1, 0, 1,
        p["groups"],
    )  # fmt: skip
    if p["relu"]:  # fused into the output transform
        filt = winograd.transform_filter(w, p["tile"], 1, 1, p["groups"])
        y = winograd.conv2d_transformed(x, filt, b, p["padding"], activation="relu")
        ref = ref.relu()
    else:
        y = winograd.conv2d(x, w, b, 1, p["padding"], 1, p["groups"], tile=p["tile"])
    assert _relative_error(y, ref) < 1e-4
    keeps_layout = p["channels_last"] and not x.is_contiguous()
    fmt = torch.channels_last if keeps_layout else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("stride", [1, 2])
def test_compiled_path_is_the_one_taken(monkeypatch, stride):
    calls = []
    original = native.input_transform
    monkeypatch.setattr(native, "input_transform", lambda *a: calls.append(1) or original(*a))
    x, w = torch.randn(2, 8, 12, 12), torch.randn(8, 8, 3, 3)
    ref = F.conv2d(x.double(), w.double(), stride=stride, padding=1)
    assert _relative_error(winograd.conv2d(x, w, None, stride, 1, tile=4), ref) < 1e-5
    assert calls
    calls.clear()
    # float64, and autograd recording, run the PyTorch implementation (the kernels have no
    # backward and compute in float32 only)
    winograd.conv2d(x.double(), w.double(), None, stride, 1, tile=4)
    winograd.conv2d(x.requires_grad_(), w, None, stride, 1, tile=4).sum().backward()
    assert not calls
    assert x.grad is not None


def test_gemm_backends_agree(monkeypatch):
    u = torch.randn(36 * 2, 24, 40)  # T * groups, C/g, K/g
    v = torch.randn(50, 36 * 2 * 24)
    onednn = tile_gemm.TileGemm(u, 50)
    monkeypatch.setattr(tile_gemm, "onednn_ops", lambda: None)
    bmm = tile_gemm.TileGemm(u, 50)
    assert bmm.backend == "bmm"
    ref = torch.einsum("ptc,tck->ptk", v.double().view(50, 72, 24), u.double()).reshape(50, -1)
    for gemm in (onednn, bmm):
        for rows in (50, 7):  # the shape packed for, and another
            y = gemm(v[:rows].contiguous())
            assert y.shape == (rows, 72 * 40) and y.is_contiguous()
            torch.testing.assert_close(y.double(), ref[:rows], rtol=1e-5, atol=1e-4)


def test_kernels_refuse_wrong_buffers():
    x = torch.randn(1, 4, 6, 6)
    at, _, bt = winograd._matrices(2, 3, torch.float32, "cpu")
    with pytest.raises(ValueError, match="wrong output size"):
        native.input_transform(x, torch.empty(3, 16 * 4), (1, 1), (0, 0), 1, 3, 3, (2, 2), bt, bt)
    with pytest.raises(ValueError, match="non-float32"):
        native.input_transform(
            x.double(), torch.empty(9, 64), (1, 1), (0, 0), 1, 3, 3, (2, 2), bt, bt
        )
    out = torch.empty(1, 4, 6, 6)
    with pytest.raises(ValueError, match="do not cover"):
        native.output_transform(torch.empty(6, 64), out, (0, 0), 1, 3, 2, (2, 2), at, at)


def test_disabled_or_without_compiler_falls_back(monkeypatch, tmp_path):
    x, w = torch.randn(1, 4, 9, 9), torch.randn(4, 4, 3, 3)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    try:
        for env, value, reason in (
            ("LEANCONV_NATIVE", "0", "disabled"),
            ("CC", str(tmp_path / "no-such-compiler"), "failed"),
        ):
            monkeypatch.setenv(env, value)
            monkeypatch.setenv("LEANCONV_CACHE_DIR", str(tmp_path / env))
            if env == "CC":  # a "compiler" that exists and fails
                (tmp_path / "no-such-compiler").write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
                (tmp_path / "no-such-compiler").chmod(0o755)
            native.library.cache_clear()
            assert not native.available()
            assert reason in native.status()
            assert _relative_error(winograd.conv2d(x, w, None, 1, 1, tile=4), ref) < 1e-5
            monkeypatch.delenv(env)
    finally:
        native.library.cache_clear()


def test_balanced_chunks():
    assert winograd._balanced(8, 7) == 4
    assert winograd._balanced(7, 7) == 7
    assert winograd._balanced(100, 1) == 1
    tiling = winograd._Tiling(8, 16, 14, 14, (4, 4), (3, 3), 1, (1, 1, 1, 1))
    chunks = winograd._chunks(tiling, 1, 7 * 16)  # room for 7 images of 16 tiles
    assert chunks == [(0, 4, 0, 4), (4, 8, 0, 4)]


def test_input_check_rides_on_the_transform(monkeypatch):
    # the compiled input transform reports non-finite values: no separate pass over the input
    passes = []
    original = winograd.check_finite
    monkeypatch.setattr(
        winograd, "check_finite", lambda *a, **k: passes.append(1) or original(*a, **k)
    )
    x, w = torch.randn(2, 8, 12, 12), torch.randn(8, 8, 3, 3)
    winograd.conv2d(x, w, None, 1, 1, tile=4)
    assert passes == [1]  # the weight's, in transform_filter; none for the input
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = x.clone()
        bad[1, 3, 11, 0] = value  # in the last tile row and column
        with pytest.raises(InvalidSpecError, match="input holds NaN or infinity"):
            winograd.conv2d(bad, w, None, 1, 1, tile=4)
    huge = torch.full((1, 8, 6, 6), 3e38)  # finite, but the transform overflows float32
    with pytest.raises(InvalidSpecError, match="overflow"):
        winograd.conv2d(huge, w, None, 1, 1, tile=4)


def test_fused_epilogue_keeps_nan_when_unchecked():
    x, w = torch.randn(1, 8, 8, 8), torch.randn(8, 8, 3, 3)
    x[0, 0, 0, 0] = float("nan")
    filt = winograd.transform_filter(w, 4)
    y = winograd.conv2d_transformed(x, filt, None, 1, check_finite_input=False, activation="relu")
    assert y[0, :, :2, :2].isnan().any()  # ReLU does not turn NaN into 0, as torch.relu
