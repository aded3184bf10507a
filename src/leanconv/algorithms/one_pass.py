"""When and how Winograd runs as one pass: the compiled kernel of ``kernels/winograd_fused.c``.

For a stride-1 layer of one group whose transformed filter ``U`` (``T * C * K`` floats) fits in
cache, each thread takes a block of tiles and, in its own cache, transforms the block's input
(``V = B^T d B``), multiplies ``M[t] = V[t] U[t]`` for every tile element ``t`` and writes
``A^T M A`` (+ bias, ReLU) straight into the output: each input value is read once and each
output value written once (Lavin & Gray 2016, the blocked form of their Algorithm 1). The
three-stage path of :mod:`.winograd` instead writes ``V`` and ``M`` to memory between stages; it
stays the path for wide layers, whose filter would stream through the cache once per block
(docs/algorithms.md, "The one-pass kernel"; figures in docs/benchmarks.md).

This module holds the rules (:func:`applies`, :func:`worth_turning`), the block size
(:func:`tiles_per_block`), the threads' units of work (:func:`work_split`: blocks of tiles,
and with few tiles slices of the output channels too) and the call (:func:`run`);
:mod:`.winograd` decides per call.
"""

from __future__ import annotations

import torch

from . import native

__all__ = [
    "BLOCK_BYTES",
    "MAX_FILTER_BYTES",
    "TURN_MAX_FILTER_BYTES",
    "applies",
    "run",
    "tiles_per_block",
    "work_split",
    "worth_turning",
]

#: The kernel streams the whole transformed filter through the cache once per block of tiles, so
#: it runs only while the filter is at most this large (64-256 channels with F(4x4), up to
#: 128-256 with F(6x6)); with 512 channels the three-stage path, whose GEMM reuses each filter
#: matrix across thousands of tiles, ran 3x faster (docs/benchmarks.md).
MAX_FILTER_BYTES = 12 << 20

#: A channels-first input is turned channels-last for the kernel (and its output back) only while
#: the filter is at most this large: with 256 channels the two copies cost what the kernel saves
#: over the three-stage path, with 128 or fewer it ran 1.1-1.2x faster (bench_one_pass.py).
TURN_MAX_FILTER_BYTES = 4 << 20

#: Bytes of transformed input and products a block of tiles holds (per thread, in its L2 cache).
BLOCK_BYTES = 384 << 10

#: Fewer blocks than this per thread: the blocks' output channels are split across the threads
#: (:func:`work_split`), blocks of at most ``FEW_TILES_BLOCK`` tiles.
SPLIT_BELOW, FEW_TILES_BLOCK = 2, 48


def _filter_bytes(u: torch.Tensor) -> int:
    return u.numel() * u.element_size()


def applies(x: torch.Tensor, u: torch.Tensor, out: torch.Tensor | None, groups: int) -> bool:
    """The kernel takes this call: channels innermost in ``x`` and ``out`` (or only one channel),
    one group, a filter ``u`` within :data:`MAX_FILTER_BYTES` (the caller checks that the compiled
    path is usable)."""
    return (
        groups == 1
        and out is not None
        and (x.stride(1) == 1 or x.shape[1] == 1)
        and (out.stride(1) == 1 or out.shape[1] == 1)
        and _filter_bytes(u) <= MAX_FILTER_BYTES
    )


def worth_turning(x: torch.Tensor, u: torch.Tensor, groups: int) -> bool:
    """A channels-first ``x`` runs faster turned channels-last for the kernel: compiled float32
    CPU path, no autograd recording, one group, a filter within :data:`TURN_MAX_FILTER_BYTES`
    (and :data:`MAX_FILTER_BYTES`)."""
    recording = torch.is_grad_enabled() and (x.requires_grad or u.requires_grad)
    return (
        not recording
        and groups == 1
        and x.shape[1] > 1
        and _filter_bytes(u) <= min(TURN_MAX_FILTER_BYTES, MAX_FILTER_BYTES)
        and native.usable(x, u)
    )


def tiles_per_block(tiles: int, bytes_per_tile: int, threads: int) -> int:
    """Tiles per block: about :data:`BLOCK_BYTES` of buffers, a multiple of the kernel's 6-tile
    register block, and blocks in whole rounds of ``threads``."""
    most = max(6, BLOCK_BYTES // max(1, bytes_per_tile) // 6 * 6)
    blocks = -(-tiles // most)
    blocks = -(-blocks // threads) * threads
    per_block = -(-tiles // blocks)
    return max(6, -(-per_block // 6) * 6)


def work_split(tiles: int, bytes_per_tile: int, threads: int) -> tuple[int, int]:
    """Tiles per block and slices of the output channels per block: the threads' units of work.

    Every block reads the whole transformed filter once (a slice, its columns), so with many
    tiles the blocks are :func:`tiles_per_block` and the filter is read once per block. With
    fewer than ``SPLIT_BELOW`` blocks per thread (batch 1 on maps of 14x14 and less), the
    blocks cannot share the threads evenly (16 tiles in 6-tile blocks: 12 on one thread, 4 on
    the other) and each block re-reads the filter for a handful of tiles; there, the tiles go
    into as few blocks as :data:`FEW_TILES_BLOCK` allows and each block's output channels are
    cut into ``threads`` slices: every thread reads its part of the filter only, and all of
    them get the same work."""
    block = tiles_per_block(tiles, bytes_per_tile, threads)
    if threads < 2 or -(-tiles // block) >= SPLIT_BELOW * threads:
        return block, 1
    blocks = -(-tiles // FEW_TILES_BLOCK)
    per_block = -(-tiles // blocks)
    return -(-per_block // 6) * 6, threads


def run(
    x: torch.Tensor,
    packed: torch.Tensor,
    out: torch.Tensor,
    pad: tuple[int, int],
    tile: tuple[int, int],
    matrices: tuple[torch.Tensor, ...],
    bias: torch.Tensor | None = None,
    relu: bool = False,
    residual: torch.Tensor | None = None,
) -> bool:
    """Stride-1 Winograd of ``x`` padded by ``pad = (top, left)`` (zeros below and right up to
    ``out``'s size) into ``out``, with the filter packed as ``[T, Cp, Kp]`` and ``matrices``
    ``(B_h^T, B_w^T, A_h^T, A_w^T)``; plus ``bias``, plus ``residual`` (``out``'s shape and
    strides), through ReLU when ``relu``. Returns whether every transformed input value was
    finite."""
    t, cp, kp = packed.shape
    tiles = x.shape[0] * -(-out.shape[2] // tile[0]) * -(-out.shape[3] // tile[1])
    block, slices = work_split(tiles, t * (cp + kp) * 4, torch.get_num_threads())
    matrices = tuple(m.contiguous() for m in matrices)
    return native.fused(
        x, packed, out, pad, tile, block, matrices, bias, relu, residual, slices=slices
    )
