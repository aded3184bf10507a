"""VGG (Simonyan & Zisserman 2015), configuration D (VGG-16).

At 224x224 and 1000 classes: 15.47 G MACs, 138.36 M parameters. The CIFAR variant keeps the 13
convolutions (with batch norm) and ends in one linear layer, for 32x32 inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...nn._common import conv_norm_act, relu
from ..registry import register
from ._common import check_model, scaled

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg_features(
    config, in_channels: int = 3, width: float = 1.0, batch_norm: bool = False
) -> nn.Sequential:
    """3x3 'same' convolutions with ReLU, and 2x2 max pools at each ``"M"``."""
    layers: list[nn.Module] = []
    c = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out = scaled(item, width)
        norm = nn.BatchNorm2d if batch_norm else None
        layers += conv_norm_act(c, out, 3, padding=1, norm=norm, activation=relu)
        c = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        in_channels: int = 3,
        cifar: bool = False,
        config=VGG16,
    ):
        super().__init__()
        check_model("VGG", num_classes, width)
        self.features = vgg_features(config, in_channels, width, batch_norm=cifar)
        last = scaled(512, width)
        if cifar:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(last, num_classes)
        else:
            hidden = scaled(4096, width)
            self.pool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(last * 49, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register("vgg16")
def vgg16(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> VGG:
    return VGG(num_classes, width, in_channels)


@register("vgg16_cifar", input_shape=(1, 3, 32, 32))
def vgg16_cifar(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> VGG:
    return VGG(num_classes, width, in_channels, cifar=True)
