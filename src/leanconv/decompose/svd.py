"""Truncated-SVD factorisations: spatial (``kh x 1`` then ``1 x kw``) and channel (low rank).

By Eckart-Young-Mirsky, the truncated SVD ``M_R = U_R S_R V_R^T`` is the best rank-``R``
approximation of a matrix ``M`` in Frobenius (and spectral) norm, with error
``||M - M_R||_F^2 = sum_{r > R} s_r^2``. Each factorisation below is a rank constraint on one
reshaping of the kernel, so each is optimal for its structure.

- :func:`spatial_svd` (Jaderberg, Vedaldi, Zisserman, "Speeding up Convolutional Neural Networks
  with Low Rank Expansions", BMVC 2014, scheme 2): a ``kh x 1`` convolution ``C -> R`` followed
  by a ``1 x kw`` convolution ``R -> K``::

      W[k, c, i, j] ~ sum_r H[k, r, 0, j] V[r, c, i, 0]
      M[(c, i), (k, j)] = W[k, c, i, j],  M ~ U_R S_R V_R^T,
      V[r, c, i, 0] = U_R[(c, i), r] sqrt(s_r),  H[k, r, 0, j] = V_R[(k, j), r] sqrt(s_r)

  (rank at most ``min(C kh, K kw)``). Cost per output position ``R (C kh + K kw)`` against
  ``K C kh kw``.
- :func:`low_rank` (Denton et al. 2014; Zhang, Zou, He, Sun, "Accelerating Very Deep
  Convolutional Networks for Classification and Detection", TPAMI 2016, without their
  data-driven correction): the ``(K, C kh kw)`` matrix of the kernel, or a ``Linear``'s
  ``(out, in)`` weight, at rank ``R``: a ``kh x kw`` convolution ``C -> R`` (for a 1x1 or a
  Linear, a pointwise map) followed by a 1x1 ``R -> K``::

      W[k, :] ~ sum_r second[k, r] first[r, :]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import check_int, check_weight, out, spectrum_once, svd
from .factors import _need, _shape
from .grouped import GroupedFactors, per_group
from .methods import Method, register


@dataclass(frozen=True, eq=False)
class SpatialSVDFactors:
    """``vertical (R, C, kh, 1)`` then ``horizontal (K, R, 1, kw)``: conv weights, in order."""

    vertical: Tensor  # (R, C, kh, 1)
    horizontal: Tensor  # (K, R, 1, kw)

    def __post_init__(self) -> None:
        v, h = _shape(self.vertical), _shape(self.horizontal)
        ok = len(v) == 4 and len(h) == 4 and v[3] == 1 and h[2] == 1 and v[0] == h[1]
        shapes = f"vertical {v} must be (R, C, kh, 1) and horizontal {h} (K, R, 1, kw)"
        _need(ok, "SpatialSVDFactors", shapes + " with the same R")

    @property
    def rank(self) -> int:
        return self.vertical.shape[0]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The kernel's shape ``(K, C, kh, kw)``."""
        return (self.horizontal.shape[0], self.vertical.shape[1], self.vertical.shape[2],
                self.horizontal.shape[3])  # fmt: skip

    def to_dense(self) -> Tensor:
        """``W[k, c, i, j] = sum_r H[k, r, 0, j] V[r, c, i, 0]``."""
        return torch.einsum("krj,rci->kcij", self.horizontal[:, :, 0], self.vertical[..., 0])


@dataclass(frozen=True, eq=False)
class LowRankFactors:
    """``first`` then ``second``, in the layout of the layer they replace: for a Linear
    ``(R, in)`` and ``(out, R)``; for a convolution ``(R, C, kh, kw)`` and ``(K, R, 1, 1)``."""

    first: Tensor
    second: Tensor

    def __post_init__(self) -> None:
        f, s = _shape(self.first), _shape(self.second)
        ok = len(f) == len(s) and len(f) in (2, 4) and f[0] == s[1] and s[2:] in ((), (1, 1))
        layouts = "(R, in), (out, R) or (R, C, kh, kw), (K, R, 1, 1)"
        _need(ok, "LowRankFactors", f"first {f} and second {s} must be {layouts}")

    @property
    def rank(self) -> int:
        return self.first.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The replaced weight's shape: ``(out, in)`` or ``(K, C, kh, kw)``."""
        return (self.second.shape[0], *self.first.shape[1:])

    def to_dense(self) -> Tensor:
        """``W = second @ first`` (on the flattened trailing dimensions)."""
        dense = self.second.flatten(1) @ self.first.flatten(1)
        return dense.reshape(self.shape)


