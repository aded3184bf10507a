"""Closed-form costs of single operations.

Every function returns an :class:`OpCost` with integer counts. Bytes are the elements read and
written (weights, input, output) times the dtype's width: the traffic of one pass with no reuse
across calls, the usual roofline convention. Arithmetic intensity = FLOPs / bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidSpecError
from ..spec import ConvSpec
from .convention import DEFAULT, Convention


@dataclass(frozen=True)
class OpCost:
    """The cost of one operation. ``flops`` follows the :class:`Convention` it was made under."""

    params: int
    macs: int
    flops: int
    bytes: int
    output_shape: tuple[int, ...] = ()

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    def __add__(self, other: OpCost) -> OpCost:
        return OpCost(
            self.params + other.params,
            self.macs + other.macs,
            self.flops + other.flops,
            self.bytes + other.bytes,
            other.output_shape,
        )


def dtype_bytes(dtype: torch.dtype) -> int:
    """Width of one element in bytes."""
    return torch.empty((), dtype=dtype, device="meta").element_size()


def conv_params(spec: ConvSpec) -> int:
    """``C_out * (C_in / g) * prod(k)`` weights, plus ``C_out`` when there is a bias."""
    weights = math.prod(spec.weight_shape)
    return weights + (spec.out_channels if spec.bias else 0)


def _valid_taps_1d(length: int, out: int, k: int, s: int, d: int, lo: int, transposed: bool) -> int:
    """Number of (position, tap) pairs whose tap lands inside the real signal.

    Direct: output ``o`` reads input ``o*s - lo + j*d`` for taps ``j``; count those in
    ``[0, length)``. Transposed: input ``i`` writes output ``i*s - lo + j*d``; count those in
    ``[0, out)``.
    """
    positions, limit = (length, out) if transposed else (out, length)
    count = 0
    for p in range(positions):
        base = p * s - lo
        first = max(0, -(base // d))  # smallest j with base + j*d >= 0
        last = min(k - 1, (limit - 1 - base) // d)  # largest j with base + j*d < limit
        count += max(0, last - first + 1)
    return count


def conv_macs(spec: ConvSpec, valid_taps: bool = False) -> int:
    """Multiply-accumulates of a convolution.

    Direct: ``N * prod(out) * C_out * (C_in / g) * prod(k)``.
    Transposed (a scatter of every input over the kernel): ``N * prod(in) * C_in * (C_out / g) *
    prod(k)``; counting output positions instead, as several tools do, is ``s^d`` times too high.
    With ``valid_taps`` only taps on real input (or, transposed, landing on a kept output) count;
    the count factorises over spatial dimensions.
    """
    per_pair = spec.in_channels * spec.out_channels // spec.groups
    if valid_taps:
        taps = math.prod(
            _valid_taps_1d(
                spec.input_size[i],
                spec.output_size[i],
                spec.kernel_size[i],
                spec.stride[i],
                spec.dilation[i],
                spec.padding[i][0],
                spec.transposed,
            )
            for i in range(spec.ndim)
        )
        return spec.batch * per_pair * taps
    positions = math.prod(spec.input_size if spec.transposed else spec.output_size)
    return spec.batch * positions * per_pair * spec.taps


def conv_cost(spec: ConvSpec, convention: Convention = DEFAULT) -> OpCost:
    """Parameters, MACs, FLOPs and bytes of one convolution (see :func:`conv_macs`)."""
    macs = conv_macs(spec, convention.valid_taps)
    out_elems = math.prod(spec.output_shape)
    flops = convention.flops_per_mac * macs
    if spec.bias and convention.count_bias:
        flops += out_elems
    width = dtype_bytes(spec.dtype)
    params = conv_params(spec)
    moved = (params + math.prod(spec.input_shape) + out_elems) * width
    return OpCost(params, macs, flops, moved, spec.output_shape)


def linear_cost(
    in_features: int,
    out_features: int,
    batch_shape: Sequence[int] = (1,),
    bias: bool = True,
    dtype: torch.dtype = torch.float32,
    convention: Convention = DEFAULT,
) -> OpCost:
    """``y = x W^T + b``: ``prod(batch) * in * out`` MACs."""
    rows = math.prod(batch_shape)
    macs = rows * in_features * out_features
    flops = convention.flops_per_mac * macs + (
        rows * out_features if bias and convention.count_bias else 0
    )
    params = in_features * out_features + (out_features if bias else 0)
    moved = (params + rows * in_features + rows * out_features) * dtype_bytes(dtype)
    return OpCost(params, macs, flops, moved, (*batch_shape, out_features))


def matmul_macs(a_shape: Sequence[int], b_shape: Sequence[int]) -> int:
    """Exact MACs of ``a @ b`` with NumPy broadcasting: ``prod(batch) * n * k * m``."""
    a, b = list(a_shape), list(b_shape)
    if len(a) == 1:
        a = [1, *a]
    if len(b) == 1:
        b = [*b, 1]
    if a[-1] != b[-2]:
        raise InvalidSpecError(f"matmul: inner sizes differ, {tuple(a_shape)} @ {tuple(b_shape)}")
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def einsum_macs(equation: str, *shapes: Sequence[int]) -> int:
    """Exact MACs of a two-operand ``einsum``: the product of the sizes of all distinct indices.

    Each combination of every index appearing in the operands is one multiply-accumulate into the
    output element named by the output indices (contracted indices are summed).
    """
    if len(shapes) != 2:
        raise InvalidSpecError(f"einsum {equation!r}: exact count is for two operands")
    lhs = equation.replace(" ", "").split("->")[0]
    sizes: dict[str, int] = {}
    for term, shape in zip(lhs.split(","), shapes, strict=True):
        if "..." in term or len(term) != len(shape):
            raise InvalidSpecError(
                f"einsum {equation!r}: term {term!r} does not fit {tuple(shape)}"
            )
        for letter, size in zip(term, shape, strict=True):
            if sizes.setdefault(letter, size) != size and size != 1:
                sizes[letter] = max(sizes[letter], size)
    return math.prod(sizes.values())


def pool_cost(
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    window: int,
    dtype: torch.dtype = torch.float32,
    convention: Convention = DEFAULT,
) -> OpCost:
    """Pooling: no MACs; ``window`` comparisons or additions per output element as FLOPs."""
    out = math.prod(output_shape)
    flops = out * window if convention.count_pooling else 0
    moved = (math.prod(input_shape) + out) * dtype_bytes(dtype)
    return OpCost(0, 0, flops, moved, tuple(output_shape))


def elementwise_cost(
    shape: Sequence[int],
    operands: int = 1,
    flops_per_element: int = 1,
    counted: bool = False,
    dtype: torch.dtype = torch.float32,
) -> OpCost:
    """An element-wise op over ``shape``: reads ``operands`` tensors and writes one."""
    n = math.prod(shape)
    flops = n * flops_per_element if counted else 0
    return OpCost(0, 0, flops, (operands + 1) * n * dtype_bytes(dtype), tuple(shape))


def deform_conv_cost(
    spec: ConvSpec,
    offset_groups: int = 1,
    modulated: bool = False,
    convention: Convention = DEFAULT,
) -> OpCost:
    """Deformable convolution (Dai et al. 2017; v2 with modulation, Zhu et al. 2019).

    Each output position samples every input channel at every kernel tap at a fractional location
    by bilinear interpolation: 4 MACs per sampled value (the four corners times their weights),
    plus 1 multiplication by the modulation mask in v2. The interpolation weights themselves cost 4
    MACs per (sample, offset group) and are shared by the channels of the group. Then the
    convolution proper: the MACs of :func:`conv_macs` on the sampled columns.
    """
    if spec.transposed:
        raise InvalidSpecError(f"layer {spec.name!r}: deformable convolution cannot be transposed")
    base = conv_cost(spec, convention)
    samples = spec.batch * math.prod(spec.output_size) * spec.taps
    sampling = samples * spec.in_channels * (4 + (1 if modulated else 0))
    coefficients = samples * offset_groups * 4
    macs = base.macs + sampling + coefficients
    flops = base.flops + convention.flops_per_mac * (sampling + coefficients)
    offsets = samples * offset_groups * (3 if modulated else 2)  # read the offsets (and mask)
    moved = base.bytes + offsets * dtype_bytes(spec.dtype)
    return OpCost(base.params, macs, flops, moved, base.output_shape)
