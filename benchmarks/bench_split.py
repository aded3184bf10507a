"""The one-pass Winograd kernel with the output channels split across the threads, at few tiles.

With few tiles (batch 1 on 14x14 maps: 16 tiles of F(4x4)), the kernel's blocks of tiles cannot
share two threads evenly and each block re-reads the whole transformed filter for a handful of
tiles; ``one_pass.work_split`` then cuts each block's output channels into one slice per thread.
This compares, in one run (interleaved medians, ``t(F.conv2d) / t``):

- ``blocks``: the kernel split by blocks of tiles only (``SPLIT_BELOW = 0``), filters up to
  ``MAX_FILTER_BYTES`` (larger ones: the three-stage path), as before the split;
- ``split``: the split as shipped (``SPLIT_BELOW`` default), the same filter limit;
- ``split, any filter``: the split with the one-pass kernel for every filter size.

    python benchmarks/bench_split.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from leanconv.algorithms import one_pass
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare
from leanconv.nn.fast import WinogradConv2d

SHAPES = [  # channels, map size, batch
    (64, 56, 1), (128, 28, 1), (256, 14, 1), (256, 28, 1), (512, 7, 1), (512, 14, 1),
    (512, 28, 1), (256, 14, 8), (512, 14, 8), (512, 7, 8),
]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--tiles", type=int, nargs="+", default=[4, 6])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    default = one_pass.SPLIT_BELOW, one_pass.MAX_FILTER_BYTES
    variants = {
        "blocks": (0, default[1]),
        "split": default,
        "split, any filter": (default[0], 1 << 40),
    }
    print(f"{'layer':>22} {'F.conv2d':>10} " + " ".join(f"{v + ' F' + str(m):>24}"
          for m in args.tiles for v in variants))  # fmt: skip
    for c, size, batch in SHAPES:
        torch.manual_seed(0)
        conv = nn.Conv2d(c, c, 3, padding=1).eval().to(memory_format=torch.channels_last)
        x = torch.randn(batch, c, size, size).to(memory_format=torch.channels_last)
        fns = {"native": lambda x=x, c=conv: F.conv2d(x, c.weight, c.bias, padding=1)}
        for m in args.tiles:
            for name, (below, limit) in variants.items():
                # a module per variant: consecutive calls never find the filter of the one
                # before in cache (one module read it warm for the next: 1.3x in one run)
                w = WinogradConv2d.from_conv(conv, tile=m).eval()

                def call(w=w, x=x, below=below, limit=limit):
                    one_pass.SPLIT_BELOW, one_pass.MAX_FILTER_BYTES = below, limit
                    return w(x)

                fns[f"{name} F{m}"] = call
        with torch.no_grad():
            ref = fns["native"]()
            for name, fn in fns.items():
                err = ((fn() - ref).abs().max() / ref.abs().max()).item()
                assert err < 1e-3, f"{name}: error {err:.1e}"
        t = compare(fns, warmup=2, repeats=args.repeats)
        one_pass.SPLIT_BELOW, one_pass.MAX_FILTER_BYTES = default
        base = t["native"].ms
        row = " ".join(f"{base / t[k].ms:>23.2f}x" for k in fns if k != "native")
        print(f"{f'{c}->{c}, {size}x{size}, b{batch}':>22} {base:>8.3f}ms {row}", flush=True)


if __name__ == "__main__":
    main()
