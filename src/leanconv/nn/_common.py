"""Private helpers shared by the blocks: argument checks, conv-norm-activation, analytic costs.

Every block of this package can list its convolutions analytically, from its own attributes and
the input shape, without running: ``block.conv_specs(input_shape)`` returns one
:class:`~leanconv.spec.ConvSpec` per convolution call, ``block.output_shape(input_shape)`` the shape
it returns and ``block.cost(input_shape)`` the sum of their closed forms
(:func:`leanconv.cost.conv_cost`). Normalisation, activations, pooling and concatenation cost no
MACs under the default convention, so ``cost(...).macs`` equals ``leanconv.count(block, ...)``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Sequence

from torch import Tensor, nn

from ..cost.convention import DEFAULT, Convention
from ..cost.formulas import OpCost, conv_cost
from ..spec import ConvSpec

Norm = Callable[[int], nn.Module] | None
Activation = Callable[[], nn.Module] | None
Shape = tuple[int, ...]


def check_positive(where: str, **values: int | float) -> None:
    """``ValueError`` naming the first argument that is not positive."""
    for arg, v in values.items():
        if v is None or v <= 0:
            raise ValueError(f"{where}: {arg}={v} must be positive")


def positive_args(*names: str):
    """Decorator of a block's ``__init__``: the arguments ``names`` are checked positive
    (:func:`check_positive`, naming the block's class, in the order of ``names``) before the body
    runs. A call that does not fit the signature is left to Python to refuse."""

    def decorate(init):
        signature = inspect.signature(init)

        @functools.wraps(init)
        def checked(self, *args, **kwargs):
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                return init(self, *args, **kwargs)
            bound.apply_defaults()
            check_positive(type(self).__name__, **{n: bound.arguments[n] for n in names})
            return init(self, *args, **kwargs)

        return checked

    return decorate


def check_divisible(where: str, groups: int, **channels: int) -> None:
    """``ValueError`` naming the first channel count that ``groups`` does not divide."""
    for arg, c in channels.items():
        if c % groups:
            raise ValueError(f"{where}: {arg}={c} is not divisible by groups={groups}")


def divide_channels(
    where: str, channels: tuple[str, int], ratio: tuple[str, int], what: str
) -> int:
    """``channels // ratio`` (each a ``(name, value)`` pair, named in the message); ``ValueError``
    when that leaves no ``what``."""
    (c_arg, c), (r_arg, r) = channels, ratio
    if c // r < 1:
        raise ValueError(f"{where}: {r_arg}={r} leaves {c_arg}={c} // {r} = 0 {what}")
    return c // r


def same_padding(where: str, kernel_size: int, dilation: int = 1) -> int:
    """``d (k - 1) / 2``, the padding that keeps the size at stride 1; odd ``k`` only."""
    if kernel_size % 2 == 0:
        raise ValueError(
            f"{where}: kernel_size={kernel_size} is even, 'same' padding needs an odd kernel "
            "(pass padding= explicitly)"
        )
    return dilation * (kernel_size - 1) // 2


def padding_or_same(where: str, padding: int | None, kernel_size: int, dilation: int = 1) -> int:
    """``padding``, checked not negative, or 'same' padding (:func:`same_padding`) when None."""
    if padding is None:
        return same_padding(where, kernel_size, dilation)
    if padding < 0:
        raise ValueError(f"{where}: padding={padding} must not be negative")
    return padding


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it (MobileNet v2,
    as in the TensorFlow reference implementation)."""
    min_value = min_value or divisor
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def norm_act(channels: int, norm: Norm, activation: Activation) -> list[nn.Module]:
    """``[norm(channels), activation()]``, leaving out the ones that are None."""
    out: list[nn.Module] = []
    if norm is not None:
        out.append(norm(channels))
    if activation is not None:
        out.append(activation())
    return out


def norm_act_seq(channels: int, norm: Norm, activation: Activation) -> nn.Sequential:
    """:func:`norm_act` as an ``nn.Sequential`` (an empty one, the identity, when both are None)."""
    return nn.Sequential(*norm_act(channels, norm, activation))


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size,
    stride=1,
    padding=None,
    dilation: int = 1,
    groups: int = 1,
    norm: Norm = nn.BatchNorm2d,
    activation: Activation = None,
    bias: bool | None = None,
) -> list[nn.Module]:
    """The one convolution-norm-activation builder (as timm's ``ConvNormAct``): ``Conv2d``, then
    ``norm(out_channels)`` and ``activation()`` where given, as a list for an ``nn.Sequential``
    (where deployment can fold the norm and fuse the activation, :mod:`leanconv.compress`).
    ``padding=None``: 'same' for an odd square kernel, ``d (k - 1) / 2``; ``bias=None``: a bias
    only when there is no norm to absorb it."""
    if padding is None:
        padding = same_padding("conv_norm_act", kernel_size, dilation)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                     bias=norm is None if bias is None else bias)  # fmt: skip
    return [conv, *norm_act(out_channels, norm, activation)]


