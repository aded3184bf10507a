"""Fast convolution algorithms behind one entry point: :func:`conv2d`.

``algorithm=`` picks the method: ``"direct"`` (``torch.nn.functional.conv2d``), ``"im2col"``
(unfold + GEMM, the textbook reference), ``"winograd"`` (F(m x m, r x s) tiles with exact
Toom-Cook transforms, :mod:`.toomcook`), ``"fft"`` (real FFTs, for large kernels) or ``"auto"``
(:func:`choose`). Every method has ``F.conv2d`` semantics; bad arguments raise
:class:`~leanconv.errors.InvalidSpecError` naming the argument, never a wrong result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidSpecError
from . import eligibility, fft, im2col, native, toomcook, winograd
from ._geometry import (
    PaddingArg,
    all_finite,
    batched,
    conv_args,
    normalise,
    pad_input,
    unbatched,
)
from .eligibility import FFTLimits, WinogradLimits
from .toomcook import (
    WinogradTransform,
    WinogradTransform2D,
    default_points,
    nest,
    verify,
    winograd_transform,
    winograd_transform_2d,
)

ALGORITHMS = ("auto", "direct", "im2col", "winograd", "fft")

# Thresholds of the "auto" policy, from benchmarks/bench_winograd.py and bench_fft.py on a 2-core
# x86 CPU against oneDNN (docs/benchmarks.md, "Fast algorithms").
WINOGRAD_MIN_CHANNELS = 128  # per group, in and out, with the compiled transforms (1.3-1.7x)
WINOGRAD_MIN_CHANNELS_PYTORCH = 256  # with the PyTorch-only transforms (128: slower than direct)
WINOGRAD_MIN_TILES = 32  # 4x4 tiles in the batch (fewer: reading the 4x larger U dominates)
WINOGRAD_TILE = 4  # F(4x4, 3x3): 4x fewer multiplications, error ~10x direct in float32
# FFT from these kernel sides (both, after dilation). Dense layers: 9x9 0.8-2.3x, 11x11 0.9-2.6x,
# 15x15 3.9-10x. Depthwise: oneDNN's direct kernel is fast up to 13x13 (FFT 0.15-0.35x) and 20x
# slower from 17x17 on (FFT 4.5-11x). Measured with 2 threads on 2026-11-28.
FFT_MIN_KERNEL = 13
FFT_MIN_KERNEL_DEPTHWISE = 17

__all__ = [
    "ALGORITHMS",
    "AlgorithmChoice",
    "AlgorithmFallbackWarning",
    "WinogradTransform",
    "WinogradTransform2D",
    "choose",
    "conv2d",
    "default_points",
    "fft",
    "im2col",
    "nest",
    "toomcook",
    "verify",
    "winograd",
    "winograd_transform",
    "winograd_transform_2d",
]


class AlgorithmFallbackWarning(UserWarning):
    """``algorithm="auto"`` would have used a fast algorithm but fell back to direct."""


@dataclass(frozen=True)
class AlgorithmChoice:
    """What ``algorithm="auto"`` runs for one call, and why."""

    algorithm: str
    tile: int | tuple[int, int] | str | None
    reason: str


def choose(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> AlgorithmChoice:
    """The algorithm ``"auto"`` picks from shapes and dtype (values are checked by :func:`conv2d`).

    - float16 / bfloat16: direct (fast algorithms would lose accuracy);
    - stride 1 and a kernel of ``FFT_MIN_KERNEL`` (depthwise: ``FFT_MIN_KERNEL_DEPTHWISE``) or
      more on both sides (dilation included): FFT;
    - a 3x3 kernel, stride 1, dilation 1, at least ``WINOGRAD_MIN_CHANNELS`` channels per group
      (``WINOGRAD_MIN_CHANNELS_PYTORCH`` where the compiled transforms of :mod:`.native` do not
      apply) and at least ``WINOGRAD_MIN_TILES`` output tiles of 4x4 in the batch: Winograd
      F(4x4, 3x3);
    - anything else: direct (oneDNN runs close to GEMM peak; only fewer multiplications win).

    The kernel, stride, dilation and channel conditions are the rules of :mod:`.eligibility`
    (shared with the tuner and the planner) with these thresholds as their limits.
    """
    args = normalise(x, weight.shape, None, stride, padding, dilation, groups, "auto")
    k_out, cg, r, s = weight.shape
    if x.dtype not in (torch.float32, torch.float64):
        return AlgorithmChoice("direct", None, f"{x.dtype}: fast algorithms lose accuracy")
    geometry = ((r, s), args.stride, args.dilation, groups, cg * groups)
    fast = eligibility.fft(*geometry, FFTLimits(FFT_MIN_KERNEL, FFT_MIN_KERNEL_DEPTHWISE))
    if fast:
        return AlgorithmChoice("fft", None, fast.reason)
    ho, wo = args.output_size(*x.shape[-2:])
    batch = x.shape[0] if x.dim() == 4 else 1
    tiles = batch * -(-ho // WINOGRAD_TILE) * -(-wo // WINOGRAD_TILE)
    compiled = x.device.type == "cpu" and x.dtype == torch.float32 and native.available()
    min_channels = WINOGRAD_MIN_CHANNELS if compiled else WINOGRAD_MIN_CHANNELS_PYTORCH
    limits = WinogradLimits(3, 3, max_stride=1, max_dilation=1, min_channels=min_channels)
    fast = eligibility.winograd(*geometry, k_out, limits)
    if fast and tiles >= WINOGRAD_MIN_TILES:
        return AlgorithmChoice("winograd", WINOGRAD_TILE, fast.reason)
    return AlgorithmChoice("direct", None, "no fast algorithm is expected to win here")


def _direct(x, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    args = normalise(x, weight.shape, bias, stride, padding, dilation, groups, "direct")
    top, bottom, left, right = args.padding
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, args.stride, (top, left), args.dilation, groups)
    xb = pad_input(batched(x), args.padding)
    y = F.conv2d(xb, weight, bias, args.stride, 0, args.dilation, groups)
    return unbatched(y, x)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    algorithm: str = "auto",
    tile: int | tuple[int, int] | str | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` by the chosen ``algorithm`` (see the module docstring).

    ``padding``: an int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``(left, right, top,
    bottom)``, ``"same"`` or ``"valid"``. ``tile``: the Winograd output tile (default 4) or the FFT
    output tile (``"full"`` for the whole image; default from a cost model); not for direct or
    im2col. Under ``"auto"`` an input holding NaN or infinity falls back to direct with an
    :class:`AlgorithmFallbackWarning` (fast algorithms would spread it over whole tiles); asking
    for ``"winograd"`` or ``"fft"`` explicitly raises instead.
    """
    where = f"conv2d(algorithm={algorithm!r})"
    if algorithm not in ALGORITHMS:
        raise InvalidSpecError(f"algorithm={algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    conv_args(x, weight, bias, stride, padding, dilation, groups, where)
    if algorithm in ("direct", "im2col") and tile is not None:
        raise InvalidSpecError(f"{where}: tile={tile!r} applies to 'winograd' and 'fft' only")
    if algorithm == "auto":
        choice = choose(x, weight, stride, padding, dilation, groups)
        algorithm = choice.algorithm
        if tile is None:
            tile = choice.tile
        if algorithm != "direct":
            bad = [n for n, t in (("input", x), ("weight", weight)) if not all_finite(t)]
            if bad:
                warnings.warn(
                    f"conv2d: {' and '.join(bad)} hold NaN or infinity; using direct "
                    f"convolution instead of {algorithm} ({choice.reason})",
                    AlgorithmFallbackWarning,
                    stacklevel=2,
                )
                algorithm = "direct"
    if algorithm == "direct":
        return _direct(x, weight, bias, stride, padding, dilation, groups)
    if algorithm == "im2col":
        return im2col.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if algorithm == "winograd":
        if isinstance(tile, str):
            raise InvalidSpecError(f"{where}: tile={tile!r} must be an int or a pair for winograd")
        return winograd.conv2d(
            x,
            weight,
            bias,
            stride,
            padding,
            dilation,
            groups,
            WINOGRAD_TILE if tile is None else tile,
        )
    return fft.conv2d(x, weight, bias, stride, padding, dilation, groups, tile)
