"""Building blocks for efficient convolutions: thin ``nn.Module`` shells over functional cores."""

from .bottleneck import Bottleneck1x1, InvertedResidual
from .dense import DenseBlock, DenseLayer, Transition
from .grouped import (
    ChannelShuffle,
    GroupedConv2d,
    ShuffleNetV1Unit,
    ShuffleNetV2Unit,
    channel_shuffle,
)
from .inception import (
    ConvNormReLU,
    InceptionA,
    InceptionB,
    InceptionBlock,
    InceptionC,
    InceptionD,
    InceptionE,
    Parallel,
)
from .residual import BasicBlock, BottleneckBlock
from .se import SqueezeExcite
from .separable import DepthwiseSeparableConv2d, SpatiallySeparableConv2d
from .stacked import StackedConv2d

__all__ = [
    "BasicBlock",
    "Bottleneck1x1",
    "BottleneckBlock",
    "ChannelShuffle",
    "ConvNormReLU",
    "DenseBlock",
    "DenseLayer",
    "DepthwiseSeparableConv2d",
    "GroupedConv2d",
    "InceptionA",
    "InceptionB",
    "InceptionBlock",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InvertedResidual",
    "Parallel",
    "ShuffleNetV1Unit",
    "ShuffleNetV2Unit",
    "SpatiallySeparableConv2d",
    "SqueezeExcite",
    "StackedConv2d",
    "Transition",
    "channel_shuffle",
]
