"""End-to-end compression benchmark on the digits: train a CIFAR-style reference model, compress
it to a speedup target, and report the measured speedup at batch 64 and the accuracy drop.

Targets (issue 6): CIFAR-style VGG-16 at least 4x with at most 1.0 point drop; CIFAR-style
ResNet-18 at least 2.5x with at most 1.0 point drop; measured speedup at least 0.8 of the MACs
reduction; predicted speedup within 15 percent of the measured one.

    .venv/bin/python benchmarks/bench_compress.py --model vgg16_cifar --speedup 4
    .venv/bin/python benchmarks/bench_compress.py --model resnet18_cifar --speedup 2.5
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

import leanconv
from leanconv import zoo
from leanconv.bench.allocator import describe, retain_freed_memory
from leanconv.compress.deploy import Deployment
from leanconv.compress.finetune import FinetuneConfig, finetune
from leanconv.compress.pipeline import CompressConfig, compress
from leanconv.compress.planning import Speedup
from leanconv.compress.verify import capture_inputs
from leanconv.cost.algorithms import direct_multiplications, winograd_multiplications
from leanconv.data import digits
from leanconv.nn.fast import WinogradConv2d
from leanconv.spec import ConvSpec


def winograd_savings(saved_dir: str, input_shape: tuple[int, ...]) -> int:
    """Multiplications per image that the saved model's Winograd layers do not perform: direct
    MACs minus the element-wise stage's multiplications (transforms not counted)."""
    model = leanconv.load(saved_dir).eval()
    names = [n for n, m in model.named_modules() if isinstance(m, WinogradConv2d)]
    inputs = capture_inputs(model, names, torch.randn(1, *input_shape))
    saved = 0
    for name in names:
        m = model.get_submodule(name)
        spec = ConvSpec(m.in_channels, m.out_channels, m.kernel_size, tuple(inputs[name].shape[2:]),
                        m.stride, m.padding, m.dilation, m.groups, name=name)  # fmt: skip
        tile = m.tile[0] if isinstance(m.tile, tuple) else m.tile
        saved += (direct_multiplications(spec).multiplications
                  - winograd_multiplications(spec, tile).multiplications)  # fmt: skip
    return saved


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="vgg16_cifar")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--speedup", type=float, default=4.0)
    p.add_argument("--train-epochs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--methods", default="tucker2,svd")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-lr", type=float, default=0.02)
    p.add_argument("--no-fuse", action="store_true", help="deploy without fusion and packing")
    p.add_argument("--weights", help="trained weights (safetensors) to compress, not training")
    p.add_argument("--save-weights", help="write the trained weights here (safetensors)")
    p.add_argument("--calibration", type=int, default=128, help="images for the sensitivities")
    p.add_argument(
        "--most-accurate",
        action="store_true",
        help="plain allocation: no one-standard-error rule (compress/planning/capacity.py)",
    )
    p.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's allocator as it is (page faults per call)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_allocator:
        retain_freed_memory()  # no page faults per forward pass (bench/allocator.py)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    data = digits(seed=args.seed)
    model = zoo.create(args.model, num_classes=10, width=args.width)
    if args.weights:
        model.load_state_dict(load_file(args.weights))
    else:
        train = FinetuneConfig(epochs=args.train_epochs, lr=args.train_lr, warmup_epochs=1,
                               progress=False)  # fmt: skip
        finetune(model, data, None, train)
    if args.save_weights:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.save_weights)
    out = tempfile.mkdtemp(prefix="bench-compress-")
    shutil.rmtree(out)
    config = CompressConfig(
        target=Speedup(args.speedup), methods=tuple(args.methods.split(",")),
        ratios=(0.03, 0.05, 0.08, 0.12, 0.2, 0.35, 0.6), calibration=args.calibration,
        finetune=FinetuneConfig(epochs=args.epochs, lr=0.01, progress=False), seed=args.seed,
        deployment=Deployment(fuse=not args.no_fuse), prefer_capacity=not args.most_accurate,
    )  # fmt: skip
    base = {"zoo": args.model, "kwargs": {"num_classes": 10, "width": args.width}}
    r = compress(model, data, config, out, base, log=print)
    b, a = r.before, r.after
    macs_x = b.macs / a.macs
    sp = r.speedup[64]
    print(f"\n{args.model} (width {args.width}), {args.threads} threads, target {args.speedup}x, "
          f"allocator: {describe()}")  # fmt: skip
    print(f"accuracy {b.accuracy:.2f} -> {a.accuracy:.2f} ({a.accuracy - b.accuracy:+.2f} points)")
    print(f"MACs {b.macs:,} -> {a.macs:,} ({macs_x:.2f}x fewer)")
    for bs in sorted(a.latency_ms):
        print(f"batch {bs}: {b.latency_ms[bs]:.2f} ms -> {a.latency_ms[bs]:.2f} ms "
              f"({r.speedup[bs]:.2f}x)")  # fmt: skip
    for side, fig in (("before", b), ("after", a)):
        by = ", ".join(f"{f} {v[64]:.2f} ms" for f, v in fig.latency_by_format.items() if 64 in v)
        print(f"{side} at batch 64 by layout: {by} (faster: {fig.best_format()})")
    over = r.speedup_over_baseline
    if over:
        print("original deployed alike (folded, fused, packed): "
              + ", ".join(f"batch {bs} {r.baseline.latency_ms[bs]:.2f} ms -> {over[bs]:.2f}x"
                          for bs in sorted(over))
              + f"; at batch 64 / MACs reduction: {over[64] / macs_x:.2f}")  # fmt: skip
    algorithms = r.plan.algorithms()
    print(f"layers by Winograd: {len(algorithms)} {algorithms}")
    pred = r.plan.predicted_speedup
    s, se = r.plan.sensitivity
    print(f"plan: summed sensitivity {s:.4f} +- {se:.4f} nats on {args.calibration} images; "
          + "; ".join(r.plan.notes))  # fmt: skip
    mults_x = b.macs / (a.macs - winograd_savings(f"{out}/model", tuple(data.input_shape)))
    print(
        f"counting the multiplications of Winograd's element-wise stage instead of the direct "
        f"MACs of its layers: {mults_x:.2f}x fewer, measured / that reduction {sp / mults_x:.2f}"
    )
    print(f"measured / MACs reduction: {sp / macs_x:.2f}; predicted {pred:.2f}x vs measured "
          f"{sp:.2f}x ({100 * (pred / sp - 1):+.1f}%)")  # fmt: skip
    print(f"artefacts in {out}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
