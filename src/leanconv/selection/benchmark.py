"""Every applicable algorithm against ``torch.nn.functional.conv2d`` on one convolution.

For each algorithm (direct im2col, Winograd F(2x2), F(4x4), F(6x6) for small kernels at stride 1
or 2, FFT at stride 1): the median latency measured interleaved with ``F.conv2d`` in the same run,
the speedup against it, and the max and mean error relative to the largest output magnitude of a
float64 direct convolution. Algorithms that do not apply are listed with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..algorithms import conv2d, eligibility
from ..bench.timing import compare
from ..errors import InvalidSpecError

VARIANTS: tuple[tuple[str, str, object], ...] = (
    ("direct", "direct", None),
    ("im2col", "im2col", None),
    ("winograd F(2x2)", "winograd", 2),
    ("winograd F(4x4)", "winograd", 4),
    ("winograd F(6x6)", "winograd", 6),
    ("fft", "fft", None),
)


def _prepared(algorithm, tile, x, weight, bias, stride, padding, dilation, groups):
    """One call of ``algorithm``; Winograd and FFT with the filter transformed once, as the
    :mod:`leanconv.nn.fast` modules (and :func:`leanconv.accelerate`) keep it."""
    if (
        algorithm not in ("winograd", "fft")
        or isinstance(padding, tuple | list)
        and any(isinstance(p, tuple | list) for p in padding)
    ):
        return lambda: conv2d(
            x, weight, bias, stride, padding, dilation, groups, algorithm=algorithm, tile=tile
        )
    from ..nn.fast import FFTConv2d, WinogradConv2d

    k, cg, r, s = weight.shape
    conv = nn.Conv2d(cg * groups, k, (r, s), stride, padding, dilation, groups, bias is not None)
    conv = conv.to(weight.device, weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    if algorithm == "winograd":
        module = WinogradConv2d.from_conv(conv, tile=tile)
    else:
        if tile is not None:
            return lambda: conv2d(x, weight, bias, stride, padding, dilation, groups, "fft", tile)
        module = FFTConv2d.from_conv(conv)
    module.eval()
    return lambda: module(x)


def relative_errors(y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``|y - ref|`` per element over the largest ``|ref|`` (floored at the dtype's smallest
    normal number, for an all-zero reference)."""
    scale = ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny)
    return (y - ref).abs() / scale


def _applies(algorithm: str, x: torch.Tensor, weight: torch.Tensor, stride, dilation, groups):
    """Whether ``algorithm`` computes this convolution at all (:mod:`.eligibility`'s rules with
    their default limits: the benchmark tries everything the algorithms compute)."""
    geometry = (tuple(weight.shape[2:]), stride, dilation, groups, x.shape[-3])
    if algorithm == "winograd":
        return eligibility.winograd(*geometry, weight.shape[0])
    if algorithm == "fft":
        return eligibility.fft(*geometry)
    return eligibility.Verdict(True, f"{algorithm} computes every convolution")


@dataclass(frozen=True)
class AlgorithmResult:
    name: str
    ms: float | None
    speedup: float | None  # F.conv2d time / this time
    max_error: float | None
    mean_error: float | None
    skipped: str = ""


def benchmark_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    repeats: int = 7,
    variants=VARIANTS,
) -> list[AlgorithmResult]:
    """Time and check every variant on ``x`` against ``F.conv2d`` (see the module docstring)."""
    with torch.no_grad():
        reference = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                             stride, padding, dilation, groups)  # fmt: skip
    fns = {"F.conv2d": lambda: F.conv2d(x, weight, bias, stride, padding, dilation, groups)}
    results: dict[str, AlgorithmResult] = {}
    for name, algorithm, tile in variants:
        if algorithm == "direct":
            continue  # F.conv2d itself is the baseline
        verdict = _applies(algorithm, x, weight, stride, dilation, groups)
        if not verdict:
            results[name] = AlgorithmResult(name, None, None, None, None, verdict.reason)
            continue
        try:
            run = _prepared(algorithm, tile, x, weight, bias, stride, padding, dilation, groups)
            with torch.no_grad():
                y = run()
        except (InvalidSpecError, ValueError, RuntimeError, TypeError) as exc:
            results[name] = AlgorithmResult(name, None, None, None, None,
                                            str(exc).splitlines()[0])  # fmt: skip
            continue
        err = relative_errors(y.double(), reference)
        results[name] = AlgorithmResult(name, None, None, float(err.max()), float(err.mean()))
        fns[name] = run
    timings = compare(fns, warmup=2, repeats=repeats)
    base = timings["F.conv2d"].ms
    out = [AlgorithmResult("F.conv2d (direct)", base, 1.0, None, None)]
    for name, _, _ in variants:
        if name not in results:
            continue
        r = results[name]
        if r.skipped:
            out.append(r)
            continue
        ms = timings[name].ms
        out.append(AlgorithmResult(name, ms, base / ms, r.max_error, r.mean_error))
    return out
