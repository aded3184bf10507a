"""Tucker-2 (HOSVD + HOOI): exact recovery, full rank, monotone error, TensorLy, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from leanconv.decompose._errors import InvalidRankError, InvalidWeightError
from leanconv.decompose.grouped import GroupedFactors
from leanconv.decompose.tucker import tucker2

from ._helpers import F64, gen, randn, rel, tucker_kernel


def test_exact_rank_is_recovered_to_round_off():
    w = tucker_kernel(gen(1), (20, 14, 3, 3), 5, 4)
    f = tucker2(w, (5, 4))
    assert f.ranks == (5, 4)
    assert rel(f.to_dense(), w) < 1e-13


@pytest.mark.parametrize("shape", [(16, 12, 3, 3), (24, 6, 1, 1), (5, 9, 5, 3)])
def test_full_rank_equals_the_original(shape):
    w = randn(gen(2), *shape)
    f = tucker2(w, (shape[0], shape[1]))
    assert rel(f.to_dense(), w) < 1e-13


@given(
    k=st.integers(1, 9), c=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
    data=st.data(),
)  # fmt: skip
def test_hooi_is_orthonormal_and_no_worse_than_hosvd(k, c, kh, kw, data):
    r_out = data.draw(st.integers(1, k))
    r_in = data.draw(st.integers(1, c))
    w = randn(gen(k * 100 + c * 10 + kh), k, c, kh, kw)
    hosvd = tucker2(w, (r_out, r_in), n_iter=0)
    hooi = tucker2(w, (r_out, r_in))
    eye = torch.eye
    assert torch.allclose(hooi.output.T @ hooi.output, eye(r_out, dtype=F64), atol=1e-12)
    assert torch.allclose(hooi.input.T @ hooi.input, eye(r_in, dtype=F64), atol=1e-12)
    err_hooi = rel(hooi.to_dense(), w)
    assert err_hooi <= rel(hosvd.to_dense(), w) + 1e-12
    # Orthonormal factors: ||W - W_hat||^2 = ||W||^2 - ||core||^2.
    expected = (1 - float(hooi.core.norm() ** 2 / w.norm() ** 2)) ** 0.5 if err_hooi > 1e-6 else 0
    assert err_hooi == pytest.approx(expected, abs=1e-7)


def test_no_worse_than_tensorly_partial_tucker():
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import partial_tucker

    w = randn(gen(3), 32, 24, 3, 3)
    ranks = (8, 6)
    ours = rel(tucker2(w, ranks).to_dense(), w)
    with tl.backend_context("pytorch"):
        (core, factors), _ = partial_tucker(w, rank=list(ranks), modes=[0, 1], n_iter_max=100)
        theirs = rel(tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1]), w)
    assert ours <= theirs + 1e-12


def test_keeps_dtype_and_device():
    w = randn(gen(4), 8, 6, 3, 3).float()
    f = tucker2(w, 3)
    assert f.core.dtype == torch.float32 and f.output.device == w.device
    assert f.ranks == (3, 3)


def test_grouped_is_decomposed_group_by_group():
    g = gen(5)
    blocks = [tucker_kernel(g, (6, 4, 3, 3), 2, 2) for _ in range(3)]
    w = torch.cat(blocks)  # (18, 4, 3, 3) = groups=3 of 6 -> 4
    f = tucker2(w, (2, 2), groups=3)
    assert isinstance(f, GroupedFactors) and len(f) == 3 and f.shape == (18, 4, 3, 3)
    assert rel(f.to_dense(), w) < 1e-12
    assert rel(f[1].to_dense(), blocks[1]) < 1e-12


@pytest.mark.parametrize(
    ("ranks", "match"),
    [
        (0, "at least 1"),
        ((9, 2), "larger than possible"),
        ((2, 7), "larger than possible"),
        (2.5, "must be an integer"),
        (True, "must be an integer"),
        ((1, 2, 3), "R_out, R_in"),
    ],
)
def test_bad_ranks_name_the_layer(ranks, match):
    w = randn(gen(6), 8, 6, 3, 3)
    with pytest.raises(InvalidRankError, match=match) as info:
        tucker2(w, ranks, name="block.conv2")
    assert "block.conv2" in str(info.value)


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (torch.zeros(4, 4, 3, 3), "all zeros"),
        (torch.full((4, 4, 3, 3), float("nan")), "NaN"),
        (torch.full((4, 4, 3, 3), float("inf")), "NaN or infinite"),
        (torch.ones(4, 4, 3), "4-D"),
        (torch.ones(4, 4, 3, 3, dtype=torch.int64), "floating"),
    ],
)
def test_bad_weights(weight, match):
    with pytest.raises(InvalidWeightError, match=match):
        tucker2(weight, 2, name="conv")


def test_groups_must_divide():
    with pytest.raises(InvalidWeightError, match="divisible by groups=4"):
        tucker2(torch.ones(6, 2, 3, 3), 1, groups=4)


def test_leading_left_of_a_wide_matrix_spans_the_svd_subspace():
    """The Gram-matrix path (wide float64 matrices, HOOI's unfoldings) against LAPACK's SVD."""
    from leanconv.decompose._common import leading_left

    torch.manual_seed(0)
    # decaying spectrum, as a trained kernel's unfolding has
    u, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(360, 40, dtype=torch.float64))
    a = u @ torch.diag(0.7 ** torch.arange(40.0, dtype=torch.float64)) @ v.T
    for rank in (1, 5, 17, 40):
        got = leading_left(a, rank)
        ref = torch.linalg.svd(a, full_matrices=False)[0][:, :rank]
        assert got.shape == (40, rank)
        torch.testing.assert_close(got.T @ got, torch.eye(rank, dtype=torch.float64), atol=1e-12,
                                   rtol=0)  # fmt: skip
        torch.testing.assert_close(got @ got.T, ref @ ref.T, atol=1e-8, rtol=0)
