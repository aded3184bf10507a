"""accelerate() end to end: native against accelerated latency of reference models.

Target (issue 4): the accelerated ResNet-18 and VGG-16 are never slower than the native ones, and
faster where layers won. Medians, native and accelerated interleaved in one run.

    .venv/bin/python benchmarks/bench_accelerate.py --models resnet18 vgg16 --batch 1 8
"""

from __future__ import annotations

import argparse

import torch

import leanconv
from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # no page faults per forward pass (bench/allocator.py)
    for name in args.models:
        torch.manual_seed(0)
        model = zoo.create(name).eval()
        for batch in args.batch:
            x = torch.randn(batch, 3, args.size, args.size)
            fast, report = leanconv.accelerate(model, x, tolerance=1e-4, repeats=args.repeats,
                                               use_cache=False)  # fmt: skip
            t = compare({"native": lambda m=model, x=x: m(x), "fast": lambda m=fast, x=x: m(x)},
                        warmup=1, repeats=args.repeats)  # fmt: skip
            won = [f"{layer.name}:{layer.chosen}({layer.speedup:.2f}x)"
                   for layer in report.layers if layer.chosen != "native"]  # fmt: skip
            print(f"{name} batch {batch}: native {t['native'].ms:.1f} ms, accelerated "
                  f"{t['fast'].ms:.1f} ms, ratio {t['native'].ms / t['fast'].ms:.2f}x, "
                  f"{report.memory_format}"
                  f"{' (reverted to native)' if report.reverted else ''}; "
                  f"{len(won)} layers replaced: {', '.join(won) or 'none'}")  # fmt: skip
            for note in report.notes:
                print(f"  {note}")


if __name__ == "__main__":
    main()
