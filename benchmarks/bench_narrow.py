"""The narrow direct kernel against oneDNN on the factor shapes of decomposed layers.

Both run as deployed: ``nn.PackedConv2d`` (oneDNN on a weight packed once, bias and ReLU fused)
and ``nn.NarrowConv2d`` (``kernels/narrow_direct.c``, bias and ReLU fused), channels-last float32,
interleaved in one run, medians of ``--repeats`` rounds; ``--runs`` whole runs give the spread of
the ratio. The default shapes are the demo's (ResNet-18 at half width on 32x32 inputs: ranks 8
and 16 of 32- and 64-channel layers) and a few wider ones.

    .venv/bin/python benchmarks/bench_narrow.py --batch 64 1
"""

from __future__ import annotations

import statistics

import torch
from _interleave import ab_runs, kernel_args
from torch import nn

from leanconv.nn import NarrowConv2d, PackedConv2d

# (in, out, kernel, spatial size)
SHAPES = [
    (32, 8, (3, 1), 32), (8, 32, (1, 3), 32), (32, 8, (1, 1), 32), (8, 8, (3, 3), 32),
    (8, 32, (1, 1), 32), (32, 16, (3, 1), 32), (16, 32, (1, 3), 32), (3, 2, (3, 1), 32),
    (64, 16, (3, 1), 16), (16, 64, (1, 3), 16), (64, 14, (1, 1), 16), (14, 14, (3, 3), 16),
    (64, 24, (3, 3), 16), (128, 16, (1, 1), 8), (128, 32, (1, 1), 8), (32, 32, (3, 3), 32),
]  # fmt: skip


def main() -> None:
    args = kernel_args([64, 1])
    print("layer (in->out kernel @ size) | batch | oneDNN ms | narrow ms | ratio (runs) | "
          "GMAC/s oneDNN -> narrow")  # fmt: skip
    for cin, cout, kernel, size in SHAPES:
        torch.manual_seed(0)
        pad = (kernel[0] // 2, kernel[1] // 2)
        conv = nn.Conv2d(cin, cout, kernel, padding=pad)
        onednn = PackedConv2d.from_conv(conv, activation="relu").eval()
        narrow = NarrowConv2d.from_conv(conv, activation="relu").eval()
        for batch in args.batch:
            x = torch.randn(batch, cin, size, size).contiguous(memory_format=torch.channels_last)
            ratios, ms = ab_runs(onednn, narrow, x, args.runs, args.repeats)
            macs = batch * size * size * cin * cout * kernel[0] * kernel[1]
            rate = {k: macs / (v * 1e-3) / 1e9 for k, v in ms.items()}
            spread = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"{cin}->{cout} {kernel[0]}x{kernel[1]} @ {size} | {batch} | "
                  f"{ms['base']:.3f} | {ms['fast']:.3f} | "
                  f"{statistics.median(ratios):.2f}x ({spread}) | "
                  f"{rate['base']:.0f} -> {rate['fast']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
