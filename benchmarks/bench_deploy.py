"""The deployment form: ReLU fusion and packed oneDNN weights, per layer and per model.

Per layer: ``F.conv2d`` + in-place ReLU against the packed convolution with the ReLU fused
(``leanconv.algorithms.packed``), at batch 1 and 64, channels-last. Per model: the CIFAR-style
VGG-16 and ResNet-18 as given, with batch norms folded, and folded + fused + packed
(``leanconv.compress.deploy.Deployment``), all interleaved in one run; ratios against the model
as given.

    .venv/bin/python benchmarks/bench_deploy.py [--repeats 10]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from leanconv import zoo
from leanconv.algorithms import packed
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare
from leanconv.compress.deploy import Deployment

LAYERS = [  # (in, out, size, kernel): VGG-16 CIFAR layers and the thin layers of decompositions
    (64, 64, 32, 3),
    (128, 128, 16, 3),
    (256, 256, 8, 3),
    (512, 512, 2, 3),
    (64, 8, 32, 1),
    (8, 64, 32, 1),
    (16, 16, 16, 3),
    (128, 128, 8, 1),
]


def _pair(c_in: int, c_out: int, size: int, k: int, batch: int):
    """``F.conv2d`` + ReLU and the packed fused call on the same operands."""
    w = torch.randn(c_out, c_in, k, k).contiguous(memory_format=torch.channels_last)
    b = torch.randn(c_out)
    pad = (k // 2, k // 2)
    x = torch.randn(batch, c_in, size, size).contiguous(memory_format=torch.channels_last)
    weight = packed.pack(w, (1, 1), pad, (1, 1), 1, tuple(x.shape))
    worth = packed.worth_packing(tuple(w.shape), (1, 1), pad, (1, 1), tuple(x.shape))
    return {
        "plain": lambda: F.conv2d(x, w, b, 1, pad).relu_(),
        "packed": lambda: packed.conv2d_packed(x, weight, b, (1, 1), pad, (1, 1), 1, "relu"),
    }, worth


def layers(repeats: int) -> None:
    print("layer                 batch  conv+relu ms  packed+fused ms  ratio")
    for c_in, c_out, size, k in LAYERS:
        for batch in (1, 64):
            fns, worth = _pair(c_in, c_out, size, k, batch)
            t = compare(fns, warmup=3, repeats=repeats * (5 if batch == 1 else 1))
            print(f"{c_in:>3}->{c_out:<3} {size:>2}x{size:<2} k{k}     {batch:>3}  "
                  f"{t['plain'].ms:12.3f}  {t['packed'].ms:15.3f}  "
                  f"{t['plain'].ms / t['packed'].ms:5.2f}x{'' if worth else ' *'}")  # fmt: skip
    print(f"* below MIN_MACS ({packed.MIN_MACS:,} per call): PackedConv2d runs F.conv2d there")


def models(repeats: int) -> None:
    print("\nmodel            batch  given ms  folded ms  deployed ms  folded/given  "
          "deployed/given")  # fmt: skip
    for name in ("vgg16_cifar", "resnet18_cifar"):
        torch.manual_seed(0)
        model = zoo.create(name, num_classes=10).eval()
        variants = {
            "given": Deployment(fold_bn=False, fuse=False).apply(model),
            "folded": Deployment(fuse=False).apply(model),
            "deployed": Deployment().apply(model),
        }
        for batch in (1, 64):
            x = torch.randn(batch, 3, 32, 32)
            fns = {k: (lambda m=m, x=x: m(x)) for k, m in variants.items()}
            t = compare(fns, warmup=2, repeats=repeats * (3 if batch == 1 else 1))
            g = t["given"].ms
            print(f"{name:<16} {batch:>5}  {g:8.2f}  {t['folded'].ms:9.2f}  "
                  f"{t['deployed'].ms:11.2f}  {g / t['folded'].ms:11.2f}x  "
                  f"{g / t['deployed'].ms:13.2f}x")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # no page faults per forward pass (bench/allocator.py)
    with torch.no_grad():
        layers(args.repeats)
        models(args.repeats)


if __name__ == "__main__":
    main()
