"""Cost rules for ATen operations, the level at which :mod:`leanconv.cost.trace` counts.

Counting aten ops (as ``torch.utils.flop_counter`` does) catches every way a convolution or a
product can be called: modules, ``F.conv2d``, ``einsum`` (which reaches the dispatcher as ``bmm``),
``@``. Each rule turns one call into ``(kind, OpCost)``. Ops in :data:`FREE` (views, metadata,
creation, asserts) cost nothing and make no row; the other ops known to do no multiply-accumulate
are listed, by kind, in :data:`NO_MACS` (copies, element-wise ops, activations, reductions,
resampling); ops with no rule make an explicit "uncounted" row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..spec import ConvSpec
from .convention import Convention
from .formulas import OpCost, conv_cost, dtype_bytes, elementwise_cost, pool_cost

aten = torch.ops.aten

Rule = Callable[[tuple, dict, object, Convention], tuple[str, OpCost]]

#: ATen op packet -> its rule. A rule is registered next to its formula with :func:`counts`, as
#: ``torch.utils.flop_counter`` registers its formulas.
RULES: dict[object, Rule] = {}


def counts(*names: str):
    """Decorator: the rule below counts the ATen ops ``names`` (those this torch build has)."""

    def register(rule: Rule) -> Rule:
        for name in names:
            if hasattr(aten, name):
                RULES[getattr(aten, name)] = rule
        return rule

    return register


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


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    """``t``'s shape, or ``()`` for a nested tensor (whose rows differ in length)."""
    return () if t.is_nested else tuple(t.shape)


def first_shape(values) -> tuple[int, ...]:
    ts = _tensors(values if isinstance(values, (list, tuple)) else [values])
    return _shape(ts[0]) if ts else ()


