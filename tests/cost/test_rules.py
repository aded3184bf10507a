"""The ATen rules: every op known to do no multiply-accumulate is called and makes no uncounted
row and no MACs; the product, attention and RNN rules give the hand-derived MACs on every path an
op can take (decomposed on meta, whole on the CPU, fused kernels called on meta tensors)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import leanconv
from leanconv.cost import Convention
from leanconv.cost.rules import NO_MACS, RULES, is_free, rule_for, trilinear_macs
from leanconv.errors import ForwardError

aten = torch.ops.aten
FULL = Convention(count_bias=True, count_norm=True, count_activations=True,
                  count_elementwise=True, count_pooling=True)  # fmt: skip


class RuleMode(TorchDispatchMode):
    """leanconv's rules applied to every op as ``trace.py`` applies them, on whatever device the
    tensors live (real CPU tensors here, where the whole-RNN and fused kernels are called)."""

    def __init__(self, convention=Convention()):
        super().__init__()
        self.convention = convention
        self.rows = []  # (op, kind, macs, flops); kind "free" or "uncounted" for those

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op = func.overloadpacket.__name__
        if is_free(func):
            self.rows.append((op, "free", 0, 0))
        elif (rule := rule_for(func)) is None:
            self.rows.append((op, "uncounted", 0, 0))
        else:
            kind, cost = rule(args, kwargs, out, self.convention)
            self.rows.append((op, kind, cost.macs, cost.flops))
        return out

    @property
    def macs(self):
        return sum(r[2] for r in self.rows)

    @property
    def flops(self):
        return sum(r[3] for r in self.rows)

    @property
    def uncounted(self):
        return [r[0] for r in self.rows if r[1] == "uncounted"]


def run_rules(fn, *inputs, convention=Convention()):
    with torch.no_grad(), RuleMode(convention) as mode:
        fn(*inputs)
    return mode


class Call(nn.Module):
    """A module whose forward calls ``fn(x)`` (ATen ops called directly) and returns ``x``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        self.fn(x)
        return x


# ---------------------------------------------------------------------- argument builders
# Every builder takes an anchor tensor ``x`` and makes its operands on x's device (meta or CPU).
def f(x, *shape):
    return x.new_ones(shape)


def i(x, *shape):
    return x.new_zeros(shape, dtype=torch.long)


def b(x, *shape):
    return x.new_ones(shape, dtype=torch.bool)


def c(x, *shape):
    return x.new_ones(shape, dtype=torch.complex64)


def a(x):  # the usual operand
    return f(x, 2, 3, 4)


UNARY = {  # op(a)
    "flatten", "alias", "detach", "detach_", "lift", "lift_fresh", "lift_fresh_copy",
    "alias_copy", "detach_copy", "_neg_view", "_neg_view_copy", "resolve_neg", "sym_numel",
    "sym_storage_offset", "numel", "dim", "is_contiguous", "_shape_as_tensor", "unbind",
    "unbind_copy", "empty_like", "zeros_like", "ones_like", "rand_like", "randn_like", "zero",
    "zero_", "normal_", "uniform_", "exponential_", "random_", "cauchy_", "log_normal_", "clone",
    "contiguous", "fliplr", "flipud", "rot90", "tril", "tril_", "triu", "triu_", "sort",
    "argsort", "msort", "square", "floor", "floor_", "ceil", "ceil_", "round", "round_", "trunc",
    "trunc_", "frac", "sign", "sign_", "signbit", "nan_to_num", "nan_to_num_", "isnan", "isinf",
    "isfinite", "isposinf", "isneginf", "logical_not", "logical_not_", "bernoulli", "relu",
    "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "tanh", "tanh_", "silu",
    "silu_", "gelu", "gelu_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "celu", "celu_", "selu", "selu_", "rrelu", "glu",
    "mish", "mish_", "softplus", "softshrink", "hardshrink", "log_sigmoid_forward", "exp", "exp_",
    "exp2", "expm1", "log", "log_", "log2", "log10", "log1p", "sqrt", "sqrt_", "rsqrt", "rsqrt_",
    "abs", "abs_", "neg", "neg_", "reciprocal", "reciprocal_", "sin", "sin_", "cos", "cos_",
    "tan", "sinh", "cosh", "asin", "acos", "atan", "erf", "erf_", "erfc", "erfinv", "logit",
    "mean", "sum", "nansum", "nanmean", "prod", "amax", "amin", "max", "min", "aminmax", "argmax",
    "argmin", "any", "all", "var", "var_mean", "std", "std_mean", "norm", "linalg_vector_norm",
    "count_nonzero", "median", "nanmedian", "mode",
}  # fmt: skip
BINARY = {  # op(a, a)
    "view_as", "is_same_size", "_has_compatible_shallow_copy_type", "result_type", "add", "add_",
    "sub", "sub_", "mul", "mul_", "div", "div_", "rsub", "maximum", "minimum", "fmax", "fmin",
    "remainder", "remainder_", "fmod", "fmod_", "floor_divide", "true_divide", "copysign",
    "heaviside", "hypot", "eq", "eq_", "ne", "ne_", "gt", "gt_", "lt", "lt_", "ge", "ge_", "le",
    "le_", "equal", "isclose", "logical_and", "logical_and_", "logical_or", "logical_or_",
    "logical_xor", "atan2", "pow", "pow_", "copy", "copy_",
}  # fmt: skip


def _dev(x):
    return {"device": x.device}


