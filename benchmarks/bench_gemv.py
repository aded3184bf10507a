"""The streaming matrix-vector kernel against ``F.linear`` on fully connected layers at small
batches.

Both compute ``x W^T + b`` in float32 on the CPU: ``nn.Linear`` (the library's product) and
``nn.GemvLinear`` (``kernels/gemv.c``, every thread streaming its own rows of W), interleaved in
one run, medians of ``--repeats`` rounds; ``--runs`` whole runs give the spread of the ratio. The
shapes are VGG-16's classifier (25088 -> 4096 -> 4096 -> 1000), ResNet's 512 -> 1000 and a
2048 -> 1000 head. GB/s is the weight's bytes over the median time: at these batches the layers
read their weight once per call and do a few multiply-adds per weight read.

    .venv/bin/python benchmarks/bench_gemv.py --batch 1 2 4 8
"""

from __future__ import annotations

import statistics

import torch
from _interleave import ab_runs, kernel_args
from torch import nn

from leanconv.nn import GemvLinear

# (in features, out features)
SHAPES = [(25088, 4096), (4096, 4096), (4096, 1000), (2048, 1000), (512, 1000)]


def main() -> None:
    args = kernel_args([1, 2, 4, 8])
    print("layer (in -> out) | batch | F.linear ms | gemv ms | ratio (runs) | "
          "GB/s F.linear -> gemv")  # fmt: skip
    for cin, cout in SHAPES:
        torch.manual_seed(0)
        plain = nn.Linear(cin, cout).eval()
        fast = GemvLinear.from_linear(plain).eval()
        weight_bytes = plain.weight.numel() * 4
        for batch in args.batch:
            x = torch.randn(batch, cin)
            with torch.no_grad():
                error = (fast(x).double() - plain(x).double()).abs().max().item()
            ratios, ms = ab_runs(plain, fast, x, args.runs, args.repeats)
            spread = ", ".join(f"{r:.2f}" for r in ratios)
            rates = " -> ".join(f"{weight_bytes / ms[k] / 1e6:.1f}" for k in ("base", "fast"))
            print(f"{cin} -> {cout} | {batch} | {ms['base']:.3f} | {ms['fast']:.3f} | "
                  f"**{statistics.median(ratios):.2f}x** ({spread}) | {rates} | "
                  f"max diff {error:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
