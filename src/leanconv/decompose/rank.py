"""Rank selection: by spectral energy, by empirical VBMF, by a cost budget, and the data-aware
output error of a replacement.

- :func:`energy_rank`: the smallest ``r`` keeping a ``fraction`` of the squared singular values
  of a mode-``n`` unfolding, ``sum_{q < r} s_q^2 >= fraction * sum_q s_q^2`` (the rank whose
  truncated SVD has relative error at most ``sqrt(1 - fraction)``).
- :func:`vbmf` / :func:`vbmf_rank`: empirical variational Bayesian matrix factorisation with its
  global analytic solution (Nakajima, Sugiyama, Babacan, Tomioka, "Global Analytic Solution of
  Fully-observed Variational Bayesian Matrix Factorization", JMLR 14, 2013; noise variance
  estimated as in Nakajima, Tomioka, Sugiyama, Babacan, "Perfect Dimensionality Recovery by
  Variational Bayesian PCA", NeurIPS 2012), as Kim et al. (ICLR 2016) use it on the mode-0 and
  mode-1 unfoldings to choose Tucker-2 ranks. For ``Y (L x M)``, ``L <= M``, ``alpha = L / M``:
  a singular value survives iff ``s > sqrt(M sigma^2 (1 + tau_bar)(1 + alpha / tau_bar))`` with
  ``tau_bar ~ 2.5129 sqrt(alpha)``; ``sigma^2`` minimises the free energy (their Eq. 15)::

      F(sigma^2) = sum_{x_h <= x_bar} (x_h - log x_h)
                   + sum_{x_h > x_bar} (x_h - tau_h + log((tau_h + 1) / x_h)
                                        + alpha log(tau_h / alpha + 1))
                   + residual / (M sigma^2) + (L - H) log sigma^2,
      x_h = s_h^2 / (M sigma^2),  tau_h = (x_h - 1 - alpha + sqrt((x_h - 1 - alpha)^2
                                                                  - 4 alpha)) / 2

  found here by a log-spaced grid and golden-section refinement between the paper's bounds.
  ``weakening`` ``w`` in ``(0, 1]`` moves the rank from the full rank ``n`` towards the VBMF
  rank ``r_v``: ``ceil(n - w (n - r_v))`` (Gusak et al., "Automated Multi-Stage Compression of
  Neural Networks", ICCV Workshops 2019); ``w = 1`` is plain VBMF.
- :func:`budget_rank`: the largest rank whose factor convolutions (:func:`factor_specs`) cost at
  most ``target_ratio`` of the layer, in MACs or parameters (:func:`leanconv.cost.conv_cost`).
- :func:`output_error`: ``||f(X) - g(X)||_F / ||f(X)||_F`` over calibration inputs ``X``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..cost.formulas import conv_cost
from ..spec import ConvSpec, part_geometry
from . import methods as registry
from ._common import F64, check_fraction, check_int, check_weight, svd, unfold, where
from ._errors import DecompositionError, InvalidRankError

Method = Literal["cp", "tucker2", "tt", "spatial_svd", "low_rank", "depthwise"]
canonical_method = registry.canonical_method


def __getattr__(name: str):
    """``METHODS`` and ``ALIASES``, read from the registry (:mod:`.methods`) when asked, once
    every method module has registered itself."""
    if name == "METHODS":
        return registry.names()
    if name == "ALIASES":
        return registry.aliases()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- spectra
def _matrix(weight: Tensor, mode: int, name: str | None) -> Tensor:
    x = check_weight(weight, name, ndims=(2, 4))
    mode = check_int(mode, "mode", name, minimum=0, maximum=x.dim() - 1,
                     why=f"the weight has {x.dim()} modes")  # fmt: skip
    return unfold(x, mode)


def energy_rank(weight: Tensor, fraction: float, mode: int = 0, *, name: str | None = None) -> int:
    """The smallest rank keeping ``fraction`` of the energy of the mode-``mode`` unfolding of a
    matrix or ``(K, C, kh, kw)`` kernel (mode 0: output channels, 1: input channels)."""
    fraction = check_fraction(fraction, "fraction", name)
    s = svd(_matrix(weight, mode, name))[1]
    energy = torch.cumsum(s * s, 0)
    # A little slack so that fraction=1 and exact fractions are not lost to round-off.
    needed = fraction * float(energy[-1]) * (1 - 1e-12)
    return int((energy < needed).sum()) + 1


@dataclass(frozen=True)
class VBMFResult:
    """Empirical VBMF of a matrix: ``rank`` (can be 0), the noise variance ``sigma2`` and the
    posterior-mean singular values ``estimate`` of the kept components."""

    rank: int
    sigma2: float
    threshold: float  # singular values above it are kept
    estimate: tuple[float, ...]


_TAU_BAR = 2.5129  # tau_bar / sqrt(alpha): the root of Nakajima et al.'s Psi (their Eq. 11)


def _tau(x: Tensor, alpha: float) -> Tensor:
    return 0.5 * (x - (1 + alpha) + torch.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _free_energy(sigma2: float, s: Tensor, l: int, m: int, residual: float, x_bar: float) -> float:
    alpha = l / m
    x = s * s / (m * sigma2)
    big, small = x[x > x_bar], x[x <= x_bar]
    tau = _tau(big, alpha)
    value = float((small - torch.log(small)).sum())
    value += float((big - tau + torch.log((tau + 1) / big)).sum())
    value += alpha * float(torch.log(tau / alpha + 1).sum())
    return value + residual / (m * sigma2) + (l - s.numel()) * math.log(sigma2)


def vbmf(matrix: Tensor, sigma2: float | None = None, *, name: str | None = None) -> VBMFResult:
    """Empirical VBMF (Nakajima et al. 2013) of a 2-D ``matrix``; ``sigma2`` known or estimated."""
    y = check_weight(matrix, name, ndims=(2,), arg="matrix")
    if y.shape[0] > y.shape[1]:
        y = y.T
    l, m = y.shape
    alpha = l / m
    tau_bar = _TAU_BAR * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    s = svd(y)[1]
    if sigma2 is None:
        total = float((s * s).sum())
        upper = total / (l * m)
        h_ub = min(math.ceil(l / (1 + alpha)) - 1, l) - 1  # most components EVB can keep, - 1
        tail = s[h_ub + 1 :]
        lower = max(float(tail[0]) ** 2 / (m * x_bar), float((tail * tail).mean()) / m)
        lower = min(lower, upper)
        sigma2 = _minimise_log(lambda v: _free_energy(v, s, l, m, 0.0, x_bar), lower, upper)
    elif not sigma2 > 0:
        raise InvalidRankError(f"{where(name)}sigma2={sigma2} must be positive")
    threshold = math.sqrt(m * sigma2 * x_bar)
    kept = s[s > threshold]
    ratio = (l + m) * sigma2 / kept**2
    root = torch.sqrt((1 - ratio) ** 2 - 4 * l * m * sigma2**2 / kept**4)
    estimate = kept / 2 * (1 - ratio + root)
    return VBMFResult(int(kept.numel()), float(sigma2), threshold, tuple(estimate.tolist()))


def _minimise_log(f: Callable[[float], float], lower: float, upper: float) -> float:
    """Minimise ``f`` on ``[lower, upper]`` in log scale: a 64-point grid, then golden section
    around the best grid point."""
    if upper <= lower * (1 + 1e-12):
        return upper
    lo, hi = math.log(lower), math.log(upper)
    grid = [lo + (hi - lo) * i / 63 for i in range(64)]
    values = [f(math.exp(t)) for t in grid]
    best = min(range(64), key=values.__getitem__)
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, 63)]
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(math.exp(d))
    t = (a + b) / 2
    return math.exp(t) if f(math.exp(t)) <= values[best] else math.exp(grid[best])


def vbmf_rank(
    weight: Tensor,
    mode: int = 0,
    weakening: float = 1.0,
    *,
    sigma2: float | None = None,
    name: str | None = None,
) -> int:
    """The (weakened) EVBMF rank of the mode-``mode`` unfolding of a matrix or kernel, at least 1.

    Kim et al. 2016 take ``R_out = vbmf_rank(W, 0)`` and ``R_in = vbmf_rank(W, 1)``.
    """
    w = check_fraction(weakening, "weakening", name)
    matrix = _matrix(weight, mode, name)
    full = min(matrix.shape)
    r = vbmf(matrix, sigma2, name=name).rank
    return max(1, math.ceil(full - w * (full - r) - 1e-9))


# ---------------------------------------------------------------------- cost budget
def factor_specs(spec: ConvSpec, method: Method, rank) -> list[ConvSpec]:
    """The chain of convolutions a ``method`` at ``rank`` replaces ``spec`` by, in order.

    Ranks per group (``spec.groups = g`` multiplies the factor channels by ``g`` and groups them,
    see :mod:`~leanconv.decompose.grouped`): ``cp`` R; ``tucker2`` (R_out, R_in); ``tt`` (r1, r2,
    r3); ``spatial_svd`` R; ``low_rank`` R; ``depthwise`` the multiplier M. Stride, padding and
    dilation go to the factor that convolves along their dimension (as in
    :mod:`leanconv.nn.factorised`); the last factor carries the bias.
    """
    where_ = where(spec.name)
    if spec.ndim != 2 or spec.transposed:
        raise InvalidRankError(f"{where_}only 2-D direct convolutions are decomposed: {spec}")
    if method not in registry.REGISTRY:
        raise InvalidRankError(f"{where_}method={method!r} is not one of {registry.names()}")
    kh, kw = spec.kernel_size
    # (c_in, c_out, kernel, part, groups) per factor, from the method's record
    chain = registry.REGISTRY[method].chain(spec.in_channels, spec.out_channels, kh, kw,
                                            spec.groups, rank)  # fmt: skip
    specs: list[ConvSpec] = []
    size = spec.input_size
    for n, (c_in, c_out, kernel, part, groups) in enumerate(chain):
        stride, padding, dilation = part_geometry(spec.stride, spec.padding, spec.dilation, part)
        last = n == len(chain) - 1
        s = ConvSpec(c_in, c_out, kernel, size, stride, padding, dilation, groups=groups,
                     bias=spec.bias and last, batch=spec.batch, dtype=spec.dtype,
                     name=f"{spec.name}.{n}" if spec.name else "")  # fmt: skip
        specs.append(s)
        size = s.output_size
    return specs


def _ranks_of(method: str, t: int, k: int, c: int, kh: int, kw: int):
    """The rank(s) of ``method`` at budget step ``t`` (per group), and the largest step."""
    return registry.REGISTRY[method].budget_ranks(t, k, c, kh, kw)


def budget_rank(
    layer: ConvSpec | Tensor,
    method: Method,
    target_ratio: float,
    by: Literal["macs", "params"] = "macs",
    *,
    groups: int = 1,
    name: str | None = None,
):
    """The largest rank of ``method`` whose factor convolutions cost at most ``target_ratio``
    times the layer (MACs or parameters, bias included), by bisection (cost grows with rank).

    ``layer``: a :class:`ConvSpec`, or a weight ``(K, C/g, kh, kw)`` (then stride 1 and "same"
    padding, where the MACs ratio does not depend on the input size). Returns an int, or
    ``(R_out, R_in)`` for ``tucker2`` (both grown in proportion to ``K`` and ``C``) and
    ``(r1, r2, r3)`` for ``tt`` (equal, clipped to :func:`max_tt_ranks`). Raises
    :class:`InvalidRankError` when even rank 1 costs more than the target.
    """
    if isinstance(layer, ConvSpec):
        spec = layer if not name else layer.with_(name=name)
    else:
        x = check_weight(layer, name)
        g = check_int(groups, "groups", name)
        k, cg, kh, kw = x.shape
        spec = ConvSpec(cg * g, k, (kh, kw), (2 * kh + 1, 2 * kw + 1), padding="same",
                        groups=g, bias=False, dtype=layer.dtype, name=name or "")  # fmt: skip
    label = spec.name or name
    if by not in ("macs", "params"):
        raise InvalidRankError(f"{where(label)}by={by!r} is not 'macs' or 'params'")
    if (
        isinstance(target_ratio, bool)
        or not isinstance(target_ratio, int | float)
        or not (target_ratio > 0)
    ):
        raise InvalidRankError(f"{where(label)}target_ratio={target_ratio!r} must be positive")
    g = spec.groups
    k, c = spec.out_channels // g, spec.in_channels // g
    kh, kw = spec.kernel_size
    reference = getattr(conv_cost(spec), by)

    def ratio(t: int) -> float:
        ranks, _ = _ranks_of(method, t, k, c, kh, kw)
        total = sum(getattr(conv_cost(s), by) for s in factor_specs(spec, method, ranks))
        return total / reference

    if method not in registry.REGISTRY:
        raise InvalidRankError(f"{where(label)}method={method!r} is not one of {registry.names()}")
    top = _ranks_of(method, 1, k, c, kh, kw)[1]
    if ratio(1) > target_ratio:
        raise InvalidRankError(
            f"{where(label)}no {method} rank meets target_ratio={target_ratio} by {by}: rank 1 "
            f"already costs {ratio(1):.3g} of the layer"
        )
    lo, hi = 1, top  # invariant: ratio(lo) <= target
    if ratio(hi) <= target_ratio:
        return _ranks_of(method, hi, k, c, kh, kw)[0]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ratio(mid) <= target_ratio:
            lo = mid
        else:
            hi = mid
    return _ranks_of(method, lo, k, c, kh, kw)[0]


# ---------------------------------------------------------------------- data-aware error
def output_error(
    conv: Callable[[Tensor], Tensor],
    replacement: Callable[[Tensor], Tensor],
    calibration_inputs: Tensor | Iterable[Tensor],
    *,
    name: str | None = None,
) -> float:
    """``||conv(X) - replacement(X)||_F / ||conv(X)||_F`` over all calibration batches ``X``
    (the layer's own input activations), accumulated in float64, without gradients."""
    batches: Sequence[Tensor] | Iterable[Tensor]
    batches = [calibration_inputs] if isinstance(calibration_inputs, Tensor) else calibration_inputs
    num = den = 0.0
    seen = 0
    with torch.no_grad():
        for x in batches:
            y, z = conv(x), replacement(x)
            if y.shape != z.shape:
                raise DecompositionError(
                    f"{where(name)}replacement output {tuple(z.shape)} != layer output "
                    f"{tuple(y.shape)} for input {tuple(x.shape)}"
                )
            y, z = y.to(F64), z.to(F64)
            num += float(((y - z) ** 2).sum())
            den += float((y * y).sum())
            seen += 1
    if not seen:
        raise DecompositionError(f"{where(name)}calibration_inputs is empty")
    if den == 0:
        raise DecompositionError(f"{where(name)}the layer's output is all zeros on the inputs")
    return math.sqrt(num / den)


__all__ = [
    "canonical_method",
    "VBMFResult",
    "budget_rank",
    "energy_rank",
    "factor_specs",
    "output_error",
    "vbmf",
    "vbmf_rank",
]
