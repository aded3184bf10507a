"""Direct convolution for narrow layers: output channels in vectors of 8 or 16, or input
channels for the thinnest (a compiled kernel).

    y[n, k, y, x] = act(b[k] + r[n, k, y, x]
                        + sum_{c, i, j} x[n, c, y s_h - p_h + i d_h, x s_w - p_w + j d_w]
                                        w[k, c, i, j]),   act in {identity, ReLU}

computed by ``kernels/narrow_direct.c`` (:func:`leanconv.algorithms.native.narrow`), the
register-blocked direct convolution of Georganas et al. 2018 ("Anatomy of high-performance deep
learning convolutions on SIMD architectures") with the output-channel block fitted to the layer.

Why: oneDNN blocks output channels by the machine's widest vector, 16 floats with AVX-512, so a
layer with 8 output channels (or 24, 40) computes a half-empty last vector. The thin factors of a
decomposed layer have exactly such widths (ranks 4-24): on the 2-core AVX-512 test machine a
32 -> 8 3x1 factor at batch 64, 32x32, ran at 27-50 GMAC/s by ``F.conv2d`` against 87-111 for the
dense 32 -> 32 3x3 layer it came from. The kernel's vectors hold 8 channels for layers of at most
8 output channels and 16 for wider ones where the machine has 16-float vectors
(:func:`native.narrow_vector`); layers of at most 4 output channels from a whole number of
vectors of input channels (a rank-4 factor's 32 -> 4) are vectorised over the input channels
instead, each pixel's partial sums added across the vector's lanes at the end (on a 2-core Zen 5,
batch 64: 1.4-3.2x over the output-channel form, ``benchmarks/bench_narrow_paths.py``). It reads
zero padding as skipped taps instead of copying it.

Factors in a row (2 to 4: a spatial SVD's pair, a Tucker-2 or ``low_rank`` chain's 1x1, core and
1x1, a CP chain) run in one pass by :func:`conv2d_chain`: each thread takes a band of output rows
of the last factor, and each earlier factor computes the rows of its output that the band needs
(its kernel's reach above and below: a 3x3 core's band needs two more rows of the 1x1 before it,
computed by both neighbouring bands) into a buffer of the thread's, which the next factor reads
from cache. The thin intermediates never go to memory and one parallel loop replaces several.
Against the same factors in one call each (``benchmarks/bench_narrow_chain.py``, 2-core AMD
EPYC, Zen 4): 1.05-1.14x at batch 64, 1.13-1.33x at batch 1, on spatial SVD, core + 1x1 and
Tucker-2 chains of 8-128 channels (docs/benchmarks.md, "Whole chains in one pass").

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

__all__ = ["CHAIN_MAX", "conv2d", "conv2d_chain", "pack", "pack_bias", "usable"]

#: The most factors :func:`conv2d_chain` runs in one pass.
CHAIN_MAX = native.NARROW_CHAIN_MAX


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
    kp = native.narrow_padded(k)
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


def conv2d_chain(x: Tensor, convs: list[tuple], residual: Tensor | None = None) -> Tensor:
    """``conv_n(... conv_1(x))`` in one pass (2 to :data:`CHAIN_MAX` convolutions), each
    ``conv`` as :func:`conv2d`'s arguments after ``x``: ``(packed, bias, out_channels, stride,
    padding, dilation, activation)``, each reading the previous one's ``out_channels``; the last
    takes ``residual`` as :func:`conv2d` does. The output is channels-last, as :func:`conv2d`'s."""
    for conv in convs:
        if conv[6] not in (None, "relu"):
            raise ValueError(f"activation={conv[6]!r} is not None or 'relu'")
    if x.stride(1) != 1 and x.shape[1] != 1:
        x = x.contiguous(memory_format=torch.channels_last)
    size = tuple(x.shape[2:])
    for i, (w, _, _, stride, padding, dilation, _) in enumerate(convs):
        size = symmetric_output_size(size, w.shape[:2], stride, padding, dilation)
        if min(size) < 1:
            raise ValueError(f"convolution {i} of the chain gives an empty output {size}")
    out = torch.empty((x.shape[0], convs[-1][2], *size), dtype=x.dtype,
                      memory_format=torch.channels_last)  # fmt: skip
    residual = _like(residual, out)
    if out.numel():
        native.narrow_chain(x, [(*c[:6], c[6] == "relu") for c in convs], out, residual)
    return out
