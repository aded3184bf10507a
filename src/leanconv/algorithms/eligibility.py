"""Where each fast algorithm applies, from the geometry of a convolution alone.

One rule per fast algorithm, on the kernel, stride, dilation, groups and channels. The rules'
defaults say what the algorithm can compute at all; a caller narrows them to where the algorithm
is worth trying by naming its limits, never by writing a second rule:

- the ``"auto"`` policy of :func:`leanconv.algorithms.choose` (no measurement, so thresholds from
  benchmarks: ``WINOGRAD_MIN_CHANNELS``, ``FFT_MIN_KERNEL`` there);
- the tuner, :func:`leanconv.accelerate` (it times what it tries, so wide limits);
- the planner's Winograd candidates, :mod:`leanconv.compress.algorithms` (3x3 stride 1 only, and a
  channel floor below which Winograd does not pay).

:mod:`leanconv.selection.eligibility` applies the same rules to an ``nn.Module`` (its type and
padding mode first). Each rule returns a :class:`Verdict`: true or false, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FFTLimits", "NarrowLimits", "Verdict", "WinogradLimits", "fft", "narrow", "winograd"]

IntPair = int | Sequence[int]


@dataclass(frozen=True)
class Verdict:
    """Whether an algorithm applies (``bool(verdict)``) and why, or why not."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class WinogradLimits:
    """Where :func:`winograd` says yes. The defaults: everything Winograd F(m x m, r x s) computes
    (stride and dilation through polyphase sub-problems, any groups).

    ``min_kernel``/``max_kernel``: every kernel side within these (None: no upper bound);
    ``max_stride``, ``max_dilation``: per side (None: any); ``grouped``: whether ``groups > 1``
    is accepted; ``min_channels``: input and output channels per group, at least.
    """

    min_kernel: int = 1
    max_kernel: int | None = None
    max_stride: int | None = None
    max_dilation: int | None = None
    grouped: bool = True
    min_channels: int = 1


@dataclass(frozen=True)
class NarrowLimits:
    """Where :func:`narrow` says yes: one group, at most ``max_kernel_rows`` kernel rows (the
    compiled kernel's limit) and at most ``max_out_channels`` output channels (None: any; the
    kernel computes any width, but wide layers fill library kernels' vectors already)."""

    max_out_channels: int | None = None
    max_kernel_rows: int = 64


@dataclass(frozen=True)
class FFTLimits:
    """Where :func:`fft` says yes. FFT convolution needs stride 1; beyond that the kernel must be
    large enough: its ``side`` (``"smaller"``: both sides, ``"larger"``: either side), dilation
    included when ``dilated``, at least ``min_kernel`` (``min_kernel_depthwise`` for a depthwise
    convolution, one input channel per group; None: ``min_kernel``). The defaults: any kernel."""

    min_kernel: int = 1
    min_kernel_depthwise: int | None = None
    side: str = "smaller"
    dilated: bool = True

    def __post_init__(self) -> None:
        if self.side not in ("smaller", "larger"):
            raise ValueError(f"FFTLimits.side={self.side!r} is not 'smaller' or 'larger'")


def _pair(value: IntPair) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    items = tuple(int(v) for v in value)
    return items * 2 if len(items) == 1 else items


def _side(value: tuple[int, int]) -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"


def winograd(
    kernel_size: IntPair,
    stride: IntPair,
    dilation: IntPair,
    groups: int,
    in_channels: int,
    out_channels: int,
    limits: WinogradLimits = WinogradLimits(),
) -> Verdict:
    """Winograd F(m x m, r x s) on this geometry within ``limits`` (see :class:`WinogradLimits`)."""
    (r, s), st, dil = _pair(kernel_size), _pair(stride), _pair(dilation)
    cg, kg = in_channels // groups, out_channels // groups
    low, high = limits.min_kernel, limits.max_kernel
    if min(r, s) < low or (high is not None and max(r, s) > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        return Verdict(False, f"kernel {r}x{s}: Winograd here needs sides {span}")
    if limits.max_stride is not None and max(st) > limits.max_stride:
        return Verdict(False, f"stride {_side(st)}: Winograd here needs <= {limits.max_stride}")
    if limits.max_dilation is not None and max(dil) > limits.max_dilation:
        return Verdict(
            False, f"dilation {_side(dil)}: Winograd here needs <= {limits.max_dilation}"
        )
    if groups > 1 and not limits.grouped:
        return Verdict(False, f"groups={groups}: Winograd here needs one group")
    if min(cg, kg) < limits.min_channels:
        return Verdict(
            False, f"{cg}->{kg} channels per group: Winograd here needs {limits.min_channels}"
        )
    return Verdict(True, f"{r}x{s} stride {_side(st)} with {cg}->{kg} channels per group")


def fft(
    kernel_size: IntPair,
    stride: IntPair,
    dilation: IntPair,
    groups: int,
    in_channels: int,
    limits: FFTLimits = FFTLimits(),
) -> Verdict:
    """FFT convolution on this geometry within ``limits`` (see :class:`FFTLimits`)."""
    kernel, st, dil = _pair(kernel_size), _pair(stride), _pair(dilation)
    if st != (1, 1):
        return Verdict(False, f"stride {_side(st)}: FFT convolution needs stride 1")
    if limits.dilated:
        kernel = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dil, strict=True))
    depthwise = in_channels // groups == 1 and groups > 1
    least = limits.min_kernel
    if depthwise and limits.min_kernel_depthwise is not None:
        least = limits.min_kernel_depthwise
    size = min(kernel) if limits.side == "smaller" else max(kernel)
    shown = f"{kernel[0]}x{kernel[1]}"
    if size < least:
        return Verdict(False, f"kernel {shown} < {least}: too small for FFT to win")
    return Verdict(True, f"kernel {shown} >= {least}")


def narrow(
    kernel_size: IntPair, groups: int, out_channels: int, limits: NarrowLimits = NarrowLimits()
) -> Verdict:
    """The narrow direct convolution (:mod:`leanconv.algorithms.narrow`) on this geometry within
    ``limits`` (see :class:`NarrowLimits`): any stride, padding and dilation."""
    rows = _pair(kernel_size)[0]
    if groups != 1:
        return Verdict(False, f"groups={groups}: the narrow kernel needs one group")
    if rows > limits.max_kernel_rows:
        return Verdict(False, f"{rows} kernel rows > {limits.max_kernel_rows}")
    most = limits.max_out_channels
    if most is not None and out_channels > most:
        return Verdict(False, f"{out_channels} output channels > {most}: not narrow")
    return Verdict(True, f"{out_channels} output channels, one group")
