"""FFT convolution against ``torch.nn.functional.conv2d`` (oneDNN) for large kernels.

    python benchmarks/bench_fft.py [--threads 2] [--reps 7] [--batch 1 8]

Dense layers with 32 and 64 channels and 7x7 to 31x31 kernels ('same' padding), and depthwise
31x31 layers (RepLKNet-style, 128 channels), float32. The filter is transformed once per FFT size
(as ``nn.FFTConv2d`` caches it). Prints the median of per-repetition ratios
``t(F.conv2d) / t(fft)`` for the automatic tile (cost model) and the whole-image transform, and
where the time of the automatic one goes (forward FFTs, complex GEMM, inverse FFTs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _interleave import interleaved, load, median_ratio, ms  # noqa: E402

from leanconv.algorithms import fft  # noqa: E402
from leanconv.bench.allocator import retain_freed_memory  # noqa: E402

CASES = [  # channels, kernel, size, groups
    (32, 7, 56, 1),
    (64, 7, 56, 1),
    (32, 9, 56, 1),
    (64, 9, 56, 1),
    (32, 11, 56, 1),
    (64, 11, 56, 1),
    (32, 15, 56, 1),
    (64, 15, 56, 1),
    (32, 21, 56, 1),
    (64, 21, 56, 1),
    (32, 31, 56, 1),
    (64, 31, 56, 1),
    (64, 15, 112, 1),
    (128, 7, 56, 128),
    (128, 13, 56, 128),
    (128, 31, 28, 128),
    (128, 31, 56, 128),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--max-kernel", type=int, default=31)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # no page faults per forward pass (bench/allocator.py)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, float32; {load()}")
    print(f"{'case':<28} {'N':>2} {'direct ms':>9} {'auto':>6} {'size':>7} {'full':>6}")
    for c, k, size, groups in CASES:
        if k > args.max_kernel:
            continue
        for n in args.batch:
            x = torch.randn(n, c, size, size)
            w = torch.randn(c, c // groups, k, k) / k
            p = k // 2
            out = (size, size)
            auto = fft.choose_fft_size(out, (k, k), c, c, n, groups)
            full = (fft.smooth_size(size + k - 1),) * 2
            fa = fft.transform_filter(w, auto, groups)
            ff = fft.transform_filter(w, full, groups)
            fns = {
                "direct": lambda x=x, w=w, p=p, g=groups: F.conv2d(x, w, None, 1, p, 1, g),
                "auto": lambda x=x, f=fa, p=p: fft.conv2d_transformed(x, f, None, p),
                "full": lambda x=x, f=ff, p=p: fft.conv2d_transformed(x, f, None, p),
            }
            times = interleaved(fns, args.reps)
            name = f"{c}ch {k}x{k} {size}x{size}" + (" depthwise" if groups > 1 else "")
            print(
                f"{name:<28} {n:>2} {ms(times['direct']):>9.2f} "
                f"{median_ratio(times['direct'], times['auto']):>5.2f}x {auto[0]:>7} "
                f"{median_ratio(times['direct'], times['full']):>5.2f}x",
                flush=True,
            )
    print(f"done; {load()}")


if __name__ == "__main__":
    main()
