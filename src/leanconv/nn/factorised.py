"""Factorised convolutions that run in factorised form: a chain of small convolutions, never the
rebuilt ``(K, C, kh, kw)`` kernel.

Every chain is linear with no bias until its last factor, so zero padding commutes with the
channel maps and each layer equals one dense convolution (:meth:`to_dense`, :meth:`to_conv2d`).
Stride, padding (per side, so asymmetric padding too) and dilation of a height (width) dimension
go to the factor that convolves along it. At output size ``Ho x Wo`` from ``H x W``:

- :class:`CPConv2d` (Lebedev et al. 2015, "Speeding-up Convolutional Neural Networks Using
  Fine-tuned CP-Decomposition"): 1x1 ``C -> R``, depthwise ``kh x 1``, depthwise ``1 x kw``, 1x1
  ``R -> K``::

      MACs = N (H W C R + Ho W' R kh + Ho Wo R kw + Ho Wo R K)

  (``W'``: the width after the height factor, ``W``, as its width padding is left to the next).
- :class:`TuckerConv2d` (Kim et al. 2016, "Compression of Deep Convolutional Neural Networks for
  Fast and Low Power Mobile Applications"): 1x1 ``C -> R_in``, ``kh x kw`` core ``R_in -> R_out``,
  1x1 ``R_out -> K``::

      MACs = N (H W C R_in + Ho Wo R_in R_out kh kw + Ho Wo R_out K)

- :class:`TTConv2d`: the tensor train of the kernel in mode order ``(C, kh, kw, K)`` (see
  :class:`~leanconv.decompose.factors.TTFactors`): 1x1 ``C -> r1``, ``kh x 1`` ``r1 -> r2``,
  ``1 x kw`` ``r2 -> r3``, 1x1 ``r3 -> K``::

      MACs = N (H W C r1 + Ho W r1 r2 kh + Ho Wo r2 r3 kw + Ho Wo r3 K)

Functions (:func:`cp_conv2d`, :func:`tucker2_conv2d`, :func:`tt_conv2d`) do the work on factor
containers; modules hold the factors as parameters (in the containers' layout) and are built at
random or from factors (``from_factors(factors, like=conv)`` copies the geometry and bias of an
``nn.Conv2d``). Only ungrouped kernels (``groups=1``) are factorised here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..decompose import methods
from ..decompose.factors import CPFactors, TTFactors, Tucker2Factors
from ..decompose.rank import factor_specs
from ..spec import ConvSpec, PaddingArg, part_geometry
from ..spec import normalise_padding as _padding
from ..spec import normalise_tuple as _tuple
from ._common import AnalyticCost, Shape

Pairs = tuple[tuple[int, int], tuple[int, int]]


def _geometry(
    where: str,
    kernel: tuple[int, int],
    stride: int | Sequence[int],
    padding: PaddingArg,
    dilation: int | Sequence[int],
) -> tuple[tuple[int, int], Pairs, tuple[int, int]]:
    """Checked ``(stride, ((top, bottom), (left, right)), dilation)``; padding as in ConvSpec."""
    s = _tuple(stride, 2, "stride", where)
    d = _tuple(dilation, 2, "dilation", where)
    if min(s) < 1 or min(d) < 1:
        raise ValueError(f"{where}stride={s} and dilation={d} must be positive")
    p = _padding(padding, 2, kernel, d, s, where)
    if any(v < 0 for pair in p for v in pair):
        raise ValueError(f"{where}padding={p} must not be negative")
    return s, p, d  # type: ignore[return-value]


def _conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: Pairs = ((0, 0), (0, 0)),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> Tensor:
    """``F.conv2d`` with per-side padding (an explicit zero pad when the sides differ)."""
    (t, b), (l, r) = padding
    if t == b and l == r:
        return F.conv2d(x, weight, bias, stride, (t, l), dilation, groups)
    return F.conv2d(F.pad(x, (l, r, t, b)), weight, bias, stride, 0, dilation, groups)


def factorised_conv2d(
    x: Tensor,
    method: str,
    factors,
    rank,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """The chain of ``method``'s registry record (:mod:`leanconv.decompose.methods`) at ``rank``
    on ``x``: its factor weights (``record.weights(factors)``) in order, each with the part of the
    geometry along the dimensions it convolves (:func:`leanconv.spec.part_geometry`), the bias on
    the last."""
    record = methods.get(method)
    k, c, kh, kw = factors.shape
    s, p, d = _geometry(f"{record.name}_conv2d: ", (kh, kw), stride, padding, dilation)
    chain = record.chain(c, k, kh, kw, 1, rank)
    weights = record.weights(factors)
    for i, ((_, _, _, part, groups), weight) in enumerate(zip(chain, weights)):
        last = i == len(chain) - 1
        x = _conv(x, weight, bias if last else None, *part_geometry(s, p, d, part), groups)
    return x


def cp_conv2d(
    x: Tensor,
    factors: CPFactors,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """The CP chain: 1x1 ``C -> R``, depthwise ``kh x 1``, depthwise ``1 x kw``, 1x1 ``R -> K``."""
    return factorised_conv2d(x, "cp", factors, factors.rank, bias, stride, padding, dilation)


def tucker2_conv2d(
    x: Tensor,
    factors: Tucker2Factors,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """The Tucker-2 chain: 1x1 ``C -> R_in``, ``kh x kw`` core, 1x1 ``R_out -> K``."""
    return factorised_conv2d(x, "tucker2", factors, factors.ranks, bias, stride, padding,
                             dilation)  # fmt: skip


def tt_conv2d(
    x: Tensor,
    factors: TTFactors,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """The tensor-train chain: 1x1 ``C -> r1``, ``kh x 1``, ``1 x kw``, 1x1 ``r3 -> K``."""
    return factorised_conv2d(x, "tt", factors, factors.ranks, bias, stride, padding, dilation)


def _uniform(shape: Sequence[int], fan_in: int, device, dtype) -> nn.Parameter:
    """``nn.Conv2d``'s default initialisation of a factor seen as a convolution of ``fan_in``."""
    bound = 1 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype).uniform_(-bound, bound))


