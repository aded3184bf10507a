"""2-D convolution by FFT (convolution theorem), aimed at large kernels (7x7 to 31x31 and beyond).

For real signals the circular cross-correlation of an input ``x`` and a kernel ``w`` (zero-padded
to the transform size ``t``) is ``irfft2(rfft2(x) · conj(rfft2(w)))``. Output ``o`` reads inputs
``o .. o + r - 1``, so the first ``t - r + 1`` outputs never wrap around and equal the valid
correlation: no flipping and no extra padding beyond ``t >= r``.

Summed over channels, each frequency bin ``f`` is one complex matrix product::

    Y[f] = X[f] @ W[f]          X[f]: tiles x C,   W[f]: C x K   (t (t/2 + 1) bins)

done as one batched real GEMM on interleaved ``(re, im)`` values (``[[Re W, Im W], [-Im W, Re W]]``
blocks: 4 real multiplications per complex one, as complex GEMM; PyTorch's complex ``bmm`` falls
back to a loop over matrices). Depthwise layers (one input channel per group) need no
reduction: ``Y = X · W`` per channel. Large images are cut into tiles (overlap-save: input tiles of
``t`` overlap by ``r - 1``, each gives ``t - r + 1`` outputs per side); the whole image is the case
of one tile. Cost per tile and channel pair: ``4 t (t/2 + 1)`` real multiplications, against
``(t - r + 1)^2 r^2`` direct (a 31x31 kernel with ``t = 64``: 8320 against 1.1 M).

Stride is not supported (FFT needs stride 1); dilation inserts zeros into the kernel. Half
precision is computed in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import InvalidSpecError
from ._geometry import (
    PaddingArg,
    add_bias,
    batched,
    check_filter_weight,
    check_finite,
    compute_dtype,
    conv_args,
    normalise,
    pad_input,
    pair,
    unbatched,
)

__all__ = ["FFTFilter", "choose_fft_size", "conv2d", "conv2d_transformed", "transform_filter"]


def smooth_size(n: int) -> int:
    """The smallest ``t >= n`` with no prime factor above 7 (sizes FFT libraries do fast)."""
    t = max(1, n)
    while True:
        m = t
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return t
        t += 1


def choose_fft_size(
    out_size: tuple[int, int],
    kernel: tuple[int, int],
    in_channels: int,
    out_channels: int,
    batch: int = 1,
    groups: int = 1,
) -> tuple[int, int]:
    """FFT size ``(t_h, t_w)`` minimising a simple cost model of this machine class.

    Cost = complex GEMM (``4 t (t/2+1) C K / g`` real MACs per tile) + forward and inverse real FFTs
    (about ``2.5 t^2 log2(t^2)`` flops per tile and channel, weighted 4x a GEMM MAC) + reading the
    transformed filter once (``8 t (t/2+1) C K / g`` bytes, weighted as 2 MACs a byte). Candidates:
    smooth sizes from ``2 r`` up to the whole padded image.
    """
    (ho, wo), (r, s) = out_size, kernel
    cg, kg = in_channels // groups, out_channels // groups

    def cost(th: int, tw: int) -> float:
        tiles = batch * math.ceil(ho / (th - r + 1)) * math.ceil(wo / (tw - s + 1))
        bins = th * (tw // 2 + 1)
        gemm = tiles * bins * 4 * cg * kg * groups
        ffts = tiles * (in_channels + out_channels) * 2.5 * th * tw * math.log2(th * tw) * 4
        filt = 8 * bins * cg * kg * groups * 2
        return gemm + ffts + filt

    def candidates(out: int, k: int) -> list[int]:
        full = smooth_size(out + k - 1)
        sizes = {full}
        t = smooth_size(max(2 * k, k + 1))
        while t < full:
            sizes.add(t)
            t = smooth_size(t + 1)
        return sorted(sizes)

    best = min(
        ((cost(th, tw), th, tw) for th in candidates(ho, r) for tw in candidates(wo, s)),
    )
    return best[1], best[2]


@dataclass(frozen=True)
class FFTFilter:
    """``W = conj(rfft2(w))`` zero-padded to ``size``.

    Stored as the real ``[bins * groups, 2 C/g, 2 K/g]`` matrices that multiply interleaved
    ``(re, im)`` rows, ``[[Re W, Im W], [-Im W, Re W]]`` per channel pair, so the channel reduction
    is a real batched GEMM (4 real multiplications per complex one, as complex GEMM); for
    depthwise-style layers (``C/g == 1``) as complex ``[groups, K/g, bins]``.
    """

    data: torch.Tensor
    size: tuple[int, int]
    kernel_size: tuple[int, int]  # of the (dilated) kernel
    in_channels: int
    out_channels: int
    groups: int
    dtype: torch.dtype
    depthwise: bool = field(default=False)


def _dilate(weight: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
    if dilation == (1, 1):
        return weight
    k, c, r, s = weight.shape
    dh, dw = dilation
    out = weight.new_zeros((k, c, dh * (r - 1) + 1, dw * (s - 1) + 1))
    out[:, :, ::dh, ::dw] = weight
    return out


def transform_filter(
    weight: torch.Tensor,
    size: tuple[int, int],
    groups: int = 1,
    dilation: int | tuple[int, int] = 1,
) -> FFTFilter:
    """The transformed filter for FFT size ``size = (t_h, t_w)`` (each at least the kernel)."""
    where = "fft.transform_filter"
    check_filter_weight(weight, groups, where)
    k_out, cg, _, _ = weight.shape
    check_finite(where, weight=weight)
    w = _dilate(weight, pair(dilation, "dilation", where))
    r, s = w.shape[-2:]
    th, tw = pair(size, "size", where)
    if th < r or tw < s:
        raise InvalidSpecError(f"{where}: FFT size {(th, tw)} is smaller than the kernel {(r, s)}")
    compute = compute_dtype(weight.dtype)
    # conj_physical, not conj(): a lazily conjugated operand sends bmm to a per-matrix loop.
    wf = torch.fft.rfft2(w.to(compute), s=(th, tw)).conj_physical()  # (K, C/g, th, tw//2+1)
    kg = k_out // groups
    if cg == 1:
        data = wf.reshape(groups, kg, -1).contiguous()
    else:
        wb = wf.reshape(groups, kg, cg, -1).permute(3, 0, 2, 1)  # (bins, g, C/g, K/g)
        re, im = wb.real, wb.imag
        # Row 2c + j (re, im of input channel c), column 2k + l (re, im of output channel k).
        data = torch.stack(
            (torch.stack((re, im), dim=-1), torch.stack((-im, re), dim=-1)), dim=-3
        )  # (bins, g, C/g, 2, K/g, 2)
        data = data.reshape(-1, 2 * cg, 2 * kg).contiguous()
    return FFTFilter(
        data=data,
        size=(th, tw),
        kernel_size=(r, s),
        in_channels=cg * groups,
        out_channels=k_out,
        groups=groups,
        dtype=weight.dtype,
        depthwise=cg == 1,
    )


def _fft_valid(xp: torch.Tensor, filt: FFTFilter) -> torch.Tensor:
    """Valid stride-1 correlation of the padded ``xp`` by overlap-save tiles of ``filt.size``."""
    (th, tw), (r, s), groups = filt.size, filt.kernel_size, filt.groups
    n, c, height, width = xp.shape
    ho, wo = height - r + 1, width - s + 1
    mh, mw = th - r + 1, tw - s + 1  # outputs per tile
    nh, nw = -(-ho // mh), -(-wo // mw)
    hp, wp = (nh - 1) * mh + th, (nw - 1) * mw + tw
    if (hp, wp) != (height, width):
        xp = torch.nn.functional.pad(xp, (0, wp - width, 0, hp - height))
    if nh * nw == 1:
        tiles = xp.unsqueeze(1)  # (N, 1, C, th, tw)
    else:
        sn, sc, sh, sw = xp.stride()
        tiles = xp.as_strided((n, nh, nw, c, th, tw), (sn, mh * sh, mw * sw, sc, sh, sw))
    p = n * nh * nw
    xf = torch.fft.rfft2(tiles.reshape(p, c, th, tw))  # (P, C, th, tw//2+1)
    bins = xf.shape[-2] * xf.shape[-1]
    k_out = filt.out_channels
    if filt.depthwise:
        # One input channel per group: a per-channel product, no reduction.
        yf = xf.reshape(p, groups, 1, bins) * filt.data  # (P, g, K/g, bins)
        yf = yf.reshape(p, k_out, th, -1)
    else:
        cg = c // groups
        # Interleaved (re, im) rows [bins * g, P, 2 C/g] times the real [2 C/g, 2 K/g] blocks: a
        # real batched GEMM (complex bmm takes a per-matrix loop that costs seconds when the
        # CPU is shared).
        xb = xf.reshape(p, groups, cg, bins).permute(3, 1, 0, 2).contiguous()
        xb = torch.view_as_real(xb).reshape(bins * groups, p, 2 * cg)
        yb = torch.bmm(xb, filt.data)  # (bins g, P, 2 K/g)
        yb = torch.view_as_complex(yb.view(bins, groups, p, -1, 2))
        yf = yb.permute(2, 1, 3, 0).reshape(p, k_out, th, -1)
    y = torch.fft.irfft2(yf, s=(th, tw))[..., :mh, :mw]  # (P, K, mh, mw)
    y = y.reshape(n, nh, nw, k_out, mh, mw).permute(0, 3, 1, 4, 2, 5)
    return y.reshape(n, k_out, nh * mh, nw * mw)[:, :, :ho, :wo]


def conv2d_transformed(
    x: torch.Tensor,
    filt: FFTFilter,
    bias: torch.Tensor | None = None,
    padding: PaddingArg = 0,
    check_finite_input: bool = True,
) -> torch.Tensor:
    """Convolve (stride 1) with a filter from :func:`transform_filter`."""
    where = f"fft.conv2d(size={filt.size})"
    weight_shape = (filt.out_channels, filt.in_channels // filt.groups, *filt.kernel_size)
    args = normalise(x, weight_shape, bias, 1, padding, 1, filt.groups, where)
    if x.dtype != filt.dtype or x.device != filt.data.device:
        raise InvalidSpecError(
            f"{where}: input ({x.dtype}, {x.device}) does not match the filter "
            f"({filt.dtype}, {filt.data.device})"
        )
    if check_finite_input:
        check_finite(where, input=x)
    xb = batched(x).to(compute_dtype(x.dtype))
    y = add_bias(_fft_valid(pad_input(xb, args.padding), filt), bias)
    return unbatched(y.contiguous().to(x.dtype), x)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    tile: int | tuple[int, int] | str | None = None,
    check_finite_input: bool = True,
) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` (stride 1) computed by real FFTs.

    ``tile``: output tile per side (FFT size ``tile + r - 1``), ``"full"`` for one transform of
    the whole padded image (rounded up to a fast size), or None to let :func:`choose_fft_size`
    pick. Raises ``InvalidSpecError`` for stride other than 1, bad arguments, and inputs holding
    NaN or infinity (one would spread over the whole tile).
    """
    where = "fft.conv2d"
    args = conv_args(x, weight, bias, stride, padding, dilation, groups, where)
    if args.stride != (1, 1):
        raise InvalidSpecError(
            f"{where}: stride={args.stride} is not supported by FFT convolution (it computes "
            "every output); use algorithm='winograd', 'direct' or 'im2col'"
        )
    r, s = (d * (k - 1) + 1 for k, d in zip(args.kernel_size, args.dilation, strict=True))
    ho, wo = args.output_size(*x.shape[-2:])
    if tile is None:
        size = choose_fft_size(
            (ho, wo),
            (r, s),
            x.shape[-3],
            weight.shape[0],
            x.shape[0] if x.dim() == 4 else 1,
            groups,
        )
    elif tile == "full":
        size = (smooth_size(ho + r - 1), smooth_size(wo + s - 1))
    elif isinstance(tile, str):
        raise InvalidSpecError(f"{where}: tile={tile!r} must be an int, a pair, 'full' or None")
    else:
        mh, mw = pair(tile, "tile", where)
        if mh < 1 or mw < 1:
            raise InvalidSpecError(f"{where}: tile={tile!r} must be positive")
        size = (mh + r - 1, mw + s - 1)
    filt = transform_filter(weight, size, groups, args.dilation)
    return conv2d_transformed(x, filt, bias, padding, check_finite_input)
