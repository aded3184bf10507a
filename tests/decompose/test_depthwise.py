"""Depthwise-separable fit: exact recovery, per-channel Eckart-Young optimum, PyTorch layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from leanconv.decompose._errors import InvalidRankError
from leanconv.decompose.depthwise import DepthwiseSeparableFactors, depthwise_separable

from ._helpers import gen, randn, rel


@pytest.mark.parametrize("multiplier", [1, 2])
def test_exact_depthwise_separable_kernel_is_recovered(multiplier):
    g = gen(multiplier)
    c, k = 5, 7
    d, p = randn(g, c * multiplier, 1, 3, 3), randn(g, k, c * multiplier, 1, 1)
    w = DepthwiseSeparableFactors(d, p, multiplier).to_dense()
    f = depthwise_separable(w, multiplier)
    assert f.multiplier == multiplier and f.shape == (k, c, 3, 3)
    assert rel(f.to_dense(), w) < 1e-13


def test_factors_run_as_pytorch_depthwise_then_pointwise():
    g = gen(3)
    w, x = randn(g, 6, 4, 3, 3), randn(g, 2, 4, 9, 9)
    f = depthwise_separable(w, 2)
    y = F.conv2d(F.conv2d(x, f.depthwise, padding=1, groups=4), f.pointwise)
    assert rel(y, F.conv2d(x, f.to_dense(), padding=1)) < 1e-13
    full = depthwise_separable(w, 6)  # min(K, kh kw) = 6: exact
    assert rel(full.to_dense(), w) < 1e-13


@given(k=st.integers(1, 6), c=st.integers(1, 5), kh=st.integers(1, 3), kw=st.integers(1, 3),
       data=st.data())  # fmt: skip
def test_error_is_the_sum_of_per_channel_tails(k, c, kh, kw, data):
    m = data.draw(st.integers(1, min(k, kh * kw)))
    w = randn(gen(k * 13 + c), k, c, kh, kw)
    s = torch.linalg.svdvals(w.permute(1, 0, 2, 3).reshape(c, k, kh * kw))
    tail = float((s[:, m:] ** 2).sum() / (w**2).sum()) ** 0.5
    assert rel(depthwise_separable(w, m).to_dense(), w) == pytest.approx(tail, abs=1e-12)


def test_no_other_fit_is_better():
    """Perturbing the optimal factors never lowers the error (a local check of optimality)."""
    g = gen(4)
    w = randn(g, 6, 3, 3, 3)
    f = depthwise_separable(w, 2)
    best = rel(f.to_dense(), w)
    for _ in range(20):
        d = f.depthwise + 1e-3 * randn(g, *f.depthwise.shape)
        p = f.pointwise + 1e-3 * randn(g, *f.pointwise.shape)
        assert rel(DepthwiseSeparableFactors(d, p, 2).to_dense(), w) >= best - 1e-15


def test_bad_multiplier():
    w = randn(gen(5), 4, 3, 3, 3)
    with pytest.raises(InvalidRankError, match=r"'dw'.*multiplier=5 is larger than possible"):
        depthwise_separable(w, 5, name="dw")
    with pytest.raises(InvalidRankError, match="multiplier=0"):
        depthwise_separable(w, 0)
    with pytest.raises(ValueError, match="multiplier"):
        DepthwiseSeparableFactors(torch.ones(6, 1, 3, 3), torch.ones(2, 6, 1, 1), 4)
