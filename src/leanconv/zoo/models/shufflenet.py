"""ShuffleNets from :mod:`leanconv.nn.grouped` units.

- ShuffleNet v1 (Zhang et al. 2018, table 1): ``3 x 3``/2 stem to 24, max pool, three stages of
  4, 8, 4 units (the first of each at stride 2), global pool, linear. Stage widths per group count
  ``g``: 1: 144/288/576, 2: 200/400/800, 3: 240/480/960, 4: 272/544/1088, 8: 384/768/1536. The
  paper gives 140 M MFLOPs (mult-adds) for 1x, g=3; the layout here (the paper's, as in the
  authors' released code, the first ``1 x 1`` of stage 2 dense) gives 137.5 M MACs at 224x224 with
  a biased classifier, 1.88 M parameters.
- ShuffleNet v2 (Ma et al. 2018, table 5): stem to 24, max pool, stages of 4, 8, 4 units, ``1 x 1``
  to 1024, pool, linear. 1x: 116/232/464 channels, 144.9 M MACs (the paper's 146 M), 2.28 M
  parameters (torchvision's 2,278,604).

``width`` scales the stage widths (v1: rounded to multiples of ``4 g``; v2: the paper's 0.5x, 1x,
1.5x, 2x tables, other values rounded to even numbers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...nn.grouped import ShuffleNetV1Unit, ShuffleNetV2Unit
from ..registry import register
from ._common import check_model, conv_bn_relu

V1_WIDTHS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
V2_WIDTHS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
REPEATS = (4, 8, 4)


def _stem(in_channels: int, c: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(in_channels, c, 3, 2), nn.MaxPool2d(3, 2, 1))


class ShuffleNetV1(nn.Module):
    def __init__(
        self, num_classes: int = 1000, width: float = 1.0, groups: int = 3, in_channels: int = 3
    ):
        super().__init__()
        check_model("ShuffleNetV1", num_classes, width)
        if groups not in V1_WIDTHS:
            raise ValueError(f"ShuffleNetV1: groups={groups} is not one of {sorted(V1_WIDTHS)}")
        unit = 4 * groups
        base = V1_WIDTHS[groups]
        widths = [max(unit, int(round(base * 2**i * width / unit)) * unit) for i in range(3)]
        c = max(groups, int(round(24 * width / groups)) * groups) if width < 1 else 24
        self.stem = _stem(in_channels, c)
        stages = []
        for i, (out, n) in enumerate(zip(widths, REPEATS, strict=True)):
            units = []
            for j in range(n):
                stride = 2 if j == 0 else 1
                first_grouped = not (i == 0 and j == 0)
                units.append(ShuffleNetV1Unit(c, out, groups, stride, first_grouped))
                c = out
            stages.append(nn.Sequential(*units))
        self.stage2, self.stage3, self.stage4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        check_model("ShuffleNetV2", num_classes, width)
        if width in V2_WIDTHS:
            *widths, last = V2_WIDTHS[width]
        else:
            widths = [max(2, int(round(c * width / 2)) * 2) for c in V2_WIDTHS[1.0][:3]]
            last = 1024
        c = 24
        self.stem = _stem(in_channels, c)
        stages = []
        for out, n in zip(widths, REPEATS, strict=True):
            units = []
            for j in range(n):
                units.append(ShuffleNetV2Unit(c, out, 2 if j == 0 else 1))
                c = out
            stages.append(nn.Sequential(*units))
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(*conv_bn_relu(c, last, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv5(self.stage4(self.stage3(self.stage2(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register("shufflenet_v1")
def shufflenet_v1(
    num_classes: int = 1000, width: float = 1.0, groups: int = 3, in_channels: int = 3
) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes, width, groups, in_channels)


@register("shufflenet_v2")
def shufflenet_v2(
    num_classes: int = 1000, width: float = 1.0, in_channels: int = 3
) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes, width, in_channels)
