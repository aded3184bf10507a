"""Grouped convolutions and channel shuffle (Krizhevsky et al. 2012; Xie et al. 2017, ResNeXt;
Zhang et al. 2018, ShuffleNet; Ma et al. 2018, ShuffleNet V2).

- :class:`GroupedConv2d`: ``g`` independent convolutions on ``C_in / g`` channels each::

      MACs = H' W' C_out (C_in / g) k^2,   params = C_out (C_in / g) k^2    (1 / g of dense)

- :func:`channel_shuffle` / :class:`ChannelShuffle`: reshape ``C`` into ``(g, C / g)``, transpose,
  flatten, so the next grouped convolution sees channels of every group. Output channel
  ``j * g + i`` is input channel ``i * (C / g) + j``. No arithmetic: a copy.
- :class:`ShuffleNetV1Unit` (Zhang et al. 2018, figure 2): ``1 x 1`` GConv to ``C_out / 4``,
  shuffle, depthwise ``3 x 3`` (stride), ``1 x 1`` GConv; residual add (stride 1) or concatenation
  with a ``3 x 3`` average pool of the input (stride 2), then ReLU. With ``M = C_out / 4``::

      MACs = H W C_in M / g1 + H' W' (9 M + M C_b / g)     (C_b: C_out, or C_out - C_in if stride 2)

- :class:`ShuffleNetV2Unit` (Ma et al. 2018, figure 3): stride 1 splits the channels in halves,
  one passes unchanged and the other goes through ``1 x 1``, depthwise ``3 x 3``, ``1 x 1`` (all
  ``C/2`` wide); stride 2 feeds the input to both branches (the left is depthwise ``3 x 3`` then
  ``1 x 1``). The halves are concatenated and shuffled with 2 groups.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import AnalyticCost, Shape, check_positive, conv_norm_act, same_padding, spec_of


class GroupedConv2d(AnalyticCost, nn.Conv2d):
    """``nn.Conv2d`` with ``groups`` checked up front (errors name the argument) and 'same'
    padding by default (``padding=None``, odd kernels), plus the analytic cost API."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        bias: bool = False,
    ):
        where = type(self).__name__
        check_positive(
            where,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            groups=groups,
            stride=stride,
            dilation=dilation,
        )
        for arg, c in (("in_channels", in_channels), ("out_channels", out_channels)):
            if c % groups:
                raise ValueError(f"{where}: {arg}={c} is not divisible by groups={groups}")
        if padding is None:
            padding = same_padding(where, kernel_size, dilation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )

    def _walk(self, shape: Shape):
        spec = spec_of(self, shape)
        return [spec], spec.output_shape


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Shuffle the channels of ``x`` (N, C, ...) across ``groups``: ``(g, C/g) -> (C/g, g)``."""
    if groups < 1:
        raise ValueError(f"channel_shuffle: groups={groups} must be positive")
    n, c = x.shape[0], x.shape[1]
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible by groups={groups}")
    rest = x.shape[2:]
    return x.reshape(n, groups, c // groups, *rest).transpose(1, 2).reshape(n, c, *rest)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`."""

    def __init__(self, groups: int):
        super().__init__()
        check_positive(type(self).__name__, groups=groups)
        self.groups = groups

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return conv_norm_act(c_in, c_out, k, stride, k // 2, groups=groups)


class ShuffleNetV1Unit(AnalyticCost, nn.Module):
    """ShuffleNet unit. ``first_grouped=False`` makes the first ``1 x 1`` dense (the paper's first
    unit of stage 2, whose input has too few channels to group). ``C_out / 4`` must be divisible
    by ``groups``; at stride 1, ``in_channels == out_channels``; at stride 2 the branch makes
    ``out_channels - in_channels`` channels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 3,
        stride: int = 1,
        first_grouped: bool = True,
        kernel_size: int = 3,
    ):
        super().__init__()
        where = type(self).__name__
        check_positive(
            where, in_channels=in_channels, out_channels=out_channels, groups=groups, stride=stride
        )
        if stride not in (1, 2):
            raise ValueError(f"{where}: stride={stride} must be 1 or 2")
        mid = out_channels // 4
        branch = out_channels if stride == 1 else out_channels - in_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"{where}: stride=1 adds the input, so in_channels={in_channels} must equal "
                f"out_channels={out_channels}"
            )
        if branch < 1:
            raise ValueError(
                f"{where}: out_channels={out_channels} must exceed in_channels={in_channels} at "
                "stride 2 (the input is concatenated)"
            )
        g1 = groups if first_grouped else 1
        for arg, c, g in (
            ("in_channels", in_channels, g1),
            ("out_channels // 4", mid, groups),
            ("branch channels", branch, groups),
        ):
            if c % g:
                raise ValueError(f"{where}: {arg}={c} is not divisible by groups={g}")
        self.reduce = nn.Sequential(
            *_conv_bn(in_channels, mid, 1, groups=g1), nn.ReLU(inplace=True)
        )
        self.shuffle = ChannelShuffle(groups)
        pad = same_padding(where, kernel_size)
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, kernel_size, stride, pad, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
        )
        self.expand = nn.Sequential(*_conv_bn(mid, branch, 1, groups=groups))
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.stride, self.first_grouped, self.kernel_size = stride, first_grouped, kernel_size

    def extra_repr(self) -> str:
        s = f"{self.in_channels}->{self.out_channels}, groups={self.groups}, stride={self.stride}"
        return s + ("" if self.first_grouped else ", first 1x1 dense")

    def _walk(self, shape: Shape):
        a = spec_of(self.reduce[0], shape)
        b = spec_of(self.depthwise[0], a.output_shape)
        c = spec_of(self.expand[0], b.output_shape)
        n, _, h, w = c.output_shape
        return [a, b, c], (n, self.out_channels, h, w)

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(self.depthwise(self.shuffle(self.reduce(x))))
        if self.stride == 1:
            return self.relu(x + y)
        return self.relu(torch.cat([self.shortcut(x), y], 1))


class ShuffleNetV2Unit(AnalyticCost, nn.Module):
    """ShuffleNet V2 unit (torchvision's layout: concatenate, then shuffle with 2 groups).

    Stride 1 needs ``in_channels == out_channels`` (even); stride 2 any ``in_channels`` and an
    even ``out_channels``. Each branch makes ``out_channels / 2`` channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        where = type(self).__name__
        check_positive(where, in_channels=in_channels, out_channels=out_channels, stride=stride)
        if stride not in (1, 2):
            raise ValueError(f"{where}: stride={stride} must be 1 or 2")
        if out_channels % 2:
            raise ValueError(f"{where}: out_channels={out_channels} must be even (two halves)")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"{where}: stride=1 keeps half of the input, so in_channels={in_channels} must "
                f"equal out_channels={out_channels}"
            )
        half = out_channels // 2
        pad = same_padding(where, kernel_size)
        if stride == 2:
            self.left = nn.Sequential(
                nn.Conv2d(
                    in_channels, in_channels, kernel_size, 2, pad, groups=in_channels, bias=False
                ),
                nn.BatchNorm2d(in_channels),
                *_conv_bn(in_channels, half, 1),
                nn.ReLU(inplace=True),
            )
        else:
            self.left = nn.Identity()
        c_in = in_channels if stride == 2 else half
        self.right = nn.Sequential(
            *_conv_bn(c_in, half, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, kernel_size, stride, pad, groups=half, bias=False),
            nn.BatchNorm2d(half),
            *_conv_bn(half, half, 1),
            nn.ReLU(inplace=True),
        )
        self.shuffle = ChannelShuffle(2)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.kernel_size = kernel_size

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"

    def _walk(self, shape: Shape):
        specs = []
        n, c, h, w = shape
        branches = [(self.left, shape)] if self.stride == 2 else []
        branches.append((self.right, shape if self.stride == 2 else (n, c // 2, h, w)))
        for branch, s in branches:
            for m in branch:
                if isinstance(m, nn.Conv2d):
                    specs.append(spec_of(m, s))
                    s = specs[-1].output_shape
        n, _, h, w = specs[-1].output_shape
        return specs, (n, self.out_channels, h, w)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            y = torch.cat([a, self.right(b)], 1)
        else:
            y = torch.cat([self.left(x), self.right(x)], 1)
        return self.shuffle(y)


__all__ = [
    "GroupedConv2d",
    "ChannelShuffle",
    "channel_shuffle",
    "ShuffleNetV1Unit",
    "ShuffleNetV2Unit",
]
