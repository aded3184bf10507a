"""Building blocks for efficient convolutions: thin ``nn.Module`` shells over functional cores."""

from .bottleneck import Bottleneck1x1, InvertedResidual
from .chain import ChainConv2d
from .deform import DeformConv2d, DeformConv2dOp, ModulatedDeformConv2d, deform_conv2d
from .dense import DenseBlock, DenseLayer, Transition
from .dilated import (
    ASPP,
    ASPPPooling,
    dilated_conv_bn,
    effective_kernel_size,
    has_gridding,
    reachable_offsets,
    receptive_field,
)
from .factorised import CPConv2d, TTConv2d, TuckerConv2d, cp_conv2d, tt_conv2d, tucker2_conv2d
from .fast import FFTConv2d, NarrowConv2d, PackedConv2d, WinogradConv2d
from .gemv_linear import GemvLinear
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
    "ASPP",
    "ASPPPooling",
    "CPConv2d",
    "ChainConv2d",
    "DeformConv2d",
    "DeformConv2dOp",
    "FFTConv2d",
    "GemvLinear",
    "NarrowConv2d",
    "PackedConv2d",
    "ModulatedDeformConv2d",
    "TTConv2d",
    "TuckerConv2d",
    "WinogradConv2d",
    "cp_conv2d",
    "deform_conv2d",
    "dilated_conv_bn",
    "effective_kernel_size",
    "has_gridding",
    "reachable_offsets",
    "receptive_field",
    "tt_conv2d",
    "tucker2_conv2d",
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
