"""Convolution layers computed by fast algorithms: thin modules over :mod:`leanconv.algorithms`.

- :class:`WinogradConv2d`: Winograd F(m x m, r x s) (``algorithms.winograd``); the transformed
  filter ``G g G^T`` is cached and rebuilt only when the weight changes.
- :class:`FFTConv2d`: FFT convolution (``algorithms.fft``); the transformed filter is cached per
  FFT size (which depends on the input size unless ``tile`` fixes it).
- :class:`PackedConv2d`: direct convolution by oneDNN on a weight packed once per input shape
  (``algorithms.packed``), the deployment form of a plain layer.
- :class:`NarrowConv2d`: direct convolution with output channels in vectors of 8
  (``algorithms.narrow``), for the thin factors of decomposed layers.

All hold ``weight`` and ``bias`` as ``nn.Conv2d`` does, so ``state_dict`` is interchangeable, and
all are differentiable: while autograd records (training), the filter is transformed on every
call so that gradients reach ``weight``; under ``torch.no_grad`` / eval the cache is used.
``from_conv(conv)`` builds one from a trained ``nn.Conv2d`` (same outputs up to rounding).
``activation="relu"`` makes a layer compute ``relu(conv(x))``, in the pass that writes its output
where the algorithm allows (compiled Winograd, oneDNN), so that a following ``nn.ReLU`` can go
(:func:`leanconv.rewrite.fuse_activations`).

Every layer also takes a residual block's shortcut: ``layer(x, residual)`` computes
``activation(conv(x) + residual)``, the sum taken as the output is written where the algorithm
allows (the narrow kernel), else as a pass of its own, in place on the layer's fresh output; a
``residual`` of another shape is broadcast, as ``+`` does
(:mod:`leanconv.rewrite.residual` calls layers so).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..algorithms import fft as _fft
from ..algorithms import narrow as _narrow
from ..algorithms import packed as _packed
from ..algorithms import winograd as _winograd
from ..algorithms._geometry import normalise, pair, symmetric_output_size, symmetric_padding
from ..cost import register_module_rule
from ..cost.convention import Convention
from ..cost.formulas import OpCost, conv_cost
from ..errors import InvalidSpecError
from ._common import call_spec, reset_like_conv

__all__ = ["FFTConv2d", "NarrowConv2d", "PackedConv2d", "WinogradConv2d"]


@contextmanager
def _normal_tensors():
    """Tensors made here are normal ones even under ``torch.inference_mode()``, and record no
    gradient. A layer's parameters and cached transforms are made so: an inference tensor has no
    version counter (the caches' key, :meth:`_FastConv2d._weight_key`) and cannot be used by
    autograd once inference mode ends, so a layer built or first run under inference mode would
    fail there, or later outside it."""
    with torch.inference_mode(False), torch.no_grad():
        yield


class _FastConv2d(nn.Module):
    """Parameters and argument checks shared by the fast layers (as in ``nn.Conv2d``).

    ``min_batch``: a batched input of fewer images runs the direct convolution (on a packed
    weight, as :class:`PackedConv2d`) instead of the layer's algorithm: the same function, where
    a transform does not pay at small batches (measured by
    :func:`leanconv.selection.batch_switch.fit_min_batch`). 1: always the algorithm.
    """

    _where = "FastConv2d"
    min_batch: int = 1
    MAX_PACKS = 4  # packed weights kept, one per input shape
    _PACKS = "_packs"  # the attribute that holds them

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding=0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        check_finite: bool = True,
        activation: str | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        where = self._where
        if activation not in _packed.ACTIVATIONS:
            raise InvalidSpecError(
                f"{where}: activation={activation!r} is not one of {_packed.ACTIVATIONS}"
            )
        self.activation = activation
        for arg, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidSpecError(f"{where}: {arg}={v!r} must be a positive integer")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise InvalidSpecError(f"{where}: groups={groups!r} must be a positive integer")
        if in_channels % groups or out_channels % groups:
            raise InvalidSpecError(
                f"{where}: in_channels={in_channels} and out_channels={out_channels} must be "
                f"divisible by groups={groups}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", where)
        self.stride = pair(stride, "stride", where)
        self.dilation = pair(dilation, "dilation", where)
        self.padding = padding
        self.check_finite = check_finite
        # Validate the geometry once on a meta input large enough for any kernel.
        probe = torch.empty((in_channels, 2**20, 2**20), device="meta")
        normalise(probe, self._weight_shape(), None, stride, padding, dilation, groups, where)
        factory = {"device": device, "dtype": dtype}
        with _normal_tensors():
            self.weight = nn.Parameter(torch.empty(self._weight_shape(), **factory))
            self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
            self.reset_parameters()

    def _weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d``."""
        reset_like_conv(self.weight, self.bias)

    @classmethod
    def _from_conv_kwargs(cls, conv: nn.Conv2d, activation: str | None = None) -> dict:
        if not isinstance(conv, nn.Conv2d):
            raise InvalidSpecError(f"{cls.__name__}.from_conv: {type(conv).__name__} is not Conv2d")
        if conv.padding_mode != "zeros":
            raise InvalidSpecError(
                f"{cls.__name__}.from_conv: padding_mode={conv.padding_mode!r} is not supported "
                "(only 'zeros')"
            )
        return dict(
            in_channels=conv.in_channels,
            out_channels=conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            activation=activation,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )

    def _same_kwargs(self, activation: str | None) -> dict:
        """The constructor arguments of a layer of this geometry, device and dtype."""
        return dict(
            in_channels=self.in_channels, out_channels=self.out_channels,
            kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=self.groups, bias=self.bias is not None,
            check_finite=self.check_finite, activation=activation, device=self.weight.device,
            dtype=self.weight.dtype,
        )  # fmt: skip

    def as_packed(self) -> PackedConv2d:
        """This layer as a :class:`PackedConv2d` (oneDNN, same weights and activation)."""
        layer = PackedConv2d(**self._same_kwargs(self.activation))
        layer._copy_from(self)
        return layer.train(self.training)

    def _copy_from(self, conv: nn.Conv2d) -> None:
        with _normal_tensors():
            self.weight.copy_(conv.weight)
            if self.bias is not None:
                self.bias.copy_(conv.bias)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the transformed-filter cache behind: it is derived from the
        weight, and may hold oneDNN-packed tensors that cannot be copied."""
        state = self.__dict__.copy()
        if "_cache" in state:
            state["_cache"] = {} if isinstance(state["_cache"], dict) else None
        state.pop("_packs", None)
        return state

    def _direct(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """Direct convolution (``leanconv.algorithms.conv2d``): the output on a meta tensor (for
        counting and shape inference: no values exist, so no transform can run;
        :func:`_fast_conv_rule` gives the cost), and where a layer's own path does not apply."""
        from ..algorithms import conv2d

        args = (self.stride, self.padding, self.dilation, self.groups)
        return self._finish(conv2d(x, self.weight, self.bias, *args, algorithm="direct"), residual)

    def packed_weight(self, shape: tuple[int, ...]) -> Tensor | None:
        """The weight packed for inputs of ``shape`` (cached while the weight does not change);
        ``None`` where oneDNN refuses the geometry or the call is too small to gain from it
        (:func:`leanconv.algorithms.packed.worth_packing`)."""
        key = self._weight_key()
        cache = self._pack_cache()
        hit = cache.get(shape)
        if hit is None or hit[0] != key:
            padding = symmetric_padding(self.padding)
            args = (self.stride, padding, self.dilation)
            worth = _packed.worth_packing(tuple(self.weight.shape), *args, shape)
            packed = _packed.pack(self.weight, *args, self.groups, shape) if worth else None
            hit = (key, packed)
            for stale in [s for s, v in cache.items() if v[0] != key]:
                del cache[stale]
            while len(cache) >= self.MAX_PACKS:
                cache.pop(next(iter(cache)))
            cache[shape] = hit
        return hit[1]

    def _packed_direct(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """The direct convolution on the weight packed for oneDNN, bias and activation fused
        (what :class:`PackedConv2d` runs, and a fast layer below its ``min_batch``); where the
        packed path does not apply, ``F.conv2d``. A ``residual`` is added in place on the fresh
        output, the activation after it: oneDNN's binary post-operation, which would take the sum
        in the convolution's pass, measured slower (0.93-0.98x on the zoo's ResNet-18 at batch 1
        and 64, docs/benchmarks.md)."""
        padding = symmetric_padding(self.padding)
        if x.is_meta or padding is None:
            return self._direct(x, residual)
        if _packed.usable(x, self.weight):
            packed = self.packed_weight(tuple(x.shape))
            if packed is not None:
                activation = self.activation if residual is None else None
                args = (self.stride, padding, self.dilation, self.groups, activation)
                y = _packed.conv2d_packed(x, packed, self.bias, *args)
                return y if residual is None else self._finish(y, residual)
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return self._finish(y, residual)

    def _pack_cache(self) -> dict:
        """The packed weights by input shape (in ``_PACKS``)."""
        cache = self.__dict__.get(self._PACKS)
        if cache is None:
            cache = self.__dict__[self._PACKS] = {}
        return cache

    def _below_min_batch(self, x: Tensor) -> bool:
        return self.min_batch > 1 and x.dim() == 4 and x.shape[0] < self.min_batch

    def _activate(self, y: Tensor) -> Tensor:
        """``activation`` as a separate pass (where the algorithm could not fuse it)."""
        return torch.relu(y) if self.activation == "relu" else y

    def _finish(self, y: Tensor, residual: Tensor | None) -> Tensor:
        """``activation(y + residual)`` for ``y`` this call's own pre-activation output: the sum
        and the activation in place on ``y`` where it has the output's shape, else broadcast as
        ``+`` does."""
        if residual is not None:
            if not isinstance(residual, Tensor) or residual.shape != y.shape:
                return self._activate(y + residual)
            y = y.add_(residual)
        return y.relu_() if self.activation == "relu" else y

    def _recording(self) -> bool:
        return torch.is_grad_enabled() and self.weight.requires_grad

    def _weight_key(self) -> tuple:
        w = self.weight
        return (w._version, w.data_ptr(), w.dtype, w.device)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        if self.min_batch > 1:
            s += f", min_batch={self.min_batch}"
        return s


def _kernel_takes(residual, shape: tuple[int, ...]) -> bool:
    """A compiled kernel can add ``residual`` to an output of ``shape``: none, or a float32 CPU
    tensor of that shape that autograd does not record."""
    if residual is None:
        return True
    if type(residual) is not Tensor or residual.dtype != torch.float32 or residual.is_meta:
        return False
    if residual.device.type != "cpu" or (torch.is_grad_enabled() and residual.requires_grad):
        return False
    return tuple(residual.shape) == tuple(shape)


@register_module_rule(_FastConv2d)
def _fast_conv_rule(
    module: _FastConv2d, args: tuple, output: Tensor, convention: Convention
) -> tuple[str, OpCost]:
    """Counted as the convolution it computes (the conventional MACs of the layer), so that a
    model's totals do not change when an algorithm is swapped in; the multiplications each
    algorithm actually performs are :mod:`leanconv.cost.algorithms`' business."""
    x = args[0] if args[0].dim() == 4 else args[0].unsqueeze(0)
    return "conv2d", conv_cost(call_spec(module, x), convention)


class WinogradConv2d(_FastConv2d):
    """``nn.Conv2d`` computed with Winograd F(tile x tile, r x s), filter transform cached."""

    _where = "WinogradConv2d"

    def __init__(self, *args, tile: int | tuple[int, int] = 4, **kwargs):
        super().__init__(*args, **kwargs)
        self.tile = pair(tile, "tile", self._where)
        if min(self.tile) < 1:
            raise InvalidSpecError(f"{self._where}: tile={tile!r} must be positive")
        self._cache: tuple[tuple, _winograd.WinogradFilter] | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, tile: int | tuple[int, int] = 4) -> WinogradConv2d:
        """A Winograd layer computing what ``conv`` computes (weights copied, filter cached)."""
        layer = cls(**cls._from_conv_kwargs(conv), tile=tile)
        layer._copy_from(conv)
        layer.transformed_filter()  # fail early (tile too large) and warm the cache
        return layer

    def transformed_filter(self) -> _winograd.WinogradFilter:
        """``G g G^T`` of the current weight (cached while the weight does not change)."""
        if self._recording():
            return _winograd.transform_filter(
                self.weight, self.tile, self.stride, self.dilation, self.groups
            )
        key = self._weight_key()
        if self._cache is None or self._cache[0] != key:
            with _normal_tensors():
                filt = _winograd.transform_filter(
                    self.weight, self.tile, self.stride, self.dilation, self.groups
                )
            self._cache = (key, filt)
        return self._cache[1]

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if x.is_meta:
            return self._direct(x, residual)
        if self._below_min_batch(x):
            return self._packed_direct(x, residual)
        args = (x, self.transformed_filter(), self.bias, self.padding, self.check_finite)
        if residual is not None and not isinstance(residual, Tensor):  # a number, as + takes it
            return self._finish(_winograd.conv2d_transformed(*args, None), residual)
        return _winograd.conv2d_transformed(*args, self.activation, residual)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tile={self.tile}"


class FFTConv2d(_FastConv2d):
    """``nn.Conv2d`` (stride 1) computed by real FFTs, transformed filter cached per FFT size.

    ``tile``: output tile per side (FFT size ``tile + r - 1``), ``"full"`` (whole image) or None
    (chosen per input size by :func:`leanconv.algorithms.fft.choose_fft_size`).
    """

    _where = "FFTConv2d"

    def __init__(self, *args, tile: int | tuple[int, int] | str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.stride != (1, 1):
            raise InvalidSpecError(
                f"{self._where}: stride={self.stride} is not supported by FFT convolution; "
                "use WinogradConv2d or nn.Conv2d"
            )
        if tile is not None and tile != "full":
            mh, mw = pair(tile, "tile", self._where)
            if min(mh, mw) < 1:
                raise InvalidSpecError(f"{self._where}: tile={tile!r} must be positive")
            tile = (mh, mw)
        self.tile = tile
        self._cache: dict[tuple[int, int], tuple[tuple, _fft.FFTFilter]] = {}

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, tile: int | tuple[int, int] | str | None = None
    ) -> FFTConv2d:
        """An FFT layer computing what ``conv`` computes (weights copied)."""
        layer = cls(**cls._from_conv_kwargs(conv), tile=tile)
        layer._copy_from(conv)
        return layer

    def fft_size(self, height: int, width: int, batch: int = 1) -> tuple[int, int]:
        """The FFT size used for an input of ``height x width``."""
        probe = torch.empty((self.in_channels, height, width), device="meta")
        args = normalise(
            probe,
            self._weight_shape(),
            None,
            1,
            self.padding,
            self.dilation,
            self.groups,
            self._where,
        )
        r, s = (d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True))
        ho, wo = args.output_size(height, width)
        if self.tile is None:
            return _fft.choose_fft_size(
                (ho, wo), (r, s), self.in_channels, self.out_channels, batch, self.groups
            )
        if self.tile == "full":
            return (_fft.smooth_size(ho + r - 1), _fft.smooth_size(wo + s - 1))
        return (self.tile[0] + r - 1, self.tile[1] + s - 1)

    def transformed_filter(self, size: tuple[int, int]) -> _fft.FFTFilter:
        if self._recording():
            return _fft.transform_filter(self.weight, size, self.groups, self.dilation)
        key = self._weight_key()
        hit = self._cache.get(size)
        if hit is None or hit[0] != key:
            with _normal_tensors():
                hit = (key, _fft.transform_filter(self.weight, size, self.groups, self.dilation))
            self._cache = {k: v for k, v in self._cache.items() if v[0] == key}
            self._cache[size] = hit
        return hit[1]

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if x.is_meta:
            return self._direct(x, residual)
        if self._below_min_batch(x):
            return self._packed_direct(x, residual)
        batch = x.shape[0] if x.dim() == 4 else 1
        size = self.fft_size(x.shape[-2], x.shape[-1], batch)
        y = _fft.conv2d_transformed(
            x, self.transformed_filter(size), self.bias, self.padding, self.check_finite
        )
        return self._finish(y, residual)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tile={self.tile}"