SPECIAL = {
    # a Device made from a string (traced models that create tensors on a fixed device)
    "device": lambda x: (aten.device("cpu"), a(x))[1],
    # views
    "view": lambda x: aten.view(a(x), [6, 4]),
    "reshape": lambda x: aten.reshape(a(x), [6, 4]),
    "_unsafe_view": lambda x: aten._unsafe_view(a(x), [6, 4]),
    "_reshape_alias": lambda x: aten._reshape_alias(a(x), [6, 4], [4, 1]),
    "permute": lambda x: aten.permute(a(x), [2, 0, 1]),
    "transpose": lambda x: aten.transpose(a(x), 0, 1),
    "transpose_": lambda x: aten.transpose_(a(x), 0, 1),
    "t": lambda x: aten.t(f(x, 2, 3)),
    "t_": lambda x: aten.t_(f(x, 2, 3)),
    "expand": lambda x: aten.expand(f(x, 1, 3), [2, 3]),
    "expand_as": lambda x: aten.expand_as(f(x, 1, 3), f(x, 2, 3)),
    "squeeze": lambda x: aten.squeeze(f(x, 1, 3)),
    "squeeze_": lambda x: aten.squeeze_(f(x, 1, 3)),
    "unsqueeze": lambda x: aten.unsqueeze(a(x), 0),
    "unsqueeze_": lambda x: aten.unsqueeze_(a(x), 0),
    "select": lambda x: aten.select(a(x), 0, 1),
    "slice": lambda x: aten.slice(a(x), 1, 0, 2),
    "narrow": lambda x: aten.narrow(a(x), 1, 0, 2),
    "split": lambda x: aten.split(a(x), 1),
    "split_with_sizes": lambda x: aten.split_with_sizes(a(x), [1, 1]),
    "unsafe_split": lambda x: aten.unsafe_split(a(x), 1),
    "unsafe_split_with_sizes": lambda x: aten.unsafe_split_with_sizes(a(x), [1, 1]),
    "chunk": lambda x: aten.chunk(a(x), 2),
    "unsafe_chunk": lambda x: aten.unsafe_chunk(a(x), 2),
    "tensor_split": lambda x: aten.tensor_split(a(x), 2),
    "movedim": lambda x: aten.movedim(a(x), 0, 1),
    "moveaxis": lambda x: aten.moveaxis(a(x), 0, 1),
    "swapaxes": lambda x: aten.swapaxes(a(x), 0, 1),
    "swapaxes_": lambda x: aten.swapaxes_(a(x), 0, 1),
    "swapdims": lambda x: aten.swapdims(a(x), 0, 1),
    "swapdims_": lambda x: aten.swapdims_(a(x), 0, 1),
    "unflatten": lambda x: aten.unflatten(a(x), 1, [3, 1]),
    "diagonal": lambda x: aten.diagonal(f(x, 3, 3)),
    "unfold": lambda x: aten.unfold(a(x), 2, 2, 1),
    "as_strided": lambda x: aten.as_strided(a(x), [2, 2], [1, 1]),
    "as_strided_": lambda x: aten.as_strided_(a(x), [2, 2], [1, 1]),
    "view_as_real": lambda x: aten.view_as_real(c(x, 2, 3)),
    "view_as_complex": lambda x: aten.view_as_complex(f(x, 3, 2)),
    "real": lambda x: aten.real(c(x, 2, 3)),
    "imag": lambda x: aten.imag(c(x, 2, 3)),
    "_conj": lambda x: aten._conj(c(x, 2, 3)),
    "conj": lambda x: aten.conj(c(x, 2, 3)),
    "resolve_conj": lambda x: aten.resolve_conj(aten._conj(c(x, 2, 3))),
    # functional spellings of views
    "view_copy": lambda x: aten.view_copy(a(x), [6, 4]),
    "_reshape_copy": lambda x: aten._reshape_copy(a(x), [6, 4]),
    "_reshape_alias_copy": lambda x: aten._reshape_alias_copy(a(x), [6, 4], [4, 1]),
    "permute_copy": lambda x: aten.permute_copy(a(x), [2, 0, 1]),
    "transpose_copy": lambda x: aten.transpose_copy(a(x), 0, 1),
    "t_copy": lambda x: aten.t_copy(f(x, 2, 3)),
    "expand_copy": lambda x: aten.expand_copy(f(x, 1, 3), [2, 3]),
    "squeeze_copy": lambda x: aten.squeeze_copy(f(x, 1, 3)),
    "unsqueeze_copy": lambda x: aten.unsqueeze_copy(a(x), 0),
    "select_copy": lambda x: aten.select_copy(a(x), 0, 1),
    "slice_copy": lambda x: aten.slice_copy(a(x), 1, 0, 2),
    "split_copy": lambda x: aten.split_copy(a(x), 1),
    "split_with_sizes_copy": lambda x: aten.split_with_sizes_copy(a(x), [1, 1]),
    "diagonal_copy": lambda x: aten.diagonal_copy(f(x, 3, 3)),
    "as_strided_copy": lambda x: aten.as_strided_copy(a(x), [2, 2], [1, 1]),
    "unfold_copy": lambda x: aten.unfold_copy(a(x), 2, 2, 1),
    "view_as_real_copy": lambda x: aten.view_as_real_copy(c(x, 2, 3)),
    "view_as_complex_copy": lambda x: aten.view_as_complex_copy(f(x, 3, 2)),
    "_conj_copy": lambda x: aten._conj_copy(c(x, 2, 3)),
    # metadata and scalar reads
    "sym_size": lambda x: aten.sym_size(a(x), 0),
    "sym_stride": lambda x: aten.sym_stride(a(x), 0),
    "size": lambda x: aten.size(a(x), 0),
    "stride": lambda x: aten.stride(a(x), 0),
    "is_nonzero": lambda x: aten.is_nonzero(f(x, 1)),
    "item": lambda x: aten.item(f(x, 1)),
    "_local_scalar_dense": lambda x: aten._local_scalar_dense(f(x, 1)),
    "set_": lambda x: aten.set_(x.new_empty(0), a(x)),
    "resize_": lambda x: aten.resize_(f(x, 2), [3]),
    "resize_as_": lambda x: aten.resize_as_(f(x, 2), a(x)),
    "_resize_output_": lambda x: aten._resize_output_(f(x, 2), [3], x.device),
    # asserts and symbolic shapes
    "_assert_async": lambda x: aten._assert_async(b(x, 1)),
    "_assert_tensor_metadata": lambda x: aten._assert_tensor_metadata(a(x), dtype=torch.float32),
    "_make_dep_token": lambda x: aten._make_dep_token(**_dev(x)),
    "_functional_assert_async": lambda x: aten._functional_assert_async(
        b(x, 1), "ok", aten._make_dep_token(**_dev(x))
    ),
    "_assert_scalar": lambda x: aten._assert_scalar(True, "ok"),
    "_functional_assert_scalar": lambda x: aten._functional_assert_scalar(
        True, "ok", aten._make_dep_token(**_dev(x))
    ),
    "sym_constrain_range": lambda x: aten.sym_constrain_range(3, min=0, max=4),
    "sym_constrain_range_for_size": lambda x: aten.sym_constrain_range_for_size(3),
    "_functional_sym_constrain_range": lambda x: aten._functional_sym_constrain_range(
        3, 0, 4, aten._make_dep_token(**_dev(x))
    ),
    "_functional_sym_constrain_range_for_size": lambda x: (
        aten._functional_sym_constrain_range_for_size(3, 0, 4, aten._make_dep_token(**_dev(x)))
    ),
    # constants and random fills
    "empty": lambda x: aten.empty([2, 3], **_dev(x)),
    "empty_strided": lambda x: aten.empty_strided([2, 3], [3, 1], **_dev(x)),
    "empty_permuted": lambda x: aten.empty_permuted([2, 3], [1, 0], **_dev(x)),
    "new_empty": lambda x: aten.new_empty(a(x), [2]),
    "new_empty_strided": lambda x: aten.new_empty_strided(a(x), [2], [1]),
    "zeros": lambda x: aten.zeros([2], **_dev(x)),
    "new_zeros": lambda x: aten.new_zeros(a(x), [2]),
    "ones": lambda x: aten.ones([2], **_dev(x)),
    "new_ones": lambda x: aten.new_ones(a(x), [2]),
    "full": lambda x: aten.full([2], 1.0, **_dev(x)),
    "full_like": lambda x: aten.full_like(a(x), 1.0),
    "new_full": lambda x: aten.new_full(a(x), [2], 1.0),
    "fill": lambda x: aten.fill(a(x), 1.0),
    "fill_": lambda x: aten.fill_(a(x), 1.0),
    "scalar_tensor": lambda x: aten.scalar_tensor(1.0, **_dev(x)),
    "arange": lambda x: aten.arange(3, **_dev(x)),
    "linspace": lambda x: aten.linspace(0, 1, 3, **_dev(x)),
    "logspace": lambda x: aten.logspace(0, 1, 3, **_dev(x)),
    "eye": lambda x: aten.eye(3, **_dev(x)),
    "tril_indices": lambda x: aten.tril_indices(3, 3, **_dev(x)),
    "triu_indices": lambda x: aten.triu_indices(3, 3, **_dev(x)),
    "_efficientzerotensor": lambda x: aten._efficientzerotensor([2], **_dev(x)),
    "rand": lambda x: aten.rand([2], **_dev(x)),
    "randn": lambda x: aten.randn([2], **_dev(x)),
    "randint": lambda x: aten.randint(3, [2], **_dev(x)),
    "randint_like": lambda x: aten.randint_like(a(x), 3),
    "randperm": lambda x: aten.randperm(3, **_dev(x)),
    "normal": lambda x: aten.normal(a(x), 1.0),
    "uniform": lambda x: aten.uniform(a(x)),
    "bernoulli_": lambda x: aten.bernoulli_(a(x), 0.5),
    "geometric_": lambda x: aten.geometric_(a(x), 0.5),
    "dropout": lambda x: aten.dropout(a(x), 0.5, False),
    "feature_dropout": lambda x: aten.feature_dropout(f(x, 2, 3, 4, 4), 0.5, False),
    "alpha_dropout": lambda x: aten.alpha_dropout(a(x), 0.5, False),
    "feature_alpha_dropout": lambda x: aten.feature_alpha_dropout(f(x, 2, 3, 4, 4), 0.5, False),
    "_softmax_backward_data": lambda x: aten._softmax_backward_data(a(x), a(x), 1, torch.float32),
    # copies
    "cat": lambda x: aten.cat([a(x), a(x)]),
    "concat": lambda x: aten.concat([a(x), a(x)]),
    "concatenate": lambda x: aten.concatenate([a(x), a(x)]),
    "stack": lambda x: aten.stack([a(x), a(x)]),
    "hstack": lambda x: aten.hstack([a(x), a(x)]),
    "vstack": lambda x: aten.vstack([a(x), a(x)]),
    "dstack": lambda x: aten.dstack([a(x), a(x)]),
    "_to_copy": lambda x: aten._to_copy(a(x), dtype=torch.float64),
    "narrow_copy": lambda x: aten.narrow_copy(a(x), 1, 0, 2),
    "constant_pad_nd": lambda x: aten.constant_pad_nd(a(x), [1, 1]),
    "pad": lambda x: aten.pad(a(x), [1, 1]),
    "_pad_circular": lambda x: aten._pad_circular(a(x), [1, 1]),
    "_pad_enum": lambda x: aten._pad_enum(a(x), [1, 1], 1),  # 1: reflect
    "reflection_pad1d": lambda x: aten.reflection_pad1d(f(x, 1, 2, 5), [1, 1]),
    "reflection_pad2d": lambda x: aten.reflection_pad2d(f(x, 1, 2, 5, 5), [1, 1, 1, 1]),
    "reflection_pad3d": lambda x: aten.reflection_pad3d(f(x, 1, 2, 3, 3, 3), [1] * 6),
    "replication_pad1d": lambda x: aten.replication_pad1d(f(x, 1, 2, 5), [1, 1]),
    "replication_pad2d": lambda x: aten.replication_pad2d(f(x, 1, 2, 5, 5), [1, 1, 1, 1]),
    "replication_pad3d": lambda x: aten.replication_pad3d(f(x, 1, 2, 3, 3, 3), [1] * 6),
    "index": lambda x: aten.index(a(x), [i(x, 2)]),
    "_unsafe_index": lambda x: aten._unsafe_index(a(x), [i(x, 2)]),
    "index_select": lambda x: aten.index_select(a(x), 0, i(x, 2)),
    "gather": lambda x: aten.gather(a(x), 0, i(x, 2, 3, 4)),
    "take": lambda x: aten.take(a(x), i(x, 3)),
    "take_along_dim": lambda x: aten.take_along_dim(a(x), i(x, 2, 3, 4), 0),
    "repeat": lambda x: aten.repeat(a(x), [2, 1, 1]),
    "tile": lambda x: aten.tile(a(x), [2]),
    "repeat_interleave": lambda x: aten.repeat_interleave(a(x), 2),
    "native_channel_shuffle": lambda x: aten.native_channel_shuffle(f(x, 1, 4, 2, 2), 2),
    "channel_shuffle": lambda x: aten.channel_shuffle(f(x, 1, 4, 2, 2), 2),
    "pixel_shuffle": lambda x: aten.pixel_shuffle(f(x, 1, 4, 2, 2), 2),
    "pixel_unshuffle": lambda x: aten.pixel_unshuffle(f(x, 1, 1, 4, 4), 2),
    "flip": lambda x: aten.flip(a(x), [0]),
    "roll": lambda x: aten.roll(a(x), [1]),
    "scatter": lambda x: aten.scatter(a(x), 0, i(x, 2, 3, 4), a(x)),
    "scatter_": lambda x: aten.scatter_(a(x), 0, i(x, 2, 3, 4), a(x)),
    "scatter_add": lambda x: aten.scatter_add(a(x), 0, i(x, 2, 3, 4), a(x)),
    "scatter_add_": lambda x: aten.scatter_add_(a(x), 0, i(x, 2, 3, 4), a(x)),
    "scatter_reduce": lambda x: aten.scatter_reduce(a(x), 0, i(x, 2, 3, 4), a(x), "sum"),
    "scatter_reduce_": lambda x: aten.scatter_reduce_(a(x), 0, i(x, 2, 3, 4), a(x), "sum"),
    "index_put": lambda x: aten.index_put(a(x), [i(x, 2)], f(x, 3, 4)),
    "index_put_": lambda x: aten.index_put_(a(x), [i(x, 2)], f(x, 3, 4)),
    "_unsafe_index_put": lambda x: aten._unsafe_index_put(a(x), [i(x, 2)], f(x, 3, 4)),
    "_index_put_impl_": lambda x: aten._index_put_impl_(a(x), [i(x, 2)], f(x, 3, 4)),
    "index_copy": lambda x: aten.index_copy(a(x), 0, i(x, 2), a(x)),
    "index_copy_": lambda x: aten.index_copy_(a(x), 0, i(x, 2), a(x)),
    "masked_scatter": lambda x: aten.masked_scatter(a(x), b(x, 2, 3, 4), a(x)),
    "masked_scatter_": lambda x: aten.masked_scatter_(a(x), b(x, 2, 3, 4), a(x)),
    "masked_select": lambda x: aten.masked_select(a(x), b(x, 2, 3, 4)),
    "nonzero": lambda x: aten.nonzero(a(x)),
    "nonzero_static": lambda x: aten.nonzero_static(a(x), size=4),
    "argwhere": lambda x: aten.argwhere(a(x)),
    "slice_scatter": lambda x: aten.slice_scatter(a(x), f(x, 2, 1, 4), 1, 0, 1),
    "select_scatter": lambda x: aten.select_scatter(a(x), f(x, 2, 4), 1, 0),
    "diagonal_scatter": lambda x: aten.diagonal_scatter(f(x, 3, 3), f(x, 3)),
    "as_strided_scatter": lambda x: aten.as_strided_scatter(a(x), f(x, 2, 2), [2, 2], [1, 1]),
    "im2col": lambda x: aten.im2col(f(x, 1, 2, 4, 4), [2, 2], [1, 1], [0, 0], [1, 1]),
    "col2im": lambda x: aten.col2im(f(x, 1, 8, 9), [4, 4], [2, 2], [1, 1], [0, 0], [1, 1]),
    "embedding": lambda x: aten.embedding(f(x, 4, 2), i(x, 3)),
    "_embedding_bag": lambda x: aten._embedding_bag(f(x, 4, 2), i(x, 3), i(x, 1)),
    "_embedding_bag_forward_only": lambda x: aten._embedding_bag_forward_only(
        f(x, 4, 2), i(x, 3), i(x, 1)
    ),
    "embedding_bag": lambda x: aten.embedding_bag(f(x, 4, 2), i(x, 3), i(x, 1)),
    "one_hot": lambda x: aten.one_hot(i(x, 3), 4),
    "block_diag": lambda x: aten.block_diag([f(x, 2, 2), f(x, 1, 1)]),
    "diag": lambda x: aten.diag(f(x, 3)),
    "diag_embed": lambda x: aten.diag_embed(f(x, 2, 3)),
    "_pack_padded_sequence": lambda x: aten._pack_padded_sequence(
        f(x, 4, 2, 3), torch.tensor([4, 2]), False
    ),
    "_pad_packed_sequence": lambda x: aten._pad_packed_sequence(
        f(x, 6, 3), torch.tensor([2, 2, 1, 1]), False, 0.0, 4
    ),
    "_nested_tensor_from_mask": lambda x: aten._nested_tensor_from_mask(a(x), b(x, 2, 3)),
    "to_padded_tensor": lambda x: aten.to_padded_tensor(
        aten._nested_tensor_from_mask(a(x), b(x, 2, 3)), 0.0
    ),
    "_nested_tensor_from_mask_left_aligned": lambda x: aten._nested_tensor_from_mask_left_aligned(
        a(x), b(x, 2, 3)
    ),
    "topk": lambda x: aten.topk(a(x), 2),
    "kthvalue": lambda x: aten.kthvalue(a(x), 1),
    "_unique2": lambda x: aten._unique2(a(x)),
    "unique_dim": lambda x: aten.unique_dim(a(x), 0),
    "unique_consecutive": lambda x: aten.unique_consecutive(a(x)),
    # element-wise
    "addcmul": lambda x: aten.addcmul(a(x), a(x), a(x)),
    "addcmul_": lambda x: aten.addcmul_(a(x), a(x), a(x)),
    "addcdiv": lambda x: aten.addcdiv(a(x), a(x), a(x)),
    "addcdiv_": lambda x: aten.addcdiv_(a(x), a(x), a(x)),
    "lerp": lambda x: aten.lerp(a(x), a(x), 0.5),
    "lerp_": lambda x: aten.lerp_(a(x), a(x), 0.5),
    "where": lambda x: aten.where(b(x, 2, 3, 4), a(x), a(x)),
    "masked_fill": lambda x: aten.masked_fill(a(x), b(x, 2, 3, 4), 0.0),
    "masked_fill_": lambda x: aten.masked_fill_(a(x), b(x, 2, 3, 4), 0.0),
    "index_add": lambda x: aten.index_add(a(x), 0, i(x, 2), a(x)),
    "index_add_": lambda x: aten.index_add_(a(x), 0, i(x, 2), a(x)),
    "index_fill": lambda x: aten.index_fill(a(x), 0, i(x, 2), 0.0),
    "index_fill_": lambda x: aten.index_fill_(a(x), 0, i(x, 2), 0.0),
    "bitwise_and": lambda x: aten.bitwise_and(b(x, 2, 3), b(x, 2, 3)),
    "bitwise_and_": lambda x: aten.bitwise_and_(b(x, 2, 3), b(x, 2, 3)),
    "bitwise_or": lambda x: aten.bitwise_or(b(x, 2, 3), b(x, 2, 3)),
    "bitwise_or_": lambda x: aten.bitwise_or_(b(x, 2, 3), b(x, 2, 3)),
    "bitwise_xor": lambda x: aten.bitwise_xor(b(x, 2, 3), b(x, 2, 3)),
    "bitwise_not": lambda x: aten.bitwise_not(b(x, 2, 3)),
    "bitwise_left_shift": lambda x: aten.bitwise_left_shift(i(x, 2, 3), i(x, 2, 3)),
    "bitwise_right_shift": lambda x: aten.bitwise_right_shift(i(x, 2, 3), i(x, 2, 3)),
    "cumsum": lambda x: aten.cumsum(a(x), 0),
    "cumsum_": lambda x: aten.cumsum_(a(x), 0),
    "cumprod": lambda x: aten.cumprod(a(x), 0),
    "logcumsumexp": lambda x: aten.logcumsumexp(a(x), 0),
    "cummax": lambda x: aten.cummax(a(x), 0),
    "cummin": lambda x: aten.cummin(a(x), 0),
    "native_dropout": lambda x: aten.native_dropout(a(x), 0.5, True),
    # activations
    "rrelu_with_noise": lambda x: aten.rrelu_with_noise(a(x), a(x)),
    "rrelu_with_noise_": lambda x: aten.rrelu_with_noise_(a(x), a(x)),
    "_prelu_kernel": lambda x: aten._prelu_kernel(a(x), f(x, 1)),
    "prelu": lambda x: aten.prelu(a(x), f(x, 1)),
    "threshold": lambda x: aten.threshold(a(x), 0.0, 0.0),
    "threshold_": lambda x: aten.threshold_(a(x), 0.0, 0.0),
    "clamp": lambda x: aten.clamp(a(x), 0.0, 1.0),
    "clamp_": lambda x: aten.clamp_(a(x), 0.0, 1.0),
    "clamp_min": lambda x: aten.clamp_min(a(x), 0.0),
    "clamp_min_": lambda x: aten.clamp_min_(a(x), 0.0),
    "clamp_max": lambda x: aten.clamp_max(a(x), 1.0),
    "clamp_max_": lambda x: aten.clamp_max_(a(x), 1.0),
    "clip": lambda x: aten.clip(a(x), 0.0, 1.0),
    "clip_": lambda x: aten.clip_(a(x), 0.0, 1.0),
    "_softmax": lambda x: aten._softmax(a(x), 1, False),
    "_log_softmax": lambda x: aten._log_softmax(a(x), 1, False),
    "_safe_softmax": lambda x: aten._safe_softmax(a(x), 1),
    "softmax": lambda x: aten.softmax(a(x), 1),
    "log_softmax": lambda x: aten.log_softmax(a(x), 1),
    "_masked_softmax": lambda x: aten._masked_softmax(a(x), b(x, 2, 3, 4)),
    # reductions
    "logsumexp": lambda x: aten.logsumexp(a(x), [1]),
    # resampling
    "upsample_nearest1d": lambda x: aten.upsample_nearest1d(f(x, 1, 2, 4), [8]),
    "upsample_nearest2d": lambda x: aten.upsample_nearest2d(f(x, 1, 2, 4, 4), [8, 8]),
    "upsample_nearest3d": lambda x: aten.upsample_nearest3d(f(x, 1, 2, 2, 2, 2), [4, 4, 4]),
    "_upsample_nearest_exact1d": lambda x: aten._upsample_nearest_exact1d(f(x, 1, 2, 4), [8]),
    "_upsample_nearest_exact2d": lambda x: aten._upsample_nearest_exact2d(f(x, 1, 2, 4, 4), [8, 8]),
    "_upsample_nearest_exact3d": lambda x: aten._upsample_nearest_exact3d(
        f(x, 1, 2, 2, 2, 2), [4, 4, 4]
    ),
    "upsample_linear1d": lambda x: aten.upsample_linear1d(f(x, 1, 2, 4), [8], False),
    "upsample_bilinear2d": lambda x: aten.upsample_bilinear2d(f(x, 1, 2, 4, 4), [8, 8], False),
    "upsample_trilinear3d": lambda x: aten.upsample_trilinear3d(
        f(x, 1, 2, 2, 2, 2), [4, 4, 4], False
    ),
    "upsample_bicubic2d": lambda x: aten.upsample_bicubic2d(f(x, 1, 2, 4, 4), [8, 8], False),
    "_upsample_bilinear2d_aa": lambda x: aten._upsample_bilinear2d_aa(
        f(x, 1, 2, 4, 4), [2, 2], False
    ),
    "_upsample_bicubic2d_aa": lambda x: aten._upsample_bicubic2d_aa(
        f(x, 1, 2, 4, 4), [2, 2], False
    ),
    "grid_sampler_2d": lambda x: aten.grid_sampler_2d(
        f(x, 1, 2, 4, 4), f(x, 1, 3, 3, 2), 0, 0, False
    ),
    "grid_sampler_3d": lambda x: aten.grid_sampler_3d(
        f(x, 1, 2, 2, 2, 2), f(x, 1, 2, 2, 2, 3), 0, 0, False
    ),
}

