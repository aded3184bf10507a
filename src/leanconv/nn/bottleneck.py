"""Bottlenecks: cheap ``1 x 1`` convolutions around the expensive spatial one.

- :class:`Bottleneck1x1` (Lin et al. 2014, "Network in Network"; Szegedy et al. 2015; He et al.
  2016, section 3.3): ``1 x 1`` squeeze to ``M = C_out / squeeze`` channels, ``k x k`` at ``M``,
  ``1 x 1`` expand to ``C_out``. With output ``H' x W'`` (the stride in the ``k x k``)::

      MACs = H W C_in M + H' W' (k^2 M^2 + M C_out)     against  H' W' k^2 C_in C_out dense.

  The residual versions (with a shortcut) are :class:`leanconv.nn.BottleneckBlock`.
- :class:`InvertedResidual` (Sandler et al. 2018, MobileNetV2): ``1 x 1`` expand by ``t``,
  depthwise ``3 x 3``, linear ``1 x 1`` projection, identity shortcut when the shape is kept::

      MACs = H W C_in t C_in + H' W' (9 t C_in + t C_in C_out)      (no expansion when t = 1)
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from ._common import (
    Activation,
    AnalyticCost,
    Norm,
    Shape,
    chain_specs,
    conv_norm_act,
    divide_channels,
    norm_act_seq,
    positive_args,
    same_padding,
)


class Bottleneck1x1(AnalyticCost, nn.Module):
    """``1 x 1`` squeeze (``C_out / squeeze`` channels) -> ``k x k`` -> ``1 x 1`` expand.

    ``norm`` and ``activation`` follow each convolution (the last one's activation only with
    ``activate_output=True``). ``groups`` applies to the ``k x k`` (ResNeXt). The stride sits in
    the ``k x k``. ``squeeze`` is the ratio of output to bottleneck channels (4 in ResNet).
    """

    @positive_args("in_channels", "out_channels", "kernel_size", "squeeze", "stride", "groups")
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        squeeze: int = 4,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: Norm = None,
        activation: Activation = None,
        activate_output: bool = True,
    ):
        super().__init__()
        where = type(self).__name__
        mid = divide_channels(
            where, ("out_channels", out_channels), ("squeeze", squeeze), "bottleneck channels"
        )
        if mid % groups:
            raise ValueError(
                f"{where}: groups={groups} does not divide the {mid} bottleneck channels"
            )
        pad = same_padding(where, kernel_size)
        self.reduce = nn.Conv2d(in_channels, mid, 1, bias=bias)
        self.act1 = norm_act_seq(mid, norm, activation)
        self.conv = nn.Conv2d(mid, mid, kernel_size, stride, pad, groups=groups, bias=bias)
        self.act2 = norm_act_seq(mid, norm, activation)
        self.expand = nn.Conv2d(mid, out_channels, 1, bias=bias)
        self.act3 = norm_act_seq(out_channels, norm, activation if activate_output else None)
        self.in_channels, self.out_channels, self.mid_channels = in_channels, out_channels, mid
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}->{self.mid_channels}->{self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )
        return s + (f", groups={self.groups}" if self.groups != 1 else "")

    def _walk(self, shape: Shape):
        return self._chain(shape, "reduce", "conv", "expand")

    def forward(self, x: Tensor) -> Tensor:
        return self.act3(self.expand(self.act2(self.conv(self.act1(self.reduce(x))))))


class InvertedResidual(AnalyticCost, nn.Module):
    """MobileNetV2 block: ``1 x 1`` expand (ratio ``expand_ratio``) + norm + activation,
    depthwise ``k x k`` (stride) + norm + activation, ``1 x 1`` project + norm (linear); the input
    is added when ``stride == 1`` and ``in_channels == out_channels``.
    """

    @positive_args("in_channels", "out_channels", "stride", "expand_ratio", "kernel_size")
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand_ratio: int = 6,
        kernel_size: int = 3,
        norm: Norm = nn.BatchNorm2d,
        activation: Activation = partial(nn.ReLU6, inplace=True),
    ):
        super().__init__()
        where = type(self).__name__
        hidden = in_channels * expand_ratio
        pad = same_padding(where, kernel_size)
        conv = partial(conv_norm_act, norm=norm, bias=False)
        expand = conv(in_channels, hidden, 1, activation=activation) if expand_ratio != 1 else []
        self.layers = nn.Sequential(
            *expand,
            *conv(hidden, hidden, kernel_size, stride, pad, groups=hidden, activation=activation),
            *conv(hidden, out_channels, 1),
        )
        self.use_residual = stride == 1 and in_channels == out_channels
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.expand_ratio, self.kernel_size = expand_ratio, kernel_size

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}->{self.out_channels}, stride={self.stride}, "
            f"expand_ratio={self.expand_ratio}, residual={self.use_residual}"
        )

    def _walk(self, shape: Shape):
        return chain_specs(shape, self.layers)

    def forward(self, x: Tensor) -> Tensor:
        y = self.layers(x)
        return x + y if self.use_residual else y
