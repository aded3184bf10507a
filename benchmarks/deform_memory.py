"""Peak memory of deformable convolution against an im2col convolution of the same size.

Each case runs in a fresh subprocess; the peak is the growth of the resident set (``VmHWM`` after
resetting it through ``/proc/self/clear_refs``, Linux only) over the resident set once the inputs
exist, so it counts every temporary the operation allocates, whichever allocator serves it (glibc is
told to map and unmap every block over 64 KiB so that freed blocks leave the resident set). On a
CUDA device it also reports ``torch.cuda.max_memory_allocated`` growth.

    python benchmarks/deform_memory.py [--device cuda] [--batch 8] [--channels 256] [--size 56]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = [
    "im2col",
    "conv2d",
    "deform",
    "deform_random",
    "deform_v2",
    "deform_train",
    "deform_ckpt_train",
    "im2col_train",
]


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def run_case(case: str, device: str, n: int, c: int, size: int) -> dict:
    import torch
    import torch.nn.functional as F

    from leanconv.nn.deform import deform_conv2d

    torch.manual_seed(0)
    dev = torch.device(device)
    train = case.endswith("_train")
    x = torch.randn(n, c, size, size, device=dev, requires_grad=train)
    w = torch.randn(c, c, 3, 3, device=dev, requires_grad=train)
    off = torch.zeros(n, 18, size, size, device=dev)
    if case in ("deform_random", "deform_v2", "deform_train", "deform_ckpt_train"):
        off.normal_(0, 2)
    off.requires_grad_(train)
    mask = torch.rand(n, 9, size, size, device=dev) if case == "deform_v2" else None

    def op():
        if case.startswith("im2col"):
            cols = F.unfold(x, 3, padding=1)  # (N, C*9, H*W)
            return (w.reshape(c, -1) @ cols).reshape(n, c, size, size)
        if case == "conv2d":
            return F.conv2d(x, w, padding=1)
        return deform_conv2d(x, w, off, mask, padding=1, checkpoint=case == "deform_ckpt_train")

    with torch.no_grad():  # warm-up on one image: libraries' one-off allocations
        if case.startswith("im2col"):
            F.unfold(x[:1], 3, padding=1)
        elif case == "conv2d":
            F.conv2d(x[:1], w, padding=1)
        else:
            deform_conv2d(x[:1], w, off[:1], None if mask is None else mask[:1], padding=1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS")
    if train:
        y = op()
        y.sum().backward()
    else:
        with torch.no_grad():
            y = op()
    out = {"case": case, "peak_rss_mb": (_status("VmHWM") - base) / 2**20}
    if dev.type == "cuda":
        torch.cuda.synchronize()
        out["peak_cuda_mb"] = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    out["output_mb"] = y.numel() * y.element_size() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--case", default="")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device, args.batch, args.channels, args.size)))
        return
    n, c, s = args.batch, args.channels, args.size
    cols_mb = n * c * 9 * s * s * 4 / 2**20
    print(f"N={n} C=K={c} {s}x{s} 3x3 pad 1 float32 on {args.device}; columns {cols_mb:.1f} MiB")
    rows = []
    # a fixed mmap threshold: every block over 64 KiB is mapped on malloc and unmapped on free, so
    # the resident set follows the live tensors (glibc otherwise keeps freed blocks in its heap)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, "--device", args.device]
        cmd += ["--batch", str(n), "--channels", str(c), "--size", str(s)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    ref = {r["case"]: r for r in rows}
    for r in rows:
        line = f"{r['case']:>14}: peak RSS {r['peak_rss_mb']:8.1f} MiB"
        base = ref["im2col_train" if r["case"].endswith("_train") else "im2col"]["peak_rss_mb"]
        line += f" ({r['peak_rss_mb'] / base:.2f}x im2col)"
        if "peak_cuda_mb" in r:
            line += f", peak CUDA {r['peak_cuda_mb']:8.1f} MiB"
        print(line)


if __name__ == "__main__":
    main()