class PackedConv2d(_FastConv2d):
    """``nn.Conv2d`` run by oneDNN on a weight packed once per input shape, with the bias and
    ``activation`` fused into the pass that writes the output (:mod:`leanconv.algorithms.packed`).

    Where the packed path does not apply (autograd recording, devices other than the CPU, dtypes
    other than float32, asymmetric or string padding, unbatched input, calls too small to gain)
    it computes the same with ``F.conv2d``. Packs are cached per input shape (at most
    :attr:`MAX_PACKS`) and rebuilt when the weight changes; the output is channels-last on the
    packed path (oneDNN's choice).
    """

    _where = "PackedConv2d"
    _PACKS = "_cache"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache: dict[tuple[int, ...], tuple[tuple, Tensor]] = {}

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, activation: str | None = None) -> PackedConv2d:
        """A packed layer computing ``activation(conv(x))`` (weights copied)."""
        layer = cls(**cls._from_conv_kwargs(conv, activation))
        layer._copy_from(conv)
        return layer.train(conv.training)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        return self._packed_direct(x, residual)


class NarrowConv2d(_FastConv2d):
    """``nn.Conv2d`` computed by the narrow direct kernel (:mod:`leanconv.algorithms.narrow`):
    output channels in vectors of 8, bias and ``activation`` applied as the output is written,
    the packed weight cached while the weight does not change.

    Where the kernel does not apply (autograd recording, devices other than the CPU, dtypes other
    than float32, groups, asymmetric or string padding, unbatched input, no compiled kernels) and
    below ``min_batch`` it runs oneDNN (:class:`PackedConv2d`'s path): the same function up to
    float32 rounding. The output is channels-last on the kernel's path.
    """

    _where = "NarrowConv2d"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache: tuple[tuple, Tensor, Tensor | None] | None = None

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d | PackedConv2d, activation: str | None = None
    ) -> NarrowConv2d:
        """A narrow layer computing ``activation(conv(x))`` (weights copied); from a
        :class:`PackedConv2d`, its own activation unless ``activation`` is given."""
        if isinstance(conv, PackedConv2d):
            kwargs = conv._same_kwargs(activation or conv.activation)
        else:
            kwargs = cls._from_conv_kwargs(conv, activation)
        layer = cls(**kwargs)
        layer._copy_from(conv)
        return layer.train(conv.training)

    def packed(self) -> tuple[Tensor, Tensor | None]:
        """The weight and bias as the kernel reads them (cached while the weight does not
        change)."""
        key = self._weight_key() + (None if self.bias is None else self.bias._version,)
        if self._cache is None or self._cache[0] != key:
            with _normal_tensors():
                w = _narrow.pack(self.weight)
                self._cache = (key, w, _narrow.pack_bias(self.bias, w.shape[-1]))
        return self._cache[1], self._cache[2]

    def _kernel_padding(self, x: Tensor, shape=None) -> tuple[int, int] | None:
        """The symmetric padding when the kernel applies to ``x`` (or to an input of ``shape``
        with ``x``'s type, dtype and device); ``None`` when it does not."""
        shape = tuple(x.shape if shape is None else shape)
        if self.groups != 1 or x.is_meta or len(shape) != 4:
            return None
        if self.min_batch > 1 and shape[0] < self.min_batch:
            return None
        padding = symmetric_padding(self.padding)
        if padding is None or not _narrow.usable(x, self.weight) or shape[1] != self.in_channels:
            return None
        args = (self.kernel_size, self.stride, padding, self.dilation)
        return padding if min(symmetric_output_size(shape[2:], *args)) >= 1 else None

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        padding = self._kernel_padding(x)
        if padding is None or not _kernel_takes(residual, self._output_shape(x.shape, padding)):
            return self._packed_direct(x, residual)
        w, b = self.packed()
        args = (self.out_channels, self.stride, padding, self.dilation, self.activation)
        return _narrow.conv2d(x, w, b, *args, residual=residual)

    def _output_shape(self, shape, padding: tuple[int, int]) -> tuple[int, ...]:
        """The output's shape for an input of ``shape`` (N, C, H, W) at this ``padding``."""
        args = (self.kernel_size, self.stride, padding, self.dilation)
        return (shape[0], self.out_channels, *symmetric_output_size(shape[2:], *args))

    def _kernel_args(self, x: Tensor, shape) -> tuple | None:
        """This layer's arguments to :func:`leanconv.algorithms.narrow.conv2d_chain` and its
        output's shape when the kernel runs it on an input of ``shape`` (with ``x``'s type, dtype
        and device); ``None`` when it does not."""
        padding = self._kernel_padding(x, shape)
        if padding is None:
            return None
        w, b = self.packed()
        args = (w, b, self.out_channels, self.stride, padding, self.dilation, self.activation)
        return args, self._output_shape(shape, padding)

    @staticmethod
    def forward_chain(
        layers: list[NarrowConv2d], x: Tensor, residual: Tensor | None = None
    ) -> Tensor | None:
        """``layers[-1](...layers[0](x), residual)`` in one pass
        (:func:`leanconv.algorithms.narrow.conv2d_chain`) where the kernel runs every layer on
        its input; ``None`` otherwise (the caller then runs them one after the other)."""
        if not 2 <= len(layers) <= _narrow.CHAIN_MAX:
            return None
        convs, shape = [], tuple(x.shape)
        for layer in layers:
            got = layer._kernel_args(x, shape)
            if got is None:
                return None
            convs.append(got[0])
            shape = got[1]
        if not _kernel_takes(residual, shape):
            return None
        return _narrow.conv2d_chain(x, convs, residual)
