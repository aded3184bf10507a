"""Narrow factors in a row in one pass (``algorithms.narrow.conv2d_chain``, ``narrow_chain`` in
``kernels/narrow_direct.c``) and where the deployed chain uses it
(``nn.NarrowConv2d.forward_chain``, ``nn.ChainConv2d``).

Reference: the convolutions one after the other by ``torch.nn.functional.conv2d`` in float64. A
band whose rows are misplaced (a factor's rows above or below the band, its halo), a buffer read
with the wrong stride or channel count, or an edge pixel computed wrongly gives errors of the
order of the output; float32 summation stays below 1e-5 of it.
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


def _reference(x, convs, residual=None):
    """``convs`` (each ``(w, b, stride, padding, dilation, relu)``) one after the other in
    float64, ``residual`` added to the last before its ReLU."""
    y = x.double()
    for i, (w, b, s, p, d, relu) in enumerate(convs):
        y = F.conv2d(y, w.double(), None if b is None else b.double(), s, p, d)
        if i == len(convs) - 1 and residual is not None:
            y = y + residual.double()
        y = y.relu() if relu else y
    return y


def _chain(x, convs, residual=None):
    packed = []
    for w, b, s, p, d, relu in convs:
        q = narrow.pack(w)
        packed.append((q, narrow.pack_bias(b, q.shape[-1]), w.shape[0], s, p, d,
                       "relu" if relu else None))  # fmt: skip
    return narrow.conv2d_chain(x, packed, residual)


@st.composite
def chains(draw):
    convs, channels = [], draw(st.sampled_from([1, 3, 16, 32]))
    cin = channels
    for _ in range(draw(st.integers(2, narrow.CHAIN_MAX))):
        # one vector of channels (the row blocks), a partial one, several
        # (1 and 3 after 16 or 32 channels: the channel-reducing path)
        k = draw(st.sampled_from([1, 3, 5, 8, 11, 16, 24, 40]))
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        convs.append({
            "w": (k, channels, *kernel),
            "s": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
            "p": (draw(st.integers(0, 2)), draw(st.integers(0, 2))),
            "d": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
            "bias": draw(st.booleans()), "relu": draw(st.booleans()),
        })  # fmt: skip
        channels = k
    return {
        "batch": draw(st.sampled_from([1, 2])),
        "cin": cin,
        "convs": convs,
        # heights across several bands of rows, and less than one
        "size": (draw(st.integers(1, 40)), draw(st.integers(1, 24))),
        "residual": draw(st.booleans()),  # a shortcut added to the last one's output
    }


@settings(max_examples=80, deadline=None)
@given(chains())
def test_chain_matches_the_convolutions_one_by_one_in_float64(g):
    torch.manual_seed(0)
    x = torch.randn(g["batch"], g["cin"], *g["size"]).contiguous(memory_format=torch.channels_last)
    convs = [(torch.randn(c["w"]), torch.randn(c["w"][0]) if c["bias"] else None, c["s"], c["p"],
              c["d"], c["relu"]) for c in g["convs"]]  # fmt: skip
    try:
        ref = _reference(x, convs)
    except RuntimeError:  # a kernel larger than its padded input: not a chain
        return
    if min(ref.shape[2:]) == 0:
        return
    residual = None
    if g["residual"]:
        residual = torch.randn(ref.shape).contiguous(memory_format=torch.channels_last)
        ref = _reference(x, convs, residual)
    y = _chain(x, convs, residual)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert _relative_error(y, ref) < 1e-5


@pytest.mark.parametrize("factors", [
    [((3, 1), (1, 0)), ((1, 3), (0, 1))],  # a spatial SVD
    [((3, 3), (1, 1)), ((1, 1), (0, 0))],  # a low_rank chain's core and 1x1
    [((1, 1), (0, 0)), ((3, 3), (1, 1)), ((1, 1), (0, 0))],  # a Tucker-2 chain
    [((1, 1), (0, 0)), ((3, 1), (1, 0)), ((1, 3), (0, 1)), ((1, 1), (0, 0))],  # CP-like
])  # fmt: skip
@pytest.mark.parametrize("height", [1, 5, 6, 7, 13, 32, 100])
@pytest.mark.parametrize("rank", [4, 8])
def test_the_factorisations_that_deploy_it(factors, height, rank):
    """The chains the decompositions build, at heights below, at and across several bands, on
    an input whose pixels are further apart than its channels (a channel slice); at rank 4 the
    first factor takes the channel-reducing path."""
    torch.manual_seed(1)
    wide = torch.randn(3, 40, height, 19).contiguous(memory_format=torch.channels_last)
    x = wide[:, 4:36]
    convs, channels = [], 32
    for i, (kernel, padding) in enumerate(factors):
        last = i == len(factors) - 1
        k = 32 if last else rank
        convs.append((torch.randn(k, channels, *kernel), torch.randn(k) if last else None,
                      (1, 1), padding, (1, 1), last))  # fmt: skip
        channels = k
    assert _relative_error(_chain(x, convs), _reference(x, convs)) < 1e-5


def test_wrong_chains_are_refused_before_the_kernel_runs():
    """One convolution, five, channels that do not follow, an output that would be empty, an
    unknown activation: refused with a message, never run."""
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)

    def conv(cin, k, kernel=(1, 1), padding=(0, 0), activation=None):
        q = narrow.pack(torch.randn(k, cin, *kernel))
        return (q, None, k, (1, 1), padding, (1, 1), activation)

    with pytest.raises(ValueError, match="wrong length"):
        narrow.conv2d_chain(x, [conv(4, 8)])
    with pytest.raises(ValueError, match="wrong length"):
        narrow.conv2d_chain(x, [conv(4, 4)] * (narrow.CHAIN_MAX + 1))
    with pytest.raises(ValueError, match="wrong filter"):
        narrow.conv2d_chain(x, [conv(4, 8), conv(4, 8)])
    with pytest.raises(ValueError, match="convolution 0 of the chain gives an empty output"):
        narrow.conv2d_chain(x, [conv(4, 8, (9, 9)), conv(8, 8)])
    with pytest.raises(ValueError, match="activation"):
        narrow.conv2d_chain(x, [conv(4, 8), conv(8, 8, activation="gelu")])


def _narrow_chain(*convs: nn.Conv2d) -> ChainConv2d:
    """A switchable chain of narrow layers (an ``nn.Identity`` between the first two, as folded
    batch norms leave), the last with a ReLU."""
    layers = [NarrowConv2d.from_conv(c, activation="relu" if i == len(convs) - 1 else None)
              for i, c in enumerate(convs)]  # fmt: skip
    return ChainConv2d.from_chain(nn.Sequential(layers[0], nn.Identity(), *layers[1:])).eval()


def _tucker() -> ChainConv2d:
    return _narrow_chain(nn.Conv2d(24, 8, 1, bias=False), nn.Conv2d(8, 8, 3, padding=1, bias=False),
                         nn.Conv2d(8, 24, 1))  # fmt: skip


def test_the_deployed_chain_runs_its_narrow_factors_in_one_pass(monkeypatch):
    """A switchable Tucker-2 chain of three narrow factors runs them by one chain call (the
    single-layer path never taken), equal to its layers run one by one in float64, with its
    residual."""
    torch.manual_seed(2)
    chain = _tucker()
    x, r = torch.randn(2, 24, 11, 9), torch.randn(2, 24, 11, 9)
    layers = [chain[0], chain[2], chain[3]]
    convs = [(m.weight, m.bias, 1, m.padding, 1, m.activation == "relu") for m in layers]
    ref = _reference(x, [(w.detach(), None if b is None else b.detach(), s, p, d, a)
                         for w, b, s, p, d, a in convs], r)  # fmt: skip
    calls, runs = [], []
    real = narrow.conv2d_chain
    monkeypatch.setattr(narrow, "conv2d", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(narrow, "conv2d_chain", lambda *a: runs.append(len(a[1])) or real(*a))
    with torch.no_grad():
        y = chain(x, r)
    assert calls == [] and runs == [3] and _relative_error(y, ref) < 1e-5


def test_chains_the_kernel_cannot_take_run_one_after_the_other():
    """Below a factor's ``min_batch`` the run stops there (the rest still in one pass where two
    remain); while autograd records, the chain's layers run one by one (the same function) and
    ``forward_chain`` says ``None``."""
    torch.manual_seed(3)
    x = torch.randn(2, 24, 10, 10)
    chain = _tucker()
    layers = [chain[0], chain[2], chain[3]]
    with torch.no_grad():
        one_by_one = layers[2](layers[1](layers[0](x)))
        chain[0].min_batch = 4
        assert NarrowConv2d.forward_chain(layers, x) is None
        assert NarrowConv2d.forward_chain(layers[1:], layers[0](x)) is not None
        torch.testing.assert_close(chain(x), one_by_one, rtol=1e-4, atol=1e-5)
        chain[0].min_batch = 1
        assert NarrowConv2d.forward_chain(layers, x) is not None
    x.requires_grad_(True)
    assert NarrowConv2d.forward_chain(layers, x) is None
    run_chain(chain, x).sum().backward()  # trains through the layers one by one
    assert x.grad is not None and x.grad.abs().sum() > 0
