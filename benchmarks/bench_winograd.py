"""Winograd F(m x m, 3x3) against ``torch.nn.functional.conv2d`` (oneDNN) on real layers.

    python benchmarks/bench_winograd.py [--threads 2] [--reps 9] [--batch 1 8] [--tiles 2 4 6]
                                        [--channels-last]

Layers: the 3x3 stride-1 convolutions of ResNet-18 and VGG-16 with at least 128 channels,
float32, NCHW (``--channels-last``: input and output channels-last, as ``accelerate`` deploys).
The filter is transformed once (as ``nn.WinogradConv2d`` caches it); every call checks the input
for NaN/inf as the module does. Prints the median of per-repetition ratios
``t(F.conv2d) / t(winograd)`` (> 1: Winograd faster), then, for the best tile, where the time goes:
input transform (gather + B^T d B), element-wise GEMMs, output transform (A^T M A + layout).
With a C compiler the transforms are the compiled kernels of ``leanconv.algorithms.native`` and
the GEMMs oneDNN's; ``LEANCONV_NATIVE=0`` measures the PyTorch-only implementation.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _interleave import interleaved, load, median_ratio, ms  # noqa: E402

from leanconv.algorithms import native, winograd  # noqa: E402
from leanconv.bench.allocator import retain_freed_memory  # noqa: E402

LAYERS = [  # name, channels, size
    ("resnet18.layer2", 128, 28),
    ("resnet18.layer3", 256, 14),
    ("resnet18.layer4", 512, 7),
    ("vgg16.conv2_2", 128, 112),
    ("vgg16.conv3_2", 256, 56),
    ("vgg16.conv4_2", 512, 28),
    ("vgg16.conv5_2", 512, 14),
]


def stages(
    x: torch.Tensor, filt: winograd.WinogradFilter, reps: int, layout: torch.memory_format
) -> dict[str, float]:
    """Median ms per call of the three stages (timed inside the real code path), the output in
    ``layout``."""
    u = filt.phases[(0, 0)]
    out = x.new_empty((x.shape[0], u.shape[-1], *x.shape[2:])).contiguous(memory_format=layout)
    runs = []
    for _ in range(reps):
        timings: dict[str, float] = {}
        gemm = functools.partial(filt.gemm, (0, 0))
        winograd._winograd_valid(x, u, filt.tile, (3, 3), 1, (1, 1, 1, 1), out, timings, gemm)
        runs.append(timings)
    out = {k: statistics.median(r[k] for r in runs) * 1e3 for k in runs[0]}
    n, c, h, w = x.shape
    tiles = n * -(-h // filt.tile[0]) * -(-w // filt.tile[1])
    t = (filt.tile[0] + 2) * (filt.tile[1] + 2)
    out["gemm_gflops"] = 2 * t * tiles * c * u.shape[-1] / (out["gemm"] * 1e-3) / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tiles", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--layers", nargs="*", default=None, help="names to run (default: all)")
    ap.add_argument("--channels-last", action="store_true", help="channels-last input and output")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # no page faults per forward pass (bench/allocator.py)
    torch.manual_seed(0)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"torch {torch.__version__}, {args.threads} threads, float32, {layout}; {load()}")
    print(f"transforms: {native.status()}")
    head = " ".join(f"{'F' + str(t):>6}" for t in args.tiles)
    print(
        f"{'layer':<16} {'N':>2} {'direct ms':>9} {'GF/s':>5} {head}   best: input / gemm (GF/s) "
        "/ output ms"
    )
    for name, c, size in LAYERS:
        if args.layers and name not in args.layers:
            continue
        for n in args.batch:
            x = torch.randn(n, c, size, size).contiguous(memory_format=layout)
            w = torch.randn(c, c, 3, 3) / (3 * c**0.5)
            filts = {t: winograd.transform_filter(w, t) for t in args.tiles}
            fns = {"direct": lambda x=x, w=w: F.conv2d(x, w, padding=1)}
            for t, f in filts.items():
                fns[t] = lambda x=x, f=f: winograd.conv2d_transformed(x, f, None, 1)
            times = interleaved(fns, args.reps)
            ratios = {t: median_ratio(times["direct"], times[t]) for t in args.tiles}
            best = max(ratios, key=ratios.get)
            st = stages(x, filts[best], args.reps, layout)
            direct = ms(times["direct"])
            gflops = 2 * n * c * c * 9 * size * size / (direct * 1e-3) / 1e9
            cells = " ".join(f"{ratios[t]:>5.2f}x" for t in args.tiles)
            print(
                f"{name:<16} {n:>2} {direct:>9.2f} {gflops:>5.0f} {cells}   F{best}: "
                f"{st['input']:.2f} / {st['gemm']:.2f} ({st['gemm_gflops']:.0f}) / "
                f"{st['output']:.2f}",
                flush=True,
            )
    print(f"done; {load()}")


if __name__ == "__main__":
    main()
