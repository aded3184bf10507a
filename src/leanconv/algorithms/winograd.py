"""2-D convolution by Winograd minimal filtering F(m x m, r x s) (Lavin & Gray 2016).

Each ``m x m`` output tile of a stride-1 correlation is ``A^T [U ⊙ V] A`` with ``U = G g G^T`` (the
filter, transformed once) and ``V = B^T d B`` (the ``(m + r - 1) x (m + s - 1)`` input tile). Summed
over input channels the element-wise stage becomes ``T = (m + r - 1)(m + s - 1)`` independent
matrix products, one per tile element ``t``::

    M[t] = V[t] @ U[t]         V[t]: tiles x C,   U[t]: C x K,   M[t]: tiles x K

so a layer takes ``T / (m^2 r s)`` of the multiplications of direct convolution (4x fewer for
F(4x4, 3x3), 5.06x for F(6x6, 3x3)). Layout: tiles are gathered channels-last into
``[a_h, a_w, tiles, C]`` so that both transforms are plain matrix products over the tile
dimensions (``B^T`` on the first, then on the second) and the element-wise stage is one batched
GEMM over contiguous ``[T, tiles, C]`` blocks.

Any kernel size uses transforms from :mod:`.toomcook`; stride and dilation are reduced to stride-1
sub-problems by polyphase decomposition (:func:`._geometry.reduce_to_stride1`). Half-precision
inputs are computed in float32 (only F(2x2, 3x3) is safe in float16) and the result cast back.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import InvalidSpecError
from . import native, one_pass
from ._geometry import (
    PaddingArg,
    batched,
    check_filter_weight,
    check_finite,
    compute_dtype,
    conv_args,
    kernel_steps,
    normalise,
    phases,
    reduce_to_stride1,
    sub_kernel,
    unbatched,
)
from .tile_gemm import TileGemm
from .toomcook import winograd_transform

MAX_ALPHA = 16  # m + r - 1 beyond this loses every digit, even in float64

__all__ = ["WinogradFilter", "conv2d", "conv2d_transformed", "transform_filter"]

#: Activations the layer can apply in the same pass (None: none).
ACTIVATIONS = (None, "relu")


@dataclass
class _Epilogue:
    """What follows the convolution: ``+ bias``, ``+ residual`` (a residual block's shortcut,
    with the output's strides), then ReLU. The compiled path applies them while writing the output
    and checks the input for NaN and infinity while transforming it, and says so (``applied``,
    ``finite``); otherwise :func:`conv2d_transformed` does them as extra passes."""

    bias: torch.Tensor | None = None
    relu: bool = False
    residual: torch.Tensor | None = None
    applied: bool = False
    finite: bool | None = None  # None: not checked on the way


def _tile_pair(tile, where: str) -> tuple[int, int]:
    message = f"{where}: tile={tile!r} must be a positive integer or a pair of them"
    if isinstance(tile, bool | str):
        raise InvalidSpecError(message)
    pair_ = (tile, tile) if isinstance(tile, int) else tile
    try:
        mh, mw = pair_
    except (TypeError, ValueError):
        raise InvalidSpecError(message) from None
    for m in (mh, mw):
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InvalidSpecError(message)
    return (mh, mw)


@functools.lru_cache(maxsize=256)
def _matrices(m: int, r: int, dtype: torch.dtype, device: str):
    """``A^T, G, B^T`` of F(m, r) as tensors, made once per dtype and device. They are made as
    normal tensors even when the first call runs under ``torch.inference_mode()``: an inference
    tensor kept here would make every later call that autograd records fail."""
    with torch.inference_mode(False):
        return winograd_transform(m, r).to_tensor(dtype, torch.device(device))


def _exact_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@dataclass(frozen=True)
class WinogradFilter:
    """A filter transformed for F(m x m, r x s): ``U = G g G^T`` as ``[T * groups, C/g, K/g]``.

    ``phases`` maps each kernel phase ``(p_h, p_w)`` (one for stride 1, up to ``s_h s_w`` for a
    strided layer) to its transformed sub-kernel; see :func:`transform_filter`.
    """

    phases: dict[tuple[int, int], torch.Tensor]
    sub_kernels: dict[tuple[int, int], tuple[int, int]]
    tile: tuple[int, int]
    kernel_size: tuple[int, int]
    in_channels: int
    out_channels: int
    groups: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    dtype: torch.dtype
    gemms: dict[tuple, TileGemm] = field(default_factory=dict, compare=False, repr=False)
    packs: dict[tuple, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def packed(self, key: tuple[int, int], vector: int) -> torch.Tensor:
        """Phase ``key``'s filter as the one-pass kernel takes it: ``[T, Cp, Kp]`` with both
        channel counts zero-padded to multiples of ``vector`` (made once and kept; groups == 1)."""
        if (key, vector) not in self.packs:
            u = self.phases[key].detach()
            t, cg, kg = u.shape
            cp, kp = -(-cg // vector) * vector, -(-kg // vector) * vector
            padded = u.new_zeros((t, cp, kp))
            padded[:, :cg, :kg] = u
            self.packs[(key, vector)] = padded
        return self.packs[(key, vector)]

    def gemm(self, key: tuple[int, int], tiles: int) -> TileGemm:
        """The element-wise stage of phase ``key`` for calls of ``tiles`` tiles (weights packed
        for oneDNN once per shape and kept: a call of another shape can be 20-50x slower)."""
        if (key, tiles) not in self.gemms:
            self.gemms[(key, tiles)] = TileGemm(self.phases[key], tiles)
        return self.gemms[(key, tiles)]


def transform_filter(
    weight: torch.Tensor,
    tile: int | tuple[int, int] = 4,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> WinogradFilter:
    """``U = G g G^T`` for every kernel phase of ``weight`` (``(K, C/groups, r, s)``).

    Computed in float64 (float32 on MPS) from the exact matrices and rounded once to the compute
    dtype (float32 for half-precision weights).
    """
    where = "winograd.transform_filter"
    check_filter_weight(weight, groups, where)
    mh, mw = _tile_pair(tile, where)
    k_out, cg, r, s = weight.shape
    probe = weight.new_empty((cg * groups, 1, 1), device="meta").expand(-1, 2**20, 2**20)
    args = normalise(probe, weight.shape, None, stride, 0, dilation, groups, where)
    compute = compute_dtype(weight.dtype)
    exact = _exact_dtype(weight.device)
    steps = kernel_steps(args)
    out: dict[tuple[int, int], torch.Tensor] = {}
    sizes: dict[tuple[int, int], tuple[int, int]] = {}
    check_finite(where, weight=weight)
    w64 = weight.to(exact)
    for prow in phases(args.stride[0], args.dilation[0], r)[0]:
        for pcol in phases(args.stride[1], args.dilation[1], s)[0]:
            key = (prow.k_start, pcol.k_start)
            w_sub = sub_kernel(w64, key, steps)
            kr, ks = w_sub.shape[-2:]
            for m, k in ((mh, kr), (mw, ks)):
                if m + k - 1 > MAX_ALPHA:
                    raise InvalidSpecError(
                        f"{where}: tile {m} with a {k}-tap kernel needs F({m},{k}) with "
                        f"m + r - 1 = {m + k - 1} > {MAX_ALPHA} points; no floating-point type "
                        "keeps any accuracy there, use a smaller tile or algorithm='fft'"
                    )
            _, g_h, _ = _matrices(mh, kr, exact, str(weight.device))
            _, g_w, _ = _matrices(mw, ks, exact, str(weight.device))
            wg = w_sub.reshape(groups, k_out // groups, cg, kr, ks)
            u = torch.einsum("ti,gkcij,uj->tugck", g_h, wg, g_w)
            out[key] = u.reshape(-1, cg, k_out // groups).to(compute).contiguous()
            sizes[key] = (kr, ks)
    return WinogradFilter(
        phases=out,
        sub_kernels=sizes,
        tile=(mh, mw),
        kernel_size=(r, s),
        in_channels=cg * groups,
        out_channels=k_out,
        groups=groups,
        stride=args.stride,
        dilation=args.dilation,
        dtype=weight.dtype,
    )


@dataclass(frozen=True)
class _Tiling:
    """Geometry of one stride-1 Winograd problem on an input of ``height x width`` after padding
    by ``pad = (top, bottom, left, right)``: ``nh x nw`` tiles of ``mh x mw`` outputs."""

    n: int
    c: int
    height: int
    width: int
    tile: tuple[int, int]
    kernel: tuple[int, int]
    groups: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def alpha(self) -> tuple[int, int]:
        return (self.tile[0] + self.kernel[0] - 1, self.tile[1] + self.kernel[1] - 1)

    @property
    def out(self) -> tuple[int, int]:
        top, bottom, left, right = self.pad
        return (
            self.height + top + bottom - self.kernel[0] + 1,
            self.width + left + right - self.kernel[1] + 1,
        )

    @property
    def tiles(self) -> tuple[int, int]:
        (ho, wo), (mh, mw) = self.out, self.tile
        return (-(-ho // mh), -(-wo // mw))


#: Bytes of transformed input tiles processed at once. Chunks of this size keep the gathered tiles,
#: their transforms and the GEMM results in cache and reuse one set of buffers: without chunking,
#: every call pays page faults on fresh multi-megabyte buffers and runs the transforms at DRAM
#: speed (docs/benchmarks.md, "Fast algorithms").
CHUNK_BYTES = 8 << 20


def _padded_channels_last(x: torch.Tensor, tiling: _Tiling) -> torch.Tensor:
    """``x`` as ``[N, Hp, Wp, C]``, zero-padded (``tiling.pad``, then up to whole tiles)."""
    n, c, height, width = x.shape
    (mh, mw), (ah, aw), (nh, nw) = tiling.tile, tiling.alpha, tiling.tiles
    top, _, left, _ = tiling.pad
    hp, wp = nh * mh + ah - mh, nw * mw + aw - mw
    xl = x.new_empty((n, hp, wp, c))
    bottom, right = top + height, left + width
    xl[:, top:bottom, left:right].copy_(x.permute(0, 2, 3, 1))
    for rows, cols in (
        (slice(0, top), slice(None)),
        (slice(bottom, hp), slice(None)),
        (slice(top, bottom), slice(0, left)),
        (slice(top, bottom), slice(right, wp)),
    ):
        xl[:, rows, cols].zero_()
    return xl


def _chunks(
    tiling: _Tiling, bytes_per_tile: int, chunk_bytes: int | None = None
) -> list[tuple[int, int, int, int]]:
    """``(n0, n1, th0, th1)`` blocks of whole tile rows, about ``chunk_bytes`` (default
    ``CHUNK_BYTES``) each: several images per block when an image is small, part of one image
    when it is large."""
    (nh, nw), n = tiling.tiles, tiling.n
    rows = max(1, (chunk_bytes or CHUNK_BYTES) // max(1, bytes_per_tile * nw))
    if rows >= nh:
        images = _balanced(n, max(1, rows // nh))
        return [(i, min(n, i + images), 0, nh) for i in range(0, n, images)]
    rows = _balanced(nh, rows)
    return [(i, i + 1, t, min(nh, t + rows)) for i in range(n) for t in range(0, nh, rows)]


def _balanced(total: int, most: int) -> int:
    """The smallest step that splits ``total`` into as few parts as steps of ``most`` would
    (8 in steps of at most 7: 4 + 4, not 7 + 1)."""
    parts = -(-total // most)
    return -(-total // parts)


def _write_tiles(
    y: torch.Tensor, out: torch.Tensor, tiling: _Tiling, n0: int, th0: int, th1: int
) -> None:
    """Copy output tiles ``y`` (N', g, K/g, rows, mh, nw, mw) to their place in ``out``."""
    (mh, mw), g = tiling.tile, tiling.groups
    ho, wo = tiling.out
    nb, kg = y.shape[0], y.shape[2]
    o = out[n0 : n0 + nb].view(nb, g, kg, ho, wo)[..., th0 * mh : min(ho, th1 * mh), :]
    full_rows = min(th1 * mh, ho) // mh - th0  # tile rows not cut by the bottom edge
    rh = o.shape[3] - full_rows * mh
    fw = wo // mw
    rw = wo - fw * mw
    if full_rows and fw:
        o[..., : full_rows * mh, : fw * mw].unflatten(3, (full_rows, mh)).unflatten(
            5, (fw, mw)
        ).copy_(y[:, :, :, :full_rows, :, :fw, :])
    if rh and fw:
        o[..., full_rows * mh :, : fw * mw].unflatten(4, (fw, mw)).copy_(
            y[:, :, :, full_rows, :rh, :fw, :]
        )
    if rw and full_rows:
        o[..., : full_rows * mh, fw * mw :].unflatten(3, (full_rows, mh)).copy_(
            y[:, :, :, :full_rows, :, fw, :rw]
        )
    if rh and rw:
        o[..., full_rows * mh :, fw * mw :].copy_(y[:, :, :, full_rows, :rh, fw, :rw])


class _Stopwatch:
    """Adds the seconds since the last lap to ``timings[stage]`` (nothing without ``timings``)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter() if timings is not None else 0.0

    def restart(self) -> None:
        if self.timings is not None:
            self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
            self.last = now


class _Stages:
    """The PyTorch stages of :func:`_winograd_valid` for one call: ``V = B^T d B`` (two products
    over the tile dimensions), ``M[t] = V[t] @ U[t]`` (one batched GEMM) and ``A^T M A``, per
    chunk of at most ``most`` tiles.

    Each stage writes into one buffer shared by every chunk (the last one may use a prefix); with
    ``reuse`` False (while autograd records) each returns a fresh tensor instead, since buffers
    overwritten by the next chunk cannot be saved for backward.
    """

    def __init__(self, x: torch.Tensor, u: torch.Tensor, tiling: _Tiling, most: int, reuse: bool):
        (mh, mw), (ah, aw), g = tiling.tile, tiling.alpha, tiling.groups
        self.tiling, self.u, self.reuse = tiling, u, reuse
        self.cg, self.kg = tiling.c // g, u.shape[-1]
        size_in, size_out = ah * aw * g * most * self.cg, ah * aw * g * most * self.kg
        sizes = {
            "d": size_in,
            "v1": size_in,
            "v": size_in,
            "m": size_out,
            "y1": mh * aw * g * most * self.kg,
            "y": mh * mw * g * most * self.kg,
        }
        self.bufs = {k: x.new_empty(v) if reuse else None for k, v in sizes.items()}

    def _run(self, fn, *args, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        """``fn(*args)`` viewed as ``shape``, written into the buffer ``key`` when reused."""
        if not self.reuse:
            return fn(*args).view(shape)
        buf = self.bufs[key][: math.prod(shape)].view(shape)
        return fn(*args, out=buf)

    def input_tiles(
        self, xl: torch.Tensor, bt: tuple[torch.Tensor, ...], n0: int, th0: int, nb: int, rows: int
    ) -> torch.Tensor:
        """``V`` ``[a_h, a_w, g * tiles * C/g]`` of ``nb`` images' tile rows ``th0 .. th0 + rows``
        of the padded channels-last input ``xl``."""
        (mh, mw), (ah, aw), (_, nw) = self.tiling.tile, self.tiling.alpha, self.tiling.tiles
        g, cg, p = self.tiling.groups, self.cg, nb * rows * nw
        sn, sh, sw, _ = xl.stride()
        # Overlapping tiles as a strided view, gathered into [a_h, a_w, g, tiles, C/g].
        view = xl.as_strided(
            (ah, aw, g, nb, rows, nw, cg),
            (sh, sw, cg, sn, mh * sh, mw * sw, 1),
            xl.storage_offset() + n0 * sn + th0 * mh * sh,
        )
        if self.reuse:
            d = self.bufs["d"][: ah * aw * g * p * cg].view(ah, -1)
            d.view(view.shape).copy_(view)
        else:
            d = view.reshape(ah, -1)
        v1 = self._run(torch.mm, bt[0], d, key="v1", shape=(ah, aw * g * p * cg))
        return self._run(
            torch.matmul, bt[1], v1.view(ah, aw, -1), key="v", shape=(ah, aw, g * p * cg)
        )

    def products(self, v: torch.Tensor, tiles: int) -> torch.Tensor:
        """``M[t] = V[t] @ U[t]``: ``[T * g, tiles, K/g]``."""
        t_g = self.u.shape[0]
        return self._run(
            torch.bmm, v.view(t_g, tiles, self.cg), self.u, key="m", shape=(t_g, tiles, self.kg)
        )

    def output_tiles(
        self, mm: torch.Tensor, at: tuple[torch.Tensor, ...], nb: int, rows: int
    ) -> torch.Tensor:
        """``A^T M A`` as output tiles ``(N', g, K/g, rows, mh, nw, mw)`` (what
        :func:`_write_tiles` takes)."""
        (mh, mw), (ah, aw), (_, nw) = self.tiling.tile, self.tiling.alpha, self.tiling.tiles
        g, kg, p = self.tiling.groups, self.kg, nb * rows * nw
        y1 = self._run(torch.mm, at[0], mm.view(ah, -1), key="y1", shape=(mh, aw * g * p * kg))
        y = self._run(torch.matmul, at[1], y1.view(mh, aw, -1), key="y", shape=(mh, mw, g * p * kg))
        return y.view(mh, mw, g, nb, rows, nw, kg).permute(3, 2, 6, 4, 0, 5, 1)


def _winograd_valid(
    x: torch.Tensor,
    u: torch.Tensor,
    tile: tuple[int, int],
    kernel: tuple[int, int],
    groups: int,
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
    out: torch.Tensor | None = None,
    timings: dict[str, float] | None = None,
    gemm: Callable[[int], TileGemm] | None = None,
    epilogue: _Epilogue | None = None,
    packed: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Stride-1 correlation of ``x`` (N, C, H, W) padded by ``pad`` with a transformed filter
    ``u`` (``[T * groups, C/g, K/g]``), written into ``out`` (N, K, H_o, W_o) or a new tensor.

    Per chunk of tiles: gather ``d`` (channels last) -> ``V = B^T d B`` -> ``M[t] = V[t] @ U[t]``
    -> ``A^T M A`` -> ``out`` (:class:`_Stages`). ``timings``, when given, accumulates seconds
    per stage (``input``, ``gemm``, ``output``). With ``gemm`` (the filter's :class:`TileGemm` for
    a number of tiles), float32 CPU tensors and no autograd recording, the compiled transforms of
    :mod:`.native` run instead (:func:`_winograd_valid_native`), applying ``epilogue`` on the way;
    with ``packed`` too (the filter for the one-pass kernel, given a vector width), channels-last
    ``x`` and ``out`` and a filter that fits in cache, the one-pass kernel does
    (:func:`_winograd_one_pass`).
    """
    n, c, height, width = x.shape
    tiling = _Tiling(n, c, height, width, tile, kernel, groups, pad)
    recording = torch.is_grad_enabled() and (x.requires_grad or u.requires_grad)
    if gemm is not None and not recording and native.usable(x, u):
        if packed is not None and one_pass.applies(x, u, out, groups):
            return _winograd_one_pass(x, packed(native.vector_width()), tiling, out, epilogue)
        return _winograd_valid_native(x, gemm, tiling, out, timings, epilogue)
    (mh, mw), (ah, aw), (_, nw) = tiling.tile, tiling.alpha, tiling.tiles
    kg = u.shape[-1]
    dev = str(x.device)
    at_h, _, bt_h = _matrices(mh, kernel[0], x.dtype, dev)
    at_w, _, bt_w = _matrices(mw, kernel[1], x.dtype, dev)
    if out is None:
        out = x.new_empty((n, groups * kg, *tiling.out))
    watch = _Stopwatch(timings)
    xl = _padded_channels_last(x, tiling)
    chunks = _chunks(tiling, ah * aw * max(c, groups * kg) * x.element_size())
    most = max((n1 - n0) * (th1 - th0) * nw for n0, n1, th0, th1 in chunks)
    stages = _Stages(x, u, tiling, most, reuse=not recording)
    watch.lap("input")
    for n0, n1, th0, th1 in chunks:
        nb, rows = n1 - n0, th1 - th0
        watch.restart()
        v = stages.input_tiles(xl, (bt_h, bt_w), n0, th0, nb, rows)
        watch.lap("input")
        mm = stages.products(v, nb * rows * nw)
        watch.lap("gemm")
        y = stages.output_tiles(mm, (at_h, at_w), nb, rows)
        _write_tiles(y, out, tiling, n0, th0, th1)
        watch.lap("output")
    return out


#: Bytes of transformed input per chunk on the compiled path: oneDNN's grouped 1x1 convolution
#: runs fastest on 128-512 tiles per call; 2, 4, 8 and 16 MB scanned (docs/benchmarks.md).
NATIVE_CHUNK_BYTES = 6 << 20


def _winograd_valid_native(
    x: torch.Tensor,
    gemm_for: Callable[[int], TileGemm],
    tiling: _Tiling,
    out: torch.Tensor | None,
    timings: dict[str, float] | None,
    epilogue: _Epilogue | None = None,
) -> torch.Tensor:
    """:func:`_winograd_valid` with the fused compiled transforms and the oneDNN element-wise
    stage: per chunk of tiles, ``V`` ([tiles, a_h * a_w * C], tile-major) -> ``M = V U`` ->
    ``A^T M A`` written straight into ``out`` (any memory format); three passes in all."""
    n, c = tiling.n, tiling.c
    (mh, mw), (ah, aw), (_, nw) = tiling.tile, tiling.alpha, tiling.tiles
    at_h, _, bt_h = _matrices(mh, tiling.kernel[0], torch.float32, "cpu")
    at_w, _, bt_w = _matrices(mw, tiling.kernel[1], torch.float32, "cpu")
    chunks = _chunks(tiling, ah * aw * c * x.element_size(), NATIVE_CHUNK_BYTES)
    most = max((n1 - n0) * (th1 - th0) * nw for n0, n1, th0, th1 in chunks)
    # Every call of the element-wise stage has the shape oneDNN packed the weight for (a smaller
    # last chunk computes a few stale tiles and ignores them): a call of another shape can pick a
    # slower kernel that re-lays out the weight each time (20-50x slower, measured).
    gemm = gemm_for(most)
    if out is None:
        out = x.new_empty((n, gemm.blocks * gemm.kg // (ah * aw), *tiling.out))
    watch = _Stopwatch(timings)
    v_all = x.new_empty((most, ah * aw * c))
    pad = (tiling.pad[0], tiling.pad[2])
    bias, relu = (epilogue.bias, epilogue.relu) if epilogue is not None else (None, False)
    residual = epilogue.residual if epilogue is not None else None
    finite = True
    for n0, n1, th0, th1 in chunks:
        watch.restart()
        images, rows = n1 - n0, th1 - th0
        tiles = images * rows * nw
        v = v_all[:tiles]
        if tiles < most:
            v_all[tiles:].zero_()
        finite &= native.input_transform(
            x, v, pad, (n0, th0), images, rows, nw, (mh, mw), bt_h, bt_w
        )
        watch.lap("input")
        m = gemm(v_all)[:tiles]
        watch.lap("gemm")
        native.output_transform(
            m, out, (n0, th0), images, rows, nw, (mh, mw), at_h, at_w, bias, relu, residual
        )
        watch.lap("output")
    if epilogue is not None:
        epilogue.applied, epilogue.finite = True, finite
    return out


def _winograd_one_pass(
    x: torch.Tensor,
    packed: torch.Tensor,
    tiling: _Tiling,
    out: torch.Tensor,
    epilogue: _Epilogue | None,
) -> torch.Tensor:
    """:func:`_winograd_valid` by the one-pass compiled kernel (:mod:`.one_pass`), applying
    ``epilogue``."""
    mh, mw = tiling.tile
    at_h, _, bt_h = _matrices(mh, tiling.kernel[0], torch.float32, "cpu")
    at_w, _, bt_w = _matrices(mw, tiling.kernel[1], torch.float32, "cpu")
    bias, relu = (epilogue.bias, epilogue.relu) if epilogue is not None else (None, False)
    residual = epilogue.residual if epilogue is not None else None
    pad = (tiling.pad[0], tiling.pad[2])
    matrices = (bt_h, bt_w, at_h, at_w)
    finite = one_pass.run(x, packed, out, pad, (mh, mw), matrices, bias, relu, residual)
    if epilogue is not None:
        epilogue.applied, epilogue.finite = True, finite
    return out


def conv2d_transformed(
    x: torch.Tensor,
    filt: WinogradFilter,
    bias: torch.Tensor | None = None,
    padding: PaddingArg = 0,
    check_finite_input: bool = True,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolve with a filter from :func:`transform_filter` (what ``nn.WinogradConv2d`` calls),
    then add ``bias`` and ``residual`` (a residual block's shortcut; another shape is broadcast,
    as ``+`` does) and apply ``activation`` (``None`` or ``"relu"``); the compiled path does all
    three, and the input's finite check, inside its transforms (no extra pass), except a bias or
    residual whose gradient is wanted or a broadcast residual: those are added after it, and the
    activation then too."""
    where = f"winograd F({filt.tile[0]}x{filt.tile[1]})"
    if activation not in ACTIVATIONS:
        raise InvalidSpecError(f"{where}: activation={activation!r} is not one of {ACTIVATIONS}")
    weight_shape = (filt.out_channels, filt.in_channels // filt.groups, *filt.kernel_size)
    args = normalise(x, weight_shape, bias, filt.stride, padding, filt.dilation, filt.groups, where)
    if x.dtype != filt.dtype:
        raise InvalidSpecError(f"{where}: input dtype {x.dtype}, filter made for {filt.dtype}")
    first = next(iter(filt.phases.values()))
    if first.device != x.device:
        raise InvalidSpecError(f"{where}: filter on {first.device}, input on {x.device}")
    compute = compute_dtype(x.dtype)
    xc = batched(x).to(compute)
    k_out = filt.out_channels
    # the compiled path adds the bias itself unless its gradient is wanted
    recording = torch.is_grad_enabled() and bias is not None and bias.requires_grad
    fused_bias = None if bias is None or recording else bias.detach().to(compute).contiguous()
    epilogue = _Epilogue(fused_bias)
    residual = batched(residual) if residual is not None and x.dim() == 3 else residual

    def core(x_sub: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
        u, kernel = filt.phases[key], filt.sub_kernels[key]
        gemm = functools.partial(filt.gemm, key)
        return _winograd_valid(x_sub, u, filt.tile, kernel, filt.groups, gemm=gemm)

    channels_last = (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if args.stride == (1, 1) and args.dilation == (1, 1):
        # Padding is applied while gathering tiles, the result written in place: no extra pass.
        u = filt.phases[(0, 0)]
        # a channels-first input the one-pass kernel could take runs channels-last and comes back
        # channels-first: two copies, against a slower three-stage path on such layers
        turn = not channels_last and xc.dim() == 4 and one_pass.worth_turning(xc, u, filt.groups)
        run_fmt = torch.channels_last if turn else fmt
        xr = xc.contiguous(memory_format=torch.channels_last) if turn else xc
        ho, wo = args.output_size(*xc.shape[-2:])
        shape = (xc.shape[0], k_out, ho, wo)
        out = torch.empty(shape, dtype=xc.dtype, device=xc.device, memory_format=run_fmt)
        wanted = residual is not None and torch.is_grad_enabled() and residual.requires_grad
        if residual is not None and not wanted and tuple(residual.shape) == shape:
            # the compiled paths read it at the output's offsets
            fits = residual.stride() == out.stride() and residual.dtype == out.dtype
            epilogue.residual = residual if fits else torch.empty_like(out).copy_(residual)
        # the ReLU in the compiled pass only when all that comes before it is there too
        epilogue.relu = (
            activation == "relu"
            and (bias is None or fused_bias is not None)
            and (residual is None or epilogue.residual is not None)
        )
        gemm = functools.partial(filt.gemm, (0, 0))
        packed = functools.partial(filt.packed, (0, 0))
        y = _winograd_valid(xr, u, filt.tile, filt.kernel_size, filt.groups, args.padding, out,
                            gemm=gemm, epilogue=epilogue, packed=packed)  # fmt: skip
        y = y.contiguous(memory_format=fmt)
    else:
        y = reduce_to_stride1(xc, args, k_out, core).contiguous(memory_format=fmt)
    if check_finite_input and not epilogue.finite:
        # after the fact: the compiled path found out while transforming, else one more pass
        check_finite(where, input=x)
        if epilogue.finite is False:
            raise InvalidSpecError(
                f"{where}: the input's values overflow float32 in the transform (magnitudes near "
                "3e38); use algorithm='direct'"
            )
    done = epilogue if epilogue.applied else _Epilogue()  # what the compiled path applied
    if bias is not None and done.bias is None:
        y.add_(bias.to(compute).view(1, -1, 1, 1))
    if residual is not None and done.residual is None:
        r = residual.to(compute)
        in_place = r.shape == y.shape and not torch.is_grad_enabled()
        y = y.add_(r) if in_place else y + r  # y: this call's own
    if activation == "relu" and not done.relu:
        y = y.relu_()
    return unbatched(y.to(x.dtype), x)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: PaddingArg = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    tile: int | tuple[int, int] = 4,
    check_finite_input: bool = True,
) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` computed with Winograd F(tile x tile, r x s) tiles.

    Same semantics as ``F.conv2d`` (batched or unbatched input, groups, bias); ``padding`` may also
    be asymmetric: ``(left, right, top, bottom)`` or ``((top, bottom), (left, right))``. Raises
    ``InvalidSpecError`` for bad arguments and for inputs holding NaN or infinity (which tiles
    would spread; ``check_finite_input=False`` skips the check).
    """
    conv_args(x, weight, bias, stride, padding, dilation, groups, "winograd.conv2d")
    filt = transform_filter(weight, tile, stride, dilation, groups)
    return conv2d_transformed(x, filt, bias, padding, check_finite_input)
