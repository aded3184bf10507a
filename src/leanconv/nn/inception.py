"""Inception modules: parallel branches of different receptive fields, concatenated.

- :class:`InceptionBlock` (Szegedy et al. 2015, GoogLeNet, figure 2b): ``1 x 1``; ``1 x 1`` reduce
  then ``3 x 3``; ``1 x 1`` reduce then ``5 x 5``; ``3 x 3`` max pool then ``1 x 1`` projection.
  At ``H x W`` (every branch keeps the size)::

      MACs = H W (C_in (c1 + r3 + r5 + p) + 9 r3 c3 + 25 r5 c5),   C_out = c1 + c3 + c5 + p

- Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), in the layout of
  the TensorFlow reference and torchvision: :class:`InceptionA` (35 x 35, figure 5),
  :class:`InceptionB` (grid reduction 35 -> 17, figure 10), :class:`InceptionC` (17 x 17 with
  ``n x n`` factorised into ``1 x 7`` and ``7 x 1``, figure 6), :class:`InceptionD` (reduction
  17 -> 8), :class:`InceptionE` (8 x 8, expanded filter bank, figure 7). Factorising a ``7 x 7``
  ``C -> C`` convolution into ``1 x 7`` + ``7 x 1`` costs ``14 C^2`` instead of ``49 C^2`` MACs per
  position (``2 / 7``); three stacked ``3 x 3`` cost ``27 C^2`` (``27 / 49``).
  ``InceptionC(..., seven=)`` builds each variant for the experiment of the paper's table 3.

Every convolution is a :class:`ConvNormReLU` (no bias, batch norm with eps 1e-3, ReLU). The blocks
are :class:`Parallel` containers: each branch is a ``nn.Sequential`` and their outputs are
concatenated along channels, so the analytic walk is shared.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ._common import (
    AnalyticCost,
    Norm,
    Shape,
    conv_norm_act,
    pool_shape,
    positive_args,
    relu,
    spec_of,
)
from .stacked import StackedConv2d

_BN = partial(nn.BatchNorm2d, eps=1e-3)
IntPair = int | tuple[int, int]


class ConvNormReLU(nn.Sequential):
    """``Conv2d`` (no bias), ``norm`` (batch norm, eps 1e-3) and ReLU: Inception's BasicConv2d."""

    @positive_args("in_channels", "out_channels")
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        norm: Norm = _BN,
    ):
        super().__init__(*conv_norm_act(in_channels, out_channels, kernel_size, stride, padding,
                                        norm=norm, activation=relu, bias=False))  # fmt: skip


def _walk(module: nn.Module, shape: Shape):
    """Convolution specs and output shape of a branch element (conv, pool, container)."""
    if isinstance(module, AnalyticCost):
        return module._walk(shape)
    if isinstance(module, nn.Conv2d):
        spec = spec_of(module, shape)
        return [spec], spec.output_shape
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if getattr(module, "ceil_mode", False):
            raise ValueError(f"{type(module).__name__}: ceil_mode is not supported by the walk")
        k, s, p = (
            v if isinstance(v, int) else v[0]
            for v in (module.kernel_size, module.stride, module.padding)
        )
        return [], pool_shape(shape, k, s, p)
    if isinstance(module, nn.Sequential):
        specs = []
        for m in module:
            more, shape = _walk(m, shape)
            specs += more
        return specs, shape
    if isinstance(module, (nn.BatchNorm2d, nn.ReLU, nn.Identity)):
        return [], shape
    raise TypeError(f"no analytic walk for {type(module).__name__}")


class Parallel(AnalyticCost, nn.Module):
    """Branches applied to the same input, outputs concatenated along channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        if not branches:
            raise ValueError(f"{type(self).__name__}: needs at least one branch")
        self.branches = nn.ModuleList(branches)

    def extra_repr(self) -> str:
        return f"{len(self.branches)} branches, concatenated"

    def _walk(self, shape: Shape):
        specs, channels, out = [], 0, shape
        for branch in self.branches:
            more, out = _walk(branch, shape)
            specs += more
            channels += out[1]
        return specs, (out[0], channels, out[2], out[3])

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


def _branch(*modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(*modules)


class _Module(Parallel):
    """An Inception module: :class:`Parallel` branches, ``in_channels -> out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, *branches: nn.Module):
        super().__init__(*branches)
        self.in_channels, self.out_channels = in_channels, out_channels

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}"


