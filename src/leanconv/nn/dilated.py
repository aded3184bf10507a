"""Dilated (atrous) convolutions and Atrous Spatial Pyramid Pooling.

A ``k``-tap kernel at dilation ``d`` spans ``d (k - 1) + 1`` inputs at the cost of ``k`` taps (Yu &
Koltun 2016, "Multi-Scale Context Aggregation by Dilated Convolutions"). Helpers:

- :func:`effective_kernel_size`: ``d (k - 1) + 1``.
- :func:`receptive_field`: of a stack of ``(kernel, stride, dilation)`` layers,
  ``r = 1 + sum_l d_l (k_l - 1) prod_{m < l} s_m``.
- :func:`has_gridding`: whether a stack of stride-1 dilated convolutions leaves holes in its
  receptive field (the "gridding" of Wang et al. 2018, "Understanding Convolution for Semantic
  Segmentation", whose hybrid dilated convolution picks rates without holes, e.g. 1, 2, 5). Exact:
  the taps one output reaches are the Minkowski sum of ``{0, d, ..., d (k - 1)}`` over the layers.
- :func:`dilated_conv_bn`: a ``k x k`` convolution at dilation ``d`` with 'same' padding
  ``d (k - 1) / 2``, normalisation and activation.

:class:`ASPP` (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation",
DeepLab v3, section 3.3): parallel branches on the same input, a 1x1 convolution, one 3x3
convolution per atrous rate (6, 12, 18 at output stride 16; double them at output stride 8) and
image pooling (global average, 1x1 convolution, broadcast back to ``H x W``), each with batch norm
and ReLU, concatenated and projected by a 1x1 convolution (with batch norm, ReLU and dropout, as
in torchvision's ``DeepLabHead``). At ``H x W`` with ``B`` rates and ``C -> F`` channels::

    MACs = N [H W C F (1 + 9 B) + C F + H W (B + 2) F F]     (without image pooling: B + 1)

In training mode the image-pooling branch's batch norm needs more than one value per channel, so
a batch of one image fails there (as in torchvision); use ``eval()`` or ``norm=None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._common import (
    Activation,
    AnalyticCost,
    Norm,
    Shape,
    check_positive,
    conv_norm_act,
    norm_act,
    same_padding,
)
from ._common import spec_of as _spec_of


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """``d (k - 1) + 1``: the inputs one dilated kernel spans along a dimension."""
    check_positive("effective_kernel_size", kernel_size=kernel_size, dilation=dilation)
    return dilation * (kernel_size - 1) + 1


def receptive_field(layers: Sequence[tuple[int, int, int]]) -> int:
    """Receptive field of a stack of ``(kernel_size, stride, dilation)`` layers, first layer first:
    ``1 + sum_l d_l (k_l - 1) prod_{m < l} s_m`` inputs along one dimension."""
    size, jump = 1, 1
    for i, (k, s, d) in enumerate(layers):
        check_positive(f"receptive_field: layer {i}", kernel_size=k, stride=s, dilation=d)
        size += d * (k - 1) * jump
        jump *= s
    return size


def reachable_offsets(dilations: Sequence[int], kernel_size: int = 3) -> list[int]:
    """The input offsets (from the first tap) that one output of a stack of stride-1 ``k``-tap
    convolutions at ``dilations`` depends on: the Minkowski sum of ``{0, d, ..., d (k - 1)}``."""
    check_positive("reachable_offsets", kernel_size=kernel_size)
    reach = {0}
    for i, d in enumerate(dilations):
        check_positive(f"reachable_offsets: layer {i}", dilation=d)
        reach = {r + d * j for r in reach for j in range(kernel_size)}
    return sorted(reach)


def has_gridding(dilations: Sequence[int], kernel_size: int = 3) -> bool:
    """True when the stack's receptive field has holes (inputs no path reaches), e.g. (2, 2, 2)
    or (1, 2, 9) with 3x3 kernels; False for (1, 2, 5) (Wang et al. 2018)."""
    reach = reachable_offsets(dilations, kernel_size)
    return len(reach) != reach[-1] + 1


def dilated_conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dilation: int = 1,
    norm: Norm = nn.BatchNorm2d,
    activation: Activation = nn.ReLU,
) -> nn.Sequential:
    """``k x k`` convolution at ``dilation`` with 'same' padding (odd ``k``), then norm and
    activation; the convolution has a bias only when there is no norm."""
    where = "dilated_conv_bn"
    check_positive(where, in_channels=in_channels, out_channels=out_channels, dilation=dilation)
    pad = same_padding(where, kernel_size, dilation)
    return nn.Sequential(*conv_norm_act(in_channels, out_channels, kernel_size, 1, pad, dilation,
                                        norm=norm, activation=activation))  # fmt: skip


class ASPPPooling(nn.Module):
    """Image-level features: global average pool, 1x1 convolution (+ norm, activation), broadcast
    back to the input's ``H x W`` (what bilinear upsampling of a 1x1 map gives, exactly)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: Norm = nn.BatchNorm2d,
        activation: Activation = nn.ReLU,
    ):
        super().__init__()
        check_positive("ASPPPooling", in_channels=in_channels, out_channels=out_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=norm is None)
        self.post = nn.Sequential(*norm_act(out_channels, norm, activation))

    def forward(self, x: Tensor) -> Tensor:
        y = self.post(self.conv(self.pool(x)))
        return y.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(AnalyticCost, nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLab v3): 1x1, 3x3 at each of ``rates``, image pooling;
    concatenated, 1x1 projection to ``out_channels`` (+ norm, activation, dropout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        image_pooling: bool = True,
        dropout: float = 0.5,
        norm: Norm = nn.BatchNorm2d,
        activation: Activation = nn.ReLU,
    ):
        super().__init__()
        where = "ASPP"
        check_positive(where, in_channels=in_channels, out_channels=out_channels)
        rates = tuple(int(r) for r in rates)
        for r in rates:
            if r < 1:
                raise ValueError(f"{where}: rates={rates} must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{where}: dropout={dropout} must be in [0, 1)")
        branches: list[nn.Module] = [
            dilated_conv_bn(in_channels, out_channels, 1, 1, norm, activation)
        ]
        branches += [
            dilated_conv_bn(in_channels, out_channels, 3, r, norm, activation) for r in rates
        ]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels, norm, activation))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=norm is None),
            *norm_act(out_channels, norm, activation),
            nn.Dropout(dropout),
        )
        self.in_channels, self.out_channels, self.rates = in_channels, out_channels, rates
        self.image_pooling, self.dropout = image_pooling, dropout

    def extra_repr(self) -> str:
        out = f"{self.in_channels}->{self.out_channels}, rates={self.rates}"
        return out + f", image_pooling={self.image_pooling}, dropout={self.dropout}"

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))

    def _walk(self, shape: Shape) -> tuple[list, Shape]:
        n, _, h, w = shape
        specs = []
        for branch in self.branches:
            if isinstance(branch, ASPPPooling):
                specs.append(_spec_of(branch.conv, (n, self.in_channels, 1, 1)))
            else:
                specs.append(_spec_of(branch[0], shape))
        concat = (n, len(self.branches) * self.out_channels, *specs[0].output_size)
        specs.append(_spec_of(self.project[0], concat))
        return specs, specs[-1].output_shape


__all__ = [
    "ASPP",
    "ASPPPooling",
    "dilated_conv_bn",
    "effective_kernel_size",
    "has_gridding",
    "reachable_offsets",
    "receptive_field",
]
