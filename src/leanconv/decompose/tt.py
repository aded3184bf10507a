"""Tensor-train decomposition of a convolution kernel by TT-SVD (Oseledets 2011).

Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 33(5), 2011, Algorithm 1. The
kernel's modes are ordered ``(C, kh, kw, K)`` (``T = W.permute(1, 2, 3, 0)``), so the train is a
chain of convolutions 1x1 ``C -> r1``, ``kh x 1`` ``r1 -> r2``, ``1 x kw`` ``r2 -> r3``, 1x1
``r3 -> K`` (:class:`~leanconv.decompose.factors.TTFactors`,
:class:`leanconv.nn.factorised.TTConv2d`)::

    T[c, i, j, k] = G1[0, c, :] G2[:, i, :] G3[:, j, :] G4[:, k, 0]

TT-SVD sweeps left to right: ``M_1 = T`` as ``(C, kh kw K)``; at step ``n`` the truncated SVD
``M_n ~ U S V^T`` gives the core ``G_n = U`` reshaped ``(r_{n-1}, n_n, r_n)`` and
``M_{n+1} = S V^T`` reshaped ``(r_n n_{n+1}, ...)``. Truncating each step at ``delta =
tol ||W||_F / sqrt(3)`` guarantees ``||W - W_hat||_F <= tol ||W||_F`` (Theorem 2.2: the squared
errors of the ``d - 1 = 3`` steps add up). Without truncation the ranks are the unfolding ranks,
at most ``(min(C, kh kw K), min(C kh, kw K), min(C kh kw, K))``, and the train is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import check_int, check_weight, out, svd, where
from ._errors import InvalidRankError
from .factors import TTFactors
from .grouped import GroupedFactors, per_group
from .methods import Method, register


def max_tt_ranks(shape: Sequence[int]) -> tuple[int, int, int]:
    """The largest useful TT ranks of a ``(K, C, kh, kw)`` kernel (its unfolding sizes)."""
    k, c, kh, kw = shape
    return (min(c, kh * kw * k), min(c * kh, kw * k), min(c * kh * kw, k))


def tensor_train(
    weight: Tensor,
    ranks: int | Sequence[int] | None = None,
    tol: float | None = None,
    *,
    groups: int = 1,
    name: str | None = None,
) -> TTFactors | GroupedFactors:
    """TT cores of ``weight (K, C, kh, kw)`` in mode order ``(C, kh, kw, K)``.

    ``ranks``: ``(r1, r2, r3)`` (each checked against :func:`max_tt_ranks`), or one int used
    for all three and clipped to those maxima; ``tol``: relative Frobenius error bound (ranks
    chosen by TT-SVD truncation). With both, the ranks are upper limits and ``tol`` may choose
    lower ones; with neither, an error. ``groups > 1``: per group.
    """
    if ranks is None and tol is None:
        raise InvalidRankError(f"{where(name)}tensor_train needs ranks=, tol= or both")
    if tol is not None and not 0 <= tol < 1:
        raise InvalidRankError(f"{where(name)}tol={tol} must be in [0, 1)")

    def one(w: Tensor, label: str | None) -> TTFactors:
        x = check_weight(w, label)
        caps = max_tt_ranks(tuple(x.shape))
        strict = isinstance(ranks, Sequence)
        if ranks is None:
            limits = caps
        elif strict:
            if len(ranks) != 3:
                raise InvalidRankError(f"{where(label)}ranks={tuple(ranks)} must be (r1, r2, r3)")
            limits = tuple(
                check_int(r, f"ranks[{n}]", label, maximum=cap,
                          why=f"the unfolding ranks of {tuple(x.shape)} are at most {caps}")
                for n, (r, cap) in enumerate(zip(ranks, caps, strict=True))
            )  # fmt: skip
        else:
            r = check_int(ranks, "ranks", label)
            limits = tuple(min(r, cap) for cap in caps)
        return _tt_svd(x, limits, tol or 0.0, strict, label, like=w)

    return per_group(weight, groups, name, one)


def _tt_svd(
    x: Tensor, limits, tol: float, strict: bool, name: str | None, like: Tensor
) -> TTFactors:
    k, c, kh, kw = x.shape
    t = x.permute(1, 2, 3, 0)
    delta2 = (tol * float(torch.linalg.vector_norm(x))) ** 2 / 3
    cores: list[Tensor] = []
    previous = 1
    rest = t.reshape(1, -1)
    for step, (n, limit) in enumerate(zip((c, kh, kw), limits, strict=True)):
        matrix = rest.reshape(previous * n, -1)
        u, s, vh = svd(matrix)
        if strict and limit > s.shape[0]:
            raise InvalidRankError(
                f"{where(name)}ranks[{step}]={limit} is larger than possible after the earlier "
                f"ranks: the step-{step + 1} unfolding {tuple(matrix.shape)} has rank at most "
                f"{s.shape[0]}"
            )
        rank = min(limit, s.shape[0])
        if delta2 > 0:
            # tails[r] = sum_{q >= r} s_q^2: keep the fewest r with tails[r] <= delta2.
            tails = torch.flip(torch.cumsum(torch.flip(s * s, [0]), 0), [0])
            fits = (tails <= delta2).nonzero()
            keep = int(fits[0]) if fits.numel() else s.shape[0]
            rank = max(1, min(limit, keep))
        cores.append(u[:, :rank].reshape(previous, n, rank))
        rest = s[:rank, None] * vh[:rank]
        previous = rank
    cores.append(rest.reshape(previous, k, 1))
    return TTFactors(tuple(out(g, like) for g in cores))


__all__ = ["max_tt_ranks", "tensor_train"]


def _tt_weights(f) -> list[Tensor]:
    g1, g2, g3, g4 = f.cores
    return [
        g1[0].t()[:, :, None, None],
        g2.permute(2, 0, 1)[:, :, :, None],
        g3.permute(2, 0, 1)[:, :, None, :],
        g4[:, :, 0].t()[:, :, None, None],
    ]


register(Method(
    name="tt", aliases=("tensor_train",),
    # 1x1 C -> r1, kh x 1 r1 -> r2, 1 x kw r2 -> r3, 1x1 r3 -> K (Oseledets 2011, TT-SVD)
    chain=lambda c, k, kh, kw, g, rank: [
        (c, g * rank[0], 1, "1x1", g), (g * rank[0], g * rank[1], (kh, 1), "h", g),
        (g * rank[1], g * rank[2], (1, kw), "w", g), (g * rank[2], k, 1, "1x1", g)],
    budget_ranks=lambda t, k, c, kh, kw: (
        tuple(min(t, cap) for cap in max_tt_ranks((k, c, kh, kw))),
        max(max_tt_ranks((k, c, kh, kw)))),
    factorise=lambda w, rank, groups, name, seed: tensor_train(w, rank, groups=groups, name=name),
    weights=_tt_weights,
    auto_rank=lambda r_out, r_in: (max(1, r_in), max(1, r_in), max(1, r_out)),
))  # fmt: skip