def _first(values) -> torch.Tensor | None:
    """The first tensor of an op's output (a tensor, or a tuple such as ``max.dim``'s)."""
    ts = _tensors(values if isinstance(values, (list, tuple)) else [values])
    return ts[0] if ts else None


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    """Argument ``index`` of the schema, given positionally or by ``name``."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


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


@counts("convolution", "_convolution")
def _conv(args, kwargs, out, conv: Convention):
    spec = conv_spec_from_aten(args)
    kind = f"conv{spec.ndim}d" + ("_transposed" if spec.transposed else "")
    if spec.is_depthwise and not spec.transposed:
        kind = f"dwconv{spec.ndim}d"
    return kind, conv_cost(spec, conv)


# ---------------------------------------------------------------------- products
def _product(macs: int, bias_elems: int, args, out, conv: Convention) -> OpCost:
    flops = conv.flops_per_mac * macs + (bias_elems if conv.count_bias else 0)
    return OpCost(0, macs, flops, io_bytes(args, out), first_shape(out))


@counts("mm")
def _mm(args, kwargs, out, conv):
    a, b = args[0], args[1]
    return "matmul", _product(a.shape[0] * a.shape[1] * b.shape[1], 0, args, out, conv)


@counts("addmm", "addmm_", "_addmm_activation")
def _addmm(args, kwargs, out, conv):
    """``addmm``, ``addmm_``, ``_addmm_activation``: bias + (n, k) @ (k, m): n k m MACs."""
    bias, a, b = args[0], args[1], args[2]
    macs = a.shape[0] * a.shape[1] * b.shape[1]
    return "linear", _product(macs, out.numel() if bias is not None else 0, args, out, conv)


@counts("bmm")
def _bmm(args, kwargs, out, conv):
    a, b = args[0], args[1]
    return "matmul", _product(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], 0, args, out, conv)


@counts("baddbmm", "baddbmm_")
def _baddbmm(args, kwargs, out, conv):
    """``baddbmm``: input + b1 @ b2 per batch, b1 (b, n, m), b2 (b, m, p): b n m p MACs; the input
    (b, n, p after broadcasting) is a bias of ``out.numel()`` additions."""
    a, b = args[1], args[2]
    macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return "matmul", _product(macs, out.numel(), args, out, conv)


@counts("addbmm", "addbmm_")
def _addbmm(args, kwargs, out, conv):
    """``addbmm``: input + sum over the batch of b1 @ b2, b1 (b, n, m), b2 (b, m, p): b n m p
    MACs (the sum over the batch is part of the accumulation); the input (n, p) is a bias."""
    a, b = args[1], args[2]
    macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return "matmul", _product(macs, out.numel(), args, out, conv)


@counts("addmv", "addmv_")
def _addmv(args, kwargs, out, conv):
    """``addmv``: input + M @ v, M (rows, cols): rows cols MACs; the input is a bias of rows."""
    m = args[1]
    return "matmul", _product(m.shape[0] * m.shape[1], out.numel(), args, out, conv)


@counts("addr", "addr_")
def _addr(args, kwargs, out, conv):
    """``addr``: input + outer(v1, v2): one MAC per output element, the input a bias."""
    return "matmul", _product(args[1].numel() * args[2].numel(), out.numel(), args, out, conv)


@counts("dot", "vdot", "mv")
def _dot(args, kwargs, out, conv):
    """``dot``, ``vdot`` (n MACs), ``mv`` (rows cols MACs)."""
    a = args[0]
    macs = a.numel() if a.dim() == 1 else a.shape[0] * a.shape[1]
    return "matmul", _product(macs, 0, args, out, conv)


@counts("linalg_vecdot")
def _vecdot(args, kwargs, out, conv):
    """``linalg_vecdot(x, y, dim)``: the length of ``dim`` MACs per output element (broadcast)."""
    x, y = args[0], args[1]
    dim = _arg(args, kwargs, 2, "dim", -1)
    n = max(x.shape[dim] if x.dim() else 1, y.shape[dim] if y.dim() else 1)
    return "matmul", _product(out.numel() * n, 0, args, out, conv)


@counts("_cdist_forward")
def _cdist(args, kwargs, out, conv):
    """``_cdist_forward(x1 (..., P, M), x2 (..., R, M))``: one squared (or p-th power) difference
    accumulated per pair and coordinate, prod(batch) P R M MACs, however the kernel is chosen."""
    x1 = args[0]
    return "matmul", _product(out.numel() * x1.shape[-1], 0, args, out, conv)


def _sumproduct(left: Sequence[int], right: Sequence[int], summed: set[int]):
    """MACs and result shape of ATen's ``sumproduct_pair`` on operands of these (equal rank)
    shapes: one multiplication per combination of the sizes of every dimension, except summed
    dimensions present in only one operand, which that operand sums first (additions only)."""
    macs, shape = 1, []
    for d, (a, b) in enumerate(zip(left, right)):
        if d in summed:
            if a != 1 and b != 1:
                macs *= a
            shape.append(1)
        else:
            macs *= max(a, b)
            shape.append(max(a, b))
    return macs, shape


def trilinear_macs(
    shapes: Sequence[Sequence[int]],
    expands: Sequence[Sequence[int]],
    sumdim: Sequence[int],
    unroll_dim: int = 1,
) -> int:
    """MACs of ``aten._trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim, unroll_dim)``.

    Each operand is unsqueezed at its ``expand`` dimensions to the common rank D. ATen then loops
    over the ``unroll_size`` positions of ``unroll_dim`` and, for each, contracts
    ``t = sumproduct(i1, i2)`` over the summed dimensions absent from ``i3``, then
    ``sumproduct(t, i3)`` over the remaining summed dimensions (``sumproduct`` as in
    :func:`_sumproduct`). The total is ``unroll_size`` times the two contractions' MACs.

    ``F.bilinear(x1 (N, in1), x2 (N, in2), W (out, in1, in2))`` is
    ``_trilinear(x1, W, x2, [1, 3], [0], [1, 2], [2, 3])``: per output feature,
    ``t[n, j] = sum_i x1[n, i] W[k, i, j]`` (N in1 in2) then ``sum_j t[n, j] x2[n, j]`` (N in2),
    so ``N * out * in2 * (in1 + 1)`` MACs: ``N out in1 in2`` plus ``N out in2`` for the second
    contraction.
    """
    rank = len(shapes[0]) + len(expands[0])
    full = []
    for shape, expand in zip(shapes, expands):
        sizes, it = [], iter(shape)
        for d in range(rank):
            sizes.append(1 if d in expand else next(it))
        full.append(sizes)
    unroll = max(s[unroll_dim] for s in full)
    for s in full:
        s[unroll_dim] = 1
    summed = {d % rank for d in sumdim} - {unroll_dim}
    first = {d for d in summed if d in expands[2]}
    macs1, t = _sumproduct(full[0], full[1], first)
    macs2, _ = _sumproduct(t, full[2], summed - first)
    return unroll * (macs1 + macs2)


@counts("_trilinear")
def _trilinear(args, kwargs, out, conv):
    i1, i2, i3, e1, e2, e3, sumdim = args[:7]
    unroll = _arg(args, kwargs, 7, "unroll_dim", 1)
    macs = trilinear_macs([i1.shape, i2.shape, i3.shape], [e1, e2, e3], sumdim, unroll)
    return "bilinear", _product(macs, 0, args, out, conv)


# ---------------------------------------------------------------------- attention
@counts(
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)
def _sdpa(args, kwargs, out, conv):
    """The fused scaled-dot-product attentions (``_scaled_dot_product_*_attention``, the CPU
    ``_for_cpu`` kernel): q (..., L, E), k (..., S, E), v (..., S, Ev); ``q k^T`` and ``p v`` cost
    ``prod(q.shape[:-1]) * S * (E + Ev)`` MACs (grouped-query heads included: every query head
    meets S keys). As the two ``bmm`` of the unfused path on meta; a causal mask is not skipped."""
    q, k, v = args[0], args[1], args[2]
    macs = math.prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return "attention", _product(macs, 0, args, out, conv)


@counts("_native_multi_head_attention")
def _native_mha(args, kwargs, out, conv):
    """``_native_multi_head_attention`` (the CPU fast path of ``nn.MultiheadAttention``): q (B, L,
    E), k, v (B, S, E): projections B (L + 2S) E^2, output projection B L E^2, attention
    2 B L S E MACs; the four biases once per projected row."""
    q, k = args[0], args[1]
    e = q.shape[-1]
    rows_q, rows_k = q.numel() // e, k.numel() // e
    macs = (2 * rows_q + 2 * rows_k) * e * e + 2 * rows_q * k.shape[-2] * e
    bias = (2 * rows_q + 2 * rows_k) * e
    return "attention", _product(macs, bias, args, out, conv)


@counts("_transformer_encoder_layer_fwd")
def _encoder_layer(args, kwargs, out, conv):
    """``_transformer_encoder_layer_fwd`` (the CPU fast path of ``nn.TransformerEncoderLayer``):
    the qkv, output-projection and two feed-forward weights once per token, plus the attention's
    ``2 L^2 E`` per sequence of L tokens (a nested tensor: sequences of their own lengths); the
    four biases once per token (norms and activations are not split out)."""
    src, embed = args[0], args[1]
    if src.is_nested:  # padded sequences packed by TransformerEncoder: (lengths, E) per sequence
        lengths = [int(size[0]) for size in src._nested_tensor_size()]
    else:
        lengths = [src.shape[-2]] * (src.numel() // (src.shape[-2] * embed))
    rows = sum(lengths)
    weights = (args[3], args[5], args[14], args[16])
    biases = (args[4], args[6], args[15], args[17])
    macs = rows * sum(w.numel() for w in weights) + 2 * embed * sum(n * n for n in lengths)
    return "attention", _product(macs, rows * sum(b.numel() for b in biases), args, out, conv)


# ---------------------------------------------------------------------- recurrent networks
# Per hidden unit and row (time step x batch element) of one cell, the activations and
# element-wise operations of PyTorch's decomposed cells (RNN.cpp), so that a fused or whole-RNN
# op counts exactly what its decomposition into addmm and element-wise ops counts:
# LSTM: 3 sigmoid + 2 tanh; gates sum (4H), f*c, i*g, their sum, o*tanh(c) (8H).
# GRU: 2 sigmoid + 1 tanh; r and z sums, h_n*r, i_n + ., h - n, * z, + n (7H).
# RNN: tanh or relu; the sum of the two products (1H).
_CELL_OPS = {"lstm": (5, 8), "gru": (3, 7), "rnn": (1, 1)}
_GATES = {4: "lstm", 3: "gru", 1: "rnn"}


def rnn_macs(rows: int, weights: Sequence[torch.Tensor]) -> int:
    """An RNN applies every weight matrix of every cell (layer x direction) once per row (time
    step x batch element), so its MACs are ``rows * sum(w.numel())`` over the 2-D weights.

    Per row of one cell: LSTM ``4H (I + H)``, GRU ``3H (I + H)``, vanilla RNN ``H (I + H)``, with
    ``I`` the cell's input size (``H * directions`` above the first layer); an LSTM with
    ``proj_size`` P has ``W_hh`` (4H, P) and ``W_hr`` (P, H): ``4H (I + P) + P H``, and layers
    above the first read ``P * directions``. Bidirectional cells run over every row too.
    """
    return rows * sum(w.numel() for w in weights)


def _rnn_cost(kind, rows, weights, biases, hidden, cells, args, out, conv) -> OpCost:
    macs = rnn_macs(rows, weights)
    flops = conv.flops_per_mac * macs
    if conv.count_bias:
        flops += rows * sum(b.numel() for b in biases)
    acts, elementwise = _CELL_OPS[kind]
    if conv.count_activations:
        flops += rows * cells * acts * hidden
    if conv.count_elementwise:
        flops += rows * cells * elementwise * hidden
    return OpCost(0, macs, flops, io_bytes(args, out), first_shape(out))


def _rows(x: torch.Tensor) -> int:
    """Rows of an RNN input: (T, B, I), (B, T, I), (T, I) unbatched or packed data (sum, I)."""
    return x.numel() // x.shape[-1] if x.dim() else 0


def _whole_rnn(kind: str):
    """``aten.lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu`` (``.input`` and packed ``.data``): the
    params list holds per cell w_ih, w_hh, [b_ih, b_hh], [w_hr]; see :func:`rnn_macs`."""

    def rule(args, kwargs, out, conv):
        i = next(j for j, a in enumerate(args) if isinstance(a, bool))  # has_biases
        params, has_biases, num_layers = args[i - 1], args[i], args[i + 1]
        bidirectional = args[i + 4]
        weights = [p for p in params if p.dim() == 2]
        biases = [p for p in params if p.dim() == 1] if has_biases else []
        gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
        hidden = params[0].shape[0] // gates
        cells = num_layers * (2 if bidirectional else 1)
        cost = _rnn_cost(kind, _rows(args[0]), weights, biases, hidden, cells, args, out, conv)
        return kind, cost

    return rule


def _rnn_library(hidden_index: int, layers_index: int, bidirectional_index: int):
    """``_cudnn_rnn`` and ``miopen_rnn``: (input, weight list, weight_stride0, ...); the kind is
    read from the first weight's rows (4H LSTM, 3H GRU, H RNN), the cells from the layers."""

    def rule(args, kwargs, out, conv):
        params = [p for p in args[1] if isinstance(p, torch.Tensor)]
        hidden = args[hidden_index]
        weights = [p for p in params if p.dim() == 2]
        biases = [p for p in params if p.dim() == 1]
        kind = _GATES.get(weights[0].shape[0] // hidden, "rnn") if weights else "rnn"
        cells = args[layers_index] * (2 if args[bidirectional_index] else 1)
        cost = _rnn_cost(kind, _rows(args[0]), weights, biases, hidden, cells, args, out, conv)
        return kind, cost

    return rule


@counts("mkldnn_rnn_layer")
def _mkldnn_rnn_layer(args, kwargs, out, conv):
    """``mkldnn_rnn_layer`` (CPU, oneDNN): one layer in one direction; weight0 = w_ih,
    weight1 = w_hh, weight2 and weight3 the biases when ``has_biases`` (else placeholders)."""
    x, w_ih, w_hh, b_ih, b_hh = args[:5]
    hidden, has_biases = args[10], args[12]
    kind = _GATES.get(w_ih.shape[0] // hidden, "rnn")
    biases = [b_ih, b_hh] if has_biases else []
    return kind, _rnn_cost(kind, _rows(x), [w_ih, w_hh], biases, hidden, 1, args, out, conv)


def _cell(kind: str):
    """``lstm_cell``, ``gru_cell``, ``rnn_tanh_cell``, ``rnn_relu_cell`` (input, hx, w_ih, w_hh,
    b_ih, b_hh): one step, ``rows * (w_ih.numel() + w_hh.numel())`` MACs."""

    def rule(args, kwargs, out, conv):
        x, w_ih, w_hh = args[0], args[2], args[3]
        biases = [b for b in (_arg(args, kwargs, 4, "b_ih"), _arg(args, kwargs, 5, "b_hh"))
                  if b is not None]  # fmt: skip
        hidden = w_hh.shape[-1]
        return kind, _rnn_cost(kind, _rows(x), [w_ih, w_hh], biases, hidden, 1, args, out, conv)

    return rule


def _fused_cell(kind: str):
    """``_thnn_fused_lstm_cell`` / ``_thnn_fused_gru_cell`` (input_gates, hidden_gates, cx or hx,
    input_bias, hidden_bias): the gates' products were separate ``mm`` calls; this op adds the
    biases and runs the cell's activations and element-wise ops (no MACs)."""

    def rule(args, kwargs, out, conv):
        state = args[2]
        biases = [b for b in (_arg(args, kwargs, 3, "input_bias"),
                              _arg(args, kwargs, 4, "hidden_bias")) if b is not None]  # fmt: skip
        cost = _rnn_cost(kind, _rows(state), [], biases, state.shape[-1], 1, args, out, conv)
        return kind, cost

    return rule


# ---------------------------------------------------------------------- normalisation
@counts(
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "native_batch_norm",
    "_native_batch_norm_legit_functional",
    "native_layer_norm",
    "native_group_norm",
    "_fused_rms_norm",
)
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
    """A reduction (``sum``, ``mean``, ``amax``, ``argmax``, ``max.dim``, ``var``, norms...):
    counted as pooling with a window of input / output elements."""
    x, y = _first(args), _first(out)
    if x is None or y is None:
        return "pool", OpCost(0, 0, 0, io_bytes(args, out), first_shape(out))
    window = max(1, x.numel() // max(1, y.numel()))
    cost = pool_cost((x.numel(),), (y.numel(),), window, x.dtype, conv)
    return "pool", OpCost(0, 0, cost.flops, io_bytes(args, out), _shape(y))


# ---------------------------------------------------------------------- element-wise
def _elementwise(kind: str, flops_per_element: int = 1):
    def rule(args, kwargs, out, conv):
        counted = conv.count_activations if kind == "activation" else conv.count_elementwise
        y = _first(out)
        if y is None:  # equal(): one comparison per element, a bool out
            y = _first(args)
        n = y.numel() if y is not None else 0
        flops = n * flops_per_element if counted else 0
        shape = first_shape(out)
        return kind, OpCost(0, 0, flops, io_bytes(args, out), shape)

    return rule


def _copy(args, kwargs, out, conv):
    shape = first_shape(out)
    return "copy", OpCost(0, 0, 0, io_bytes(args, out), shape)


def _upsample(args, kwargs, out, conv):
    # interpolation weights are not MACs here: a resampling is counted by its bytes
    return "resize", OpCost(0, 0, 0, io_bytes(args, out), first_shape(out))


# ---------------------------------------------------------------------- ops with no MACs
# One table, by kind, of every ATen op (packet name) known to do no multiply-accumulate. In-place
# variants are listed beside their op. Ops absent from this torch build are skipped. Composite ops
# (reshape, pad, softmax, one_hot, ...) reach the dispatcher as their pieces; they are listed so
# that a trace that does see them whole (an exported graph) does not call them uncounted.

#: No row at all: views and metadata (and the functional ``*_copy`` spellings of views that
#: export and functionalisation emit, compiled back to views), constants and random fills,
#: asserts and symbolic-shape bookkeeping, scalar reads, identity dropout.
FREE: frozenset[str] = frozenset({
    # views
    "view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "permute", "transpose",
    "transpose_", "t", "t_", "expand", "expand_as", "squeeze", "squeeze_", "unsqueeze",
    "unsqueeze_", "select", "slice", "narrow", "split", "split_with_sizes", "unsafe_split",
    "unsafe_split_with_sizes", "unbind", "chunk", "unsafe_chunk", "tensor_split", "movedim",
    "moveaxis", "swapaxes", "swapaxes_", "swapdims", "swapdims_", "flatten", "unflatten",
    "diagonal", "unfold", "as_strided", "as_strided_", "alias", "detach", "detach_",
    "view_as_real", "view_as_complex", "real", "imag", "_conj", "conj", "resolve_conj",
    "resolve_neg", "_neg_view", "lift", "lift_fresh", "lift_fresh_copy",
    # functional spellings of views
    "view_copy", "_reshape_copy", "_reshape_alias_copy", "permute_copy", "transpose_copy",
    "t_copy", "expand_copy", "squeeze_copy", "unsqueeze_copy", "select_copy", "slice_copy",
    "split_copy", "split_with_sizes_copy", "unbind_copy", "diagonal_copy", "as_strided_copy",
    "alias_copy", "detach_copy", "unfold_copy", "view_as_real_copy", "view_as_complex_copy",
    "_neg_view_copy", "_conj_copy",
    # metadata and scalar reads
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "size", "stride", "numel", "dim",
    "is_same_size", "_has_compatible_shallow_copy_type", "is_nonzero", "is_contiguous", "item",
    "_local_scalar_dense", "set_", "resize_", "resize_as_", "_resize_output_", "result_type",
    "_shape_as_tensor", "device",
    # asserts and symbolic shapes
    "_assert_async", "_assert_tensor_metadata", "_functional_assert_async", "_assert_scalar",
    "_functional_assert_scalar", "sym_constrain_range", "sym_constrain_range_for_size",
    "_functional_sym_constrain_range", "_functional_sym_constrain_range_for_size",
    "_make_dep_token",
    # constants and random fills (no tensor data read)
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided",
    "zeros", "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like",
    "new_full", "fill", "fill_", "zero", "zero_", "scalar_tensor", "arange", "linspace",
    "logspace", "eye", "tril_indices", "triu_indices", "_efficientzerotensor", "rand",
    "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "normal",
    "normal_", "uniform", "uniform_", "bernoulli_", "exponential_", "random_", "cauchy_",
    "geometric_", "log_normal_",
    # identity at inference (when training they reach the dispatcher as their pieces)
    "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
    "_softmax_backward_data",
})  # fmt: skip

#: A row with the bytes read and written, no FLOPs: data movement.
COPIES: frozenset[str] = frozenset({
    "cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "clone", "_to_copy",
    "copy", "copy_", "_copy_from", "_copy_from_and_resize", "contiguous", "narrow_copy",
    # padding, every mode and rank (circular padding reaches the dispatcher as slices + copy_)
    "constant_pad_nd", "pad", "_pad_circular", "_pad_enum", "reflection_pad1d",
    "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d",
    # gathers, scatters, rearrangements
    "index", "_unsafe_index", "index_select", "gather", "take", "take_along_dim", "repeat", "tile",
    "repeat_interleave", "native_channel_shuffle", "channel_shuffle", "pixel_shuffle",
    "pixel_unshuffle", "flip", "fliplr", "flipud", "roll", "rot90", "scatter", "scatter_",
    "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_", "index_put",
    "index_put_", "_unsafe_index_put", "_index_put_impl_", "index_copy", "index_copy_",
    "masked_scatter", "masked_scatter_", "masked_select", "nonzero", "nonzero_static",
    "argwhere", "slice_scatter", "select_scatter", "diagonal_scatter", "as_strided_scatter",
    "im2col", "col2im", "embedding", "_embedding_bag", "_embedding_bag_forward_only",
    "embedding_bag", "one_hot", "tril", "tril_", "triu", "triu_", "block_diag", "diag",
    "diag_embed",
    # packed sequences, nested tensors (TransformerEncoder with a padding mask, on the CPU)
    "_pack_padded_sequence", "_pad_packed_sequence", "_nested_tensor_from_mask",
    "to_padded_tensor",
    # sorting and selection (comparisons not counted)
    "sort", "argsort", "msort", "topk", "kthvalue", "_unique2", "unique_dim",
    "unique_consecutive",
})  # fmt: skip

#: A row with bytes; one FLOP per output element when ``Convention.count_elementwise``.
ELEMENTWISE: frozenset[str] = frozenset({
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub", "addcmul", "addcmul_",
    "addcdiv", "addcdiv_", "lerp", "lerp_", "where", "maximum", "minimum", "fmax", "fmin",
    "remainder", "remainder_", "fmod", "fmod_", "floor_divide", "true_divide", "copysign",
    "heaviside", "hypot", "square", "masked_fill", "masked_fill_", "index_add", "index_add_",
    "index_fill", "index_fill_", "floor", "floor_", "ceil", "ceil_", "round", "round_", "trunc",
    "trunc_", "frac", "sign", "sign_", "signbit", "nan_to_num", "nan_to_num_",
    # comparisons and logic
    "eq", "eq_", "ne", "ne_", "gt", "gt_", "lt", "lt_", "ge", "ge_", "le", "le_", "equal",
    "isnan", "isinf", "isfinite", "isposinf", "isneginf", "isclose", "logical_and",
    "logical_and_", "logical_or", "logical_or_", "logical_not", "logical_not_", "logical_xor",
    "bitwise_and", "bitwise_and_", "bitwise_or", "bitwise_or_", "bitwise_xor", "bitwise_not",
    "bitwise_left_shift", "bitwise_right_shift", "_nested_tensor_from_mask_left_aligned",
    # scans: one operation per element
    "cumsum", "cumsum_", "cumprod", "logcumsumexp", "cummax", "cummin",
    # random masks that read a tensor (dropout while training)
    "native_dropout", "bernoulli",
})  # fmt: skip

#: A row with bytes; one FLOP per output element when ``Convention.count_activations``.
ACTIVATIONS: frozenset[str] = frozenset({
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "silu", "silu_", "gelu", "gelu_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "celu", "celu_", "selu", "selu_", "rrelu",
    "rrelu_with_noise", "rrelu_with_noise_", "glu", "_prelu_kernel", "prelu", "mish", "mish_",
    "softplus", "softshrink", "hardshrink", "log_sigmoid_forward", "threshold", "threshold_",
    "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "clip", "clip_",
    # softmax, every variant (_safe_softmax: every scaled-dot-product attention on meta)
    "_softmax", "_log_softmax", "_safe_softmax", "softmax", "log_softmax", "_masked_softmax",
    # transcendental and power functions
    "exp", "exp_", "exp2", "expm1", "log", "log_", "log2", "log10", "log1p", "sqrt", "sqrt_",
    "rsqrt", "rsqrt_", "abs", "abs_", "neg", "neg_", "reciprocal", "reciprocal_", "pow", "pow_",
    "sin", "sin_", "cos", "cos_", "tan", "sinh", "cosh", "asin", "acos", "atan", "atan2", "erf",
    "erf_", "erfc", "erfinv", "logit",
})  # fmt: skip

#: Reductions: a row counted as pooling (window = input / output elements, FLOPs under
#: ``Convention.count_pooling``).
REDUCTIONS: frozenset[str] = frozenset({
    "mean", "sum", "nansum", "nanmean", "prod", "amax", "amin", "max", "min", "aminmax",
    "argmax", "argmin", "any", "all", "var", "var_mean", "std", "std_mean", "logsumexp", "norm",
    "linalg_vector_norm", "count_nonzero", "median", "nanmedian", "mode",
})  # fmt: skip

#: Resampling: a row with bytes (interpolation weights are not counted as MACs).
RESAMPLING: frozenset[str] = frozenset({
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d",
    "upsample_bilinear2d", "upsample_trilinear3d", "upsample_bicubic2d",
    "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa", "grid_sampler_2d", "grid_sampler_3d",
})  # fmt: skip

#: The table: kind -> op names. ``free`` makes no row; the others make a row of that kind.
NO_MACS: dict[str, frozenset[str]] = {
    "free": FREE,
    "copy": COPIES,
    "elementwise": ELEMENTWISE,
    "activation": ACTIVATIONS,
    "pool": REDUCTIONS,
    "resize": RESAMPLING,
}

_NO_MAC_RULES: dict[str, Rule] = {
    "copy": _copy,
    "elementwise": _elementwise("elementwise"),
    "activation": _elementwise("activation"),
    "pool": _reduce,
    "resize": _upsample,
}

for _kind, _names in NO_MACS.items():
    if _kind == "free":
        continue
    for _name in sorted(_names):
        if hasattr(aten, _name):
            RULES.setdefault(getattr(aten, _name), _NO_MAC_RULES[_kind])

# rules made by factories, registered here (the others are registered where they are defined)
counts("lstm")(_whole_rnn("lstm"))
counts("gru")(_whole_rnn("gru"))
counts("rnn_tanh", "rnn_relu")(_whole_rnn("rnn"))
counts("lstm_cell")(_cell("lstm"))
counts("gru_cell")(_cell("gru"))
counts("rnn_tanh_cell", "rnn_relu_cell")(_cell("rnn"))
counts("_thnn_fused_lstm_cell")(_fused_cell("lstm"))
counts("_thnn_fused_gru_cell")(_fused_cell("gru"))
# (input, weight, weight_stride0, weight_buf, hx, cx, mode, hidden_size, proj_size,
#  num_layers, batch_first, dropout, train, bidirectional, ...)
counts("_cudnn_rnn")(_rnn_library(7, 9, 13))
# (input, weight, weight_stride0, hx, cx, mode, hidden_size, num_layers, batch_first,
#  dropout, train, bidirectional, ...)
counts("miopen_rnn")(_rnn_library(6, 7, 11))
counts(
    "max_pool1d",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
)(_pool(1))
counts(
    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d"
)(_pool(None))


def rule_for(func) -> Rule | None:
    """The rule of an ``OpOverload`` (looked up by its packet), or None if it has none."""
    return RULES.get(func.overloadpacket)


def is_free(func) -> bool:
    return func.overloadpacket.__name__ in FREE


def unknown_cost(args: tuple, out: object) -> OpCost:
    return OpCost(0, 0, 0, io_bytes(args, out), first_shape(out))


__all__ = [
    "RULES", "FREE", "COPIES", "ELEMENTWISE", "ACTIVATIONS", "REDUCTIONS", "RESAMPLING", "NO_MACS",
    "rule_for", "is_free", "conv_spec_from_aten", "dtype_bytes", "rnn_macs", "trilinear_macs",
]  # fmt: skip
