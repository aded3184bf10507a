"""Residual blocks (He et al. 2016, "Deep Residual Learning for Image Recognition").

``y = relu(F(x) + shortcut(x))``, where the shortcut is the identity, or a strided 1x1 convolution
with batch norm when the shape changes (option B of the paper).

- :class:`BasicBlock`: two 3x3 convolutions (ResNet-18/34), expansion 1.
- :class:`BottleneckBlock`: 1x1 squeeze, 3x3, 1x1 expand (ResNet-50/101/152), expansion 4. The
  stride sits in the 3x3 (``stride_in_1x1=False``, "ResNet v1.5", as in torchvision) or in the first
  1x1 (``stride_in_1x1=True``, the original v1 of the paper, which costs fewer MACs).

Both take an optional ``attention`` factory (``channels -> nn.Module``) applied to the residual
branch before the addition, as squeeze-and-excitation does (Hu et al. 2018).

Outside autograd recording the sum is taken in place, into the branch's fresh output
(:func:`add_relu`): no new activation-sized tensor, one pass less over memory (64 channels at
32x32, batch 64: 14.2 instead of 16.6 ms for a 3x3 convolution with its sum and ReLU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._common import conv_norm_act
from ._common import relu as _relu

Attention = Callable[[int], nn.Module] | None


def add_relu(branch: Tensor, shortcut: Tensor) -> Tensor:
    """``relu(branch + shortcut)``, in place into ``branch`` unless autograd records it
    (``branch`` must be a block's own intermediate, never a caller's tensor)."""
    if torch.is_grad_enabled() and (branch.requires_grad or shortcut.requires_grad):
        return torch.relu(branch + shortcut)
    return branch.add_(shortcut).relu_()


def conv_bn(
    c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, relu: bool = False
) -> nn.Sequential:
    """``k x k`` convolution (no bias, 'same' padding for odd k) followed by batch norm (and ReLU
    when ``relu``: in one ``nn.Sequential``, where deployment can fuse it into the convolution,
    :mod:`leanconv.rewrite.fuse`)."""
    return nn.Sequential(*conv_norm_act(c_in, c_out, k, stride, k // 2, groups=groups,
                                        activation=_relu if relu else None))  # fmt: skip


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return conv_bn(c_in, c_out, 1, stride)


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers with a residual connection; ``expansion = 1``."""

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, attention: Attention = None
    ):
        super().__init__()
        for arg, v in (("in_channels", in_channels), ("channels", channels), ("stride", stride)):
            if v < 1:
                raise ValueError(f"BasicBlock: {arg}={v} must be positive")
        out = channels * self.expansion
        self.conv1 = conv_bn(in_channels, channels, 3, stride, relu=True)
        self.conv2 = conv_bn(channels, out, 3)
        self.attention = attention(out) if attention else nn.Identity()
        self.shortcut = _shortcut(in_channels, out, stride)
        self.in_channels, self.channels, self.stride = in_channels, channels, stride

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.channels * self.expansion}, stride={self.stride}"

    def forward(self, x: Tensor) -> Tensor:
        y = self.attention(self.conv2(self.conv1(x)))
        return add_relu(y, self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1x1 (squeeze to ``channels``) -> 3x3 -> 1x1 (expand to ``4 * channels``), residual add."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        attention: Attention = None,
        stride_in_1x1: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
    ):
        super().__init__()
        for arg, v in (("in_channels", in_channels), ("channels", channels), ("stride", stride)):
            if v < 1:
                raise ValueError(f"BottleneckBlock: {arg}={v} must be positive")
        width = channels * width_per_group // 64 * groups
        out = channels * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv_bn(in_channels, width, 1, s1, relu=True)
        self.conv2 = conv_bn(width, width, 3, s3, groups=groups, relu=True)
        self.conv3 = conv_bn(width, out, 1)
        self.attention = attention(out) if attention else nn.Identity()
        self.shortcut = _shortcut(in_channels, out, stride)
        self.in_channels, self.channels, self.stride = in_channels, channels, stride
        self.stride_in_1x1 = stride_in_1x1

    def extra_repr(self) -> str:
        where = "1x1" if self.stride_in_1x1 else "3x3"
        out = self.channels * self.expansion
        return f"{self.in_channels}->{out}, stride={self.stride} (in {where})"

    def forward(self, x: Tensor) -> Tensor:
        y = self.attention(self.conv3(self.conv2(self.conv1(x))))
        return add_relu(y, self.shortcut(x))
