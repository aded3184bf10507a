"""Winograd's one-pass kernel against its three-stage path and ``F.conv2d`` (oneDNN), per layer.

    python benchmarks/bench_one_pass.py [--threads 2] [--repeats 15] [--batch 1 8]

Layers: every 3x3 stride-1 shape of ResNet-18 and VGG-16 at 224x224, plus the small-channel cores
a Tucker decomposition leaves (32 and 48 channels), float32, channels-last, with bias (a folded
batch norm). Candidates, interleaved in one run, medians: ``F.conv2d``; F(4x4) and F(6x6) by the
one-pass kernel (``kernels/winograd_fused.c``: transforms and GEMM per block of tiles in each
thread's cache); the same tiles by the three-stage path (compiled transforms + oneDNN GEMM over
chunks of tiles); and F(4x4) on the same layer channels-first, which the one-pass kernel runs by
turning it channels-last and back (two copies; ``F.conv2d`` channels-first is its baseline).
Prints ``t(F.conv2d) / t(candidate)`` (> 1: faster than oneDNN's direct
convolution). Layers whose transformed filter exceeds ``one_pass.MAX_FILTER_BYTES`` run the
three-stage path in ``accelerate``; they are shown with both to justify the limit.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from leanconv.algorithms import native, one_pass, winograd
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare

LAYERS = [  # name, in channels, out channels, size
    ("tucker core 32", 32, 32, 56),
    ("tucker core 48", 48, 48, 28),
    ("resnet18.layer1 / vgg16.conv1_2", 64, 64, 56),
    ("vgg16.conv1_2", 64, 64, 224),
    ("vgg16.conv2_1", 64, 128, 112),
    ("resnet18.layer2 / vgg16.conv2_2", 128, 128, 28),
    ("vgg16.conv2_2", 128, 128, 112),
    ("vgg16.conv3_1", 128, 256, 56),
    ("resnet18.layer3", 256, 256, 14),
    ("vgg16.conv3_2", 256, 256, 56),
    ("vgg16.conv4_2", 512, 512, 28),
]


def _run(x, filt, bias, single: bool):
    """One call with the one-pass kernel forced on (``single``) or off, whatever the filter's size
    and the layout (the limits in ``one_pass`` are what this benchmark measures)."""
    one_pass.MAX_FILTER_BYTES = one_pass.TURN_MAX_FILTER_BYTES = 1 << 40 if single else 0
    return winograd.conv2d_transformed(x, filt, bias, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    if not native.available():
        raise SystemExit(f"the compiled kernels are not in use: {native.status()}")
    print(f"one-pass kernel: {native.vector_width()} floats per vector; "
          f"filters up to {one_pass.MAX_FILTER_BYTES >> 20} MB")  # fmt: skip
    print(
        "| layer | batch | F.conv2d | one-pass F4 | one-pass F6 | 3-stage F4 | 3-stage F6 "
        "| NCHW: F.conv2d | NCHW: one-pass F4 | NCHW: 3-stage F4 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    limits = one_pass.MAX_FILTER_BYTES, one_pass.TURN_MAX_FILTER_BYTES
    for name, c, k, size in LAYERS:
        for batch in args.batch:
            if batch * size * size > 8 * 112 * 112:
                continue  # keeps the run short: the largest layers at batch 1 only
            torch.manual_seed(0)
            x = torch.randn(batch, c, size, size).contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(k, c, 3, 3), torch.randn(k)

            def filt(tile, w=w):  # a filter per variant: none finds the one before's in cache
                return winograd.transform_filter(w, tile)

            xf = x.contiguous()
            fns = {
                "native": lambda x=x, w=w, b=b: F.conv2d(x, w, b, padding=1),
                "nchw native": lambda x=xf, w=w, b=b: F.conv2d(x, w, b, padding=1),
                "nchw one-pass F4": lambda f=filt(4), x=xf, b=b: _run(x, f, b, True),
                "nchw 3-stage F4": lambda f=filt(4), x=xf, b=b: _run(x, f, b, False),
            }
            for tile in (4, 6):
                for label, single in (("one-pass", True), ("3-stage", False)):
                    fns[f"{label} F{tile}"] = lambda f=filt(tile), o=single, x=x, b=b: _run(
                        x, f, b, o
                    )
            t = compare(fns, warmup=2, repeats=args.repeats)
            one_pass.MAX_FILTER_BYTES, one_pass.TURN_MAX_FILTER_BYTES = limits
            ratio = {key: t["native"].ms / t[key].ms for key in fns if "nchw" not in key}
            ratio |= {key: t["nchw native"].ms / t[key].ms for key in fns if "nchw" in key}
            print(f"| {name} ({c}->{k}, {size}x{size}) | {batch} | {t['native'].ms:.2f} ms | "
                  + " | ".join(f"{ratio[key]:.2f}x" for key in
                               ("one-pass F4", "one-pass F6", "3-stage F4", "3-stage F6"))
                  + f" | {t['nchw native'].ms:.2f} ms | "
                  + " | ".join(f"{ratio[key]:.2f}x" for key in
                               ("nchw one-pass F4", "nchw 3-stage F4"))
                  + " |")  # fmt: skip


if __name__ == "__main__":
    main()
