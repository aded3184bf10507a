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

from leanconv.algorithms import native, one_pass, tile_gemm, winograd
from leanconv.algorithms.toomcook import winograd_transform
from leanconv.bench import timing
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
        # a residual block's shortcut added before the ReLU: none, channels-last, channels-first
        "residual": draw(st.sampled_from([None, "channels_last", "contiguous"])),
    }


def _residual(ref: torch.Tensor, layout: str | None, gen) -> torch.Tensor | None:
    if layout is None:
        return None
    r = torch.randn(ref.shape, generator=gen)
    return r.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else r


@settings(max_examples=80)
@given(p=problems())
def test_compiled_path_matches_conv2d(p):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd, "NATIVE_CHUNK_BYTES", p["chunk"])
        patch.setattr(one_pass, "MAX_FILTER_BYTES", 0)  # the three stages only
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
    residual = _residual(ref, p["residual"], gen)
    if p["relu"] or residual is not None:  # fused into the output transform
        filt = winograd.transform_filter(w, p["tile"], 1, 1, p["groups"])
        act = "relu" if p["relu"] else None
        y = winograd.conv2d_transformed(x, filt, b, p["padding"], activation=act,
                                        residual=residual)  # fmt: skip
        ref = ref if residual is None else ref + residual.double()
        ref = ref.relu() if p["relu"] else ref
    else:
        y = winograd.conv2d(x, w, b, 1, p["padding"], 1, p["groups"], tile=p["tile"])
    assert _relative_error(y, ref) < 1e-4
    keeps_layout = p["channels_last"] and not x.is_contiguous()
    fmt = torch.channels_last if keeps_layout else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("stride", [1, 2])
def test_compiled_path_is_the_one_taken(monkeypatch, stride):
    monkeypatch.setattr(one_pass, "MAX_FILTER_BYTES", 0)  # the three stages
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


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_epilogue_keeps_nan_when_unchecked(layout):  # both compiled paths
    x, w = torch.randn(1, 8, 8, 8), torch.randn(8, 8, 3, 3)
    x[0, 0, 0, 0] = float("nan")
    x = x.contiguous(memory_format=layout)
    filt = winograd.transform_filter(w, 4)
    y = winograd.conv2d_transformed(x, filt, None, 1, check_finite_input=False, activation="relu")
    assert y[0, :, :2, :2].isnan().any()  # ReLU does not turn NaN into 0, as torch.relu


# --- the one-pass kernel (kernels/winograd_fused.c): channels-last input and output, one group


@st.composite
def one_pass_problems(draw):
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return {
        "batch": draw(st.integers(1, 3)),
        "c": draw(st.sampled_from([1, 3, 16, 19, 40])),  # whole and partial vectors
        "k": draw(st.sampled_from([1, 8, 16, 33, 70])),  # 70: a partial register block too
        "kernel": kernel,
        "padding": tuple(draw(st.integers(0, 2)) for _ in range(4)),
        "size": (draw(st.integers(kernel[0], 23)), draw(st.integers(kernel[1], 23))),
        "tile": (draw(st.integers(1, 6)), draw(st.integers(1, 6))),
        "bias": draw(st.booleans()),
        "relu": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "residual": draw(st.sampled_from([None, "channels_last", "contiguous"])),
    }


