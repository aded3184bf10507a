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

from ._common import (
    AnalyticCost,
    Shape,
    chain_specs,
    check_divisible,
    conv_norm_act,
    positive_args,
    relu,
    same_padding,
    spec_of,
)


class GroupedConv2d(AnalyticCost, nn.Conv2d):
    """``nn.Conv2d`` with ``groups`` checked up front (errors name the argument) and 'same'
    padding by default (``padding=None``, odd kernels), plus the analytic cost API."""

    @positive_args("in_channels", "out_channels", "kernel_size", "groups", "stride", "dilation")
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
        check_divisible(where, groups, in_channels=in_channels, out_channels=out_channels)
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

    @positive_args("groups")
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)


def _conv_bn(
    c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = False
) -> list[nn.Module]:
    """Convolution (no bias, padding ``k // 2``) and batch norm, then a ReLU when ``act``."""
    return conv_norm_act(c_in, c_out, k, stride, k // 2, groups=groups,
                         activation=relu if act else None)  # fmt: skip


def _depthwise_bn(where: str, channels: int, k: int, stride: int) -> list[nn.Module]:
    """Depthwise ``k x k`` convolution ('same' padding, odd ``k`` only) and batch norm."""
    return conv_norm_act(channels, channels, k, stride, same_padding(where, k), groups=channels)


class ShuffleNetV1Unit(AnalyticCost, nn.Module):
    """ShuffleNet unit. ``first_grouped=False`` makes the first ``1 x 1`` dense (the paper's first
    unit of stage 2, whose input has too few channels to group). ``C_out / 4`` must be divisible
    by ``groups``; at stride 1, ``in_channels == out_channels``; at stride 2 the branch makes
    ``out_channels - in_channels`` channels."""

    @positive_args("in_channels", "out_channels", "groups", "stride")
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
        check_divisible(where, g1, in_channels=in_channels)
        check_divisible(where, groups, **{"out_channels // 4": mid, "branch channels": branch})
        self.reduce = nn.Sequential(*_conv_bn(in_channels, mid, groups=g1, act=True))
        self.shuffle = ChannelShuffle(groups)
        self.depthwise = nn.Sequential(*_depthwise_bn(where, mid, kernel_size, stride))
        self.expand = nn.Sequential(*_conv_bn(mid, branch, groups=groups))
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.relu = relu()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.stride, self.first_grouped, self.kernel_size = stride, first_grouped, kernel_size

    def extra_repr(self) -> str:
        s = f"{self.in_channels}->{self.out_channels}, groups={self.groups}, stride={self.stride}"
        return s + ("" if self.first_grouped else ", first 1x1 dense")

    def _walk(self, shape: Shape):
        specs, (n, _, h, w) = chain_specs(shape, [*self.reduce, *self.depthwise, *self.expand])
        return specs, (n, self.out_channels, h, w)

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

    @positive_args("in_channels", "out_channels", "stride")
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        where = type(self).__name__
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
        if stride == 2:
            self.left = nn.Sequential(
                *_depthwise_bn(where, in_channels, kernel_size, 2),
                *_conv_bn(in_channels, half, act=True),
            )
        else:
            self.left = nn.Identity()
        c_in = in_channels if stride == 2 else half
        self.right = nn.Sequential(
            *_conv_bn(c_in, half, act=True),
            *_depthwise_bn(where, half, kernel_size, stride),
            *_conv_bn(half, half, act=True),
        )
        self.shuffle = ChannelShuffle(2)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.kernel_size = kernel_size

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"

    def _walk(self, shape: Shape):
        n, c, h, w = shape
        if self.stride == 1:  # the left half passes unchanged
            specs, (n, _, h, w) = chain_specs((n, c // 2, h, w), self.right)
        else:
            left, _ = chain_specs(shape, self.left)
            right, (n, _, h, w) = chain_specs(shape, self.right)
            specs = left + right
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