def _copy(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


class _Factorised(AnalyticCost, nn.Module):
    """Geometry, bias, dense view and analytic cost shared by the factorised layers.

    Each layer names its decomposition method as the registry does (``method``,
    :mod:`leanconv.decompose.methods`) and gives its ``rank`` in the registry's one convention
    (CP ``R``; Tucker-2 ``(R_out, R_in)``, as :class:`Tucker2Factors.ranks`; TT ``(r1, r2,
    r3)``); its cost is that of the method's chain at that rank.
    """

    method: str = ""

    def _setup(
        self,
        shape: tuple[int, int, int, int],
        stride: int | Sequence[int],
        padding: PaddingArg,
        dilation: int | Sequence[int],
        bias: bool | Tensor | None,
        device=None,
        dtype=None,
    ) -> None:
        where = f"{type(self).__name__}: "
        k, c, kh, kw = shape
        for arg, v in (("out_channels", k), ("in_channels", c), ("kernel_size", min(kh, kw))):
            if v < 1:
                raise ValueError(f"{where}{arg}={v} must be positive")
        self.out_channels, self.in_channels, self.kernel_size = k, c, (kh, kw)
        self.stride, self.padding, self.dilation = _geometry(
            where, (kh, kw), stride, padding, dilation
        )
        if isinstance(bias, Tensor):
            if tuple(bias.shape) != (k,):
                raise ValueError(f"{where}bias shape {tuple(bias.shape)} != ({k},)")
            self.bias = _copy(bias)
        elif bias:
            self.bias = _uniform((k,), self._last_fan_in(), device, dtype)
        else:
            self.register_parameter("bias", None)

    def _build(self, in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
               device, dtype, factors) -> None:  # fmt: skip
        """Geometry and bias (:meth:`_setup`), then the factor parameters: copies of
        ``factors`` (which must be of this kernel shape and rank), else initialised as
        ``nn.Conv2d`` would initialise each factor seen as a convolution."""
        name = type(self).__name__
        kh, kw = _tuple(kernel_size, 2, "kernel_size", f"{name}: ")
        shape = (out_channels, in_channels, kh, kw)
        self._setup(shape, stride, padding, dilation, bias, device, dtype)
        if factors is not None:
            given = (tuple(factors.shape), self._rank_of(factors))
            if given != (shape, self.rank):
                raise ValueError(f"{name}: factors of kernel {given[0]}, rank {given[1]} != "
                                 f"{shape}, rank {self.rank}")  # fmt: skip
            for key, tensor in self._tensors(factors).items():
                setattr(self, key, _copy(tensor))
        else:
            for key, (size, fan_in) in self._shapes(*shape).items():
                setattr(self, key, _uniform(size, fan_in, device, dtype))

    @staticmethod
    def _rank_of(factors):  # pragma: no cover - defined by each layer
        """The rank of ``factors`` in the registry's convention."""
        raise NotImplementedError

    @staticmethod
    def _tensors(factors) -> dict:  # pragma: no cover - defined by each layer
        """The layer's parameters, by name, from ``factors`` (in registration order)."""
        raise NotImplementedError

    def _shapes(self, k, c, kh, kw) -> dict:  # pragma: no cover - defined by each layer
        """The layer's parameters, by name: ``(shape, fan_in)`` of each (registration order)."""
        raise NotImplementedError

    def _last_fan_in(self) -> int:  # pragma: no cover - defined by each layer
        raise NotImplementedError

    @property
    def factors(self):  # pragma: no cover - defined by each layer
        raise NotImplementedError

    @staticmethod
    def _like(like: nn.Conv2d | None, factors, stride, padding, dilation, bias, where: str):
        """Geometry and bias from ``like`` (an ``nn.Conv2d`` of the same kernel shape)."""
        if like is None:
            return stride, padding, dilation, bias
        if not isinstance(like, nn.Conv2d):
            raise ValueError(f"{where}: like={type(like).__name__} is not an nn.Conv2d")
        if like.groups != 1 or like.padding_mode != "zeros":
            raise ValueError(
                f"{where}: like has groups={like.groups}, padding_mode={like.padding_mode!r}; "
                "only groups=1 with zero padding is factorised"
            )
        if tuple(like.weight.shape) != tuple(factors.shape):
            raise ValueError(
                f"{where}: like's weight {tuple(like.weight.shape)} != factors' kernel "
                f"{tuple(factors.shape)}"
            )
        if bias is None and like.bias is not None:
            bias = like.bias
        return like.stride, like.padding, like.dilation, bias

    @classmethod
    def from_factors(
        cls,
        factors,
        bias: Tensor | None = None,
        stride: int | Sequence[int] = 1,
        padding: PaddingArg = 0,
        dilation: int | Sequence[int] = 1,
        *,
        like: nn.Conv2d | None = None,
    ):
        """A layer holding copies of ``factors``; geometry and bias from ``like`` when given."""
        stride, padding, dilation, bias = cls._like(
            like, factors, stride, padding, dilation, bias, cls.__name__
        )
        k, c, kh, kw = factors.shape
        return cls(c, k, (kh, kw), *cls._rank_args(factors), stride, padding, dilation,
                   bias if bias is not None else False, factors=factors)  # fmt: skip

    @staticmethod
    def _rank_args(factors) -> tuple:  # pragma: no cover - defined by each layer
        """The constructor's rank arguments for ``factors``."""
        raise NotImplementedError

    def rank_args(self) -> dict:  # pragma: no cover - defined by each layer
        """The constructor's rank arguments by name (what model.json records)."""
        raise NotImplementedError

    def to_dense(self) -> Tensor:
        """The equivalent dense kernel ``(K, C, kh, kw)``, for checks (the layer never uses it)."""
        return self.factors.to_dense()

    def to_conv2d(self) -> nn.Module:
        """An equivalent ``nn.Conv2d`` (behind an ``nn.ZeroPad2d`` when padding is asymmetric)."""
        w = self.to_dense().detach()
        (t, b), (l, r) = self.padding
        symmetric = t == b and l == r
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride,
            (t, l) if symmetric else 0, self.dilation, bias=self.bias is not None,
            device=w.device, dtype=w.dtype,
        )  # fmt: skip
        with torch.no_grad():
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv if symmetric else nn.Sequential(nn.ZeroPad2d((l, r, t, b)), conv)

    def _ranks_repr(self) -> str:  # pragma: no cover - defined by each layer
        raise NotImplementedError

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        out = f"{self.in_channels}->{self.out_channels}, k={kh}x{kw}, {self._ranks_repr()}"
        if self.stride != (1, 1):
            out += f", stride={self.stride}"
        if any(v for pair in self.padding for v in pair):
            (t, b), (l, r) = self.padding
            out += f", padding={(t, l) if (t, l) == (b, r) else self.padding}"
        if self.dilation != (1, 1):
            out += f", dilation={self.dilation}"
        return out + f", bias={self.bias is not None}"

    # ------------------------------------------------------------------ analytic cost
    def _walk(self, shape: Shape) -> tuple[list, Shape]:
        """The chain of the method's registry record (:func:`leanconv.decompose.rank.
        factor_specs`): the same convolutions the decomposition of a dense layer becomes."""
        n, _, h, w = shape
        spec = ConvSpec(self.in_channels, self.out_channels, self.kernel_size, (h, w),
                        self.stride, self.padding, self.dilation, bias=self.bias is not None,
                        batch=n, dtype=next(self.parameters()).dtype)  # fmt: skip
        specs = factor_specs(spec, self.method, self.rank)
        return specs, specs[-1].output_shape