def _counting(monkeypatch, name):
    calls = []
    original = getattr(native, name)
    monkeypatch.setattr(native, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@settings(max_examples=80, deadline=None)
@given(p=one_pass_problems())
def test_one_pass_kernel_matches_conv2d(p):
    gen = torch.Generator().manual_seed(p["seed"])
    x = torch.randn(p["batch"], p["c"], *p["size"], generator=gen)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(p["k"], p["c"], *p["kernel"], generator=gen)
    b = torch.randn(p["k"], generator=gen) if p["bias"] else None
    ref = F.conv2d(F.pad(x.double(), p["padding"]), w.double(), None if b is None else b.double())
    residual = _residual(ref, p["residual"], gen)
    if residual is not None:
        ref = ref + residual.double()
    if p["relu"]:
        ref = ref.relu()
    if any(m + r - 1 > winograd.MAX_ALPHA for m, r in zip(p["tile"], p["kernel"], strict=True)):
        return
    with pytest.MonkeyPatch.context() as patch:
        calls = _counting(patch, "fused")
        filt = winograd.transform_filter(w, p["tile"])
        y = winograd.conv2d_transformed(
            x, filt, b, p["padding"], activation="relu" if p["relu"] else None, residual=residual
        )
    if not x.is_contiguous():  # with one channel (or pixel) it is channels-first too
        assert calls == [1] and y.is_contiguous(memory_format=torch.channels_last)
    assert (y.double() - ref).abs().max() <= 1e-4 * ref.abs().max()  # all zero after ReLU too


@pytest.mark.parametrize("m", [2, 4, 6])
def test_default_rules_run_written_out(m):
    """F(2, 3), F(4, 3) and F(6, 3) with the default points take the kernel's written-out
    transforms (a typo in its copy of the matrices would silently send them to the general
    path); other points and other kernel sizes do not."""
    at, _, bt = winograd._matrices(m, 3, torch.float32, "cpu")
    assert native.fused_written_out((m, m), (bt, bt, at, at))
    other = winograd_transform(m, 3, points=[0, 1, -1, 2, -2, 3, -3][: m + 1])
    o_at, _, o_bt = other.to_tensor(torch.float32, torch.device("cpu"))
    assert not native.fused_written_out((m, m), (o_bt, o_bt, o_at, o_at))
    at5, _, bt5 = winograd._matrices(m, 5, torch.float32, "cpu")
    assert not native.fused_written_out((m, m), (bt5, bt5, at5, at5))
    other_m = 4 if m == 2 else 2  # a different rule across the rows: the general path
    at2, _, bt2 = winograd._matrices(other_m, 3, torch.float32, "cpu")
    assert not native.fused_written_out((m, other_m), (bt, bt2, at, at2))


# every path through the written-out transforms: partial vectors of input (3, 19, 40) and output
# (1, 33, 70) channels, tiles cut by the image's edge and by padding, bias, residual, ReLU
WRITTEN_CASES = [
    (m, c, k, size, pad, extras)
    for m in (2, 4, 6)
    for (c, k, size, pad) in [(16, 16, (8, 8), (1, 1, 1, 1)), (3, 33, (7, 13), (0, 2, 1, 0)),
                              (19, 1, (11, 6), (2, 2, 2, 2)), (40, 70, (13, 9), (1, 0, 0, 1))]
    for extras in ["", "bias+relu", "bias+residual+relu"]
]  # fmt: skip


@pytest.mark.parametrize(("m", "c", "k", "size", "pad", "extras"), WRITTEN_CASES)
def test_written_out_rules_match_conv2d(m, c, k, size, pad, extras):
    gen = torch.Generator().manual_seed(m * 1000 + c + k)
    x = torch.randn(2, c, *size, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(k, c, 3, 3, generator=gen)
    b = torch.randn(k, generator=gen) if "bias" in extras else None
    ref = F.conv2d(F.pad(x.double(), pad), w.double(), None if b is None else b.double())
    residual = _residual(ref, "channels_last", gen) if "residual" in extras else None
    if residual is not None:
        ref = ref + residual.double()
    relu = "relu" in extras
    if relu:
        ref = ref.relu()
    with pytest.MonkeyPatch.context() as patch:
        calls = _counting(patch, "fused")
        filt = winograd.transform_filter(w, (m, m))
        y = winograd.conv2d_transformed(
            x, filt, b, pad, activation="relu" if relu else None, residual=residual
        )
    assert calls == [1]
    assert _relative_error(y, ref) < (1e-5 if m < 6 else 1e-4)


def test_one_pass_kernel_only_where_it_applies(monkeypatch):
    x, w = torch.randn(2, 16, 14, 14), torch.randn(16, 16, 3, 3)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    fused = _counting(monkeypatch, "fused")
    staged = _counting(monkeypatch, "input_transform")
    y = winograd.conv2d(x, w, None, 1, 1, tile=4)  # channels first: turned, and back
    assert y.is_contiguous() and _relative_error(y, ref) < 1e-5
    winograd.conv2d(x.contiguous(memory_format=torch.channels_last), w, None, 1, 1, tile=4)
    assert (len(fused), len(staged)) == (2, 0)
    winograd.conv2d(x, w, None, 2, 1, tile=4)  # strided: polyphase sub-problems, three stages
    assert (len(fused), len(staged)) == (2, 4)
    wg = torch.randn(16, 8, 3, 3)  # two groups: three stages
    winograd.conv2d(
        x.contiguous(memory_format=torch.channels_last), wg, None, 1, 1, groups=2, tile=4
    )
    assert (len(fused), len(staged)) == (2, 5)
    monkeypatch.setattr(one_pass, "MAX_FILTER_BYTES", 1000)  # too large a filter
    y = winograd.conv2d(x.contiguous(memory_format=torch.channels_last), w, None, 1, 1, tile=4)
    assert (len(fused), len(staged)) == (2, 6)
    assert _relative_error(y, ref) < 1e-5


def test_one_pass_kernel_finds_non_finite_input():
    x = torch.randn(2, 20, 13, 13).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 20, 3, 3)
    for value in (float("nan"), float("inf"), -float("inf")):
        bad = x.clone()
        bad[1, 19, 12, 12] = value  # last channel (a partial vector), last tile
        with pytest.raises(InvalidSpecError, match="input holds NaN or infinity"):
            winograd.conv2d(bad, w, None, 1, 1, tile=4)
    huge = torch.full((1, 20, 6, 6), 3e38).contiguous(memory_format=torch.channels_last)
    with pytest.raises(InvalidSpecError, match="overflow"):
        winograd.conv2d(huge, w, None, 1, 1, tile=4)


@pytest.mark.parametrize(
    ("tiles", "per_tile", "threads"), [(1, 1, 2), (196, 18 << 10, 2), (1568, 18 << 10, 2),
                                       (16, 144 << 10, 2), (10_000, 1, 3), (7, 1 << 20, 4)]
)  # fmt: skip
def test_tiles_per_block(tiles, per_tile, threads):
    block = one_pass.tiles_per_block(tiles, per_tile, threads)
    assert block % 6 == 0 and block >= 6
    blocks = -(-tiles // block)
    # within the buffer budget unless one register block is already over it
    assert block * per_tile <= max(one_pass.BLOCK_BYTES, 6 * per_tile)
    # blocks come in whole rounds of the threads where there are enough tiles for it
    if tiles >= 6 * threads and block > 6:
        assert blocks % threads == 0 or blocks > 4 * threads


# output channels cut into slices: slices of one vector and of several, more slices than
# vectors (empty ones), a partial last vector (33, 70), a partial register block (130 = 2 x 64 +
# 2); blocks of one tile row and of every tile; threads fewer and more than the units of work
SPLIT_CASES = [
    (m, k, slices, block, threads, general)
    for m, general in ((2, False), (4, False), (6, False), (4, True), (3, True))
    for k, slices, block, threads in [(33, 2, 6, 2), (70, 3, 48, 2), (130, 2, 12, 3),
                                      (16, 5, 6, 2), (64, 4, 24, 1), (130, 7, 48, 4)]
]  # fmt: skip


@pytest.mark.parametrize(("m", "k", "slices", "block", "threads", "general"), SPLIT_CASES)
def test_output_channels_split_across_threads_match_conv2d(
    monkeypatch, m, k, slices, block, threads, general
):
    gen = torch.Generator().manual_seed(m * 100 + k + slices)
    x = torch.randn(2, 19, 14, 11, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(k, 19, 3, 3, generator=gen)
    b = torch.randn(k, generator=gen)
    pad = (1, 1, 1, 1)
    ref = F.conv2d(F.pad(x.double(), pad), w.double(), b.double())
    residual = _residual(ref, "channels_last", gen)
    ref = (ref + residual.double()).relu()
    fused = native.fused
    calls = []

    def general_or_not(*args, **kwargs):  # records the split the kernel is given
        calls.append(kwargs["slices"])
        return fused(*args, **kwargs, general=general)

    monkeypatch.setattr(native, "fused", general_or_not)
    monkeypatch.setattr(one_pass, "work_split", lambda *_: (block, slices))
    filt = winograd.transform_filter(w, (m, m))
    with timing.threads(threads):
        y = winograd.conv2d_transformed(x, filt, b, pad, activation="relu", residual=residual)
    assert calls == [slices]
    assert _relative_error(y, ref) < (1e-5 if m < 6 else 1e-4)


@pytest.mark.parametrize(
    ("tiles", "per_tile", "threads"), [(16, 36 * 1024 * 4, 2), (9, 64 * 512 * 4, 2), (4, 1, 2),
                                       (49, 36 * 256 * 4, 2), (196, 36 * 128 * 4, 2),
                                       (128, 36 * 512 * 4, 2), (16, 1 << 16, 1), (50, 1, 4)]
)  # fmt: skip
def test_work_split(tiles, per_tile, threads):
    block, slices = one_pass.work_split(tiles, per_tile, threads)
    assert block % 6 == 0 and block >= 6
    blocks = -(-tiles // block)
    if slices == 1:  # blocks alone: as tiles_per_block gives them
        assert block == one_pass.tiles_per_block(tiles, per_tile, threads)
        assert threads == 1 or blocks >= one_pass.SPLIT_BELOW * threads
    else:  # few tiles: one slice of each block per thread, blocks as large as allowed
        assert slices == threads
        assert block <= max(6, -(-one_pass.FEW_TILES_BLOCK // 6) * 6)
        assert blocks == -(-tiles // one_pass.FEW_TILES_BLOCK)


def test_one_pass_kernel_refuses_wrong_buffers():
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    out = torch.empty(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    at, _, bt = winograd._matrices(2, 3, torch.float32, "cpu")
    mats = (bt, bt, at.contiguous(), at.contiguous())
    vw = native.vector_width()
    good = torch.zeros(16, vw, vw)
    with pytest.raises(ValueError, match="innermost"):
        native.fused(x.contiguous(), good, out, (1, 1), (2, 2), 6, mats)
    with pytest.raises(ValueError, match="wrong packing"):
        native.fused(x, torch.zeros(16, vw + 1, vw), out, (1, 1), (2, 2), 6, mats)
    with pytest.raises(ValueError, match="wrong packing"):
        native.fused(x, good, out, (1, 1), (2, 2), 5, mats)
    with pytest.raises(ValueError, match="wrong filter size"):
        native.fused(x, torch.zeros(9, vw, vw), out, (1, 1), (2, 2), 6, mats)


def test_channels_first_is_turned_only_for_small_filters(monkeypatch):
    # 192 channels, F(4x4): a 5.3 MB filter, within the one-pass limit, beyond the turning one
    x, w = torch.randn(1, 192, 6, 6), torch.randn(192, 192, 3, 3)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    fused = _counting(monkeypatch, "fused")
    staged = _counting(monkeypatch, "input_transform")
    y = winograd.conv2d(x, w, None, 1, 1, tile=4)
    assert (len(fused), len(staged)) == (0, 1) and y.is_contiguous()
    y_cl = winograd.conv2d(x.contiguous(memory_format=torch.channels_last), w, None, 1, 1, tile=4)
    assert (len(fused), len(staged)) == (1, 1)
    assert max(_relative_error(y, ref), _relative_error(y_cl, ref)) < 1e-5


@pytest.mark.parametrize("channels_last", [False, True])  # three stages (turned) / one pass
def test_what_the_compiled_pass_cannot_take_comes_after_it(channels_last):
    """A bias or residual whose gradient is wanted, or a broadcast residual, is added after the
    compiled pass, and the ReLU after it (never in the pass, before them); the filter's own
    weight frozen, so the compiled path runs."""
    torch.manual_seed(8)
    x, w = torch.randn(2, 16, 12, 12), torch.randn(16, 16, 3, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    filt = winograd.transform_filter(w, 4)
    conv = F.conv2d(x.double(), w.double(), padding=1)
    b = torch.randn(16, requires_grad=True)
    r = torch.randn(2, 16, 12, 12, requires_grad=True)
    cases = [
        (b, None, conv + b.double().view(1, -1, 1, 1)),
        (None, r, conv + r.double()),
        (None, r[:1, :, :1].detach(), conv + r[:1, :, :1].double()),  # broadcast
    ]
    for bias, residual, want in cases:
        y = winograd.conv2d_transformed(x, filt, bias, 1, activation="relu", residual=residual)
        assert _relative_error(y, want.relu()) < 1e-5
    y = winograd.conv2d_transformed(x, filt, b, 1, activation="relu", residual=r)
    y.sum().backward()
    assert b.grad is not None and r.grad is not None
