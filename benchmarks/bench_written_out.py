"""The one-pass kernel's written-out transforms against its general path and ``F.conv2d``.

    python benchmarks/bench_written_out.py [--threads 2] [--repeats 15] [--batch 64 1]

``kernels/winograd_fused.c`` runs F(2, 3), F(4, 3) and F(6, 3) with the default points by
transforms written out with constant coefficients, values in registers; any other matrices by the
general path, which reads every coefficient and value through a sparse row. This times both in
one run (``native.fused(..., general=True)`` forces the general path) on the layers compressed
models and ``accelerate`` give the kernel: the 16-128 channel layers of the demo's CIFAR
ResNet-18 at width 0.5 after pruning (16-256 channels at 32x32 down to 4x4), and the 64-256
channel layers of ResNet-18 at 224. Float32, channels-last, bias and ReLU fused as deployed;
interleaved calls, medians. Prints ``t(F.conv2d) / t`` for each (> 1: faster than oneDNN) and the
written-out path's speedup over the general one.
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

from leanconv.algorithms import native, winograd
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare

LAYERS = [  # in channels, out channels, size
    (32, 16, 32),
    (16, 32, 32),
    (32, 32, 32),
    (64, 16, 16),
    (16, 64, 16),
    (64, 64, 16),
    (128, 32, 8),
    (32, 128, 8),
    (128, 128, 8),
    (256, 32, 4),
    (64, 64, 56),
    (128, 128, 28),
    (256, 256, 14),
]


def _winograd(x, filt, bias, general: bool):
    fused = native.fused
    native.fused = functools.partial(fused, general=True) if general else fused
    try:
        return winograd.conv2d_transformed(x, filt, bias, 1, activation="relu")
    finally:
        native.fused = fused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 1])
    ap.add_argument("--tiles", type=int, nargs="+", default=[4, 6])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    if not native.available():
        raise SystemExit(f"the compiled kernels are not in use: {native.status()}")
    print(f"one-pass kernel: {native.vector_width()} floats per vector, {args.threads} threads")
    head = " | ".join(f"F{t} general | F{t} written | F{t} written / general" for t in args.tiles)
    print(f"| layer | batch | F.conv2d | {head} |")
    print("|---|---|---|" + "---|" * 3 * len(args.tiles))
    for c, k, size in LAYERS:
        for batch in args.batch:
            if batch * size * size > 64 * 32 * 32:
                continue  # keeps the run short
            torch.manual_seed(0)
            x = torch.randn(batch, c, size, size).contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(k, c, 3, 3), torch.randn(k)
            fns = {"native": lambda x=x, w=w, b=b: F.conv2d(x, w, b, padding=1).relu_()}
            for tile in args.tiles:
                for general in (True, False):
                    # a filter per variant: the second call never finds the first's in cache
                    filt = winograd.transform_filter(w, tile)
                    fns[(tile, general)] = functools.partial(_winograd, x, filt, b, general)
            t = compare(fns, warmup=2, repeats=args.repeats)
            cells = []
            for tile in args.tiles:
                g, o = t[(tile, True)].ms, t[(tile, False)].ms
                base = t["native"].ms
                cells.append(f"{base / g:.2f}x | {base / o:.2f}x | **{g / o:.2f}x**")
            print(f"| {c}->{k}, {size}x{size} | {batch} | {t['native'].ms:.3f} ms | "
                  + " | ".join(cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
