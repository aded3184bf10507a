"""Stacked small convolutions (Simonyan & Zisserman 2015, VGG, section 2.3; Szegedy et al. 2016,
"Rethinking the Inception Architecture", section 3.1).

A ``k x k`` receptive field (odd ``k >= 3``) from ``n = (k - 1) / 2`` stacked ``3 x 3``
convolutions with padding 1 (the stride sits in the last, so the output has the ``k x k``,
'same'-padded shape). With ``M`` intermediate channels, at input ``H x W`` and stride 1::

    MACs = 9 H W (C_in M + (n - 2) M^2 + M C_out)      (n >= 2)
    dense k x k: k^2 H W C_in C_out                    (5x5 -> two 3x3: 18/25 = 0.72 at C=M)

With no activation between, the stack is linear and equals a ``k x k`` convolution whose kernel
is the composition of the ``3 x 3`` kernels, away from the border (``n - 1`` pixels), where each
layer's zero padding differs from padding the input once.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._common import Activation, AnalyticCost, Norm, Shape, chain_specs, check_positive, norm_act


class StackedConv2d(AnalyticCost, nn.Module):
    """``(kernel_size - 1) / 2`` stacked ``3 x 3`` convolutions in place of one ``k x k``.

    ``norm``/``activation`` follow every convolution except that the last has no activation when
    ``activate_output=False``. ``intermediate_channels`` defaults to ``out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        intermediate_channels: int | None = None,
        stride: int = 1,
        bias: bool = False,
        norm: Norm = None,
        activation: Activation = None,
        activate_output: bool = True,
    ):
        super().__init__()
        where = type(self).__name__
        if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(
                f"{where}: kernel_size={kernel_size} must be an odd integer >= 3 "
                "(a stack of 3x3 convolutions covers odd sizes 3, 5, 7, ...)"
            )
        mid = out_channels if intermediate_channels is None else intermediate_channels
        check_positive(
            where,
            in_channels=in_channels,
            out_channels=out_channels,
            intermediate_channels=mid,
            stride=stride,
        )
        n = (kernel_size - 1) // 2
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(n):
            last = i == n - 1
            out = out_channels if last else mid
            layers.append(nn.Conv2d(c, out, 3, stride if last else 1, 1, bias=bias))
            layers.extend(norm_act(out, norm, None if last and not activate_output else activation))
            c = out
        self.layers = nn.Sequential(*layers)
        self.in_channels, self.out_channels, self.intermediate_channels = (
            in_channels,
            out_channels,
            mid,
        )
        self.kernel_size, self.stride, self.depth = kernel_size, stride, n

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}->{self.out_channels}, kernel_size={self.kernel_size} "
            f"({self.depth} x 3x3, {self.intermediate_channels} between), stride={self.stride}"
        )

    @property
    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def _walk(self, shape: Shape):
        return chain_specs(shape, self.layers, [f"conv{i}" for i in range(self.depth)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