# Ops in the table that this test does not call, and why.
NOT_CALLED = {
    "_copy_from": "a backend hook for cross-device copies (no CPU or meta kernel)",
    "_copy_from_and_resize": "a backend hook for cross-device copies (no CPU or meta kernel)",
}


def _caller(name):
    if name in SPECIAL:
        return SPECIAL[name]
    op = getattr(aten, name)
    if name in UNARY:
        return lambda x: op(a(x))
    if name in BINARY:
        return lambda x: op(a(x), a(x))
    return None


TABLE = sorted(
    (name, kind) for kind, names in NO_MACS.items() for name in names if hasattr(aten, name)
)


def test_every_op_of_the_table_has_a_caller_or_a_reason():
    names = {name for name, _ in TABLE}
    missing = sorted(n for n in names if _caller(n) is None and n not in NOT_CALLED)
    assert not missing, f"give these ops an argument builder or a reason: {missing}"
    stale = sorted((set(SPECIAL) | UNARY | BINARY | set(NOT_CALLED)) - names)
    assert not stale, f"builders for ops no longer in the table: {stale}"


def test_the_kinds_are_disjoint_and_carry_no_mac_rule():
    for (k1, s1), (k2, s2) in itertools.combinations(NO_MACS.items(), 2):
        assert not s1 & s2, f"{k1} and {k2} share {sorted(s1 & s2)}"
    for name, kind in TABLE:
        packet = getattr(aten, name)
        assert (packet in RULES) == (kind != "free"), name


