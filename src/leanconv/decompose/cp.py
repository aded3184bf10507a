"""CP (canonical polyadic) decomposition of a convolution kernel, with a guard against degeneracy.

Lebedev, Ganin, Rakhuba, Oseledets, Lempitsky, "Speeding-up Convolutional Neural Networks Using
Fine-tuned CP-Decomposition", ICLR 2015. The kernel ``W`` of shape ``(K, C, kh, kw)`` is
approximated by ``R`` rank-one terms::

    W[k, c, i, j] ~ sum_r lambda[r] U_out[k, r] U_in[c, r] U_h[i, r] U_w[j, r]

which runs as 1x1 ``C -> R``, depthwise ``kh x 1``, depthwise ``1 x kw``, 1x1 ``R -> K``
(:class:`leanconv.nn.factorised.CPConv2d`).

Algorithm: alternating least squares (CP-ALS; Carroll & Chang 1970, Harshman 1970, Kolda & Bader
2009). Each factor ``F_n`` in turn solves the ridge-regularised normal equations::

    F_n (G_n + mu_n I) = M_n,   G_n = *_{m != n} F_m^T F_m  (Hadamard product, R x R),
    M_n = X_(n) (KR of the other factors)                    (MTTKRP),
    mu_n = ridge * trace(G_n) / R

by a Cholesky factorisation of the ``R x R`` system. The MTTKRPs of the channel modes are one
GEMM each on a precomputed unfolding against the Khatri-Rao product of the other three factors
(``C kh kw x R``, small because the kernel is tall-skinny in its spatial modes); the two spatial
modes share one contraction ``Z[r, i, j] = sum_{k, c} U_out[k, r] U_in[c, r] W[k, c, i, j]``
(the channel factors do not change between the two spatial updates). So one sweep costs three
``K C kh kw R`` GEMMs; a textbook MTTKRP (TensorLy's) forms a ``K C kw x R`` Khatri-Rao product
for each spatial mode (1.6 GB for a 512x512x3x3 kernel at rank 256).
The error follows from Gram matrices without rebuilding the kernel:
``||W - W_hat||^2 = ||W||^2 - 2 <M_w, U_w> + sum(G_w * U_w^T U_w)`` (exact once below 1e-5).

Degeneracy (Phan, Sobolev, Sozykin, Ermilov, Gusak, Tichavsky, Glukhov, Oseledets, Cichocki,
"Stable Low-rank Tensor Decomposition for Compression of Convolutional Neural Network", ECCV
2020; and the "diverging components" of Kruskal, Harshman, Lundy 1989): when the best rank-R fit
does not exist, ALS drives pairs of components to huge, nearly opposite norms whose sum stays
small. Guards:

- the Tikhonov term ``mu_n ||F_n||^2`` (``ridge``, relative to the Gram's mean diagonal) makes
  the regularised problem coercive, so its minimiser has bounded components (norm-bounded ALS).
  The default ``1e-6`` biases the fit by about that much (an exact rank-4 kernel comes back at
  relative error 1.6e-6; ``ridge=0`` recovers it to round-off);
- the column norms are rebalanced after every sweep (``lambda`` spread evenly over the four
  factors), so no factor carries the whole scale;
- every sweep checks the *norm ratio* ``sqrt(sum_r lambda_r^2) / ||W||_F``: about 1 for a sound
  fit (exactly ``||W_hat|| / ||W||`` for orthogonal components), far above 1 when components
  cancel. Above ``max_norm_ratio`` (or on NaN/inf) the run stops and is flagged ``degenerate``;
  :func:`cp` then raises :class:`DegenerateDecompositionError` (or warns, ``on_degenerate``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ._common import F64, check_int, check_weight, leading_left, out, unfold, where
from ._errors import DegenerateDecompositionError, InvalidRankError
from .factors import CPFactors
from .grouped import GroupedFactors, per_group
from .methods import Method, register

Init = Literal["svd", "random"] | CPFactors


@dataclass(frozen=True, eq=False)
class CPResult:
    """The outcome of :func:`cp_als`: the factors and what to judge them by."""

    factors: CPFactors  # normalised columns, lambda in ``weights``, sorted by lambda
    relative_error: float  # ||W - W_hat||_F / ||W||_F, from the dense reconstruction
    iterations: int  # ALS sweeps run
    converged: bool  # the error changed by less than ``tol`` in the last sweep
    degenerate: bool  # norm ratio above ``max_norm_ratio``, or non-finite factors
    norm_ratio: float  # sqrt(sum_r lambda_r^2) / ||W||_F (about 1 when sound)
    errors: tuple[float, ...]  # relative error after each sweep
    message: str = ""

    def describe(self) -> str:
        state = "degenerate" if self.degenerate else "converged" if self.converged else "stopped"
        return (
            f"CP rank {self.factors.rank}: relative error {self.relative_error:.4g} after "
            f"{self.iterations} sweeps ({state}; norm ratio {self.norm_ratio:.3g})"
        )


def max_cp_rank(shape: tuple[int, ...]) -> int:
    """An upper bound on the CP rank of a tensor: the product of all but its largest dimension
    (stack the slices along the largest mode; Kruskal 1989)."""
    return math.prod(shape) // max(shape)


def _random(shape: tuple[int, int], gen: torch.Generator, device) -> Tensor:
    return (torch.randn(shape, generator=gen, dtype=F64) / math.sqrt(shape[0])).to(device)


def _svd_init(x: Tensor, mode: int, rank: int, gen: torch.Generator) -> Tensor:
    """Leading left singular vectors of the mode-``mode`` unfolding; when ``rank`` exceeds the
    dimension, the remaining columns are random (as TensorLy's ``init="svd"``)."""
    n = x.shape[mode]
    lead = leading_left(unfold(x, mode), min(n, rank))
    if rank <= n:
        return lead
    return torch.cat([lead, _random((n, rank - n), gen, x.device)], dim=1)


def _kr(*factors: Tensor) -> Tensor:
    """Khatri-Rao product (column-wise Kronecker) of ``(n_i, R)`` factors, rows in C order."""
    out_ = factors[0]
    for f in factors[1:]:
        out_ = (out_[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
    return out_


def _solve(m: Tensor, gram: Tensor, ridge: float) -> Tensor:
    """``F`` with ``F (G + mu I) = M``, ``mu = ridge * trace(G) / R``: Cholesky, else lstsq."""
    r = gram.shape[0]
    mu = ridge * float(torch.diagonal(gram).sum()) / r
    system = gram + mu * torch.eye(r, dtype=gram.dtype, device=gram.device) if mu > 0 else gram
    chol, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        return torch.cholesky_solve(m.T, chol).T
    return torch.linalg.lstsq(system, m.T).solution.T


class _ALS:
    """State of one CP-ALS run on a float64 kernel ``x``."""

    def __init__(self, x: Tensor, factors: list[Tensor], ridge: float):
        k, c, kh, kw = x.shape
        self.shape = (k, c, kh, kw)
        self.x0 = x.reshape(k, -1)  # (K, C kh kw)
        self.x1 = x.transpose(0, 1).reshape(c, -1)  # (C, K kh kw)
        self.norm2 = float((x * x).sum())
        self.ridge = ridge
        self.f = factors
        self.grams = [f.T @ f for f in factors]

    def _set(self, n: int, value: Tensor) -> None:
        self.f[n] = value
        self.grams[n] = value.T @ value

    def _others(self, n: int) -> Tensor:
        g = None
        for m, gram in enumerate(self.grams):
            if m != n:
                g = gram if g is None else g * gram
        return g

    def sweep(self) -> float:
        """One ALS sweep over (out, in, height, width); returns the squared error (Gram form)."""
        k, c, kh, kw = self.shape
        a, b, h, w = self.f
        rank = a.shape[1]
        self._set(0, _solve(self.x0 @ _kr(b, h, w), self._others(0), self.ridge))
        a = self.f[0]
        self._set(1, _solve(self.x1 @ _kr(a, h, w), self._others(1), self.ridge))
        b = self.f[1]
        y = (a.T @ self.x0).reshape(rank, c, kh * kw)  # (R, C, kh kw)
        z = torch.bmm(b.T[:, None, :], y).reshape(rank, kh, kw)  # Z[r, i, j]
        self._set(2, _solve(torch.einsum("rij,jr->ir", z, w), self._others(2), self.ridge))
        h = self.f[2]
        m_w = torch.einsum("rij,ir->jr", z, h)
        g_w = self._others(3)
        self._set(3, _solve(m_w, g_w, self.ridge))
        w = self.f[3]
        return self.norm2 - 2 * float((m_w * w).sum()) + float((g_w * self.grams[3]).sum())

    def lambdas(self) -> Tensor:
        norms = [torch.linalg.vector_norm(f, dim=0) for f in self.f]
        return norms[0] * norms[1] * norms[2] * norms[3]

    def rebalance(self) -> None:
        """Give every factor's column ``r`` the norm ``lambda_r ** (1/4)`` (same tensor)."""
        norms = [torch.linalg.vector_norm(f, dim=0) for f in self.f]
        lam = norms[0] * norms[1] * norms[2] * norms[3]
        target = lam.pow(0.25)
        for n, (f, nf) in enumerate(zip(self.f, norms, strict=True)):
            scale = torch.where(nf > 0, target / torch.where(nf > 0, nf, 1.0), 1.0)
            self._set(n, f * scale)

    def dense(self) -> Tensor:
        a, b, h, w = self.f
        return (a @ _kr(b, h, w).T).reshape(self.shape)

    def exact_error2(self, x: Tensor) -> float:
        return float(((x - self.dense()) ** 2).sum())

    def finite(self) -> bool:
        return all(bool(torch.isfinite(f).all()) for f in self.f)


def _initial(x: Tensor, rank: int, init: Init, seed: int, name: str | None) -> list[Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    k, c, kh, kw = x.shape
    if isinstance(init, CPFactors):
        if init.shape != tuple(x.shape) or init.rank != rank:
            raise InvalidRankError(
                f"{where(name)}init factors of kernel {init.shape} rank {init.rank} do not fit "
                f"weight {tuple(x.shape)} at rank {rank}"
            )
        return [
            t.detach().to(device=x.device, dtype=F64)
            for t in (init.scaled_output(), init.input, init.height, init.width)
        ]
    if init == "random":
        return [_random((n, rank), gen, x.device) for n in (k, c, kh, kw)]
    if init == "svd":
        # The output factor is solved for first, so its start is never used: skip its SVD.
        factors = [torch.zeros(k, rank, dtype=F64, device=x.device)]
        factors += [_svd_init(x, mode, rank, gen) for mode in (1, 2, 3)]
        return factors
    raise InvalidRankError(f"{where(name)}init={init!r} is not 'svd', 'random' or CPFactors")


def cp_als(
    weight: Tensor,
    rank: int,
    n_iter: int = 100,
    tol: float = 1e-8,
    *,
    seed: int = 0,
    init: Init = "svd",
    ridge: float = 1e-6,
    max_norm_ratio: float = 10.0,
    name: str | None = None,
) -> CPResult:
    """Rank-``rank`` CP of ``weight (K, C, kh, kw)`` by ridge-regularised ALS, with diagnostics.

    ``n_iter`` sweeps at most; stops when the relative error changes by less than ``tol``
    (absolute), or flags ``degenerate`` and stops when the norm ratio exceeds
    ``max_norm_ratio`` or a factor turns non-finite (the last finite factors are returned).
    ``init``: ``"svd"`` (leading singular vectors of each unfolding, random columns beyond the
    mode's size), ``"random"`` (Gaussian, from ``seed``) or a :class:`CPFactors` warm start.
    ``ridge``: the relative Tikhonov weight (0 for plain ALS). Never raises on degeneracy; see
    :func:`cp`. Computed in float64 on the weight's device; factors come back in its dtype.
    """
    x = check_weight(weight, name)
    limit = max_cp_rank(tuple(x.shape))
    why = f"the CP rank of a {tuple(x.shape)} kernel is at most {limit}"
    rank = check_int(rank, "rank", name, maximum=limit, why=why)
    n_iter = check_int(n_iter, "n_iter", name, minimum=0)
    if not ridge >= 0 or not max_norm_ratio > 0:
        raise InvalidRankError(
            f"{where(name)}ridge={ridge} must be >= 0 and max_norm_ratio={max_norm_ratio} > 0"
        )
    als = _ALS(x, _initial(x, rank, init, seed, name), ridge)
    norm = math.sqrt(als.norm2)
    if init == "svd" or n_iter == 0:
        als._set(0, _solve(als.x0 @ _kr(*als.f[1:]), als._others(0), ridge))
    errors: list[float] = []
    converged = degenerate = False
    message = ""
    iterations = 0
    last_good = [f.clone() for f in als.f]
    for _ in range(n_iter):
        error2 = als.sweep()
        iterations += 1
        if not als.finite() or not math.isfinite(error2):
            degenerate, message = True, "factors became non-finite"
            als.f = last_good
            break
        als.rebalance()
        if error2 < 1e-10 * als.norm2:  # the Gram identity cancels: measure directly
            error2 = als.exact_error2(x)
        errors.append(math.sqrt(max(error2, 0.0)) / norm)
        ratio = float(torch.linalg.vector_norm(als.lambdas())) / norm
        if ratio > max_norm_ratio:
            degenerate = True
            message = (
                f"norm ratio sqrt(sum lambda^2)/||W|| = {ratio:.3g} > {max_norm_ratio}: "
                "components diverge and cancel"
            )
            break
        last_good = [f.clone() for f in als.f]
        if len(errors) > 1 and abs(errors[-2] - errors[-1]) < tol:
            converged = True
            break
    residual = math.sqrt(als.exact_error2(x)) / norm
    factors = _normalised(als.f, like=weight)
    ratio = float(torch.linalg.vector_norm(factors.weights.to(F64))) / norm
    return CPResult(factors, residual, iterations, converged, degenerate, ratio, tuple(errors),
                    message)  # fmt: skip


def _normalised(f: list[Tensor], like: Tensor) -> CPFactors:
    norms = [torch.linalg.vector_norm(t, dim=0) for t in f]
    lam = norms[0] * norms[1] * norms[2] * norms[3]
    order = torch.argsort(lam, descending=True)
    unit = [torch.where(n > 0, t / torch.where(n > 0, n, 1.0), t) for t, n in zip(f, norms)]
    unit = [t[:, order] for t in unit]
    return CPFactors(*(out(t, like) for t in unit), weights=out(lam[order], like))


def cp(
    weight: Tensor,
    rank: int,
    n_iter: int = 100,
    tol: float = 1e-8,
    *,
    on_degenerate: Literal["raise", "warn", "ignore"] = "raise",
    groups: int = 1,
    name: str | None = None,
    **als_options,
) -> CPFactors | GroupedFactors:
    """Rank-``rank`` CP factors of ``weight (K, C, kh, kw)`` (:func:`cp_als`), checked.

    ``n_iter``, ``tol`` and the keywords ``seed``, ``init``, ``ridge`` and ``max_norm_ratio`` are
    :func:`cp_als`'s, with its defaults. A degenerate run raises
    :class:`DegenerateDecompositionError` (its ``result`` holds the :class:`CPResult`), or warns,
    or passes, by ``on_degenerate``. With ``groups > 1`` the weight is ``(K, C/g, kh, kw)`` and
    each group gets its own rank-``rank`` CP.
    """
    if on_degenerate not in ("raise", "warn", "ignore"):
        raise InvalidRankError(
            f"{where(name)}on_degenerate={on_degenerate!r} is not 'raise', 'warn' or 'ignore'"
        )

    def one(w: Tensor, label: str | None) -> CPFactors:
        result = cp_als(w, rank, n_iter, tol, name=label, **als_options)
        if result.degenerate and on_degenerate != "ignore":
            text = (
                f"{where(label)}CP-ALS at rank {rank} is degenerate: {result.message} "
                f"(relative error {result.relative_error:.3g}); try a lower rank, a larger "
                "ridge, or Tucker-2"
            )
            if on_degenerate == "raise":
                raise DegenerateDecompositionError(text, result)
            warnings.warn(text, RuntimeWarning, stacklevel=3)
        return result.factors

    return per_group(weight, groups, name, one)


__all__ = ["CPResult", "cp", "cp_als", "max_cp_rank"]


def _cp_weights(f) -> list[Tensor]:
    r = f.rank
    return [
        f.input.t().reshape(r, -1, 1, 1),
        f.height.t().reshape(r, 1, -1, 1),
        f.width.t().reshape(r, 1, 1, -1),
        f.scaled_output().reshape(-1, r, 1, 1),
    ]


register(Method(
    name="cp", aliases=("parafac",),
    # 1x1 C -> R, depthwise kh x 1, depthwise 1 x kw, 1x1 R -> K (Lebedev et al. 2015)
    chain=lambda c, k, kh, kw, g, rank: [
        (c, g * rank, 1, "1x1", g), (g * rank, g * rank, (kh, 1), "h", g * rank),
        (g * rank, g * rank, (1, kw), "w", g * rank), (g * rank, k, 1, "1x1", g)],
    budget_ranks=lambda t, k, c, kh, kw: (t, max_cp_rank((k, c, kh, kw))),
    factorise=lambda w, rank, groups, name, seed: cp(w, rank, groups=groups, name=name, seed=seed),
    weights=_cp_weights,
    auto_rank=lambda r_out, r_in: max(1, min(r_out, r_in)),
))  # fmt: skip
