"""Separable convolutions: a ``k x k`` convolution split into cheaper factors.

- :class:`DepthwiseSeparableConv2d` (Sifre 2014; Chollet 2017, Xception; Howard et al. 2017,
  MobileNet): a depthwise ``k x k`` convolution (``groups = C_in``, ``m`` filters per channel, the
  depth multiplier) then a pointwise ``1 x 1`` convolution. At output size ``H' x W'``::

      MACs = H' W' (C_in m k^2 + C_in m C_out)      against  H' W' C_in C_out k^2 dense,

  a ratio of ``m / C_out + m / k^2``. Params ``C_in m k^2 + C_in m C_out`` (+ biases).
- :class:`SpatiallySeparableConv2d` (Szegedy et al. 2016, "Rethinking the Inception
  Architecture", section 3.2; Jaderberg et al. 2014): ``k x 1`` then ``1 x k`` with ``M``
  intermediate channels and no non-linearity between, so it equals one dense ``k x k``
  convolution of rank-``M`` kernel ``W[o, i, a, b] = sum_m V[o, m, b] U[m, i, a]``::

      MACs = H1 W C_in M k + H' W' M C_out k     (H1: rows after the first, strided, factor)
"""

from __future__ import annotations

from torch import Tensor, nn

from ._common import (
    Activation,
    AnalyticCost,
    Norm,
    Shape,
    check_positive,
    norm_act_seq,
    padding_or_same,
    positive_args,
)


class DepthwiseSeparableConv2d(AnalyticCost, nn.Module):
    """Depthwise ``k x k`` (``depth_multiplier`` filters per channel) then pointwise ``1 x 1``.

    ``norm`` (``channels -> Module``) and ``activation`` (``() -> Module``), when given, follow
    each of the two convolutions (MobileNet v1: batch norm and ReLU after both). With
    ``activate_output=False`` the activation follows only the depthwise part (a linear output).
    ``padding=None`` is 'same' padding, ``dilation * (k - 1) / 2``, for odd ``k``.
    """

    @positive_args(
        "in_channels", "out_channels", "kernel_size", "stride", "dilation", "depth_multiplier"
    )
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        depth_multiplier: int = 1,
        bias: bool = False,
        norm: Norm = None,
        activation: Activation = None,
        activate_output: bool = True,
    ):
        super().__init__()
        where = type(self).__name__
        padding = padding_or_same(where, padding, kernel_size, dilation)
        mid = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(
            in_channels, mid, kernel_size, stride, padding, dilation, groups=in_channels, bias=bias
        )
        self.act1 = norm_act_seq(mid, norm, activation)
        self.pointwise = nn.Conv2d(mid, out_channels, 1, bias=bias)
        self.act2 = norm_act_seq(out_channels, norm, activation if activate_output else None)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.depth_multiplier = dilation, depth_multiplier

    def extra_repr(self) -> str:
        s = f"{self.in_channels}->{self.out_channels}, kernel_size={self.kernel_size}"
        s += f", stride={self.stride}, padding={self.padding}"
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        if self.depth_multiplier != 1:
            s += f", depth_multiplier={self.depth_multiplier}"
        return s

    def _walk(self, shape: Shape):
        return self._chain(shape, "depthwise", "pointwise")

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(self.pointwise(self.act1(self.depthwise(x))))


class SpatiallySeparableConv2d(AnalyticCost, nn.Module):
    """``k x 1`` (``in -> intermediate_channels``) then ``1 x k`` (``-> out``), linear between.

    The stride, padding and dilation of the ``k x k`` convolution it replaces are split by axis:
    rows in the first factor, columns in the second, so the output has the ``k x k`` shape and
    equals the dense convolution with the outer-product kernel exactly (padding included). The
    bias, if any, sits on the second factor. ``intermediate_channels`` defaults to ``out_channels``.
    """

    @positive_args("in_channels", "out_channels", "kernel_size")
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        intermediate_channels: int | None = None,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        where = type(self).__name__
        mid = out_channels if intermediate_channels is None else intermediate_channels
        check_positive(where, intermediate_channels=mid, stride=stride, dilation=dilation)
        padding = padding_or_same(where, padding, kernel_size, dilation)
        k, s, p, d = kernel_size, stride, padding, dilation
        self.vertical = nn.Conv2d(in_channels, mid, (k, 1), (s, 1), (p, 0), (d, 1), bias=False)
        self.horizontal = nn.Conv2d(mid, out_channels, (1, k), (1, s), (0, p), (1, d), bias=bias)
        self.in_channels, self.out_channels, self.intermediate_channels = (
            in_channels,
            out_channels,
            mid,
        )
        self.kernel_size, self.stride, self.padding, self.dilation = k, s, p, d

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}->{self.intermediate_channels}->{self.out_channels}, "
            f"kernel_size={self.kernel_size}x1+1x{self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
        )
        return s + (f", dilation={self.dilation}" if self.dilation != 1 else "")

    def _walk(self, shape: Shape):
        return self._chain(shape, "vertical", "horizontal")

    def forward(self, x: Tensor) -> Tensor:
        return self.horizontal(self.vertical(x))