def _runs_on_meta(call) -> bool:
    try:
        call(torch.empty(1, device="meta"))
    except (NotImplementedError, RuntimeError):  # needs values: nonzero, item, equal, ...
        return False
    return True


@pytest.mark.parametrize(("name", "kind"), TABLE, ids=[n for n, _ in TABLE])
def test_no_mac_op_makes_no_uncounted_row(name, kind):
    if name in NOT_CALLED:
        pytest.skip(NOT_CALLED[name])
    call = _caller(name)
    on_meta = _runs_on_meta(call)
    # on real CPU tensors, with the rules applied exactly as trace.py applies them
    try:
        mode = run_rules(call, torch.ones(1))
    except NotImplementedError:  # a meta-only op (_resize_output_)
        assert on_meta, f"{name} runs neither on the CPU nor on meta"
    else:
        assert not mode.uncounted, f"{name}: uncounted {mode.uncounted}"
        assert mode.macs == 0
        whole = [r for r in mode.rows if r[0] == name]
        for _, row_kind, _, _ in whole:  # seen whole (not decomposed): the table's kind
            assert row_kind == kind, f"{name}: {row_kind} != {kind}"
    # through leanconv.count, on meta, when the op runs on meta tensors
    if on_meta:
        report = leanconv.count(Call(call), torch.ones(1))
        assert not report.uncounted, [r.detail for r in report.uncounted]
        assert report.total.macs == 0 and report.total.flops == 0
        rows = [r for r in report.rows if r.detail == name]
        assert (not rows) if kind == "free" else all(r.kind == kind for r in rows)


