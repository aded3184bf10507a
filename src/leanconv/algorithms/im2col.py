"""Textbook im2col + GEMM convolution (Chellapilla et al. 2006; the reference path).

``im2col`` copies every receptive field into a column (``torch.nn.functional.unfold``) so that
the convolution becomes one matrix product per group::

    cols: (N, C r s, L)        L = H_out W_out output positions
    y[n, g] = W[g] @ cols[n, g]     W[g]: (K/g, C/g r s)

It costs ``r s`` times the input in memory and the same ``N K C r s L / g`` MACs as direct
convolution; it is here as a simple, obviously correct reference for the fast algorithms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._geometry import PaddingArg, add_bias, batched, conv_args, pad_input, unbatched

__all__ = ["conv2d"]


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` computed as unfold + batched GEMM (any geometry).

    ``padding`` may be asymmetric: ``(left, right, top, bottom)`` or ``((top, bottom),
    (left, right))``.
    """
    args = conv_args(x, weight, bias, stride, padding, dilation, groups, "im2col.conv2d")
    xb = batched(x)
    xp = pad_input(xb, args.padding)
    n = xp.shape[0]
    k_out, cg, r, s = weight.shape
    ho, wo = args.output_size(*xb.shape[-2:])
    cols = F.unfold(xp, (r, s), dilation=args.dilation, stride=args.stride)  # (N, C r s, L)
    cols = cols.view(n, groups, cg * r * s, ho * wo)
    w = weight.reshape(groups, k_out // groups, cg * r * s)
    y = torch.matmul(w, cols)  # (N, g, K/g, L)
    return unbatched(add_bias(y.reshape(n, k_out, ho, wo), bias), x)
