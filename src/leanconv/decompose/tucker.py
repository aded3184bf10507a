"""Tucker-2 decomposition of a convolution kernel over its channel modes (Kim et al. 2016).

Kim, Park, Yoo, Choi, Yang, Shin, "Compression of Deep Convolutional Neural Networks for Fast and
Low Power Mobile Applications", ICLR 2016. The kernel ``W`` of shape ``(K, C, kh, kw)`` is
approximated with orthonormal ``U_out (K, R_out)``, ``U_in (C, R_in)`` and a core::

    W[k, c, i, j] ~ sum_{s, r} core[s, r, i, j] U_out[k, s] U_in[c, r]
    core = W x_0 U_out^T x_1 U_in^T

which runs as 1x1 ``C -> R_in``, the ``kh x kw`` core ``R_in -> R_out``, 1x1 ``R_out -> K``
(:class:`leanconv.nn.factorised.TuckerConv2d`).

Algorithm: HOSVD initialisation (the leading left singular vectors of the mode-0 and mode-1
unfoldings; De Lathauwer, De Moor, Vandewalle 2000a), refined by HOOI (higher-order orthogonal
iteration, De Lathauwer et al. 2000b) on the two channel modes: alternately
``U_out <- lead_{R_out}(unfold_0(W x_1 U_in^T))`` and ``U_in <- lead_{R_in}(unfold_1(W x_0
U_out^T))``. Each step maximises ``||core||_F`` for the other factor fixed, so the error
``||W - W_hat||^2 = ||W||^2 - ||core||^2`` never increases; iterations stop when it changes by
less than ``tol * ||W||^2``. Full ranks ``(K, C)`` reproduce ``W`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import check_int, check_weight, leading_left, out, spectrum_once, unfold, where
from ._errors import InvalidRankError
from .factors import Tucker2Factors
from .grouped import GroupedFactors, per_group
from .methods import Method, register


def _ranks(ranks: int | Sequence[int], shape, name: str | None) -> tuple[int, int]:
    k, c = shape[0], shape[1]
    if isinstance(ranks, Sequence) and not isinstance(ranks, str):
        if len(ranks) != 2:
            raise InvalidRankError(
                f"{where(name)}ranks={tuple(ranks)} must be one int or (R_out, R_in)"
            )
        r_out, r_in = ranks
    else:
        r_out = r_in = ranks
    r_out = check_int(r_out, "ranks[0] (R_out)", name, maximum=k, why=f"K={k} output channels")
    r_in = check_int(r_in, "ranks[1] (R_in)", name, maximum=c, why=f"C={c} input channels")
    return r_out, r_in


def tucker2(
    weight: Tensor,
    ranks: int | Sequence[int],
    n_iter: int = 20,
    tol: float = 1e-4,
    *,
    groups: int = 1,
    name: str | None = None,
) -> Tucker2Factors | GroupedFactors:
    """Tucker-2 factors of ``weight (K, C, kh, kw)`` with ranks ``(R_out, R_in)`` (an int: both).

    HOSVD then at most ``n_iter`` HOOI sweeps (0: plain HOSVD, truncated), stopped once a sweep
    improves the relative error ``||W - W_hat|| / ||W||`` by less than ``tol`` (TensorLy's
    ``partial_tucker`` rule and default; the sweeps converge linearly: running all 20 lowered the
    relative error by a median 0.04 %, at most 0.12 %, over 51 layer-rank pairs of the demo's
    trained ResNet-18, for 2-4x the time, which had been a third of a ResNet-50's planning time).
    With ``groups > 1``
    the weight is ``(K, C/g, kh, kw)`` and each group is decomposed with the same ranks
    (:class:`~leanconv.decompose.grouped.GroupedFactors`). Computed in float64 on the weight's
    device; factors come back in its dtype.
    """
    n_iter = check_int(n_iter, "n_iter", name, minimum=0)

    def one(w: Tensor, label: str | None) -> Tucker2Factors:
        x = check_weight(w, label)
        r_out, r_in = _ranks(ranks, x.shape, label)
        return _hooi(x, r_out, r_in, n_iter, tol, like=w)

    return per_group(weight, groups, name, one)


def _hooi(
    x: Tensor, r_out: int, r_in: int, n_iter: int, tol: float, like: Tensor
) -> Tucker2Factors:
    k = x.shape[0]
    norm2 = float((x * x).sum())
    u_out, u_in = _hosvd_basis(unfold(x, 0), r_out), _hosvd_basis(unfold(x, 1), r_in)
    full = r_out == k and r_in == x.shape[1]
    previous = None
    for _ in range(0 if full else n_iter):
        projected = torch.einsum("kcij,cr->krij", x, u_in)
        u_out = leading_left(projected.reshape(k, -1), r_out)
        partial = torch.einsum("kcij,ks->scij", x, u_out)
        u_in = leading_left(unfold(partial, 1), r_in)
        core = torch.einsum("scij,cr->srij", partial, u_in)
        error = max(0.0, 1 - float((core * core).sum()) / norm2) ** 0.5  # relative
        if previous is not None and abs(previous - error) < tol:
            break
        previous = error
    core = torch.einsum("kcij,ks,cr->srij", x, u_out, u_in)
    return Tucker2Factors(out(core, like), out(u_out, like), out(u_in, like))


def _hosvd_basis(unfolding: Tensor, rank: int) -> Tensor:
    """The ``rank`` leading left singular vectors of a mode unfolding (HOSVD), truncated from
    its full basis, which is computed once per weight (:func:`._common.spectrum_once`)."""
    if rank > min(unfolding.shape):
        return leading_left(unfolding, rank)
    full = spectrum_once("left", unfolding, lambda m: leading_left(m, min(m.shape)))
    return full[:, :rank]


__all__ = ["tucker2"]


register(Method(
    name="tucker2", aliases=("tucker",),
    # 1x1 C -> R_in, kh x kw R_in -> R_out (the core), 1x1 R_out -> K (Kim et al. 2016)
    chain=lambda c, k, kh, kw, g, rank: [
        (c, g * rank[1], 1, "1x1", g), (g * rank[1], g * rank[0], (kh, kw), "full", g),
        (g * rank[0], k, 1, "1x1", g)],
    budget_ranks=lambda t, k, c, kh, kw: (
        (max(1, round(t * k / max(k, c))), max(1, round(t * c / max(k, c)))), max(k, c)),
    factorise=lambda w, rank, groups, name, seed: tucker2(w, rank, groups=groups, name=name),
    weights=lambda f: [f.input.t()[:, :, None, None], f.core, f.output[:, :, None, None]],
    auto_rank=lambda r_out, r_in: (max(1, r_out), max(1, r_in)),
))  # fmt: skip
