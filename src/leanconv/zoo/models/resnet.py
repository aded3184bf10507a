"""ResNets (He et al. 2016) from :mod:`leanconv.nn.residual` blocks.

At 224x224 and 1000 classes: ResNet-18 1.814 G MACs / 11.69 M params; ResNet-50 v1.5 (stride in the
3x3) 4.089 G / 25.56 M; ResNet-50 v1 (stride in the first 1x1) 3.858 G; SE-ResNet-50 (v1 with
squeeze-and-excitation, reduction 16) 3.860 G / 28.09 M (the SE paper: 3.87 G / 28.1 M). The CIFAR
variant replaces the 7x7/2 stem and the max pool by a 3x3/1 stem for 32x32 inputs.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ...nn.residual import Attention, BasicBlock, BottleneckBlock
from ...nn.se import SqueezeExcite
from ..registry import register
from ._common import check_model, conv_bn_relu, init_weights, scaled


class ResNet(nn.Module):
    """A stem, four stages of residual blocks, global average pooling and a classifier."""

    def __init__(
        self,
        block: type[BasicBlock] | type[BottleneckBlock] | partial,
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        width: float = 1.0,
        in_channels: int = 3,
        cifar_stem: bool = False,
        attention: Attention = None,
    ):
        super().__init__()
        check_model("ResNet", num_classes, width)
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        if cifar_stem:
            self.stem = nn.Sequential(*conv_bn_relu(in_channels, widths[0], 3))
        else:
            stem = conv_bn_relu(in_channels, widths[0], 7, 2)
            self.stem = nn.Sequential(*stem, nn.MaxPool2d(3, 2, 1))
        expansion = block.func.expansion if isinstance(block, partial) else block.expansion
        c_in = widths[0]
        stages = []
        for i, (channels, n) in enumerate(zip(widths, layers, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(c_in, channels, stride, attention=attention))
                c_in = channels * expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register("resnet18")
def resnet18(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width, in_channels)


@register("resnet18_cifar", input_shape=(1, 3, 32, 32))
def resnet18_cifar(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width, in_channels, cifar_stem=True)


@register("resnet50")
def resnet50(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> ResNet:
    """ResNet-50 v1.5: the stride of a downsampling block sits in its 3x3 convolution."""
    return ResNet(BottleneckBlock, (3, 4, 6, 3), num_classes, width, in_channels)


@register("resnet50_v1")
def resnet50_v1(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3) -> ResNet:
    """ResNet-50 as in the paper: the stride sits in the first 1x1 convolution."""
    block = partial(BottleneckBlock, stride_in_1x1=True)
    return ResNet(block, (3, 4, 6, 3), num_classes, width, in_channels)


@register("se_resnet50")
def se_resnet50(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, reduction: int = 16
) -> ResNet:
    """SE-ResNet-50 (Hu et al. 2018): ResNet-50 with a squeeze-and-excitation gate (reduction 16)
    on each residual branch. As in the authors' Caffe models, the stride sits in the first 1x1
    (ResNet v1), so the base is the paper's 3.86 G MACs ResNet-50."""
    block = partial(BottleneckBlock, stride_in_1x1=True)
    attention = partial(SqueezeExcite, reduction=reduction)
    return ResNet(block, (3, 4, 6, 3), num_classes, width, in_channels, attention=attention)
