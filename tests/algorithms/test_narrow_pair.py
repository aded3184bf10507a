"""Two narrow factors in one pass (``algorithms.narrow.conv2d_pair``, ``narrow_chain`` in
``kernels/narrow_direct.c``) and where the deployed chain uses it
(``nn.NarrowConv2d.forward_pair``, ``nn.ChainConv2d``).

Reference: the two convolutions by ``torch.nn.functional.conv2d`` in float64. A band whose rows
are misplaced, a buffer read with the wrong stride or channel count, or an edge pixel of either
factor computed wrongly gives errors of the order of the output; float32 summation stays below
1e-5 of it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from leanconv.algorithms import narrow, native
from leanconv.nn import ChainConv2d, NarrowConv2d
from leanconv.nn.chain import run_chain

pytestmark = pytest.mark.skipif(not native.available(), reason=native.status())


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    assert y.shape == ref.shape and y.dtype == torch.float32
    return ((y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def _reference(x, w1, b1, s1, p1, d1, relu1, w2, b2, s2, p2, d2, relu2, residual=None):
    def conv(t, w, b, s, p, d, relu, r=None):
        y = F.conv2d(t, w.double(), None if b is None else b.double(), s, p, d)
        y = y if r is None else y + r.double()
        return y.relu() if relu else y

    return conv(conv(x.double(), w1, b1, s1, p1, d1, relu1), w2, b2, s2, p2, d2, relu2, residual)


def _pair(x, w1, b1, s1, p1, d1, relu1, w2, b2, s2, p2, d2, relu2, residual=None):
    q1, q2 = narrow.pack(w1), narrow.pack(w2)
    first = (q1, narrow.pack_bias(b1, q1.shape[-1]), w1.shape[0], s1, p1, d1,
             "relu" if relu1 else None)  # fmt: skip
    second = (q2, narrow.pack_bias(b2, q2.shape[-1]), w2.shape[0], s2, p2, d2,
              "relu" if relu2 else None)  # fmt: skip
    return narrow.conv2d_pair(x, first, second, residual)


@st.composite
def pairs(draw):
    k1 = (draw(st.integers(1, 5)), draw(st.integers(1, 3)))
    k2 = draw(st.integers(1, 5))
    s1 = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    d1 = (draw(st.integers(1, 2)), 1)
    p1 = (draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    p2 = draw(st.integers(0, 2))
    reach_h = d1[0] * (k1[0] - 1) + 1
    return {
        "batch": draw(st.sampled_from([1, 2])),
        "cin": draw(st.sampled_from([1, 3, 16, 32])),
        # one vector of channels (the row blocks), a partial one, several
        "rank": draw(st.sampled_from([1, 5, 8, 11, 16])),
        "cout": draw(st.sampled_from([1, 7, 8, 24, 40])),
        "k1": k1, "s1": s1, "p1": p1, "d1": d1,
        "k2": (1, k2), "s2": (1, draw(st.integers(1, 3))), "p2": (0, p2),
        "d2": (1, draw(st.integers(1, 2))),
        # heights across several bands of rows, and less than one
        "size": (draw(st.integers(max(1, reach_h - 2 * p1[0]), 20)),
                 draw(st.integers(k2 + 4, 24))),
        "bias": draw(st.booleans()), "relu1": draw(st.booleans()), "relu2": draw(st.booleans()),
        "residual": draw(st.booleans()),  # a shortcut added to the second's output
    }  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(pairs())
def test_pair_matches_two_convolutions_in_float64(g):
    torch.manual_seed(0)
    x = torch.randn(g["batch"], g["cin"], *g["size"]).contiguous(memory_format=torch.channels_last)
    w1 = torch.randn(g["rank"], g["cin"], *g["k1"])
    w2 = torch.randn(g["cout"], g["rank"], *g["k2"])
    b1 = torch.randn(g["rank"]) if g["bias"] else None
    b2 = torch.randn(g["cout"]) if g["bias"] else None
    args = (x, w1, b1, g["s1"], g["p1"], g["d1"], g["relu1"],
            w2, b2, g["s2"], g["p2"], g["d2"], g["relu2"])  # fmt: skip
    ref = _reference(*args)
    if ref.numel() == 0 or ref.shape[3] == 0:
        return
    if g["residual"]:
        residual = torch.randn(ref.shape).contiguous(memory_format=torch.channels_last)
        args, ref = (*args, residual), _reference(*args, residual)
    y = _pair(*args)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert _relative_error(y, ref) < 1e-5


@pytest.mark.parametrize(("k1", "k2", "p1", "p2"), [
    ((3, 1), (1, 3), (1, 0), (0, 1)),  # a spatial SVD
    ((3, 3), (1, 1), (1, 1), (0, 0)),  # a low_rank chain's core and 1x1
])  # fmt: skip
@pytest.mark.parametrize("height", [1, 5, 6, 7, 13, 32])
def test_the_factorisations_that_deploy_it(k1, k2, p1, p2, height):
    """The two chains the decompositions build, at heights below, at and across the bands of
    six rows, on an input whose pixels are further apart than its channels (a channel slice)."""
    torch.manual_seed(1)
    wide = torch.randn(3, 40, height, 19).contiguous(memory_format=torch.channels_last)
    x = wide[:, 4:36]
    w1, w2 = torch.randn(8, 32, *k1), torch.randn(32, 8, *k2)
    b2 = torch.randn(32)
    args = (x, w1, None, (1, 1), p1, (1, 1), False, w2, b2, (1, 1), p2, (1, 1), True)
    assert _relative_error(_pair(*args), _reference(*args)) < 1e-5


def test_a_second_factor_with_rows_is_refused():
    """The second factor must take the first's rows band by band: one kernel row, vertical
    stride 1, no vertical padding. Anything else is refused before the kernel runs."""
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    q1 = narrow.pack(torch.randn(8, 4, 3, 1))
    first = (q1, None, 8, (1, 1), (1, 0), (1, 1), None)
    for k2, s2, p2 in [((3, 1), (1, 1), (1, 0)), ((1, 3), (2, 1), (0, 1)),
                       ((1, 3), (1, 1), (1, 1))]:  # fmt: skip
        assert not narrow.pair_fits(k2, s2, p2)
        second = (narrow.pack(torch.randn(8, 8, *k2)), None, 8, s2, p2, (1, 1), None)
        with pytest.raises(ValueError, match="not one row|wrong output"):
            narrow.conv2d_pair(x, first, second)
    with pytest.raises(ValueError, match="activation"):
        narrow.conv2d_pair(x, first, (narrow.pack(torch.randn(8, 8, 1, 3)), None, 8, (1, 1),
                                      (0, 1), (1, 1), "gelu"))  # fmt: skip


def _narrow_chain(first: nn.Conv2d, second: nn.Conv2d) -> ChainConv2d:
    layers = nn.Sequential(NarrowConv2d.from_conv(first), nn.Identity(),
                           NarrowConv2d.from_conv(second, activation="relu"))  # fmt: skip
    return ChainConv2d.from_chain(layers).eval()


def test_the_deployed_chain_runs_its_narrow_pair_in_one_pass(monkeypatch):
    """A switchable chain of two narrow factors runs them by the pair kernel (one call, the
    two-call path never taken), equal to the chain's layers run one by one."""
    torch.manual_seed(2)
    chain = _narrow_chain(nn.Conv2d(16, 8, (3, 1), padding=(1, 0), bias=False),
                          nn.Conv2d(8, 24, (1, 3), padding=(0, 1)))  # fmt: skip
    x = torch.randn(2, 16, 11, 9)
    with torch.no_grad():
        ref = F.conv2d(
            F.conv2d(x.double(), chain[0].weight.double(), None, padding=(1, 0)),
            chain[2].weight.double(),
            chain[2].bias.double(),
            padding=(0, 1),
        ).relu()
        calls = []
        monkeypatch.setattr(narrow, "conv2d", lambda *a, **k: calls.append(a))
        y = chain(x)
    assert calls == [] and _relative_error(y, ref) < 1e-5


