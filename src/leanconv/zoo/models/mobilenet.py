"""MobileNets from :mod:`leanconv.nn` blocks.

- MobileNet v1 (Howard et al. 2017, table 1): a ``3 x 3``/2 stem and 13 depthwise separable
  convolutions with batch norm and ReLU. At 224x224, 1000 classes: 568.7 M MACs (the paper's
  569 M mult-adds), 4.23 M parameters (4.2 M).
- MobileNet v2 (Sandler et al. 2018, table 2): inverted residuals with linear bottlenecks, ReLU6.
  At 224x224: 300.8 M MACs (the paper's 300 M), 3.50 M parameters (3.4 M in the paper; 3,504,872
  in torchvision, whose layout this follows: channels rounded to multiples of 8 by ``width``).
- ``mobilenet_v2_cifar``: the same for 32x32 inputs, with the stem and the first stride-2 stage at
  stride 1 (4x4 before the pool), as in common CIFAR adaptations: 88.0 M MACs, 2.24 M params.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ...nn._common import make_divisible
from ...nn.bottleneck import InvertedResidual
from ...nn.separable import DepthwiseSeparableConv2d
from ..registry import register
from ._common import check_model, conv_bn_relu, init_weights, scaled

# (out_channels, stride) of the 13 depthwise separable layers of MobileNet v1.
V1_LAYERS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
# (expansion t, channels c, repeats n, stride s) of MobileNet v2.
V2_SETTINGS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip


class MobileNetV1(nn.Module):
    """Stem ``3 x 3``/2 to 32, 13 depthwise separable layers, global pool, linear classifier."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        check_model("MobileNetV1", num_classes, width)
        relu = partial(nn.ReLU, inplace=True)
        c = scaled(32, width)
        layers: list[nn.Module] = [nn.Sequential(*conv_bn_relu(in_channels, c, 3, 2, relu))]
        for out, stride in V1_LAYERS:
            out = scaled(out, width)
            layers.append(
                DepthwiseSeparableConv2d(c, out, 3, stride, norm=nn.BatchNorm2d, activation=relu)
            )
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        init_weights(self, linear=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MobileNetV2(nn.Module):
    """Stem ``3 x 3``/2 to 32, 17 inverted residuals, ``1 x 1`` to 1280, pool, dropout, linear."""

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        in_channels: int = 3,
        cifar: bool = False,
        dropout: float = 0.2,
    ):
        super().__init__()
        check_model("MobileNetV2", num_classes, width)
        relu6 = partial(nn.ReLU6, inplace=True)
        c = make_divisible(32 * width, 8)
        last = make_divisible(1280 * max(1.0, width), 8)
        stem = conv_bn_relu(in_channels, c, 3, 1 if cifar else 2, relu6)
        layers: list[nn.Module] = [nn.Sequential(*stem)]
        for t, channels, n, s in V2_SETTINGS:
            out = make_divisible(channels * width, 8)
            if cifar and channels == 24:
                s = 1
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(nn.Sequential(*conv_bn_relu(c, last, 1, 1, relu6)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_weights(self, linear=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register("mobilenet_v1")
def mobilenet_v1(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes, width, in_channels)


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> MobileNetV2:
    return MobileNetV2(num_classes, width, in_channels)


@register("mobilenet_v2_cifar", input_shape=(1, 3, 32, 32))
def mobilenet_v2_cifar(
    num_classes: int = 10, width: float = 1.0, in_channels: int = 3
) -> MobileNetV2:
    return MobileNetV2(num_classes, width, in_channels, cifar=True)