def spatial_svd(
    weight: Tensor, rank: int, *, groups: int = 1, name: str | None = None
) -> SpatialSVDFactors | GroupedFactors:
    """Jaderberg scheme-2 factors of ``weight (K, C, kh, kw)`` at ``rank`` (optimal in Frobenius
    norm for the structure; see the module). ``groups > 1``: per group, see
    :mod:`~leanconv.decompose.grouped`."""

    def one(w: Tensor, label: str | None) -> SpatialSVDFactors:
        x = check_weight(w, label)
        k, c, kh, kw = x.shape
        limit = min(c * kh, k * kw)
        r = check_int(rank, "rank", label, maximum=limit, why=f"min(C*kh, K*kw) = {limit}")
        matrix = x.permute(1, 2, 0, 3).reshape(c * kh, k * kw)
        u, s, vh = spectrum_once("svd", matrix, svd)
        root = s[:r].sqrt()
        vertical = (u[:, :r] * root).T.reshape(r, c, kh, 1)
        horizontal = (vh[:r].T * root).reshape(k, kw, r).permute(0, 2, 1)[:, :, None, :]
        return SpatialSVDFactors(out(vertical, w), out(horizontal, w))

    return per_group(weight, groups, name, one)


def low_rank(
    weight: Tensor, rank: int, *, groups: int = 1, name: str | None = None
) -> LowRankFactors | GroupedFactors:
    """Truncated SVD of a Linear weight ``(out, in)`` or of a conv kernel ``(K, C, kh, kw)``
    seen as ``(K, C kh kw)``; the best rank-``rank`` approximation (Eckart-Young)."""

    def one(w: Tensor, label: str | None) -> LowRankFactors:
        x = check_weight(w, label, ndims=(2, 4))
        matrix = x.reshape(x.shape[0], -1)
        limit = min(matrix.shape)
        r = check_int(rank, "rank", label, maximum=limit,
                      why=f"min of the weight matrix {tuple(matrix.shape)}")  # fmt: skip
        u, s, vh = spectrum_once("svd", matrix, svd)
        root = s[:r].sqrt()
        first = (vh[:r] * root[:, None]).reshape(r, *x.shape[1:])
        second = u[:, :r] * root
        if x.dim() == 4:
            second = second[:, :, None, None]
        return LowRankFactors(out(first, w), out(second, w))

    return per_group(weight, groups, name, one)


__all__ = ["LowRankFactors", "SpatialSVDFactors", "low_rank", "spatial_svd"]


register(Method(
    name="spatial_svd", aliases=("svd",),
    # kh x 1 C -> R, 1 x kw R -> K (Jaderberg et al. 2014)
    chain=lambda c, k, kh, kw, g, rank: [
        (c, g * rank, (kh, 1), "h", g), (g * rank, k, (1, kw), "w", g)],
    budget_ranks=lambda t, k, c, kh, kw: (t, min(c * kh, k * kw)),
    factorise=lambda w, rank, groups, name, seed: spatial_svd(w, rank, groups=groups, name=name),
    weights=lambda f: [f.vertical, f.horizontal],
    auto_rank=lambda r_out, r_in: max(1, min(r_out, r_in)),
))  # fmt: skip

register(Method(
    name="low_rank", aliases=("lowrank",),
    # kh x kw C -> R, 1x1 R -> K (the truncated SVD of the K x (C kh kw) matrix)
    chain=lambda c, k, kh, kw, g, rank: [
        (c, g * rank, (kh, kw), "full", g), (g * rank, k, 1, "1x1", g)],
    budget_ranks=lambda t, k, c, kh, kw: (t, min(k, c * kh * kw)),
    factorise=lambda w, rank, groups, name, seed: low_rank(w, rank, groups=groups, name=name),
    weights=lambda f: [f.first, f.second if f.second.dim() == 4 else f.second[:, :, None, None]],
    auto_rank=lambda r_out, r_in: max(1, min(r_out, r_in)),
))  # fmt: skip
