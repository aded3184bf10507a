"""The best depthwise-separable approximation of a full convolution.

A depthwise ``kh x kw`` convolution with depth multiplier ``M`` (``C -> C M``, ``groups=C``)
followed by a 1x1 ``C M -> K`` (Howard et al. 2017, "MobileNets"; Chollet 2017, "Xception")
computes the kernel::

    W_hat[k, c, i, j] = sum_{m < M} P[k, c M + m] D[c M + m, i, j]

Input channel ``c`` only meets its own ``M`` depthwise filters and its own ``M`` pointwise
columns, so ``||W - W_hat||_F^2 = sum_c ||S_c - P_c D_c||_F^2`` with the ``K x kh kw`` slice
``S_c = W[:, c]`` flattened, ``P_c = P[:, cM:(c+1)M]``, ``D_c = D[cM:(c+1)M]``: the problem
splits into ``C`` independent rank-``M`` matrix approximations. By Eckart-Young-Mirsky the
truncated SVD of each ``S_c`` solves each exactly, so the per-channel rank-``M`` SVDs give the
global optimum in Frobenius norm, with error ``sum_c sum_{m >= M} s_{c, m}^2`` (no iteration, no
initialisation; ``M = min(K, kh kw)`` is exact). Guo et al. ("Network Decoupling", NeurIPS 2018)
use the same per-channel decomposition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import check_int, check_weight, out
from .grouped import GroupedFactors, per_group
from .methods import Method, register


@dataclass(frozen=True, eq=False)
class DepthwiseSeparableFactors:
    """``depthwise (C M, 1, kh, kw)`` (``groups=C``, filters of channel ``c`` at rows
    ``cM .. cM + M - 1``, PyTorch's order) then ``pointwise (K, C M, 1, 1)``."""

    depthwise: Tensor
    pointwise: Tensor
    multiplier: int = 1

    def __post_init__(self) -> None:
        d, p, m = tuple(self.depthwise.shape), tuple(self.pointwise.shape), self.multiplier
        if len(d) != 4 or len(p) != 4 or d[1] != 1 or p[2:] != (1, 1) or p[1] != d[0]:
            raise ValueError(
                f"DepthwiseSeparableFactors: depthwise {d} must be (C M, 1, kh, kw) and "
                f"pointwise {p} (K, C M, 1, 1)"
            )
        if not isinstance(m, int) or m < 1 or d[0] % m:
            raise ValueError(
                f"DepthwiseSeparableFactors: multiplier={m!r} must be a positive int dividing "
                f"the {d[0]} depthwise filters"
            )

    @property
    def in_channels(self) -> int:
        return self.depthwise.shape[0] // self.multiplier

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The kernel's shape ``(K, C, kh, kw)``."""
        return (self.pointwise.shape[0], self.in_channels, *self.depthwise.shape[2:])

    def to_dense(self) -> Tensor:
        """``W[k, c, i, j] = sum_m P[k, c M + m] D[c M + m, i, j]``."""
        k, c, kh, kw = self.shape
        m = self.multiplier
        d = self.depthwise[:, 0].reshape(c, m, kh, kw)
        p = self.pointwise[:, :, 0, 0].reshape(k, c, m)
        return torch.einsum("kcm,cmij->kcij", p, d)


def depthwise_separable(
    weight: Tensor, multiplier: int = 1, *, groups: int = 1, name: str | None = None
) -> DepthwiseSeparableFactors | GroupedFactors:
    """The optimal depthwise (multiplier ``M``) + pointwise factors of ``weight (K, C, kh, kw)``:
    a rank-``M`` truncated SVD of each input channel's ``K x kh kw`` slice (see the module).
    ``M`` is at most ``min(K, kh kw)`` (where the fit is exact). The singular values are split
    evenly, ``sqrt(s)`` to each factor. ``groups > 1``: per group."""

    def one(w: Tensor, label: str | None) -> DepthwiseSeparableFactors:
        x = check_weight(w, label)
        k, c, kh, kw = x.shape
        limit = min(k, kh * kw)
        m = check_int(multiplier, "multiplier", label, maximum=limit,
                      why=f"min(K, kh*kw) = {limit} already fits exactly")  # fmt: skip
        slices = x.permute(1, 0, 2, 3).reshape(c, k, kh * kw)  # S_c, (C, K, kh kw)
        u, s, vh = torch.linalg.svd(slices, full_matrices=False)
        root = s[:, :m].sqrt()  # (C, M)
        depthwise = (vh[:, :m] * root[:, :, None]).reshape(c * m, 1, kh, kw)
        pointwise = (u[:, :, :m] * root[:, None, :]).permute(1, 0, 2).reshape(k, c * m, 1, 1)
        return DepthwiseSeparableFactors(out(depthwise, w), out(pointwise, w), m)

    return per_group(weight, groups, name, one)


__all__ = ["DepthwiseSeparableFactors", "depthwise_separable"]


register(Method(
    name="depthwise", aliases=("depthwise_separable",),
    # depthwise kh x kw C -> C M (multiplier M), 1x1 C M -> K (MobileNet's form, fitted)
    chain=lambda c, k, kh, kw, g, rank: [
        (c, c * rank, (kh, kw), "full", c), (c * rank, k, 1, "1x1", g)],
    budget_ranks=lambda t, k, c, kh, kw: (t, min(k, kh * kw)),
    factorise=lambda w, rank, groups, name, seed: depthwise_separable(w, rank, name=name),
    weights=lambda f: [f.depthwise, f.pointwise],
    channel_ranks=False,
))  # fmt: skip
