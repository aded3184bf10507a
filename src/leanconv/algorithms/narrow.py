"""Direct convolution for narrow layers: output channels in vectors of 8 (a compiled kernel).

    y[n, k, y, x] = act(b[k] + r[n, k, y, x]
                        + sum_{c, i, j} x[n, c, y s_h - p_h + i d_h, x s_w - p_w + j d_w]
                                        w[k, c, i, j]),   act in {identity, ReLU}

computed by ``kernels/narrow_direct.c`` (:func:`leanconv.algorithms.native.narrow`), the
register-blocked direct convolution of Georganas et al. 2018 ("Anatomy of high-performance deep
learning convolutions on SIMD architectures") with the output-channel block narrowed to 8 floats.

Why: oneDNN blocks output channels by the machine's widest vector, 16 floats with AVX-512, so a
layer with 8 output channels (or 24, 40) computes a half-empty last vector. The thin factors of a
decomposed layer have exactly such widths (ranks 4-24): on the 2-core AVX-512 test machine a
32 -> 8 3x1 factor at batch 64, 32x32, ran at 27-50 GMAC/s by ``F.conv2d`` against 87-111 for the
dense 32 -> 32 3x3 layer it came from. The kernel's vectors hold 8 channels whatever the machine
(on AMD Zen 4, which executes 512-bit vectors as two 256-bit halves, that costs nothing) and it
reads zero padding as skipped taps instead of copying it.

Two factors in a row, the second one kernel row (``kh x kw`` then ``1 x kw'``: a spatial SVD's
vertical and horizontal factors, or a ``low_rank`` chain's ``kh x kw`` core and 1x1), run in one
pass by :func:`conv2d_pair`: each thread computes a band of six rows of the first factor's
output into a buffer of its own and the second factor reads them from cache, so the thin
intermediate never goes to memory and one parallel loop replaces two. Against the same two
factors in two calls (``benchmarks/bench_narrow_pair.py``, 2-core AMD EPYC, Zen 4): 1.34x on a
32 -> 8 -> 32 spatial SVD at 32x32 and batch 64, 0.98-1.06x on wider ranks there, 1.1-1.33x at
batch 1 (docs/benchmarks.md, "Narrow pairs").

The residual ``r`` (a residual block's shortcut, zero when not given) is added as each output
vector is written, before the activation: a block's ``relu(conv(h) + shortcut)`` then costs one
read of the shortcut where a separate sum and ReLU cost two more passes over the output
(:mod:`leanconv.rewrite.residual`).

It is not faster everywhere (docs/benchmarks.md, "Narrow direct convolution"): where it runs is
measured, layer by layer and batch size by batch size (:class:`leanconv.nn.NarrowConv2d` below its
``min_batch`` runs oneDNN; :func:`leanconv.selection.batch_switch.fit_min_batch` sets it), never
assumed. Float32 CPU tensors only, one group; :func:`usable` says when it applies.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import native
from ._geometry import symmetric_output_size

__all__ = ["conv2d", "conv2d_pair", "pack", "pack_bias", "pair_fits", "usable"]


def usable(x: Tensor, weight: Tensor) -> bool:
    """The kernel applies: plain float32 CPU tensors (:func:`native.usable`), a batched 4-D input,
    and no autograd recording (the packed weight has no gradient)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    return x.dim() == 4 and weight.shape[2] <= native.NARROW_MAX_ROWS and native.usable(x, weight)


def pack(weight: Tensor) -> Tensor:
    """``weight`` (K, C, kh, kw) as the kernel reads it: ``[kh, kw, C, Kp]``, Kp = K rounded up to
    a whole vector, the extra channels zero."""
    k, c, kh, kw = weight.shape
    kp = -(-k // native.NARROW_VECTOR) * native.NARROW_VECTOR
    packed = weight.new_zeros((kh, kw, c, kp))
    packed[..., :k] = weight.detach().permute(2, 3, 1, 0)
    return packed


def pack_bias(bias: Tensor | None, padded: int) -> Tensor | None:
    """``bias`` zero-padded to ``padded`` values (None stays None)."""
    if bias is None:
        return None
    out = bias.new_zeros(padded)
    out[: bias.numel()] = bias.detach()
    return out


def conv2d(
    x: Tensor,
    packed: Tensor,
    bias: Tensor | None,
    out_channels: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    activation: str | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    """``act(conv2d(x, W) + b + residual)`` for ``packed = pack(W)`` and ``bias`` from
    :func:`pack_bias` (symmetric ``padding``; one group; ``residual`` None or of the output's
    shape). The output is channels-last; an input whose channels are not innermost, or a residual
    in another layout, is made channels-last first (a copy)."""
    if activation not in (None, "relu"):
        raise ValueError(f"activation={activation!r} is not None or 'relu'")
    if x.stride(1) != 1 and x.shape[1] != 1:
        x = x.contiguous(memory_format=torch.channels_last)
    size = symmetric_output_size(x.shape[2:], packed.shape[:2], stride, padding, dilation)
    out = torch.empty(
        (x.shape[0], out_channels, *size), dtype=x.dtype, memory_format=torch.channels_last
    )
    residual = _like(residual, out)
    if out.numel():
        native.narrow(x, packed, out, stride, padding, dilation, bias, activation == "relu",
                      residual)  # fmt: skip
    return out


def _like(residual: Tensor | None, out: Tensor) -> Tensor | None:
    """``residual`` with ``out``'s strides (a copy when it has others); an error when it does
    not have ``out``'s shape (a broadcast sum is the caller's, as ``+``)."""
    if residual is None:
        return None
    if residual.shape != out.shape:
        raise ValueError(
            f"residual of shape {tuple(residual.shape)} is not the output's {tuple(out.shape)}"
        )
    if residual.stride() != out.stride() or residual.dtype != out.dtype:
        residual = torch.empty_like(out).copy_(residual)
    return residual


def pair_fits(second_kernel: tuple[int, int], second_stride, second_padding) -> bool:
    """The second of two factors can take the first's rows band by band in :func:`conv2d_pair`:
    one kernel row, vertical stride 1, no vertical padding."""
    return second_kernel[0] == 1 and second_stride[0] == 1 and second_padding[0] == 0


def conv2d_pair(x: Tensor, first: tuple, second: tuple, residual: Tensor | None = None) -> Tensor:
    """``conv2(conv1(x))`` in one pass, each ``conv`` as :func:`conv2d`'s arguments after ``x``:
    ``(packed, bias, out_channels, stride, padding, dilation, activation)``; the second must fit
    (:func:`pair_fits`) and takes ``residual`` as :func:`conv2d` does. The output is
    channels-last, as :func:`conv2d`'s."""
    for conv in (first, second):
        if conv[6] not in (None, "relu"):
            raise ValueError(f"activation={conv[6]!r} is not None or 'relu'")
    if x.stride(1) != 1 and x.shape[1] != 1:
        x = x.contiguous(memory_format=torch.channels_last)
    w1, b1, k1, s1, p1, d1, a1 = first
    w2, b2, k2, s2, p2, d2, a2 = second
    mid = symmetric_output_size(x.shape[2:], w1.shape[:2], s1, p1, d1)
    size = symmetric_output_size(mid, w2.shape[:2], s2, p2, d2)
    out = torch.empty((x.shape[0], k2, *size), dtype=x.dtype, memory_format=torch.channels_last)
    residual = _like(residual, out)
    if out.numel():
        native.narrow_pair(x, (w1, b1, k1, s1, p1, d1, a1 == "relu"),
                           (w2, b2, k2, s2, p2, d2, a2 == "relu"), out, residual)  # fmt: skip
    return out