class CPConv2d(_Factorised):
    """Rank-``R`` CP convolution: 1x1 ``C -> R``, depthwise ``kh x 1`` and ``1 x kw``, 1x1
    ``R -> K`` (Lebedev et al. 2015). Parameters in :class:`CPFactors` layout, ``lambda`` folded
    into ``output``."""

    method = "cp"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        rank: int,
        stride: int | Sequence[int] = 1,
        padding: PaddingArg = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool | Tensor | None = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        factors: CPFactors | None = None,
    ):
        super().__init__()
        if rank < 1:
            raise ValueError(f"CPConv2d: rank={rank} must be positive")
        self.rank = rank
        self._build(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                    device, dtype, factors)  # fmt: skip

    @staticmethod
    def _rank_of(factors: CPFactors) -> int:
        return factors.rank

    @staticmethod
    def _tensors(factors: CPFactors) -> dict:
        return {"output": factors.scaled_output(), "input": factors.input,
                "height": factors.height, "width": factors.width}  # fmt: skip

    def _shapes(self, k, c, kh, kw) -> dict:
        r = self.rank
        return {"output": ((k, r), r), "input": ((c, r), c), "height": ((kh, r), kh),
                "width": ((kw, r), kw)}  # fmt: skip

    @staticmethod
    def _rank_args(factors: CPFactors) -> tuple:
        return (factors.rank,)

    @property
    def factors(self) -> CPFactors:
        return CPFactors(self.output, self.input, self.height, self.width)

    def _last_fan_in(self) -> int:
        return self.rank

    def _ranks_repr(self) -> str:
        return f"rank={self.rank}"

    def rank_args(self) -> dict:
        return {"rank": self.rank}

    def forward(self, x: Tensor) -> Tensor:
        return cp_conv2d(x, self.factors, self.bias, self.stride, self.padding, self.dilation)


