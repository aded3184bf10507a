"""A chain of convolutions composed into the one convolution it computes.

A decomposed layer runs as a chain of convolutions with nothing nonlinear between them (Tucker-2:
1x1, k x k, 1x1; spatial SVD: k x 1, 1 x k; ``low_rank``: k x k, 1x1; CP: 1x1, depthwise k x 1
and 1 x k, 1x1). Convolutions are linear and commute with shifts, so such a chain is one
convolution; :func:`compose_chain` builds it exactly when, **along each spatial axis, at most one
factor has a kernel, stride or padding** (the others have kernel 1, stride 1 and padding 0
there) and only the last factor has a bias. Then, with ``A`` the earlier and ``B`` the later of
two factors,

    K[o, i, y, x] = sum_a B[o, a, y_B, x_B] * A[a, i, y_A, x_A],

each spatial index taken from the factor that has a kernel along that axis (the other's is 0),
and that factor's stride, padding and dilation are the composite's along that axis. Zero padding
commutes with a factor that has no kernel, stride or padding along the padded axis and no bias:
it maps zeros to zeros without mixing positions along that axis, so padding its output equals
padding its input. Grouped and depthwise factors are expanded to block-diagonal dense weights
first; the composite takes the largest group count whose off-diagonal blocks are exactly zero.

A chain that breaks these rules (a bias before the last factor, two factors with kernels along
one axis, string or asymmetric padding, a padding mode other than zeros) is not composed:
:func:`compose_chain` returns ``None``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..algorithms._geometry import symmetric_padding

__all__ = ["Composite", "chain_convolutions", "compose_chain"]


class Composite:
    """One convolution: ``weight`` (float64), ``bias`` (or ``None``) and its geometry."""

    def __init__(self, weight: Tensor, bias, stride, padding, dilation, groups: int = 1):
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups = groups

    def conv(self, like: Tensor) -> nn.Conv2d:
        """An ``nn.Conv2d`` of this convolution, in ``like``'s dtype and on its device."""
        out, per_group, kh, kw = self.weight.shape
        conv = nn.Conv2d(per_group * self.groups, out, (kh, kw), self.stride, self.padding,
                         self.dilation, self.groups, bias=self.bias is not None,
                         device=like.device, dtype=like.dtype)  # fmt: skip
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


def chain_convolutions(module: nn.Module) -> list[nn.Module] | None:
    """The convolutions of a chain (an ``nn.Sequential`` of convolutions, with ``nn.Identity``
    where a batch norm was folded), in order; ``None`` for anything else."""
    if not isinstance(module, nn.Sequential):
        return None
    convs = [m for m in module if type(m) is not nn.Identity]
    if len(convs) < 2 or not all(_is_conv(m) for m in convs):
        return None
    return convs


def _is_conv(m: nn.Module) -> bool:
    return (
        all(hasattr(m, a) for a in ("weight", "stride", "padding", "dilation", "groups"))
        and getattr(m, "padding_mode", "zeros") == "zeros"
        and isinstance(m.weight, Tensor)
        and m.weight.dim() == 4
    )


def _block(j: int, groups: int, out: int, c: int) -> tuple[slice, slice]:
    """Rows and columns of the ``j``-th of ``groups`` diagonal blocks of an ``out x c`` weight."""
    step, per_group = out // groups, c // groups
    return slice(j * step, (j + 1) * step), slice(j * per_group, (j + 1) * per_group)


def _dense(m: nn.Module) -> Tensor:
    """``m``'s weight as a groups=1 weight (block diagonal), float64."""
    w = m.weight.detach().to(torch.float64)
    g = m.groups
    if g == 1:
        return w
    out, per_group = w.shape[0], w.shape[1]
    dense = w.new_zeros(out, per_group * g, *w.shape[2:])
    for j in range(g):
        rows, cols = _block(j, g, out, per_group * g)
        dense[rows, cols] = w[rows]
    return dense


def _axis(kernel: int, stride: int, padding: int) -> bool:
    """The factor acts along this axis (has a kernel, a stride or a padding there)."""
    return kernel > 1 or stride > 1 or padding > 0


def compose_chain(convs: list[nn.Module]) -> Composite | None:
    """The one convolution that the chain ``convs`` computes (see the module docstring), or
    ``None`` where the chain cannot be composed exactly."""
    if not convs:
        return None
    weight = None
    geometry: list = [None, None]  # per axis: (stride, padding, dilation) of the acting factor
    for i, m in enumerate(convs):
        padding = symmetric_padding(m.padding)
        if padding is None or (getattr(m, "bias", None) is not None and i < len(convs) - 1):
            return None
        w = _dense(m)
        for axis in (0, 1):
            if _axis(w.shape[2 + axis], m.stride[axis], padding[axis]):
                if geometry[axis] is not None:
                    return None  # two factors act along one axis
                geometry[axis] = (m.stride[axis], padding[axis], m.dilation[axis])
        if weight is None:
            weight = w
            continue
        if w.shape[1] != weight.shape[0]:
            return None
        # B[o, a, y, x] * A[a, i, y', x'], where along each axis one of y, y' has size 1
        k = torch.einsum("oahw,aiyx->oihywx", w, weight)
        o, c, h, y, wd, x = k.shape
        weight = k.reshape(o, c, h * y, wd * x)
    stride, padding, dilation = zip(*(g or (1, 0, 1) for g in geometry), strict=True)
    last = convs[-1]
    bias = getattr(last, "bias", None)
    bias = bias.detach().to(torch.float64) if bias is not None else None
    groups = _block_groups(weight)
    if groups > 1:
        weight = torch.cat([weight[_block(j, groups, *weight.shape[:2])] for j in range(groups)])
    return Composite(weight, bias, stride, padding, dilation, groups)


def _block_groups(weight: Tensor) -> int:
    """The largest ``g`` for which ``weight`` (groups=1) is block diagonal with ``g`` blocks
    (its off-diagonal blocks exactly zero)."""
    out, c = weight.shape[:2]
    nonzero = weight.ne(0).flatten(2).any(-1)  # (out, c)
    for g in sorted((d for d in range(2, math.gcd(out, c) + 1) if out % d == 0 and c % d == 0),
                    reverse=True):  # fmt: skip
        mask = torch.ones_like(nonzero)
        for j in range(g):
            mask[_block(j, g, out, c)] = False
        if not nonzero[mask].any():
            return g
    return 1