def test_no_mac_ops_add_their_flops_only_under_their_switch():
    x = torch.ones(2, 3, 4)
    relu = run_rules(lambda t: aten.relu(t), x, convention=Convention(count_activations=True))
    eq = run_rules(lambda t: aten.eq(t, t), x, convention=Convention(count_elementwise=True))
    equal = run_rules(lambda t: aten.equal(t, t), x, convention=Convention(count_elementwise=True))
    amax = run_rules(lambda t: aten.argmax(t, 1), x, convention=Convention(count_pooling=True))
    pad = run_rules(lambda t: aten.reflection_pad1d(t, [1, 1]), x, convention=FULL)
    assert (relu.flops, eq.flops, equal.flops, amax.flops, pad.flops) == (24, 24, 24, 24, 0)
    assert run_rules(lambda t: aten.relu(t), x).flops == 0


# ---------------------------------------------------------------------- real models
class SelfAttention(nn.Module):
    def __init__(self, embed, heads, need_weights):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed, heads, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x):
        return self.mha(x, x, x, need_weights=self.need_weights)[0]


class SDPA(nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


class Equal(nn.Module):
    def forward(self, x):
        return x * 2 if torch.equal(x, x) else x


def _mha_macs(batch, length, embed):
    rows = batch * length
    return rows * 3 * embed * embed + 2 * batch * length * length * embed + rows * embed * embed


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention(need_weights):
    n, length, embed = 2, 5, 8
    model = SelfAttention(embed, 2, need_weights).eval()
    report = leanconv.count(model, (n, length, embed))
    assert not report.uncounted, [r.detail for r in report.uncounted]
    assert report.total.macs == _mha_macs(n, length, embed)
    # on the CPU in eval mode: the fused _native_multi_head_attention (with or without weights)
    cpu = run_rules(model, torch.randn(n, length, embed))
    assert not cpu.uncounted and cpu.macs == _mha_macs(n, length, embed)


def test_scaled_dot_product_attention():
    shape = (2, 3, 5, 4)  # N, heads, L, E: q k^T and p v, N h L L E each
    report = leanconv.count(SDPA(), shape)
    assert not report.uncounted
    assert report.total.macs == 2 * 2 * 3 * 5 * 5 * 4
    cpu = run_rules(SDPA(), torch.randn(shape))  # _scaled_dot_product_flash_attention_for_cpu
    assert not cpu.uncounted and cpu.macs == report.total.macs
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 6)
    gqa = run_rules(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    assert gqa.macs == 2 * 4 * 5 * 7 * (8 + 6) and not gqa.uncounted


def test_transformer_encoder_layer_fast_path_counts_like_meta():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    n, length, embed, ff = 2, 5, 8, 16
    rows = n * length
    macs = rows * (4 * embed * embed + 2 * embed * ff) + 2 * n * length * length * embed
    report = leanconv.count(layer, (n, length, embed))
    assert not report.uncounted and report.total.macs == macs
    cpu = run_rules(layer, torch.randn(n, length, embed))
    assert [r[0] for r in cpu.rows if r[2]] == ["_transformer_encoder_layer_fwd"]
    assert cpu.macs == macs
    # every bias once per token: qkv (3E), output projection (E), feed-forward (F, E)
    with_bias = run_rules(layer, torch.randn(n, length, embed),
                          convention=Convention(count_bias=True))  # fmt: skip
    assert with_bias.flops == 2 * macs + rows * (3 * embed + embed + ff + embed)


def test_transformer_encoder_with_a_padding_mask_on_the_cpu():
    """The fast path packs the padded batch into a nested tensor: only real tokens are computed."""
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])  # lengths 5 and 3
    cpu = run_rules(lambda: encoder.eval()(x, src_key_padding_mask=mask))
    assert not cpu.uncounted
    per_layer = (5 + 3) * (4 * 8 * 8 + 2 * 8 * 16) + 2 * 8 * (5 * 5 + 3 * 3)
    assert cpu.macs == 2 * per_layer