class _Reduction(_Module):
    """A grid reduction: the convolution branches of :meth:`_conv_branches`, each ending in a
    stride-2 :class:`ConvNormReLU`, and a ``3 x 3``/2 max pool, which passes the input through."""

    @positive_args("in_channels", "width")
    def __init__(self, in_channels: int, width: float = 1.0):
        branches = self._conv_branches(in_channels, _scaled(width), ConvNormReLU)
        out_channels = sum(b[-1][0].out_channels for b in branches) + in_channels
        super().__init__(in_channels, out_channels, *branches, _branch(nn.MaxPool2d(3, 2)))

    @staticmethod
    def _conv_branches(in_channels: int, w, c) -> list[nn.Sequential]:  # pragma: no cover
        """The branches, with ``w`` the width scaling and ``c`` :class:`ConvNormReLU`."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return super().extra_repr() + ", stride=2"


class InceptionBlock(_Module):
    """GoogLeNet inception module with dimension reductions (figure 2b of Szegedy et al. 2015)."""

    @positive_args(
        "in_channels", "ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj"
    )
    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
        norm: Norm = nn.BatchNorm2d,
    ):
        c = partial(ConvNormReLU, norm=norm)
        super().__init__(
            in_channels,
            ch1x1 + ch3x3 + ch5x5 + pool_proj,
            _branch(c(in_channels, ch1x1, 1)),
            _branch(c(in_channels, ch3x3_reduce, 1), c(ch3x3_reduce, ch3x3, 3, padding=1)),
            _branch(c(in_channels, ch5x5_reduce, 1), c(ch5x5_reduce, ch5x5, 5, padding=2)),
            _branch(nn.MaxPool2d(3, 1, 1), c(in_channels, pool_proj, 1)),
        )
        self.widths = (ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5, pool_proj)

    def extra_repr(self) -> str:
        c1, r3, c3, r5, c5, p = self.widths
        return (
            f"{self.in_channels}->{self.out_channels}: 1x1 {c1}, 3x3 {r3}->{c3}, "
            f"5x5 {r5}->{c5}, pool {p}"
        )


def _scaled(width: float):
    return lambda c: max(1, int(round(c * width)))


class InceptionA(_Module):
    """Inception-v3 35 x 35 module: 1x1 64; 1x1 48 -> 5x5 64; 1x1 64 -> 3x3 96 -> 3x3 96;
    3x3 avg pool -> 1x1 ``pool_features``. ``width`` scales every branch."""

    @positive_args("in_channels", "pool_features", "width")
    def __init__(self, in_channels: int, pool_features: int, width: float = 1.0):
        w = _scaled(width)
        c = ConvNormReLU
        super().__init__(
            in_channels,
            w(64) + w(64) + w(96) + pool_features,
            _branch(c(in_channels, w(64), 1)),
            _branch(c(in_channels, w(48), 1), c(w(48), w(64), 5, padding=2)),
            _branch(
                c(in_channels, w(64), 1),
                c(w(64), w(96), 3, padding=1),
                c(w(96), w(96), 3, padding=1),
            ),
            _branch(nn.AvgPool2d(3, 1, 1), c(in_channels, pool_features, 1)),
        )


class InceptionB(_Reduction):
    """Inception-v3 grid reduction 35 -> 17: 3x3/2 384; 1x1 64 -> 3x3 96 -> 3x3/2 96; max pool /2.
    Output ``384 + 96 + in_channels`` (scaled)."""

    @staticmethod
    def _conv_branches(in_channels: int, w, c) -> list[nn.Sequential]:
        return [
            _branch(c(in_channels, w(384), 3, stride=2)),
            _branch(
                c(in_channels, w(64), 1),
                c(w(64), w(96), 3, padding=1),
                c(w(96), w(96), 3, stride=2),
            ),
        ]


SEVEN = ("factorized", "full", "stacked")


class InceptionC(_Module):
    """Inception-v3 17 x 17 module with factorised 7 x 7 (figure 6, ``n = 7``).

    Branches: 1x1 192; 1x1 ``c7`` -> 1x7 ``c7`` -> 7x1 192; 1x1 ``c7`` -> 7x1 -> 1x7 -> 7x1 ->
    1x7 (to 192); 3x3 avg pool -> 1x1 192. Output 768 (scaled). ``seven="full"`` puts a dense
    ``7 x 7`` in place of each ``1x7``/``7x1`` pair, ``seven="stacked"`` three ``3 x 3``.
    """

    @positive_args("in_channels", "channels_7x7", "width")
    def __init__(
        self, in_channels: int, channels_7x7: int, width: float = 1.0, seven: str = "factorized"
    ):
        if seven not in SEVEN:
            raise ValueError(f"InceptionC: seven={seven!r} is not one of {SEVEN}")
        w = _scaled(width)
        c7, c = channels_7x7, ConvNormReLU
        super().__init__(
            in_channels,
            4 * w(192),
            _branch(c(in_channels, w(192), 1)),
            _branch(c(in_channels, c7, 1), *_seven(c7, c7, w(192), "hv", seven)),
            _branch(
                c(in_channels, c7, 1),
                *_seven(c7, c7, c7, "vh", seven),
                *_seven(c7, c7, w(192), "vh", seven),
            ),
            _branch(nn.AvgPool2d(3, 1, 1), c(in_channels, w(192), 1)),
        )
        self.channels_7x7, self.seven = channels_7x7, seven

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}->{self.out_channels}, channels_7x7={self.channels_7x7}, "
            f"seven={self.seven!r}"
        )


def _seven(c_in: int, mid: int, c_out: int, order: str, seven: str) -> list[nn.Module]:
    """A ``1x7``/``7x1`` pair ``c_in -> mid -> c_out`` (``order`` "hv": 1x7 first), or its
    replacement: one dense ``7 x 7`` or three stacked ``3 x 3`` (``mid`` channels between)."""
    c = ConvNormReLU
    if seven == "full":
        return [c(c_in, c_out, 7, padding=3)]
    if seven == "stacked":
        relu = partial(nn.ReLU, inplace=True)
        return [StackedConv2d(c_in, c_out, 7, mid, norm=_BN, activation=relu)]
    h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))
    first, second = (h, v) if order == "hv" else (v, h)
    return [c(c_in, mid, first[0], padding=first[1]), c(mid, c_out, second[0], padding=second[1])]


class InceptionD(_Reduction):
    """Inception-v3 grid reduction 17 -> 8: 1x1 192 -> 3x3/2 320; 1x1 192 -> 1x7 -> 7x1 ->
    3x3/2 192; max pool /2. Output ``320 + 192 + in_channels`` (scaled)."""

    @staticmethod
    def _conv_branches(in_channels: int, w, c) -> list[nn.Sequential]:
        return [
            _branch(c(in_channels, w(192), 1), c(w(192), w(320), 3, stride=2)),
            _branch(
                c(in_channels, w(192), 1),
                c(w(192), w(192), (1, 7), padding=(0, 3)),
                c(w(192), w(192), (7, 1), padding=(3, 0)),
                c(w(192), w(192), 3, stride=2),
            ),
        ]


class InceptionE(_Module):
    """Inception-v3 8 x 8 module with expanded filter bank (figure 7): 1x1 320; 1x1 384 ->
    (1x3 384 | 3x1 384); 1x1 448 -> 3x3 384 -> (1x3 384 | 3x1 384); avg pool -> 1x1 192.
    Output 2048 (scaled)."""

    @positive_args("in_channels", "width")
    def __init__(self, in_channels: int, width: float = 1.0):
        w = _scaled(width)
        c = ConvNormReLU

        def fork(ch: int) -> Parallel:
            return Parallel(
                _branch(c(ch, w(384), (1, 3), padding=(0, 1))),
                _branch(c(ch, w(384), (3, 1), padding=(1, 0))),
            )

        super().__init__(
            in_channels,
            w(320) + 4 * w(384) + w(192),
            _branch(c(in_channels, w(320), 1)),
            _branch(c(in_channels, w(384), 1), fork(w(384))),
            _branch(c(in_channels, w(448), 1), c(w(448), w(384), 3, padding=1), fork(w(384))),
            _branch(nn.AvgPool2d(3, 1, 1), c(in_channels, w(192), 1)),
        )
