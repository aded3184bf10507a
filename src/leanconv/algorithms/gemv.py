"""A fully connected layer at a small batch, streamed by every core (a compiled kernel).

    y[..., o] = b[o] + sum_k W[o, k] x[..., k]

computed by ``kernels/gemv.c`` (:func:`leanconv.algorithms.native.gemv`) when ``x`` has at most
:data:`MAX_ROWS` rows.

Why: at batch 1 a Linear layer does one multiply-add per weight it reads, so its time is the time
to read the weight. VGG-16's ``classifier.0`` reads 411 MB per image; on the 2-core test machine
``F.linear``, ``torch.mv`` and ``addmm`` all read it at 19.8-20 GB/s whether torch has 1 or 2
threads, while a plain ``sum`` of the same tensor with 2 threads reads 32.7 GB/s: the library's
matrix-vector product streams with one core. The kernel gives each thread its own block of output
rows. It is exact up to float32 rounding (another order of the same sums). Whether it is faster
on a layer is measured (:func:`leanconv.accelerate` times it against ``F.linear`` on the layer's
real input), never assumed. Float32 CPU tensors only; :func:`usable` says when it applies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native

__all__ = ["MAX_ROWS", "linear", "usable"]

#: The most rows of ``x`` (the batch, times any leading dimensions) the kernel takes; beyond a
#: few rows the weight is reused enough for the library's matrix product to win.
MAX_ROWS = 8


def usable(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """The kernel applies: plain float32 CPU tensors (:func:`native.usable`), at most
    :data:`MAX_ROWS` rows, a contiguous weight, and no autograd recording (it has no backward)."""
    operands = [t for t in (x, weight, bias) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        return False
    if x.dim() == 0 or x.numel() == 0 or x.shape[-1] != weight.shape[1]:
        return False
    rows = x.numel() // x.shape[-1]
    return rows <= MAX_ROWS and weight.is_contiguous() and native.usable(*operands)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, by the streaming kernel where :func:`usable`, else by
    ``F.linear`` itself; same shape, dtype and device either way."""
    if not usable(x, weight, bias):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = x.new_empty((rows.shape[0], weight.shape[0]))
    native.gemv(rows, weight, out, None if bias is None else bias.contiguous())
    return out.reshape(*x.shape[:-1], weight.shape[0])
