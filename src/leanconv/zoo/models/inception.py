"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision").

The layout of the TensorFlow reference and torchvision, without the auxiliary classifier: a stem of
stacked ``3 x 3`` convolutions (299 -> 35), three :class:`~leanconv.nn.inception.InceptionA`,
a reduction, four :class:`~leanconv.nn.inception.InceptionC` with factorised ``7 x 7``, a
reduction, two :class:`~leanconv.nn.inception.InceptionE`, global pool, dropout, linear. At
299x299 and 1000 classes: 5.713 G MACs, 23.83 M parameters (torchvision's 27.16 M includes the
auxiliary head's 3.33 M).

Two switches rebuild the factorisations of the paper's table 3 to measure them: ``stem="7x7"``
replaces the three stem convolutions (``3x3/2`` 32, ``3x3`` 32, ``3x3`` 64: 147 x 147 x 64) by one
``7x7/2`` to 64 of the same output size; ``seven="full"`` or ``"stacked"`` replaces each ``1x7`` +
``7x1`` pair of the 17 x 17 modules by a dense ``7 x 7`` or by three ``3 x 3``. See docs/zoo.md.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ...nn.inception import (
    SEVEN,
    ConvNormReLU,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)
from ..registry import register
from ._common import check_model, scaled

STEMS = ("3x3", "7x7")


class InceptionV3(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        in_channels: int = 3,
        stem: str = "3x3",
        seven: str = "factorized",
        dropout: float = 0.5,
    ):
        super().__init__()
        check_model("InceptionV3", num_classes, width)
        if stem not in STEMS:
            raise ValueError(f"InceptionV3: stem={stem!r} is not one of {STEMS}")
        if seven not in SEVEN:
            raise ValueError(f"InceptionV3: seven={seven!r} is not one of {SEVEN}")
        w = partial(scaled, width=width)
        c = ConvNormReLU
        if stem == "3x3":
            head = [
                c(in_channels, w(32), 3, stride=2),
                c(w(32), w(32), 3),
                c(w(32), w(64), 3, padding=1),
            ]
        else:
            head = [c(in_channels, w(64), 7, stride=2)]
        self.stem = nn.Sequential(
            *head,
            nn.MaxPool2d(3, 2),
            c(w(64), w(80), 1),
            c(w(80), w(192), 3),
            nn.MaxPool2d(3, 2),
        )
        blocks: list[nn.Module] = []
        ch = w(192)
        for pool in (32, 64, 64):
            blocks.append(InceptionA(ch, w(pool), width))
            ch = blocks[-1].out_channels
        blocks.append(InceptionB(ch, width))
        ch = blocks[-1].out_channels
        for c7 in (128, 160, 160, 192):
            blocks.append(InceptionC(ch, w(c7), width, seven))
            ch = blocks[-1].out_channels
        blocks.append(InceptionD(ch, width))
        ch = blocks[-1].out_channels
        for _ in range(2):
            blocks.append(InceptionE(ch, width))
            ch = blocks[-1].out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(ch, num_classes)
        self.stem_kind, self.seven = stem, seven

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))


@register("inception_v3", input_shape=(1, 3, 299, 299))
def inception_v3(
    num_classes: int = 1000,
    width: float = 1.0,
    in_channels: int = 3,
    stem: str = "3x3",
    seven: str = "factorized",
) -> InceptionV3:
    return InceptionV3(num_classes, width, in_channels, stem, seven)
