"""Every batch size at least as fast: a Winograd plan made for batch 64, at batch 1 and 64,
without and with the per-layer batch switch (``selection.batch_switch.fit_min_batch``).

The model: the demo's CIFAR-style ResNet-18 (width 0.5, 32x32) or VGG-16, every eligible 3x3
layer by Winograd F(4x4) (a Winograd-only plan), in the deployment form (batch norms folded,
ReLUs fused, channels-last). Ratios against the same model with no algorithm, interleaved.

    .venv/bin/python benchmarks/bench_batch_switch.py --model resnet18_cifar
"""

from __future__ import annotations

import argparse
import copy

import torch

from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare
from leanconv.compress.algorithms import eligible
from leanconv.compress.deploy import Deployment
from leanconv.selection.batch_switch import fit_min_batch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet18_cifar")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    torch.set_num_threads(2)
    retain_freed_memory()
    torch.manual_seed(0)
    model = zoo.create(args.model, num_classes=10, width=args.width).eval()
    dep = Deployment()
    plan = {n: "winograd4" for n, m in model.named_modules() if n and eligible(m)}
    plain = dep.apply(model)
    fixed = dep.apply(model, plan)  # the algorithm at every batch size
    switched = copy.deepcopy(fixed)
    x = torch.randn(max(args.batch), 3, args.size, args.size)
    chosen = fit_min_batch(switched, x, args.batch)
    print(f"{args.model} width {args.width} at {args.size}x{args.size}: {len(plan)} Winograd "
          f"layers; switched to direct below a batch size: {chosen or 'none'}")  # fmt: skip
    for b in args.batch:
        forms = {"plain": plain, "winograd": fixed, "switched": switched}
        t = compare({n: (lambda m=m, xb=x[:b]: m(xb)) for n, m in forms.items()}, warmup=2,
                    repeats=args.repeats)  # fmt: skip
        print(f"batch {b}: no algorithm {t['plain'].ms:.2f} ms; Winograd everywhere "
              f"{t['plain'].ms / t['winograd'].ms:.2f}x; with the batch switch "
              f"{t['plain'].ms / t['switched'].ms:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
