"""Multiplication counts of fast convolution algorithms (stride-1 convolutions).

Winograd minimal filtering F(m x m, r x r) (Winograd 1980; Lavin & Gray 2016): each output tile of
``m x m`` takes ``(m + r - 1)^2`` multiplications per (input, output) channel pair in the
element-wise stage, against ``m^2 r^2`` for direct convolution. Transforms, when counted, are dense
matrix products (an upper bound: the generated matrices hold zeros and ones that real kernels skip):
input ``B^T d B`` costs ``2 a^3`` per tile and input channel (``a = m + r - 1``), output ``A^T M A``
costs ``a^2 m + a m^2`` per tile and output channel, and the filter ``G g G^T`` costs
``a r^2 + a^2 r`` per channel pair (once per set of weights, so not per call).

FFT convolution with ``t x t`` transforms (overlap-add tiles of ``t - k + 1`` outputs per side):
the point-wise stage is one complex multiply-accumulate per frequency bin of the real transform
(``t (t // 2 + 1)`` bins) per channel pair and tile, 4 real multiplications each. A 2-D real FFT
is estimated at ``2 t^2 log2 t`` real multiplications (``n/2 log2 n`` complex products for a
radix-2 transform of ``n = t^2`` points, halved for real input, 4 real each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..errors import InvalidSpecError
from ..spec import ConvSpec


@dataclass(frozen=True)
class AlgorithmCost:
    """Multiplications of one convolution under one algorithm."""

    algorithm: str
    multiplications: int  # in the element-wise / GEMM stage
    transform_multiplications: int  # input + output transforms (0 when not counted)
    tiles: int  # per image and channel (1 for direct)
    per_tile: int  # multiplications per tile and channel pair (per output for direct)
    direct_per_tile: int

    @property
    def total(self) -> int:
        return self.multiplications + self.transform_multiplications


@dataclass(frozen=True)
class TileMultiplications:
    """Multiplications of Winograd F(m, r), or of the nested F(m_1 x m_2, r_1 x r_2), for one tile
    and one (input, output) channel pair.

    The element-wise stage takes ``prod_i (m_i + r_i - 1)`` multiplications (one per point of the
    input tile), direct correlation ``prod_i m_i r_i`` for the same ``prod_i m_i`` outputs
    (Winograd 1980; Lavin & Gray 2016, eq. 8 for the nesting).
    """

    outputs: int  # per tile: prod m_i
    per_tile: int  # prod (m_i + r_i - 1)
    direct_per_tile: int  # prod m_i r_i

    @property
    def per_output(self) -> Fraction:
        """``prod (m_i + r_i - 1) / prod m_i``."""
        return Fraction(self.per_tile, self.outputs)

    @property
    def direct_per_output(self) -> Fraction:
        """``prod r_i``."""
        return Fraction(self.direct_per_tile, self.outputs)

    @property
    def reduction(self) -> Fraction:
        """How many times fewer multiplications than direct: ``prod m_i r_i / (m_i + r_i - 1)``."""
        return Fraction(self.direct_per_tile, self.per_tile)


def winograd_tile_multiplications(
    m: int | Sequence[int], r: int | Sequence[int]
) -> TileMultiplications:
    """The counts of F(m, r) for ints, of the nested F(m_1 x m_2 x ..., r_1 x r_2 x ...) for
    sequences (one tile size and one filter size per dimension)."""
    ms = (m,) if isinstance(m, int) else tuple(m)
    rs = (r,) if isinstance(r, int) else tuple(r)
    return TileMultiplications(
        outputs=math.prod(ms),
        per_tile=math.prod(a + b - 1 for a, b in zip(ms, rs, strict=True)),
        direct_per_tile=math.prod(a * b for a, b in zip(ms, rs, strict=True)),
    )


def _stride1_2d(spec: ConvSpec, algorithm: str) -> None:
    if spec.ndim != 2 or spec.transposed:
        raise InvalidSpecError(
            f"{algorithm}: counted for 2-D direct convolutions, got {spec.describe()}"
        )
    if spec.stride != (1, 1) or spec.dilation != (1, 1):
        raise InvalidSpecError(
            f"{algorithm}: counted for stride 1 and dilation 1 (got stride={spec.stride}, "
            f"dilation={spec.dilation}); split strided layers into stride-1 phases first"
        )


def direct_multiplications(spec: ConvSpec) -> AlgorithmCost:
    from .formulas import conv_macs

    taps = spec.taps
    return AlgorithmCost("direct", conv_macs(spec), 0, math.prod(spec.output_size), taps, taps)


def winograd_multiplications(spec: ConvSpec, m: int, transforms: bool = False) -> AlgorithmCost:
    """Multiplications of ``spec`` computed with F(m x m, r x s) tiles (partial tiles padded)."""
    _stride1_2d(spec, f"Winograd F({m}x{m})")
    if m < 1:
        raise InvalidSpecError(f"Winograd tile m={m} must be at least 1")
    r, s = spec.kernel_size
    ho, wo = spec.output_size
    a, b = m + r - 1, m + s - 1
    counts = winograd_tile_multiplications((m, m), (r, s))
    tiles = math.ceil(ho / m) * math.ceil(wo / m)
    pairs = spec.in_channels * spec.out_channels // spec.groups
    elementwise = spec.batch * tiles * counts.per_tile * pairs
    extra = 0
    if transforms:
        per_in = a * b * (a + b)  # B^T d B, dense
        per_out = a * b * m + a * m * m  # A^T M A, dense
        extra = spec.batch * tiles * (per_in * spec.in_channels + per_out * spec.out_channels)
    return AlgorithmCost(
        f"winograd F({m}x{m},{r}x{s})",
        elementwise,
        extra,
        tiles,
        counts.per_tile,
        counts.direct_per_tile,
    )


def fft_multiplications(
    spec: ConvSpec, tile: int | None = None, transforms: bool = True
) -> AlgorithmCost:
    """Real multiplications of ``spec`` by FFT with ``tile x tile`` transforms (default: the whole
    padded image rounded up to a power of two)."""
    _stride1_2d(spec, "FFT")
    kh, kw = spec.kernel_size
    ho, wo = spec.output_size
    if tile is None:
        tile = 1 << math.ceil(math.log2(max(spec.padded_size)))
    if tile < max(kh, kw):
        raise InvalidSpecError(f"FFT tile {tile} is smaller than the kernel {spec.kernel_size}")
    step_h, step_w = tile - kh + 1, tile - kw + 1
    tiles = math.ceil(ho / step_h) * math.ceil(wo / step_w)
    bins = tile * (tile // 2 + 1)
    pairs = spec.in_channels * spec.out_channels // spec.groups
    pointwise = spec.batch * tiles * bins * pairs * 4
    extra = 0
    if transforms:
        per_fft = int(2 * tile * tile * math.log2(tile))
        extra = spec.batch * tiles * per_fft * (spec.in_channels + spec.out_channels)
    return AlgorithmCost(
        f"fft {tile}x{tile}", pointwise, extra, tiles, bins * 4, step_h * step_w * kh * kw
    )
