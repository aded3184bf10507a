"""Which fast algorithm may replace a given module: one function per fast algorithm.

Each takes an ``nn.Module`` and checks, in this order, that it is a plain ``nn.Conv2d`` (a subclass
may compute something else), that it pads with zeros (the fast modules pad with zeros only), and
then its geometry by the one rule of :mod:`leanconv.algorithms.eligibility`, which the ``"auto"``
policy of :func:`leanconv.algorithms.conv2d` applies too. A caller passes its limits; the named
limits below are the tuner's and the planner's. Each returns a
:class:`~leanconv.algorithms.eligibility.Verdict` (true or false, with the reason).

Users: the tuner (:func:`leanconv.accelerate`), the benchmark (:func:`.benchmark.benchmark_conv`,
which tries everything the algorithms compute: the default limits) and the planner
(:mod:`leanconv.compress.algorithms`).
"""

from __future__ import annotations

from torch import nn

from ..algorithms import eligibility as rules
from ..algorithms.eligibility import FFTLimits, NarrowLimits, Verdict, WinogradLimits

__all__ = [
    "FFT_TUNER",
    "NARROW",
    "WINOGRAD_PLANNER",
    "WINOGRAD_TUNER",
    "FFTLimits",
    "Verdict",
    "WinogradLimits",
    "convertible",
    "fft",
    "narrow",
    "packed",
    "winograd",
]

# The tuner times every form it builds, so it tries Winograd widely: kernels up to 5x5, stride up to
# 2 (polyphase), any dilation, one group and at least 8 channels (fewer: the transforms dominate).
WINOGRAD_TUNER = WinogradLimits(max_kernel=5, max_stride=2, grouped=False, min_channels=8)
# The planner's Winograd F(m x m, 3x3) candidates: 3x3, stride 1, dilation 1, one group, and at
# least 16 channels in and out (below that Winograd does not pay; it is timed for every rank).
WINOGRAD_PLANNER = WinogradLimits(
    min_kernel=3, max_kernel=3, max_stride=1, max_dilation=1, grouped=False, min_channels=16
)
# The tuner tries FFT once either kernel side (dilation not counted) reaches 7.
FFT_TUNER = FFTLimits(min_kernel=7, side="larger", dilated=False)
# The tuner and the deployment try the narrow direct kernel up to 64 output channels (eight of its
# vectors); wider layers fill oneDNN's vectors.
NARROW = NarrowLimits(max_out_channels=64)


def convertible(module: nn.Module) -> Verdict:
    """A plain ``nn.Conv2d`` padding with zeros: what every fast module is built from. The packed
    direct convolution (:class:`leanconv.nn.PackedConv2d`) needs nothing more."""
    if type(module) is not nn.Conv2d:
        return Verdict(False, f"{type(module).__name__} is not nn.Conv2d")
    if module.padding_mode != "zeros":
        return Verdict(False, f"padding_mode={module.padding_mode!r}: fast forms pad with zeros")
    return Verdict(True, "nn.Conv2d padding with zeros")


packed = convertible


def winograd(module: nn.Module, limits: WinogradLimits = WinogradLimits()) -> Verdict:
    """Winograd F(m x m, r x s) for ``module`` within ``limits`` (default: wherever it computes)."""
    verdict = convertible(module)
    if not verdict:
        return verdict
    return rules.winograd(
        module.kernel_size, module.stride, module.dilation, module.groups,
        module.in_channels, module.out_channels, limits,
    )  # fmt: skip


def fft(module: nn.Module, limits: FFTLimits = FFTLimits()) -> Verdict:
    """FFT convolution for ``module`` within ``limits`` (default: wherever it computes)."""
    verdict = convertible(module)
    if not verdict:
        return verdict
    return rules.fft(
        module.kernel_size, module.stride, module.dilation, module.groups, module.in_channels,
        limits,
    )  # fmt: skip


def narrow(module: nn.Module, limits: NarrowLimits = NARROW) -> Verdict:
    """The narrow direct convolution for ``module``: a plain ``nn.Conv2d`` (or its packed
    deployment form, :class:`leanconv.nn.PackedConv2d`) padding with zeros, within ``limits``."""
    from ..nn.fast import PackedConv2d

    verdict = Verdict(True, "packed") if type(module) is PackedConv2d else convertible(module)
    if not verdict:
        return verdict
    return rules.narrow(module.kernel_size, module.groups, module.out_channels, limits)