def test_conv1d_reflect_and_reflection_pad():
    model = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1, padding_mode="reflect"),
                          nn.ReflectionPad1d(2))  # fmt: skip
    report = leanconv.count(model, (2, 4, 10))
    assert not report.uncounted
    assert report.total.macs == 2 * 10 * 6 * 4 * 3
    assert [r.kind for r in report.rows] == ["copy", "conv1d", "copy"]


def test_padding_of_every_mode_and_rank():
    for ndim in (1, 2, 3):
        for mode in ("reflect", "replicate", "circular", "zeros"):
            conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][ndim - 1](2, 3, 3, padding=1,
                                                                padding_mode=mode)  # fmt: skip
            shape = (1, 2, *[5] * ndim)
            report = leanconv.count(conv, shape)
            assert not report.uncounted, (ndim, mode)
            assert report.total.macs == 5**ndim * 3 * 2 * 3**ndim


def test_torch_equal_inside_forward():
    cpu = run_rules(Equal(), torch.ones(2, 3))
    assert not cpu.uncounted and cpu.macs == 0
    try:
        report = leanconv.count(Equal(), torch.ones(2, 3))
    except ForwardError as exc:  # aten.equal has no meta kernel: it needs the values
        pytest.skip(f"count() ran on meta only: {exc}")
    assert not report.uncounted and report.total.macs == 0


# ---------------------------------------------------------------------- products
class Bilinear(nn.Module):
    """``nn.Bilinear`` on one input tensor, split into its two operands."""

    def __init__(self, in1, in2, out):
        super().__init__()
        self.in1 = in1
        self.bil = nn.Bilinear(in1, in2, out)

    def forward(self, x):
        return self.bil(x[..., : self.in1], x[..., self.in1 :])


def _bilinear_brute_force(x1, x2, w):
    """F.bilinear as ATen's _trilinear computes it, with Python loops counting the products:
    per output feature k, t[n, j] = sum_i x1[n, i] W[k, i, j], then y[n, k] = sum_j t[n, j] x2[n, j]."""
    n_rows, in1 = x1.shape
    out, _, in2 = w.shape
    y = torch.zeros(n_rows, out, dtype=torch.float64)
    products = 0
    for k in range(out):
        for n in range(n_rows):
            t = [0.0] * in2
            for ii in range(in1):
                for j in range(in2):
                    t[j] += float(x1[n, ii]) * float(w[k, ii, j])
                    products += 1
            for j in range(in2):
                y[n, k] += t[j] * float(x2[n, j])
                products += 1
    return y, products


@pytest.mark.parametrize(("n", "in1", "in2", "out"), [(3, 2, 4, 5), (1, 3, 1, 2), (4, 1, 2, 1)])
def test_bilinear_by_brute_force(n, in1, in2, out):
    torch.manual_seed(0)
    layer = nn.Bilinear(in1, in2, out, bias=False).double()
    x1, x2 = torch.randn(n, in1, dtype=torch.float64), torch.randn(n, in2, dtype=torch.float64)
    y, products = _bilinear_brute_force(x1, x2, layer.weight.detach())
    assert torch.allclose(y, layer(x1, x2).detach())
    assert products == n * out * in2 * (in1 + 1)
    model = Bilinear(in1, in2, out)
    report = leanconv.count(model, (n, in1 + in2))
    assert not report.uncounted
    assert report.total.macs == products
    assert report.total.params == out * in1 * in2 + out
    cpu = run_rules(model, torch.randn(n, in1 + in2))
    assert cpu.macs == products and not cpu.uncounted


def test_bilinear_on_a_batch_of_sequences():
    report = leanconv.count(Bilinear(3, 4, 5), (2, 7, 7))  # rows = 2 * 7
    assert report.total.macs == 14 * 5 * 4 * (3 + 1)


def test_trilinear_other_layouts():
    x, y, z = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    out = aten._trilinear(x, y, z, [], [], [], [1], 0)  # sum_a x y z per row, unrolled over rows
    assert torch.allclose(out, (x * y * z).sum(1), atol=1e-6)
    assert trilinear_macs([x.shape, y.shape, z.shape], [[], [], []], [1], 0) == 3 * (4 + 4)
    mode = run_rules(lambda: aten._trilinear(x, y, z, [], [], [], [1], 0))
    assert mode.macs == 3 * 8


class Fn(nn.Module):
    """``fn(x, *parameters)``: a functional call on the input and fixed operands."""

    def __init__(self, fn, *shapes):
        super().__init__()
        self.fn = fn
        self.ops = nn.ParameterList([nn.Parameter(torch.randn(s)) for s in shapes])

    def forward(self, x):
        return self.fn(x, *self.ops)


@pytest.mark.parametrize(
    ("fn", "input_shape", "shapes", "macs"),
    [
        (lambda x, b1, b2: torch.addbmm(x, b1, b2), (3, 5), [(4, 3, 2), (4, 2, 5)], 4 * 3 * 2 * 5),
        (
            lambda x, b1, b2: torch.baddbmm(x, b1, b2),
            (4, 3, 5),
            [(4, 3, 2), (4, 2, 5)],
            4 * 3 * 2 * 5,
        ),
        (lambda x, m, v: torch.addmv(x, m, v), (3,), [(3, 7), (7,)], 3 * 7),
        (lambda x, v1, v2: torch.addr(x, v1, v2), (3, 4), [(3,), (4,)], 3 * 4),
        (lambda x, v: torch.vdot(x, v), (6,), [(6,)], 6),
        (lambda x, y: torch.cdist(x, y), (2, 5, 3), [(2, 4, 3)], 2 * 5 * 4 * 3),
    ],
    ids=["addbmm", "baddbmm", "addmv", "addr", "vdot", "cdist"],
)
def test_product_rules(fn, input_shape, shapes, macs):
    model = Fn(fn, *shapes)
    report = leanconv.count(model, input_shape)
    assert not report.uncounted and report.total.macs == macs
    assert report.total.flops == 2 * macs
    cpu = run_rules(model, torch.randn(input_shape))
    assert not cpu.uncounted and cpu.macs == macs