class TuckerConv2d(_Factorised):
    """Tucker-2 convolution: 1x1 ``C -> R_in``, ``kh x kw`` core ``R_in -> R_out``, 1x1
    ``R_out -> K`` (Kim et al. 2016). Parameters in :class:`Tucker2Factors` layout."""

    method = "tucker2"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        in_rank: int,
        out_rank: int,
        stride: int | Sequence[int] = 1,
        padding: PaddingArg = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool | Tensor | None = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        factors: Tucker2Factors | None = None,
    ):
        super().__init__()
        for arg, v in (("in_rank", in_rank), ("out_rank", out_rank)):
            if v < 1:
                raise ValueError(f"TuckerConv2d: {arg}={v} must be positive")
        self.in_rank, self.out_rank = in_rank, out_rank
        self._build(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                    device, dtype, factors)  # fmt: skip

    @staticmethod
    def _rank_of(factors: Tucker2Factors) -> tuple[int, int]:
        return factors.ranks

    @staticmethod
    def _tensors(factors: Tucker2Factors) -> dict:
        return {"core": factors.core, "output": factors.output, "input": factors.input}

    def _shapes(self, k, c, kh, kw) -> dict:
        r_out, r_in = self.rank
        return {"core": ((r_out, r_in, kh, kw), r_in * kh * kw), "output": ((k, r_out), r_out),
                "input": ((c, r_in), c)}  # fmt: skip

    @staticmethod
    def _rank_args(factors: Tucker2Factors) -> tuple:
        r_out, r_in = factors.ranks
        return (r_in, r_out)

    @property
    def factors(self) -> Tucker2Factors:
        return Tucker2Factors(self.core, self.output, self.input)

    def _last_fan_in(self) -> int:
        return self.out_rank

    @property
    def rank(self) -> tuple[int, int]:
        """``(R_out, R_in)``: the registry's and :class:`Tucker2Factors`' order."""
        return self.out_rank, self.in_rank

    def _ranks_repr(self) -> str:
        return f"in_rank={self.in_rank}, out_rank={self.out_rank}"

    def rank_args(self) -> dict:
        return {"in_rank": self.in_rank, "out_rank": self.out_rank}

    def forward(self, x: Tensor) -> Tensor:
        return tucker2_conv2d(x, self.factors, self.bias, self.stride, self.padding, self.dilation)


