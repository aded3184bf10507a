"""TT-SVD: exact ranks, the tolerance guarantee, TensorLy's tensor_train, the chain as layers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from leanconv.decompose._errors import InvalidRankError
from leanconv.decompose.tt import max_tt_ranks, tensor_train

from ._helpers import gen, randn, rel


def _tt_kernel(g, k, c, kh, kw, ranks):
    r1, r2, r3 = ranks
    return torch.einsum(
        "ca,aib,bjd,dk->kcij", randn(g, c, r1), randn(g, r1, kh, r2), randn(g, r2, kw, r3),
        randn(g, r3, k),
    )  # fmt: skip


def test_exact_ranks_are_recovered():
    w = _tt_kernel(gen(1), 10, 8, 3, 3, (3, 4, 2))
    f = tensor_train(w, (3, 4, 2))
    assert f.ranks == (3, 4, 2) and rel(f.to_dense(), w) < 1e-13
    g = tensor_train(w, tol=1e-10)  # the tolerance finds the same ranks
    assert g.ranks == (3, 4, 2) and rel(g.to_dense(), w) < 1e-13


@given(k=st.integers(1, 6), c=st.integers(1, 6), kh=st.integers(1, 3), kw=st.integers(1, 3),
       tol=st.floats(0.0, 0.9))  # fmt: skip
def test_tolerance_bounds_the_error(k, c, kh, kw, tol):
    w = randn(gen(k * 11 + c), k, c, kh, kw)
    f = tensor_train(w, tol=tol)
    assert rel(f.to_dense(), w) <= tol + 1e-12
    assert all(r <= cap for r, cap in zip(f.ranks, max_tt_ranks(w.shape), strict=True))


def test_same_error_as_tensorly():
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import tensor_train as tl_tt

    w = randn(gen(2), 12, 10, 3, 3)
    f = tensor_train(w, (6, 12, 8))
    with tl.backend_context("pytorch"):
        cores = tl_tt(w.permute(1, 2, 3, 0), rank=[1, 6, 12, 8, 1])
        theirs = rel(tl.tt_to_tensor(cores).permute(3, 0, 1, 2), w)
    assert rel(f.to_dense(), w) == pytest.approx(theirs, abs=1e-12)


def test_int_rank_is_clipped_and_full_is_exact():
    w = randn(gen(3), 4, 3, 3, 3)
    f = tensor_train(w, 1000)
    assert f.ranks == max_tt_ranks(w.shape) == (3, 9, 4)
    assert rel(f.to_dense(), w) < 1e-13


def test_bad_ranks():
    w = randn(gen(4), 4, 3, 3, 3)
    with pytest.raises(InvalidRankError, match="ranks= , tol=|needs ranks="):
        tensor_train(w)
    with pytest.raises(InvalidRankError, match=r"'c'.*ranks\[1\]=10 is larger than possible"):
        tensor_train(w, (3, 10, 4), name="c")
    with pytest.raises(InvalidRankError, match=r"ranks\[1\]=6 is larger than possible after"):
        tensor_train(w, (1, 6, 4))  # r2 <= r1 * kh = 3
    with pytest.raises(InvalidRankError, match="tol"):
        tensor_train(w, tol=1.5)
    with pytest.raises(InvalidRankError, match=r"\(r1, r2, r3\)"):
        tensor_train(w, (2, 2))
