"""Cost rules for ATen operations, the level at which :mod:`leanconv.cost.trace` counts.

Counting aten ops (as ``torch.utils.flop_counter`` does) catches every way a convolution or a
product can be called: modules, ``F.conv2d``, ``einsum`` (which reaches the dispatcher as ``bmm``),
``@``. Each rule turns one call into ``(kind, OpCost)``. Ops in :data:`FREE` (views, metadata,
creation) cost nothing and make no row; ops with no rule make an explicit "uncounted" row.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..spec import ConvSpec
from .convention import Convention
from .formulas import OpCost, conv_cost, dtype_bytes, elementwise_cost, pool_cost

aten = torch.ops.aten

Rule = Callable[[tuple, dict, object, Convention], tuple[str, OpCost]]


def _tensors(values) -> list[torch.Tensor]:
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(t for t in v if isinstance(t, torch.Tensor))
    return out


def io_bytes(args: tuple, out: object) -> int:
    """Bytes of every distinct tensor read plus every tensor written."""
    seen: dict[int, torch.Tensor] = {}
    for t in _tensors(args):
        seen.setdefault(id(t), t)
    outs = _tensors(out if isinstance(out, (list, tuple)) else [out])
    return sum(t.numel() * t.element_size() for t in [*seen.values(), *outs])


def first_shape(values) -> tuple[int, ...]:
    ts = _tensors(values if isinstance(values, (list, tuple)) else [values])
    return tuple(ts[0].shape) if ts else ()


# ---------------------------------------------------------------------- convolution
def conv_spec_from_aten(args: tuple) -> ConvSpec:
    """The :class:`ConvSpec` of an ``aten.convolution`` call (input, weight, bias, stride, padding,
    dilation, transposed, output_padding, groups)."""
    x, w, b, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    if transposed:
        out_channels = w.shape[1] * groups
    else:
        out_channels = w.shape[0]
    return ConvSpec(
        in_channels=x.shape[1],
        out_channels=out_channels,
        kernel_size=tuple(w.shape[2:]),
        input_size=tuple(x.shape[2:]),
        stride=tuple(stride),
        padding=tuple(padding),
        dilation=tuple(dilation),
        groups=groups,
        transposed=bool(transposed),
        output_padding=tuple(output_padding),
        bias=b is not None,
        batch=x.shape[0],
        dtype=x.dtype,
    )


def _conv(args, kwargs, out, conv: Convention):
    spec = conv_spec_from_aten(args)
    kind = f"conv{spec.ndim}d" + ("_transposed" if spec.transposed else "")
    if spec.is_depthwise and not spec.transposed:
        kind = f"dwconv{spec.ndim}d"
    return kind, conv_cost(spec, conv)


# ---------------------------------------------------------------------- products
def _product(macs: int, bias_elems: int, args, out, conv: Convention) -> OpCost:
    flops = conv.flops_per_mac * macs + (bias_elems if conv.count_bias else 0)
    return OpCost(0, macs, flops, io_bytes(args, out), tuple(out.shape))


def _mm(args, kwargs, out, conv):
    a, b = args[0], args[1]
    return "matmul", _product(a.shape[0] * a.shape[1] * b.shape[1], 0, args, out, conv)


def _addmm(args, kwargs, out, conv):
    bias, a, b = args[0], args[1], args[2]
    macs = a.shape[0] * a.shape[1] * b.shape[1]
    return "linear", _product(macs, out.numel() if bias is not None else 0, args, out, conv)


def _bmm(args, kwargs, out, conv):
    a, b = args[0], args[1]
    return "matmul", _product(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], 0, args, out, conv)


def _baddbmm(args, kwargs, out, conv):
    a, b = args[1], args[2]
    macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return "matmul", _product(macs, out.numel(), args, out, conv)


def _dot(args, kwargs, out, conv):
    a = args[0]
    macs = a.numel() if a.dim() == 1 else a.shape[0] * a.shape[1]
    return "matmul", _product(macs, 0, args, out, conv)


# ---------------------------------------------------------------------- normalisation
def _norm(args, kwargs, out, conv):
    x = args[0]
    y = out[0] if isinstance(out, (list, tuple)) else out
    cost = elementwise_cost(x.shape, 1, 2, conv.count_norm, x.dtype)
    return "norm", OpCost(0, 0, cost.flops, io_bytes(args, y), tuple(y.shape))


# ---------------------------------------------------------------------- pooling
def _pool(window_arg: int | None):
    def rule(args, kwargs, out, conv):
        x = args[0]
        y = out[0] if isinstance(out, (list, tuple)) else out
        if window_arg is None:  # adaptive or reduction: each input element enters one window
            window = max(1, x.numel() // max(1, y.numel()))
        else:
            window = math.prod(args[window_arg])
        return "pool", pool_cost(x.shape, y.shape, window, x.dtype, conv)

    return rule


def _reduce(args, kwargs, out, conv):
    x = args[0]
    window = max(1, x.numel() // max(1, out.numel()))
    return "pool", pool_cost(x.shape, out.shape, window, x.dtype, conv)


# ---------------------------------------------------------------------- element-wise
def _elementwise(kind: str, flops_per_element: int = 1):
    def rule(args, kwargs, out, conv):
        counted = conv.count_activations if kind == "activation" else conv.count_elementwise
        n = out.numel() if isinstance(out, torch.Tensor) else 0
        flops = n * flops_per_element if counted else 0
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
        return kind, OpCost(0, 0, flops, io_bytes(args, out), shape)

    return rule


def _copy(args, kwargs, out, conv):
    shape = first_shape(out)
    return "copy", OpCost(0, 0, 0, io_bytes(args, out), shape)


def _upsample(args, kwargs, out, conv):
    # bilinear: 4 MACs per output element per channel; nearest: a copy
    return "resize", OpCost(0, 0, 0, io_bytes(args, out), tuple(out.shape))


RULES: dict[object, Rule] = {
    aten.convolution: _conv,
    aten._convolution: _conv,
    aten.mm: _mm,
    aten.addmm: _addmm,
    aten.bmm: _bmm,
    aten.baddbmm: _baddbmm,
    aten.dot: _dot,
    aten.mv: _dot,
    aten._native_batch_norm_legit_no_training: _norm,
    aten._native_batch_norm_legit: _norm,
    aten.native_batch_norm: _norm,
    aten._native_batch_norm_legit_functional: _norm,
    aten.native_layer_norm: _norm,
    aten.native_group_norm: _norm,
    aten.max_pool1d: _pool(1),
    aten.max_pool2d_with_indices: _pool(1),
    aten.max_pool3d_with_indices: _pool(1),
    aten.avg_pool1d: _pool(1),
    aten.avg_pool2d: _pool(1),
    aten.avg_pool3d: _pool(1),
    aten._adaptive_avg_pool2d: _pool(None),
    aten._adaptive_avg_pool3d: _pool(None),
    aten.adaptive_max_pool2d: _pool(None),
    aten.adaptive_max_pool3d: _pool(None),
    aten.mean: _reduce,
    aten.sum: _reduce,
    aten.amax: _reduce,
    aten.upsample_nearest2d: _upsample,
    aten.upsample_bilinear2d: _upsample,
    aten.grid_sampler_2d: _upsample,
}

_ACTIVATIONS = [
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "silu", "silu_", "gelu", "gelu_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "clamp", "clamp_", "clamp_min", "clamp_min_",
    "clamp_max", "clamp_max_", "threshold", "_softmax", "_log_softmax", "mish", "mish_",
    "softplus", "exp", "log", "sqrt", "rsqrt", "abs", "neg", "reciprocal", "pow",
]  # fmt: skip
_ELEMENTWISE = [
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub", "addcmul", "where",
    "maximum", "minimum", "eq", "ne", "gt", "lt", "ge", "le", "masked_fill", "masked_fill_",
    "floor", "ceil", "round", "remainder", "bitwise_and", "logical_and", "sign",
]  # fmt: skip
_COPIES = [
    "cat", "stack", "clone", "_to_copy", "copy_", "constant_pad_nd", "reflection_pad2d",
    "replicate_pad2d", "index", "index_select", "gather", "repeat", "native_channel_shuffle",
    "channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "flip", "roll", "_unsafe_index",
    "scatter", "scatter_add", "index_put", "index_put_", "im2col", "col2im", "embedding",
]  # fmt: skip
FREE = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "transpose", "t", "expand",
    "squeeze", "unsqueeze", "select", "slice", "split", "split_with_sizes", "unbind", "chunk",
    "narrow", "detach", "alias", "as_strided", "empty", "empty_like", "empty_strided", "zeros",
    "zeros_like", "ones", "ones_like", "full", "full_like", "new_empty", "new_zeros", "new_ones",
    "new_full", "fill_", "zero_", "lift_fresh", "lift_fresh_copy", "arange", "scalar_tensor",
    "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "diagonal", "unfold", "expand_as",
    "view_as", "_has_compatible_shallow_copy_type", "is_same_size", "set_", "resize_",
    "unsafe_split", "linspace", "rand", "randn", "normal_", "uniform_", "bernoulli_",
    "split_copy", "view_copy", "t_copy", "_conj", "conj", "resolve_conj", "resolve_neg",
    "movedim", "_softmax_backward_data", "native_dropout", "dropout",
}  # fmt: skip

for _name in _ACTIVATIONS:
    if hasattr(aten, _name):
        RULES[getattr(aten, _name)] = _elementwise("activation")
for _name in _ELEMENTWISE:
    if hasattr(aten, _name):
        RULES[getattr(aten, _name)] = _elementwise("elementwise")
for _name in _COPIES:
    if hasattr(aten, _name):
        RULES[getattr(aten, _name)] = _copy


def rule_for(func) -> Rule | None:
    """The rule of an ``OpOverload`` (looked up by its packet), or None if it has none."""
    return RULES.get(func.overloadpacket)


def is_free(func) -> bool:
    return func.overloadpacket.__name__ in FREE


def unknown_cost(args: tuple, out: object) -> OpCost:
    return OpCost(0, 0, 0, io_bytes(args, out), first_shape(out))


__all__ = ["RULES", "FREE", "rule_for", "is_free", "conv_spec_from_aten", "dtype_bytes"]