def test_addbmm_and_addmv_bias_under_count_bias():
    addbmm = Fn(lambda x, b1, b2: torch.addbmm(x, b1, b2), (4, 3, 2), (4, 2, 5))
    report = leanconv.count(addbmm, (3, 5), Convention(count_bias=True))
    assert report.total.flops == 2 * 4 * 3 * 2 * 5 + 3 * 5
    addmv = Fn(lambda x, m, v: torch.addmv(x, m, v), (3, 7), (7,))
    assert leanconv.count(addmv, (3,), Convention(count_bias=True)).total.flops == 2 * 21 + 3


def test_linalg_vecdot_rule():
    x, y = torch.randn(3, 5, 4), torch.randn(5, 4)
    out = torch.linalg.vecdot(x, y)
    kind, cost = RULES[aten.linalg_vecdot]((x, y), {}, out, Convention())
    assert (kind, cost.macs) == ("matmul", 3 * 5 * 4)
    kind, cost = RULES[aten.linalg_vecdot]((x, y), {"dim": 1}, torch.linalg.vecdot(x, x, dim=1),
                                           Convention())  # fmt: skip
    assert cost.macs == 3 * 4 * 5


def test_linalg_vecdot_through_count():
    # composite: it reaches the dispatcher as mul + sum; counted whole at the Python level
    report = leanconv.count(Fn(lambda x, y: torch.linalg.vecdot(x, y), (5, 4)), (3, 5, 4))
    assert report.total.macs == 3 * 5 * 4
    assert [r.detail for r in report.rows if r.macs] == ["linalg_vecdot"]


# ---------------------------------------------------------------------- recurrent networks
def lstm_macs(rows, inp, hidden, layers=1, directions=1, proj=0):
    """Per row (time step x batch element) and cell: 4H (I + H), or with a projection P
    4H (I + P) + P H; layers above the first read (P or H) x directions."""
    out = proj or hidden
    total = 0
    for layer in range(layers):
        i = inp if layer == 0 else out * directions
        total += directions * (4 * hidden * (i + out) + (proj * hidden if proj else 0))
    return rows * total


def gru_macs(rows, inp, hidden, layers=1, directions=1):
    return rows * sum(directions * 3 * hidden * ((inp if layer == 0 else hidden * directions)
                                                  + hidden) for layer in range(layers))  # fmt: skip


def rnn_macs_hand(rows, inp, hidden, layers=1, directions=1):
    return rows * sum(directions * hidden * ((inp if layer == 0 else hidden * directions)
                                              + hidden) for layer in range(layers))  # fmt: skip


T, N, I, H = 5, 2, 3, 4
RNNS = [
    ("lstm", lambda: nn.LSTM(I, H), lstm_macs(T * N, I, H)),
    ("lstm_batch_first", lambda: nn.LSTM(I, H, batch_first=True), lstm_macs(T * N, I, H)),
    ("lstm_bidirectional", lambda: nn.LSTM(I, H, bidirectional=True),
     lstm_macs(T * N, I, H, directions=2)),
    ("lstm_2_layers_bidirectional", lambda: nn.LSTM(I, H, 2, bidirectional=True),
     lstm_macs(T * N, I, H, 2, 2)),
    ("lstm_no_bias", lambda: nn.LSTM(I, H, 2, bias=False), lstm_macs(T * N, I, H, 2)),
    ("lstm_proj", lambda: nn.LSTM(I, H, proj_size=2), lstm_macs(T * N, I, H, proj=2)),
    ("lstm_proj_2_layers_bidirectional", lambda: nn.LSTM(I, H, 2, bidirectional=True, proj_size=3),
     lstm_macs(T * N, I, H, 2, 2, proj=3)),
    ("gru", lambda: nn.GRU(I, H), gru_macs(T * N, I, H)),
    ("gru_2_layers_bidirectional", lambda: nn.GRU(I, H, 2, bidirectional=True),
     gru_macs(T * N, I, H, 2, 2)),
    ("rnn_tanh", lambda: nn.RNN(I, H), rnn_macs_hand(T * N, I, H)),
    ("rnn_relu_2_layers", lambda: nn.RNN(I, H, 2, nonlinearity="relu"),
     rnn_macs_hand(T * N, I, H, 2)),
    ("rnn_bidirectional", lambda: nn.RNN(I, H, bidirectional=True),
     rnn_macs_hand(T * N, I, H, directions=2)),
]  # fmt: skip


class FirstOutput(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[0]


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize(("name", "make", "macs"), RNNS, ids=[r[0] for r in RNNS])
def test_rnn_on_meta_and_cpu(name, make, macs):
    model = FirstOutput(make()).eval()
    shape = (N, T, I) if model.inner.batch_first else (T, N, I)
    report = leanconv.count(model, shape)
    assert not report.uncounted, [r.detail for r in report.uncounted]
    assert report.total.macs == macs
    assert report.total.flops == 2 * macs
    full = leanconv.count(model, shape, FULL)
    # on real CPU tensors: the LSTM goes whole to oneDNN (mkldnn_rnn_layer), the others decompose
    x = torch.randn(shape)
    cpu = run_rules(model, x, convention=FULL)
    assert not cpu.uncounted and cpu.macs == macs
    assert cpu.flops == full.total.flops  # activations, element-wise, bias: same on both paths
    if name.startswith("lstm") and "proj" not in name and torch.backends.mkldnn.is_available():
        assert any(r[0] == "mkldnn_rnn_layer" for r in cpu.rows)


CELLS = [
    ("lstm_cell", lambda: nn.LSTMCell(I, H), N * 4 * H * (I + H)),
    ("gru_cell", lambda: nn.GRUCell(I, H), N * 3 * H * (I + H)),
    ("rnn_cell", lambda: nn.RNNCell(I, H), N * H * (I + H)),
    ("rnn_relu_cell_no_bias", lambda: nn.RNNCell(I, H, bias=False, nonlinearity="relu"),
     N * H * (I + H)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "macs"), CELLS, ids=[r[0] for r in CELLS])
def test_rnn_cells(name, make, macs):
    cell = make().eval()
    out = FirstOutput(cell) if name.startswith("lstm") else cell
    report = leanconv.count(out, (N, I))
    assert not report.uncounted and report.total.macs == macs
    cpu = run_rules(out, torch.randn(N, I))
    assert not cpu.uncounted and cpu.macs == macs
    # the whole cell op (seen whole by a trace that does not decompose it) counts the same
    op = {"lstm_cell": aten.lstm_cell, "gru_cell": aten.gru_cell, "rnn_cell": aten.rnn_tanh_cell,
          "rnn_relu_cell_no_bias": aten.rnn_relu_cell}[name]  # fmt: skip
    x = torch.randn(N, I)
    hx = [torch.zeros(N, H), torch.zeros(N, H)] if name.startswith("lstm") else torch.zeros(N, H)
    args = (x, hx, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    with torch.no_grad():
        y = op(*args)
    full = leanconv.count(out, (N, I), FULL)
    _, cost = rule_for(op.default)(args, {}, y, FULL)
    assert cost.macs == macs and cost.flops == full.total.flops


def _whole_rnn_args(module, x, packed_sizes=None):
    """The arguments ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` pass to ``aten.lstm`` & co."""
    layers, dirs = module.num_layers, 2 if module.bidirectional else 1
    h = torch.zeros(layers * dirs, x.shape[1], module.proj_size or module.hidden_size)
    hx = [h, torch.zeros(layers * dirs, x.shape[1], module.hidden_size)] \
        if isinstance(module, nn.LSTM) else h  # fmt: skip
    params = list(module._flat_weights)
    tail = (module.bias, layers, 0.0, False, module.bidirectional)
    if packed_sizes is not None:
        packed = nn.utils.rnn.pack_padded_sequence(x, packed_sizes)
        return (packed.data, packed.batch_sizes, hx, params, *tail)
    return (x, hx, params, *tail, False)


WHOLE = {nn.LSTM: aten.lstm, nn.GRU: aten.gru}


SEQUENCE_FIRST = [r for r in RNNS if "batch_first" not in r[0]]  # whole ops: rows either way


@pytest.mark.parametrize(
    ("name", "make", "macs"), SEQUENCE_FIRST, ids=[r[0] for r in SEQUENCE_FIRST]
)
def test_whole_rnn_ops(name, make, macs):
    module = make().eval()
    op = WHOLE.get(type(module)) or (aten.rnn_relu if module.nonlinearity == "relu" else
                                     aten.rnn_tanh)  # fmt: skip
    x = torch.randn(T, N, I)
    args = _whole_rnn_args(module, x)
    with torch.no_grad():
        out = op(*args)
    _, cost = rule_for(op.input)(args, {}, out, FULL)
    full = leanconv.count(FirstOutput(module), (T, N, I), FULL)
    assert cost.macs == macs and cost.flops == full.total.flops
    # packed sequences (lengths 5 and 3): the rows are the sum of the lengths
    args = _whole_rnn_args(module, x, packed_sizes=torch.tensor([5, 3]))
    with torch.no_grad():
        out = op(*args)
    _, cost = rule_for(op.data)(args, {}, out, Convention())
    assert cost.macs == macs // (T * N) * (5 + 3)


class PackedLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(I, H)

    def forward(self, x):
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]))
        out, _ = self.lstm(packed)
        return nn.utils.rnn.pad_packed_sequence(out)[0]


