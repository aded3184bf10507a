"""CP-ALS: exact recovery, agreement with TensorLy's parafac from the same start, degeneracy
detection and the ridge guard, diagnostics, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from leanconv.decompose._errors import (
    DegenerateDecompositionError,
    InvalidRankError,
    InvalidWeightError,
)
from leanconv.decompose.cp import _initial, cp, cp_als, max_cp_rank
from leanconv.decompose.factors import CPFactors
from leanconv.decompose.grouped import GroupedFactors

from ._helpers import F64, cp_kernel, gen, randn, rel


@pytest.mark.parametrize(("shape", "rank"), [((10, 8, 3, 3), 4), ((12, 6, 1, 1), 3)])
def test_exact_rank_is_recovered_to_round_off(shape, rank):
    w = cp_kernel(gen(1), shape, rank)
    result = cp_als(w, rank, n_iter=1000, tol=1e-15, ridge=0)
    assert result.relative_error < 1e-12
    assert not result.degenerate
    assert rel(result.factors.to_dense(), w) < 1e-12


def test_default_guard_costs_only_its_small_ridge_on_an_exact_kernel():
    w = cp_kernel(gen(2), (10, 8, 3, 3), 4)
    result = cp_als(w, 4, n_iter=1000, tol=1e-12)
    assert result.converged and result.relative_error < 1e-5


def test_result_layout_and_diagnostics():
    w = randn(gen(3), 12, 10, 3, 3)
    result = cp_als(w, 6, n_iter=30, tol=0, ridge=0)
    f = result.factors
    assert f.shape == (12, 10, 3, 3) and f.rank == 6
    for t in (f.output, f.input, f.height, f.width):  # unit columns, lambda in weights
        assert torch.allclose(t.norm(dim=0), torch.ones(6, dtype=F64))
    assert torch.all(f.weights[:-1] >= f.weights[1:])  # sorted
    assert result.iterations == 30 and len(result.errors) == 30
    assert np.all(np.diff(result.errors) <= 1e-12)  # plain ALS never increases the error
    assert result.errors[-1] == pytest.approx(result.relative_error, rel=1e-8)
    assert result.norm_ratio == pytest.approx(float(f.weights.norm() / w.norm()))
    assert "CP rank 6" in result.describe()


def test_same_iterates_as_tensorly_parafac_from_the_same_start():
    tl = pytest.importorskip("tensorly")
    from tensorly.cp_tensor import CPTensor
    from tensorly.decomposition import parafac

    w = randn(gen(4), 20, 16, 3, 3)
    rank = 12
    init = _initial(w, rank, "svd", 0, None)
    ours = cp_als(w, rank, n_iter=25, tol=0, init=CPFactors(*init), ridge=0)
    start = CPTensor((np.ones(rank), [t.numpy().copy() for t in init]))
    with tl.backend_context("numpy"):
        theirs = parafac(w.numpy(), rank, n_iter_max=25, init=start, tol=0)
        err = float(np.linalg.norm(w.numpy() - tl.cp_to_tensor(theirs)) / np.linalg.norm(w))
    assert ours.relative_error == pytest.approx(err, abs=1e-9)


@pytest.mark.filterwarnings("ignore:Trying to compute SVD")
def test_comparable_to_tensorly_with_its_own_initialisation():
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac

    w = randn(gen(5), 24, 16, 3, 3)
    ours = cp_als(w, 10, n_iter=100, tol=1e-10).relative_error
    with tl.backend_context("numpy"):
        theirs = parafac(w.numpy(), 10, n_iter_max=100, init="svd", tol=1e-10, random_state=0)
        err = float(np.linalg.norm(w.numpy() - tl.cp_to_tensor(theirs)) / np.linalg.norm(w))
    assert ours <= err * 1.02


def _border_rank_kernel():
    """``sum_p a o .. o b (p-th) o .. o a``: rank 4, but a limit of rank-2 tensors, so no best
    rank-2 or rank-3 approximation exists and ALS drives components to cancel (degeneracy)."""
    g = gen(1)
    dims = (6, 5, 3, 3)
    a = [torch.randn(n, generator=g, dtype=F64) for n in dims]
    b = [torch.randn(n, generator=g, dtype=F64) for n in dims]
    terms = [[b[m] if m == p else a[m] for m in range(4)] for p in range(4)]
    return sum(torch.einsum("k,c,i,j->kcij", *t) for t in terms)


def test_degeneracy_is_detected_and_reported():
    w = _border_rank_kernel()
    result = cp_als(w, 3, n_iter=3000, tol=0, ridge=0, init="random", max_norm_ratio=4)
    assert result.degenerate and "norm ratio" in result.message
    assert result.norm_ratio > 4
    with pytest.raises(DegenerateDecompositionError, match="layer 'features.3'") as info:
        cp(w, 3, 3000, 0, ridge=0, init="random", max_norm_ratio=4, name="features.3")
    assert info.value.result.degenerate
    with pytest.warns(RuntimeWarning, match="degenerate"):
        cp(w, 3, 3000, 0, ridge=0, init="random", max_norm_ratio=4, on_degenerate="warn")


def test_ridge_bounds_the_components():
    w = _border_rank_kernel()
    result = cp_als(w, 3, n_iter=600, tol=0, ridge=1e-4, init="random", max_norm_ratio=4)
    assert not result.degenerate and result.norm_ratio < 2
    assert result.relative_error < 0.01


def test_seeded_runs_repeat_and_keep_dtype():
    w = randn(gen(6), 8, 6, 3, 3).float()
    a = cp(w, 5, 20, init="random", seed=3)
    b = cp(w, 5, 20, init="random", seed=3)
    assert a.output.dtype == torch.float32
    assert torch.equal(a.output, b.output) and torch.equal(a.weights, b.weights)


def test_grouped():
    g = gen(7)
    blocks = [cp_kernel(g, (4, 3, 3, 3), 2) for _ in range(2)]
    f = cp(torch.cat(blocks), 2, 500, 1e-14, ridge=0, groups=2)
    assert isinstance(f, GroupedFactors) and f.shape == (8, 3, 3, 3)
    assert rel(f.to_dense(), torch.cat(blocks)) < 1e-9


@given(k=st.integers(1, 6), c=st.integers(1, 6), kh=st.integers(1, 3), kw=st.integers(1, 3),
       rank=st.integers(1, 4))  # fmt: skip
def test_any_shape_gives_a_consistent_result(k, c, kh, kw, rank):
    rank = min(rank, max_cp_rank((k, c, kh, kw)))
    w = randn(gen(k + 7 * c + 49 * kh), k, c, kh, kw)
    result = cp_als(w, rank, n_iter=20)
    assert result.factors.shape == (k, c, kh, kw)
    assert 0 <= result.relative_error <= 1 + 1e-9
    assert result.relative_error == pytest.approx(rel(result.factors.to_dense(), w), abs=1e-9)


@pytest.mark.parametrize(
    ("rank", "match"),
    [(0, "at least 1"), (-2, "at least 1"), (3.0, "integer"), ("4", "integer"),
     (37, "larger than possible")],
)  # fmt: skip
def test_bad_rank(rank, match):
    w = randn(gen(8), 4, 4, 3, 3)  # max CP rank 4 * 3 * 3 = 36
    with pytest.raises(InvalidRankError, match=match) as info:
        cp(w, rank, name="conv1")
    assert "conv1" in str(info.value)


def test_bad_weight_and_arguments():
    with pytest.raises(InvalidWeightError, match="all zeros"):
        cp(torch.zeros(4, 4, 3, 3), 2, name="conv1")
    with pytest.raises(InvalidWeightError, match="NaN"):
        cp(torch.tensor([[[[float("nan")]]]]), 1)
    w = randn(gen(9), 4, 4, 3, 3)
    with pytest.raises(InvalidRankError, match="on_degenerate"):
        cp(w, 2, on_degenerate="explode")
    with pytest.raises(InvalidRankError, match="init"):
        cp(w, 2, init="hosvd")
    with pytest.raises(InvalidRankError, match="ridge"):
        cp(w, 2, ridge=-1.0)
