"""Rank selection on spectra with known answers: energy, EVBMF, cost budgets, output error."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from leanconv.cost.formulas import conv_cost
from leanconv.decompose._errors import DecompositionError, InvalidRankError
from leanconv.decompose.rank import (
    METHODS,
    budget_rank,
    energy_rank,
    factor_specs,
    output_error,
    vbmf,
    vbmf_rank,
)
from leanconv.decompose.tucker import tucker2
from leanconv.spec import ConvSpec

from ._helpers import F64, gen, randn


def _with_spectrum(g, s, m, n):
    """An ``m x n`` matrix with singular values ``s``."""
    u = torch.linalg.qr(randn(g, m, len(s)))[0]
    v = torch.linalg.qr(randn(g, n, len(s)))[0]
    return u @ torch.diag(torch.tensor(s, dtype=F64)) @ v.T


@pytest.mark.parametrize(("fraction", "rank"), [(0.5, 1), (16 / 30, 1), (0.8, 2), (0.9, 3),
                                                (29 / 30, 3), (0.97, 4), (1.0, 4)])  # fmt: skip
def test_energy_rank_known_spectrum(fraction, rank):
    m = _with_spectrum(gen(1), [4.0, 3.0, 2.0, 1.0], 6, 9)  # energies 16, 9, 4, 1 of 30
    assert energy_rank(m, fraction) == rank


def test_energy_rank_modes_of_a_kernel():
    g = gen(2)
    w = torch.einsum("srij,ks,cr->kcij", randn(g, 3, 2, 3, 3), randn(g, 10, 3), randn(g, 8, 2))
    assert energy_rank(w, 1.0, mode=0) == 3
    assert energy_rank(w, 1.0, mode=1) == 2
    with pytest.raises(InvalidRankError, match="fraction"):
        energy_rank(w, 0.0)
    with pytest.raises(InvalidRankError, match="mode=4"):
        energy_rank(w, 0.5, mode=4, name="c")


def _low_rank_plus_noise(seed, l, m, s, sigma):
    g = gen(seed)
    return _with_spectrum(g, s, l, m) + sigma * randn(g, l, m)


@pytest.mark.parametrize(("l", "m"), [(50, 80), (80, 50), (64, 64)])
def test_vbmf_recovers_rank_and_noise(l, m):
    y = _low_rank_plus_noise(3, l, m, [20.0, 15.0, 10.0, 8.0, 6.0], 0.1)
    result = vbmf(y)
    assert result.rank == 5
    assert result.sigma2 == pytest.approx(0.01, rel=0.15)
    observed = torch.linalg.svdvals(y)[:5].tolist()
    for e, o, true in zip(result.estimate, observed, [20, 15, 10, 8, 6], strict=True):
        assert 0 < e < o and e == pytest.approx(true, rel=0.05)  # shrunk towards the truth
    assert vbmf(y, sigma2=0.01).rank == 5


def test_vbmf_of_pure_noise_keeps_nothing_and_weakening():
    noise = randn(gen(4), 40, 60)
    assert vbmf(noise).rank == 0
    assert vbmf_rank(noise) == 1  # at least one component
    y = _low_rank_plus_noise(5, 50, 80, [20.0, 15.0, 10.0, 8.0, 6.0], 0.1)
    assert vbmf_rank(y) == 5
    assert vbmf_rank(y, weakening=0.5) == math.ceil(50 - 0.5 * 45)  # 28
    w = y.reshape(50, 5, 4, 4)  # a kernel whose mode-0 unfolding is y
    assert vbmf_rank(w, mode=0) == 5
    with pytest.raises(InvalidRankError, match="weakening"):
        vbmf_rank(y, weakening=1.5)


def test_budget_rank_closed_forms():
    spec = ConvSpec(64, 64, 1, (8, 8), bias=False)
    # low_rank of a 1x1: R (64 + 64) <= 0.5 * 64 * 64 -> R = 16, in params and MACs alike.
    assert budget_rank(spec, "low_rank", 0.5, by="params") == 16
    assert budget_rank(spec, "low_rank", 0.5) == 16
    # CP by params: R (K + C + kh + kw) <= ratio K C kh kw.
    w = randn(gen(6), 48, 32, 3, 3)
    for ratio in (0.1, 0.25, 0.6):
        assert budget_rank(w, "cp", ratio, by="params") == math.floor(
            ratio * 48 * 32 * 9 / (48 + 32 + 3 + 3)
        )


@given(method=st.sampled_from(METHODS), target=st.floats(0.05, 0.9),
       stride=st.integers(1, 2), by=st.sampled_from(["macs", "params"]))  # fmt: skip
def test_budget_rank_is_the_largest_that_fits(method, target, stride, by):
    spec = ConvSpec(32, 48, 3, (14, 14), stride=stride, padding=1, bias=True)
    base = getattr(conv_cost(spec), by)

    def cost(ranks):
        return sum(getattr(conv_cost(s), by) for s in factor_specs(spec, method, ranks)) / base

    try:
        ranks = budget_rank(spec, method, target, by=by)
    except InvalidRankError:
        smallest = {"tucker2": (1, 1), "tt": (1, 1, 1)}.get(method, 1)
        assert cost(smallest) > target
        return
    assert cost(ranks) <= target
    specs = factor_specs(spec, method, ranks)
    assert specs[-1].output_shape == spec.output_shape  # the chain has the layer's geometry
    if isinstance(ranks, int):
        bigger = ranks + 1
    elif method == "tt":
        bigger = tuple(r + 1 for r in ranks)
    else:
        bigger = None  # tucker2 steps grow both ranks together; checked by bisection anyway
    limits = {"spatial_svd": 32 * 3, "low_rank": 48, "depthwise": 9, "cp": 10**9}
    if isinstance(ranks, int) and bigger <= limits[method]:
        assert cost(bigger) > target


def test_budget_rank_grouped_and_errors():
    spec = ConvSpec(32, 32, 3, (8, 8), padding=1, groups=4, bias=False)
    r = budget_rank(spec, "tucker2", 0.5, by="params")
    chain = factor_specs(spec, "tucker2", r)
    assert all(s.groups == 4 for s in chain)
    with pytest.raises(InvalidRankError, match="no cp rank meets"):
        budget_rank(ConvSpec(4, 4, 1, (4, 4)), "cp", 0.01, name="tiny")
    with pytest.raises(InvalidRankError, match="method="):
        budget_rank(spec, "svd2", 0.5)
    with pytest.raises(InvalidRankError, match="target_ratio"):
        budget_rank(spec, "cp", 0)
    with pytest.raises(InvalidRankError, match="by="):
        budget_rank(spec, "cp", 0.5, by="flops")


def test_output_error():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1).double()
    xs = [torch.randn(2, 8, 6, 6, dtype=F64) for _ in range(3)]
    assert output_error(conv, conv, xs) == 0.0

    def scaled(x):
        return 0.9 * conv(x)

    assert output_error(conv, scaled, xs) == pytest.approx(0.1)
    f = tucker2(conv.weight, (12, 8))  # full rank: exact

    def rebuilt(x):
        return nn.functional.conv2d(x, f.to_dense(), conv.bias, padding=1)

    assert output_error(conv, rebuilt, xs[0]) < 1e-13
    with pytest.raises(DecompositionError, match="empty"):
        output_error(conv, conv, [])
    with pytest.raises(DecompositionError, match="'c'.*replacement output"):
        output_error(conv, lambda x: x, xs, name="c")