def test_packed_sequence_lstm():
    cpu = run_rules(PackedLSTM().eval(), torch.randn(T, N, I))
    assert not cpu.uncounted and cpu.macs == lstm_macs(5 + 3, I, H)
    report = leanconv.count(PackedLSTM(), (T, N, I))
    assert not report.uncounted and report.total.macs == lstm_macs(5 + 3, I, H)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gates", [4, 3], ids=["lstm", "gru"])
def test_fused_cells_as_on_cuda(gates, bias):
    """The CUDA path of LSTMCell / GRUCell: two ``mm`` for the gates, then the fused cell op, which
    adds the biases and runs the gates. Same count as the decomposition on meta."""
    cell = (nn.LSTMCell if gates == 4 else nn.GRUCell)(I, H, bias=bias)
    op = aten._thnn_fused_lstm_cell if gates == 4 else aten._thnn_fused_gru_cell
    full = leanconv.count(FirstOutput(cell) if gates == 4 else cell, (N, I), FULL)
    meta = {"device": "meta"}
    x, h = torch.empty(N, I, **meta), torch.empty(N, H, **meta)
    w_ih, w_hh = torch.empty(gates * H, I, **meta), torch.empty(gates * H, H, **meta)
    b_ih, b_hh = (torch.empty(gates * H, **meta), torch.empty(gates * H, **meta)) if bias \
        else (None, None)  # fmt: skip
    mm = run_rules(lambda: (aten.mm(x, aten.t(w_ih)), aten.mm(h, aten.t(w_hh))), convention=FULL)
    igates, hgates = torch.empty(N, gates * H, **meta), torch.empty(N, gates * H, **meta)
    if gates == 4 and bias:  # the op's meta kernel (it needs the biases)
        fused = run_rules(lambda: op(igates, hgates, h, b_ih, b_hh), convention=FULL)
        assert [r[0] for r in fused.rows] == ["_thnn_fused_lstm_cell"]
        cell_flops = fused.flops
    else:  # the rule on outputs shaped as the CUDA kernel's
        out = (h, h, igates) if gates == 4 else (h, torch.empty(N, 5 * H, **meta))
        _, cost = rule_for(op.default)((igates, hgates, h, b_ih, b_hh), {}, out, FULL)
        assert cost.macs == 0
        cell_flops = cost.flops
    assert mm.macs == full.total.macs == N * gates * H * (I + H)
    assert mm.flops + cell_flops == full.total.flops


@pytest.mark.parametrize(
    ("name", "make", "macs"), SEQUENCE_FIRST, ids=[r[0] for r in SEQUENCE_FIRST]
)
def test_cudnn_and_miopen_rnn(name, make, macs):
    """``_cudnn_rnn`` / ``miopen_rnn`` as ``at::lstm`` calls them on a GPU, on meta tensors."""
    module = make()
    layers, dirs = module.num_layers, 2 if module.bidirectional else 1
    mode = {"RNN_RELU": 0, "RNN_TANH": 1, "LSTM": 2, "GRU": 3}[module.mode]
    meta = [torch.empty(w.shape, device="meta") for w in module._flat_weights]
    x = torch.empty(T, N, I, device="meta")
    hx = torch.empty(layers * dirs, N, module.proj_size or H, device="meta")
    cx = torch.empty(layers * dirs, N, H, device="meta") if module.mode == "LSTM" else None
    stride = len(meta) // (layers * dirs)
    full = leanconv.count(FirstOutput(module), (T, N, I), FULL)
    cudnn = run_rules(lambda: aten._cudnn_rnn(
        x, meta, stride, None, hx, cx, mode, H, module.proj_size, layers, False, 0.0, False,
        module.bidirectional, [], None), convention=FULL)  # fmt: skip
    assert [r[0] for r in cudnn.rows] == ["_cudnn_rnn"]
    assert cudnn.macs == macs and cudnn.flops == full.total.flops
    if module.proj_size:
        return  # MIOpen has no projections
    miopen = run_rules(lambda: aten.miopen_rnn(
        x, meta, stride, hx, cx, mode, H, layers, False, 0.0, False, module.bidirectional, [],
        None), convention=FULL)  # fmt: skip
    assert miopen.macs == macs and miopen.flops == full.total.flops


def test_mkldnn_rnn_layer_on_meta():
    """The oneDNN layer op called on meta tensors, one direction of one layer: 4H (I + H) per row,
    biases only when has_biases (the op is then given the weights again as placeholders)."""
    meta = {"device": "meta"}
    x, w_ih, w_hh = torch.empty(T, N, I, **meta), torch.empty(4 * H, I, **meta), \
        torch.empty(4 * H, H, **meta)  # fmt: skip
    h, b = torch.empty(N, H, **meta), torch.empty(4 * H, **meta)
    for has_biases, extra in ((True, T * N * 8 * H), (False, 0)):
        b_ih, b_hh = (b, b) if has_biases else (w_ih, w_hh)
        mode = run_rules(lambda b_ih=b_ih, b_hh=b_hh, has_biases=has_biases: aten.mkldnn_rnn_layer(
            x, w_ih, w_hh, b_ih, b_hh, h, h, False, [], 2, H, 1, has_biases, False, False, False),
            convention=Convention(count_bias=True))  # fmt: skip
        assert mode.macs == T * N * 4 * H * (I + H)
        assert mode.flops == 2 * mode.macs + extra
