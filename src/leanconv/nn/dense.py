"""Densely connected blocks (Huang et al. 2017, "Densely Connected Convolutional Networks").

Each :class:`DenseLayer` sees the concatenation of the block input and every earlier layer's
output, and adds ``k`` (the growth rate) channels: BN-ReLU-``1 x 1`` (to ``bn_size * k``, the
DenseNet-B bottleneck), BN-ReLU-``3 x 3`` (to ``k``). A :class:`DenseBlock` of ``L`` layers on
``C`` input channels returns ``C + L k`` channels at the same ``H x W``, with::

    MACs = H W sum_{i<L} ((C + i k) b k + 9 b k^2) = H W b k (L C + k L (L - 1) / 2 + 9 k L)

(``b = bn_size``). A :class:`Transition` (DenseNet-C) is BN-ReLU-``1 x 1``-``2 x 2`` average pool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import AnalyticCost, Shape, chain_specs, pool_shape, positive_args, spec_of


class DenseLayer(AnalyticCost, nn.Module):
    """BN-ReLU-1x1 (``bn_size * growth_rate``)-BN-ReLU-3x3 (``growth_rate``); returns only the
    ``growth_rate`` new channels (the block concatenates). ``drop_rate`` is dropout on them."""

    @positive_args("in_channels", "growth_rate", "bn_size")
    def __init__(
        self, in_channels: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0
    ):
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"{type(self).__name__}: drop_rate={drop_rate} must be in [0, 1)")
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, padding=1, bias=False)
        self.in_channels, self.growth_rate, self.bn_size = in_channels, growth_rate, bn_size
        self.drop_rate = drop_rate

    def extra_repr(self) -> str:
        return f"{self.in_channels}->+{self.growth_rate}, bn_size={self.bn_size}" + (
            f", drop_rate={self.drop_rate}" if self.drop_rate else ""
        )

    def _walk(self, shape: Shape):
        return chain_specs(shape, [self.conv1, self.conv2])

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        if self.drop_rate:
            y = F.dropout(y, self.drop_rate, self.training)
        return y


class DenseBlock(AnalyticCost, nn.Module):
    """``num_layers`` :class:`DenseLayer` s, each fed the concatenation of all before it;
    returns ``in_channels + num_layers * growth_rate`` channels."""

    @positive_args("num_layers", "in_channels", "growth_rate", "bn_size")
    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int = 32,
        bn_size: int = 4,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate)
            for i in range(num_layers)
        )
        self.in_channels, self.growth_rate, self.num_layers = in_channels, growth_rate, num_layers
        self.out_channels = in_channels + num_layers * growth_rate

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}->{self.out_channels}, num_layers={self.num_layers}, "
            f"growth_rate={self.growth_rate}"
        )

    def _walk(self, shape: Shape):
        n, c, h, w = shape
        specs = []
        for layer in self.layers:
            more, out = layer._walk((n, c, h, w))
            specs += more
            c += out[1]
        return specs, (n, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(AnalyticCost, nn.Module):
    """Between dense blocks: BN-ReLU-``1 x 1`` (``out_channels``, usually half)-avg pool 2x2/2."""

    @positive_args("in_channels", "out_channels")
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)
        self.in_channels, self.out_channels = in_channels, out_channels

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}"

    def _walk(self, shape: Shape):
        spec = spec_of(self.conv, shape)
        return [spec], pool_shape(spec.output_shape, 2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(F.relu(self.norm(x))))