def relu() -> nn.Module:
    """An in-place ReLU (what the blocks use after a norm)."""
    return nn.ReLU(inplace=True)


def shape4(where: str, input_shape: Sequence[int]) -> Shape:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 4:
        raise ValueError(f"{where}: input_shape={shape} must be (N, C, H, W)")
    return shape


def spec_of(conv: nn.Conv2d, shape: Shape, name: str = "") -> ConvSpec:
    """The spec of ``conv`` applied to ``shape`` (from the module's attributes, nothing runs)."""
    return ConvSpec.from_module(conv, shape, name)


def chain_specs(
    shape: Shape, modules: Iterable[nn.Module], names: Sequence[str] = ()
) -> tuple[list[ConvSpec], Shape]:
    """The specs of the convolutions among ``modules`` applied in turn from ``shape`` (the other
    modules, norms and activations, keep the shape), labelled by ``names`` where given, and the
    shape that comes out."""
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    specs = []
    for i, conv in enumerate(convs):
        specs.append(spec_of(conv, shape, names[i] if names else ""))
        shape = specs[-1].output_shape
    return specs, shape


def call_spec(module: nn.Module, x: Tensor) -> ConvSpec:
    """The spec of a call ``module(x)`` (batched ``x``) of a layer that holds a convolution's
    attributes as ``nn.Conv2d`` does (``in_channels``, ..., ``groups``, ``bias``) without being
    one: the fast and deformable layers."""
    return ConvSpec(
        module.in_channels,
        module.out_channels,
        module.kernel_size,
        input_size=tuple(x.shape[2:]),
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=module.groups,
        bias=module.bias is not None,
        batch=x.shape[0],
        dtype=x.dtype,
    )


def reset_like_conv(weight: Tensor, bias: Tensor | None) -> None:
    """The initialisation of ``nn.Conv2d``: kaiming-uniform weight (``a = sqrt(5)``), bias uniform
    in ``+-1/sqrt(fan_in)``."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = math.prod(weight.shape[1:])
        bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
        nn.init.uniform_(bias, -bound, bound)


def pool_shape(shape: Shape, kernel: int, stride: int, padding: int = 0) -> Shape:
    """Output of a (max or average) pool, floor mode: ``floor((L + 2p - k) / s) + 1``."""
    n, c, h, w = shape
    return (
        n,
        c,
        (h + 2 * padding - kernel) // stride + 1,
        (w + 2 * padding - kernel) // stride + 1,
    )


def sum_costs(specs: Sequence[ConvSpec], output_shape: Shape, convention: Convention) -> OpCost:
    """The closed-form costs of ``specs`` added up, with the block's ``output_shape``."""
    costs = [conv_cost(s, convention) for s in specs]
    return OpCost(
        params=sum(c.params for c in costs),
        macs=sum(c.macs for c in costs),
        flops=sum(c.flops for c in costs),
        bytes=sum(c.bytes for c in costs),
        output_shape=output_shape,
    )


class AnalyticCost:
    """Mixin: a block defines ``_walk(shape) -> (specs, output_shape)``; this adds the public API.

    The walk follows the block's structure from its attributes (not a trace), so comparing
    :meth:`cost` with :func:`leanconv.count` checks the dispatcher counter and the block against
    each other.
    """

    def _walk(self, shape: Shape) -> tuple[list[ConvSpec], Shape]:  # pragma: no cover
        raise NotImplementedError

    def _chain(self, shape: Shape, *names: str) -> tuple[list[ConvSpec], Shape]:
        """:func:`chain_specs` of the block's convolutions named ``names``, labelled so."""
        return chain_specs(shape, [getattr(self, name) for name in names], names)

    def _walk_input(self, input_shape: Sequence[int]) -> tuple[list[ConvSpec], Shape]:
        return self._walk(shape4(type(self).__name__, input_shape))

    def conv_specs(self, input_shape: Sequence[int]) -> list[ConvSpec]:
        """One :class:`ConvSpec` per convolution the block runs on ``input_shape``, in order."""
        return self._walk_input(input_shape)[0]

    def output_shape(self, input_shape: Sequence[int]) -> Shape:
        """The shape the block returns for ``input_shape`` = (N, C, H, W)."""
        return self._walk_input(input_shape)[1]

    def cost(self, input_shape: Sequence[int], convention: Convention = DEFAULT) -> OpCost:
        """Closed-form cost of the block's convolutions (params are the convolutions' only)."""
        return sum_costs(*self._walk_input(input_shape), convention)
