"""``ConvSpec``: the geometry of one convolution, the vocabulary every part of leanconv speaks.

A spec holds what is needed to know the shape and the cost of a convolution without running it:
channels, kernel, stride, padding (per side), dilation, groups, transposition, bias, the spatial
input size, the batch and the dtype. Integers are broadcast to every spatial dimension; padding may
be an int, a per-dimension tuple, per-side ``((lo, hi), ...)`` pairs, ``"same"`` or ``"valid"``.

Output size (PyTorch's definition, ``torch.nn.Conv2d`` and ``torch.nn.ConvTranspose2d`` docs)::

    direct:     out = floor((L + lo + hi - d (k - 1) - 1) / s) + 1
    transposed: out = (L - 1) s - (lo + hi) + d (k - 1) + output_padding + 1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from .errors import InvalidSpecError

IntOrTuple = int | Sequence[int]
PaddingArg = int | str | Sequence[int] | Sequence[Sequence[int]]


def normalise_tuple(
    value: IntOrTuple, ndim: int, arg: str, where: str, *, strict: bool = False
) -> tuple[int, ...]:
    """``value`` (an int, or one or ``ndim`` ints) as ``ndim`` ints; raises naming ``arg``.

    ``where`` prefixes every message (``"layer 'conv1': "``, or ``""``). Entries go through
    ``int()``; with ``strict`` (what the ``conv2d`` functions take, as ``F.conv2d`` does) they must
    be ``int`` already: no bool, float or tensor.
    """
    if strict:
        _check_ints(value, arg, where)
    if isinstance(value, int):
        return (value,) * ndim
    out = tuple(int(v) for v in value)
    if len(out) == 1:
        return out * ndim
    if len(out) != ndim:
        raise InvalidSpecError(
            f"{where}{arg}={tuple(value)} has {len(out)} entries, expected {ndim}"
        )
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_ints(value, arg: str, where: str) -> None:
    """``value`` is an int or an iterable of ints (bools excluded)."""
    message = f"{where}{arg}={value!r} must be an int or a tuple of ints"
    if _is_int(value):
        return
    try:
        items = tuple(value)
    except TypeError:
        raise InvalidSpecError(message) from None
    if not all(_is_int(v) for v in items):
        raise InvalidSpecError(message)


def normalise_padding(
    value: PaddingArg,
    ndim: int,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    stride: tuple[int, ...],
    where: str,
    *,
    strict: bool = False,
) -> tuple[tuple[int, int], ...]:
    """Padding as ``ndim`` ``(lo, hi)`` pairs, from an int, one or ``ndim`` ints, ``ndim``
    ``(lo, hi)`` pairs, ``"same"`` or ``"valid"``.

    With ``strict`` (what the ``conv2d`` functions take) also ``2 ndim`` ints in the order of
    ``torch.nn.functional.pad`` (last dimension first: ``(left, right, top, bottom)`` in 2-D), and
    every entry must be a non-negative ``int``.
    """
    if isinstance(value, str):
        if value == "valid":
            return ((0, 0),) * ndim
        if value == "same":
            if any(s != 1 for s in stride):
                raise InvalidSpecError(f"{where}padding='same' needs stride 1, got stride={stride}")
            # PyTorch puts the extra element of an odd total on the high side.
            totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise InvalidSpecError(f"{where}padding={value!r} is not 'same', 'valid' or a number")
    if strict:
        return _strict_padding(value, ndim, where)
    if isinstance(value, int):
        return ((value, value),) * ndim
    items = list(value)
    if items and all(isinstance(v, Sequence) for v in items):
        pairs = tuple((int(a), int(b)) for a, b in items)
        if len(pairs) != ndim:
            raise InvalidSpecError(
                f"{where}padding={value} has {len(pairs)} pairs, expected {ndim}"
            )
        return pairs
    flat = normalise_tuple(tuple(items), ndim, "padding", where)
    return tuple((p, p) for p in flat)


def _strict_padding(value: PaddingArg, ndim: int, where: str) -> tuple[tuple[int, int], ...]:
    """The numeric forms of :func:`normalise_padding` with ``strict``."""
    if _is_int(value):
        return _non_negative(((value, value),) * ndim, value, where)
    try:
        items = list(value)
    except TypeError:
        raise InvalidSpecError(f"{where}padding={value!r} is not understood") from None
    ints = all(isinstance(v, int) for v in items)
    if len(items) == ndim and all(isinstance(v, Sequence) and len(v) == 2 for v in items):
        pairs = tuple(tuple(v) for v in items)
    elif len(items) == 2 * ndim and ints:
        pairs = tuple((items[2 * i], items[2 * i + 1]) for i in reversed(range(ndim)))
    elif len(items) in (1, ndim) and ints:
        flat = normalise_tuple(tuple(items), ndim, "padding", where, strict=True)
        pairs = tuple((p, p) for p in flat)
    else:
        forms = "(ph, pw), ((top, bottom), (left, right)), (left, right, top, bottom)"
        if ndim != 2:
            forms = f"{ndim} ints, {ndim} (lo, hi) pairs, {2 * ndim} ints in F.pad order"
        raise InvalidSpecError(
            f"{where}padding={value!r} must be an int, {forms}, 'same' or 'valid'"
        )
    if not all(_is_int(p) for pair in pairs for p in pair):
        raise InvalidSpecError(f"{where}padding={value!r} must hold integers")
    return _non_negative(pairs, value, where)


def _non_negative(pairs, value, where: str) -> tuple[tuple[int, int], ...]:
    if any(p < 0 for pair in pairs for p in pair):
        raise InvalidSpecError(f"{where}padding={value!r} must not be negative")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def part_geometry(stride, padding, dilation, part: str):
    """The ``(stride, ((top, bottom), (left, right)), dilation)`` of a factor of a 2-D
    convolution that convolves along ``part`` of it: ``"full"`` both dimensions (all of the
    layer's geometry), ``"h"`` the height only, ``"w"`` the width only, ``"1x1"`` neither. A
    decomposition gives each dimension's stride, padding and dilation to the factor that
    convolves along it, so the chain has the layer's output shape."""
    (sh, sw), ((t, b), (l, r)), (dh, dw) = stride, padding, dilation
    return {
        "1x1": ((1, 1), ((0, 0), (0, 0)), (1, 1)),
        "full": ((sh, sw), ((t, b), (l, r)), (dh, dw)),
        "h": ((sh, 1), ((t, b), (0, 0)), (dh, 1)),
        "w": ((1, sw), ((0, 0), (l, r)), (1, dw)),
    }[part]


# the names the rest of the package used before these were public
_tuple, _padding = normalise_tuple, normalise_padding


@dataclass(frozen=True)
class ConvSpec:
    """Geometry of one (possibly transposed, grouped, dilated) N-d convolution.

    >>> ConvSpec(64, 128, 3, input_size=(56, 56), stride=2, padding=1).output_size
    (28, 28)
    """

    in_channels: int
    out_channels: int
    kernel_size: IntOrTuple
    input_size: IntOrTuple
    stride: IntOrTuple = 1
    padding: PaddingArg = 0
    dilation: IntOrTuple = 1
    groups: int = 1
    transposed: bool = False
    output_padding: IntOrTuple = 0
    bias: bool = True
    batch: int = 1
    dtype: torch.dtype = torch.float32
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = f"layer {self.name!r}: " if self.name else ""
        if isinstance(self.input_size, int):
            ndim = len(self.kernel_size) if not isinstance(self.kernel_size, int) else 2
        else:
            ndim = len(tuple(self.input_size))
        if ndim not in (1, 2, 3):
            raise InvalidSpecError(f"{where}only 1-D, 2-D and 3-D convolutions, got {ndim}-D")
        kernel = _tuple(self.kernel_size, ndim, "kernel_size", where)
        stride = _tuple(self.stride, ndim, "stride", where)
        dilation = _tuple(self.dilation, ndim, "dilation", where)
        object.__setattr__(self, "input_size", _tuple(self.input_size, ndim, "input_size", where))
        object.__setattr__(self, "kernel_size", kernel)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "dilation", dilation)
        object.__setattr__(
            self, "padding", _padding(self.padding, ndim, kernel, dilation, stride, where)
        )
        object.__setattr__(
            self, "output_padding", _tuple(self.output_padding, ndim, "output_padding", where)
        )
        self._validate(where)

    # ------------------------------------------------------------------ validation
    def _validate(self, where: str) -> None:
        def positive(arg: str, values: Sequence[int]) -> None:
            if any(v < 1 for v in values):
                raise InvalidSpecError(f"{where}{arg}={tuple(values)} must be positive")

        positive("in_channels", [self.in_channels])
        positive("out_channels", [self.out_channels])
        positive("groups", [self.groups])
        positive("batch", [self.batch])
        positive("kernel_size", self.kernel_size)
        positive("stride", self.stride)
        positive("dilation", self.dilation)
        positive("input_size", self.input_size)
        if any(p < 0 for pair in self.padding for p in pair):
            raise InvalidSpecError(f"{where}padding={self.padding} must not be negative")
        for arg, channels in (
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ):
            if channels % self.groups:
                raise InvalidSpecError(
                    f"{where}{arg}={channels} is not divisible by groups={self.groups}"
                )
        if self.transposed:
            if any(p < 0 for p in self.output_padding):
                raise InvalidSpecError(f"{where}output_padding must not be negative")
            for op, s, d in zip(self.output_padding, self.stride, self.dilation, strict=True):
                if op >= max(s, d):
                    raise InvalidSpecError(
                        f"{where}output_padding={self.output_padding} must be smaller than "
                        f"stride or dilation ({self.stride}, {self.dilation})"
                    )
        else:
            for length, (lo, hi), k, d in zip(
                self.input_size, self.padding, self.kernel_size, self.dilation, strict=True
            ):
                if length + lo + hi < d * (k - 1) + 1:
                    raise InvalidSpecError(
                        f"{where}kernel {self.kernel_size} (dilation {self.dilation}) is larger "
                        f"than the padded input {self.padded_size}"
                    )
        if any(o < 1 for o in self.output_size):
            raise InvalidSpecError(f"{where}output size {self.output_size} is empty")

    # ------------------------------------------------------------------ derived geometry
    @property
    def ndim(self) -> int:
        return len(self.kernel_size)

    @property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.input_size, self.padding, strict=True))

    @property
    def output_size(self) -> tuple[int, ...]:
        out = []
        for i in range(self.ndim):
            n, (lo, hi) = self.input_size[i], self.padding[i]
            k, s, d = self.kernel_size[i], self.stride[i], self.dilation[i]
            if self.transposed:
                out.append((n - 1) * s - (lo + hi) + d * (k - 1) + self.output_padding[i] + 1)
            else:
                out.append((n + lo + hi - d * (k - 1) - 1) // s + 1)
        return tuple(out)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.input_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.output_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """``(C_out, C_in/g, *k)``, or ``(C_in, C_out/g, *k)`` when transposed, as in PyTorch."""
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def taps(self) -> int:
        """Kernel taps per output (per input, when transposed) and channel pair: ``prod(k)``."""
        return math.prod(self.kernel_size)

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels and self.groups > 1

    @property
    def symmetric_padding(self) -> tuple[int, ...] | None:
        """Per-dimension padding when both sides agree (what ``nn.ConvNd`` accepts), else None."""
        if all(lo == hi for lo, hi in self.padding):
            return tuple(lo for lo, _ in self.padding)
        return None

    def with_(self, **changes) -> ConvSpec:
        """A copy with some fields changed (and re-validated)."""
        return replace(self, **changes)

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        parts = [f"{self.in_channels}->{self.out_channels}", f"k={k}"]
        if any(s != 1 for s in self.stride):
            parts.append(f"s={'x'.join(map(str, self.stride))}")
        if any(p for pair in self.padding for p in pair):
            sym = self.symmetric_padding
            parts.append(f"p={'x'.join(map(str, sym)) if sym else self.padding}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"d={'x'.join(map(str, self.dilation))}")
        if self.groups != 1:
            parts.append(f"g={self.groups}")
        if self.transposed:
            parts.append("transposed")
        return " ".join(parts)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_module(
        cls, module: torch.nn.Module, input_shape: Sequence[int], name: str = ""
    ) -> ConvSpec:
        """The spec of an ``nn.ConvNd`` / ``nn.ConvTransposeNd`` applied to ``input_shape``."""
        from torch.nn.modules.conv import _ConvNd

        if not isinstance(module, _ConvNd):
            raise InvalidSpecError(f"layer {name!r}: {type(module).__name__} is not a convolution")
        shape = tuple(input_shape)
        if len(shape) != module.weight.dim():
            raise InvalidSpecError(
                f"layer {name!r}: input shape {shape} does not fit a "
                f"{module.weight.dim() - 2}-D convolution"
            )
        padding = module.padding
        if module.padding_mode != "zeros" and not isinstance(padding, str):
            padding = tuple(padding)
        return cls(
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            kernel_size=module.kernel_size,
            input_size=shape[2:],
            stride=module.stride,
            padding=padding,
            dilation=module.dilation,
            groups=module.groups,
            transposed=module.transposed,
            output_padding=module.output_padding,
            bias=module.bias is not None,
            batch=shape[0],
            dtype=module.weight.dtype,
            name=name,
        )