class TTConv2d(_Factorised):
    """Tensor-train convolution, ranks ``(r1, r2, r3)``: 1x1 ``C -> r1``, ``kh x 1`` ``r1 -> r2``,
    ``1 x kw`` ``r2 -> r3``, 1x1 ``r3 -> K``. Parameters: the cores of :class:`TTFactors`
    (``core0`` ... ``core3``), the train of the kernel in mode order ``(C, kh, kw, K)``."""

    method = "tt"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        ranks: Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: PaddingArg = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool | Tensor | None = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        factors: TTFactors | None = None,
    ):
        super().__init__()
        ranks = tuple(int(r) for r in ranks)
        if len(ranks) != 3 or min(ranks) < 1:
            raise ValueError(f"TTConv2d: ranks={ranks} must be three positive integers")
        self.ranks = ranks
        self._build(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                    device, dtype, factors)  # fmt: skip

    @staticmethod
    def _rank_of(factors: TTFactors) -> tuple[int, int, int]:
        return tuple(factors.ranks)

    @staticmethod
    def _tensors(factors: TTFactors) -> dict:
        return {f"core{i}": g for i, g in enumerate(factors.cores)}

    def _shapes(self, k, c, kh, kw) -> dict:
        r1, r2, r3 = self.ranks
        return {"core0": ((1, c, r1), c), "core1": ((r1, kh, r2), r1 * kh),
                "core2": ((r2, kw, r3), r2 * kw), "core3": ((r3, k, 1), r3)}  # fmt: skip

    @staticmethod
    def _rank_args(factors: TTFactors) -> tuple:
        return (factors.ranks,)

    @property
    def factors(self) -> TTFactors:
        return TTFactors((self.core0, self.core1, self.core2, self.core3))

    def _last_fan_in(self) -> int:
        return self.ranks[2]

    @property
    def rank(self) -> tuple[int, int, int]:
        return self.ranks

    def _ranks_repr(self) -> str:
        return f"ranks={self.ranks}"

    def rank_args(self) -> dict:
        return {"ranks": list(self.ranks)}

    def forward(self, x: Tensor) -> Tensor:
        return tt_conv2d(x, self.factors, self.bias, self.stride, self.padding, self.dilation)


__all__ = [
    "CPConv2d",
    "TTConv2d",
    "TuckerConv2d",
    "cp_conv2d",
    "factorised_conv2d",
    "tt_conv2d",
    "tucker2_conv2d",
]