def test_pairs_the_kernel_cannot_take_run_one_after_the_other():
    """Below a factor's ``min_batch``, with a second factor of several rows, and while autograd
    records, the chain's layers run one by one (the same function); ``forward_pair`` says
    ``None``."""
    torch.manual_seed(3)
    x = torch.randn(2, 16, 10, 10)
    vertical = _narrow_chain(nn.Conv2d(16, 8, (1, 3), padding=(0, 1), bias=False),
                             nn.Conv2d(8, 16, (3, 1), padding=(1, 0)))  # fmt: skip
    svd = _narrow_chain(nn.Conv2d(16, 8, (3, 1), padding=(1, 0), bias=False),
                        nn.Conv2d(8, 16, (1, 3), padding=(0, 1)))  # fmt: skip
    svd[2].min_batch = 4
    with torch.no_grad():
        for chain in (vertical, svd):
            assert chain[0].forward_pair(chain[2], x) is None
            one_by_one = chain[2](chain[0](x))
            assert torch.allclose(chain(x), one_by_one, atol=1e-5)
    svd[2].min_batch = 1
    with torch.no_grad():
        assert svd[0].forward_pair(svd[2], x) is not None
    x.requires_grad_(True)
    assert svd[0].forward_pair(svd[2], x) is None
    run_chain(svd, x).sum().backward()  # trains through the layers one by one
    assert x.grad is not None and x.grad.abs().sum() > 0
