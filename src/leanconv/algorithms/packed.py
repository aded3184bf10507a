"""Direct convolution by oneDNN with the weight packed once and the activation fused.

``torch.nn.functional.conv2d`` hands oneDNN a plain ``[K, C/g, r, s]`` weight on every call, which
oneDNN reorders into its blocked layout each time, and an activation after it is one more pass over
the output. :func:`pack` reorders the weight once for an input shape; :func:`conv2d_packed` runs
the convolution on the packed weight with the bias and ReLU applied as oneDNN post-operations, in
the same pass that writes the output:

    y = act(conv2d(x, W) + b),   act in {identity, ReLU}

Measured on the 2-core test machine, float32, channels-last (docs/benchmarks.md, "Deployment
form"): 1.03-1.13x on VGG-16's 3x3 layers at batch 64, 1.66x on a 8->64 1x1 expansion (the ReLU
pass costs as much as the convolution there), and 7x on a 512-channel 2x2 layer at batch 1 (the
per-call weight reorder dominated).

The packed call costs about 20 us more than ``F.conv2d`` whatever the size (measured at batch 1:
1x1 layers of 0.07-1 M multiply-accumulates ran in 5-19 us by ``F.conv2d`` and 21-26 us packed),
so :func:`worth_packing` keeps layers below :data:`MIN_MACS` per call on ``F.conv2d`` (a 3x3
layer of 2.4 M was 1.14x faster packed, of 9.4 M 1.8x).

These are the entries PyTorch's own compiler uses on x86 CPUs (``torch.ops.mkldnn.
_reorder_convolution_weight`` and ``_convolution_pointwise``); where they are missing (other builds,
other devices, other dtypes) :func:`usable` says so and callers run ``F.conv2d`` instead. The output
is channels-last whatever the input's layout (oneDNN's choice), and equals ``F.conv2d`` up to
float32 rounding (both are oneDNN kernels; the summation order may differ).
"""

from __future__ import annotations

import torch

from ._geometry import symmetric_output_size

__all__ = ["ACTIVATIONS", "MIN_MACS", "conv2d_packed", "onednn_ops", "pack", "usable",
           "worth_packing"]  # fmt: skip

#: Activations fused as post-operations (None: the plain convolution).
ACTIVATIONS = (None, "relu")
#: Multiply-accumulates per call below which ``F.conv2d`` is faster (see the module docstring).
MIN_MACS = 2_000_000


def onednn_ops():
    """``(reorder, convolution)`` from ``torch.ops.mkldnn``, or ``None`` where they are missing."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return ops._reorder_convolution_weight, ops._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The packed path applies: plain float32 CPU tensors (no subclass, no tracing or compiling,
    no autograd recording: the packed weight has no gradient), 4-D input, oneDNN available."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    plain = (torch.Tensor, torch.nn.Parameter)
    return (
        x.dim() == 4
        and all(type(t) in plain for t in (x, weight))
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, weight))
        and torch.backends.mkldnn.is_available()
        and onednn_ops() is not None
    )


def worth_packing(
    weight_shape: tuple[int, ...],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    input_shape: tuple[int, ...],
) -> bool:
    """Whether a call on ``input_shape`` does at least :data:`MIN_MACS` multiply-accumulates."""
    k, cg, kh, kw = weight_shape
    ho, wo = symmetric_output_size(input_shape[2:], (kh, kw), stride, padding, dilation)
    n = input_shape[0]
    return n * k * max(ho, 0) * max(wo, 0) * cg * kh * kw >= MIN_MACS


def pack(
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    input_shape: tuple[int, ...],
) -> torch.Tensor | None:
    """``weight`` reordered into oneDNN's layout for inputs of ``input_shape`` (N, C, H, W);
    ``None`` when oneDNN refuses the geometry (callers then use ``F.conv2d``)."""
    ops = onednn_ops()
    if ops is None:
        return None
    reorder = ops[0]
    try:
        return reorder(weight.detach().contiguous(), list(padding), list(stride), list(dilation),
                       groups, list(input_shape))  # fmt: skip
    except RuntimeError:
        return None


def conv2d_packed(
    x: torch.Tensor,
    packed: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    activation: str | None = None,
) -> torch.Tensor:
    """``act(conv2d(x, W) + b)`` on a weight from :func:`pack` (symmetric ``padding`` only)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}")
    conv = onednn_ops()[1]
    b = None if bias is None else bias.detach()
    attr = "none" if activation is None else activation
    return conv(x, packed, b, list(padding), list(stride), list(dilation), groups, attr, [], "")
