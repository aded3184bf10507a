"""Spatial SVD (kh x 1 then 1 x kw) and low-rank (channel) SVD: exact recovery, optimality
(Eckart-Young), the factors as real convolutions against F.conv2d, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from leanconv.decompose._errors import InvalidRankError, InvalidWeightError
from leanconv.decompose.grouped import GroupedFactors
from leanconv.decompose.svd import LowRankFactors, SpatialSVDFactors, low_rank, spatial_svd

from ._helpers import gen, randn, rel


def _spatial_kernel(g, k, c, kh, kw, rank):
    v, h = randn(g, rank, c, kh), randn(g, k, rank, kw)
    return torch.einsum("krj,rci->kcij", h, v)


def test_spatial_exact_rank_is_recovered():
    w = _spatial_kernel(gen(1), 12, 8, 3, 5, 4)
    f = spatial_svd(w, 4)
    assert isinstance(f, SpatialSVDFactors) and f.rank == 4
    assert f.vertical.shape == (4, 8, 3, 1) and f.horizontal.shape == (12, 4, 1, 5)
    assert rel(f.to_dense(), w) < 1e-13


@given(k=st.integers(1, 7), c=st.integers(1, 7), kh=st.integers(1, 4), kw=st.integers(1, 4),
       data=st.data())  # fmt: skip
def test_spatial_error_is_the_eckart_young_tail(k, c, kh, kw, data):
    rank = data.draw(st.integers(1, min(c * kh, k * kw)))
    w = randn(gen(k * 31 + c), k, c, kh, kw)
    s = torch.linalg.svdvals(w.permute(1, 2, 0, 3).reshape(c * kh, k * kw))
    tail = float((s[rank:] ** 2).sum() / (s**2).sum()) ** 0.5
    assert rel(spatial_svd(w, rank).to_dense(), w) == pytest.approx(tail, abs=1e-12)


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, (2, 1), (2, 1))])
def test_spatial_factors_run_as_two_convolutions(stride, padding, dilation):
    g = gen(2)
    w, x = randn(g, 6, 4, 3, 3), randn(g, 2, 4, 11, 10)
    f = spatial_svd(w, 12)  # full rank: exact
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    y = F.conv2d(x, f.vertical, stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1))
    y = F.conv2d(y, f.horizontal, stride=(1, sw), padding=(0, pw), dilation=(1, dw))
    ref = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    assert rel(y, ref) < 1e-13


def test_low_rank_linear_and_conv():
    g = gen(3)
    lin = randn(g, 20, 5) @ randn(g, 5, 30)
    f = low_rank(lin, 5)
    assert isinstance(f, LowRankFactors) and f.first.shape == (5, 30) and f.second.shape == (20, 5)
    assert rel(f.to_dense(), lin) < 1e-13
    w = randn(g, 16, 6, 3, 3)
    f = low_rank(w, 10)
    assert f.first.shape == (10, 6, 3, 3) and f.second.shape == (16, 10, 1, 1)
    s = torch.linalg.svdvals(w.reshape(16, -1))
    tail = float((s[10:] ** 2).sum() / (s**2).sum()) ** 0.5
    assert rel(f.to_dense(), w) == pytest.approx(tail, abs=1e-12)
    x = randn(g, 1, 6, 7, 7)
    y = F.conv2d(F.conv2d(x, f.first, padding=1), f.second)
    assert rel(y, F.conv2d(x, f.to_dense(), padding=1)) < 1e-13
    pointwise = randn(g, 8, 12, 1, 1)
    assert rel(low_rank(pointwise, 8).to_dense(), pointwise) < 1e-13


def test_grouped_spatial():
    g = gen(4)
    w = torch.cat([_spatial_kernel(g, 3, 2, 3, 3, 2) for _ in range(4)])  # groups=4
    f = spatial_svd(w, 2, groups=4)
    assert isinstance(f, GroupedFactors) and rel(f.to_dense(), w) < 1e-12


def test_float32_kept():
    w = randn(gen(5), 4, 4, 3, 3).float()
    f = low_rank(w, 2)
    assert f.first.dtype == torch.float32


def test_bad_input():
    w = randn(gen(6), 4, 2, 3, 3)
    with pytest.raises(InvalidRankError, match=r"larger than possible: at most 6 \(min\(C\*kh"):
        spatial_svd(w, 7, name="stem")
    with pytest.raises(InvalidRankError, match="'stem'.*at least 1"):
        low_rank(w, 0, name="stem")
    with pytest.raises(InvalidRankError, match="integer"):
        low_rank(w, 1.5)
    with pytest.raises(InvalidWeightError, match="2-D or 4-D"):
        low_rank(torch.ones(3, 3, 3), 1)
    with pytest.raises(InvalidWeightError, match="all zeros"):
        spatial_svd(torch.zeros(2, 2, 3, 3), 1, name="x")
