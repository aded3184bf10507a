"""1-D Winograd F(m, 3) for the k x 1 and 1 x k factors of spatial SVD: tried, and slower.

Each factor convolution of the shapes the demo and a user's 64x64 model give (batch 64,
channels-last) is timed as a packed oneDNN convolution (the deployment form) and as
``WinogradConv2d`` with an ``m x 1`` (``1 x m``) tile, interleaved; ratios > 1: Winograd faster.

    .venv/bin/python benchmarks/bench_winograd_1d.py
"""

from __future__ import annotations

import torch
from torch import nn

from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare
from leanconv.nn import PackedConv2d, WinogradConv2d

#: (in, out, kernel, padding, size): the factors of spatial SVD at ranks 16-64
FACTORS = [
    (64, 16, (3, 1), (1, 0), 32), (16, 64, (1, 3), (0, 1), 32),
    (128, 32, (3, 1), (1, 0), 16), (32, 128, (1, 3), (0, 1), 16),
    (256, 64, (3, 1), (1, 0), 8), (64, 256, (1, 3), (0, 1), 8),
]  # fmt: skip


def main() -> None:
    torch.set_num_threads(2)
    retain_freed_memory()
    cl = torch.channels_last
    for c, k, kernel, pad, size in FACTORS:
        conv = nn.Conv2d(c, k, kernel, padding=pad).eval()
        x = torch.randn(64, c, size, size).contiguous(memory_format=cl)
        mods = {"packed": PackedConv2d.from_conv(conv).to(memory_format=cl)}
        for m in (2, 4, 6):
            tile = (m, 1) if kernel[1] == 1 else (1, m)
            mods[f"F({m},3)"] = WinogradConv2d.from_conv(conv, tile=tile).to(memory_format=cl)
        with torch.no_grad():
            ref = conv(x)
            errs = {n: float((f(x) - ref).abs().max() / ref.abs().max()) for n, f in mods.items()}
        t = compare({n: (lambda f=f, x=x: f(x)) for n, f in mods.items()}, warmup=2, repeats=7)
        base = t["packed"].ms
        cells = [f"{n} {t[n].ms:.2f} ms ({base / t[n].ms:.2f}x, err {errs[n]:.0e})" for n in mods]
        print(f"{c}->{k} {kernel[0]}x{kernel[1]} @{size}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
