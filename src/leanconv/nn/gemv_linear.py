"""``nn.Linear`` computed, at small batches, by the streaming matrix-vector kernel."""

from __future__ import annotations

from torch import Tensor, nn

from ..algorithms import gemv as _gemv


class GemvLinear(nn.Linear):
    """``nn.Linear`` whose forward runs :func:`leanconv.algorithms.gemv.linear`: at most
    :data:`~leanconv.algorithms.gemv.MAX_ROWS` rows of float32 CPU input by the kernel that
    streams the weight with every core, anything else (more rows, other dtypes and devices,
    autograd recording) by ``F.linear``. The same function up to float32 rounding, with the
    same parameters and state dict as the ``nn.Linear`` it replaces."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> GemvLinear:
        """A copy of ``linear`` (its weights copied, on its device and dtype)."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)  # fmt: skip
        layer.load_state_dict(linear.state_dict())
        return layer.train(linear.training)

    def as_linear(self) -> nn.Linear:
        """The plain ``nn.Linear`` computing the same function (its weights copied)."""
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)  # fmt: skip
        layer.load_state_dict(self.state_dict())
        return layer.train(self.training)

    def forward(self, x: Tensor) -> Tensor:
        return _gemv.linear(x, self.weight, self.bias)
