"""Squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks").

``y = x * sigmoid(W2 relu(W1 mean_{h,w}(x) + b1) + b2)``: a global average pool squeezes each
channel to one number, two fully connected layers (``C -> C / r -> C``, here ``1 x 1``
convolutions with bias on a ``1 x 1`` map) compute a gate in ``(0, 1)`` per channel, and the input
is rescaled channel-wise. With ``r`` the reduction ratio (16 in the paper)::

    MACs = 2 N C (C / r),   params = 2 C (C / r) + C / r + C

(the pooling and the rescaling are ``2 N C H W`` additions and multiplications, not MACs).
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import Activation, AnalyticCost, Shape, chain_specs, divide_channels, positive_args


class SqueezeExcite(AnalyticCost, nn.Module):
    """Channel gate: global average pool, ``1 x 1`` reduce (``channels // reduction``),
    ``activation`` (ReLU), ``1 x 1`` expand, ``gate`` (sigmoid), multiply."""

    @positive_args("channels", "reduction")
    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        activation: Activation = partial(nn.ReLU, inplace=True),
        gate: Activation = nn.Sigmoid,
    ):
        super().__init__()
        hidden = divide_channels(
            type(self).__name__, ("channels", channels), ("reduction", reduction), "hidden units"
        )
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = activation() if activation is not None else nn.Identity()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = gate() if gate is not None else nn.Identity()
        self.channels, self.reduction, self.hidden = channels, reduction, hidden

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction} ({self.hidden} hidden)"

    def _walk(self, shape: Shape):
        specs, _ = chain_specs((shape[0], shape[1], 1, 1), [self.reduce, self.expand])
        return specs, shape

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(self.act(self.reduce(s))))
