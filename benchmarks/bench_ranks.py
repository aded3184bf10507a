"""Hardware-friendly ranks: do factor chains whose ranks are multiples of 8 run at a higher rate?

For 3x3 layers of the shapes the demo and a user's 64x64 model have, each method's rank at each
MACs ratio of the planner (``planning.DEFAULT_RATIOS``) is compared with that rank aligned to a
multiple of 8 (``planning.candidates.aligned``). Each chain is timed in its deployment form
(packed oneDNN convolutions, channels-last; ``compress.deploy.Deployment.layer``) at batch 64,
interleaved with the dense layer; reported: MACs, milliseconds, and the rate in GMAC/s, whose
ratio to the dense layer's is what "runs below its MACs" means (1.0: the chain runs at the dense
layer's rate).

    .venv/bin/python benchmarks/bench_ranks.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare
from leanconv.compress.deploy import Deployment
from leanconv.compress.planning import DEFAULT_RATIOS
from leanconv.compress.planning.candidates import aligned
from leanconv.compress.replace import decompose_layer
from leanconv.cost import count
from leanconv.decompose.rank import budget_rank
from leanconv.spec import ConvSpec

#: (name, channels in, channels out, input size): 3x3 stride-1 layers of the demo's ResNet-18
#: (width 0.5, 32x32 digits) and of a user-style 64x64 model.
LAYERS = [
    ("demo layer2 (64ch @16)", 64, 64, 16),
    ("demo layer3 (128ch @8)", 128, 128, 8),
    ("demo layer4 (256ch @4)", 256, 256, 4),
    ("user 64x64 (64ch @32)", 64, 64, 32),
    ("user 64x64 (128ch @16)", 128, 128, 16),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--methods", default="tucker2,spatial_svd")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    torch.manual_seed(0)
    dep = Deployment()
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, deployment form")
    head = ("layer", "method", "rank", "MACs share", "ms", "rate vs dense", "aligned rank", "ms",
            "rate vs dense")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    gains = []
    for label, c, k, size in LAYERS:
        conv = nn.Conv2d(c, k, 3, padding=1).eval()
        x = torch.randn(args.batch, c, size, size).contiguous(memory_format=torch.channels_last)
        dense_macs = count(conv, x[:1]).total.macs
        spec = ConvSpec.from_module(conv, tuple(x.shape), label)
        for method in args.methods.split(","):
            ranks = []
            for ratio in DEFAULT_RATIOS:
                r = budget_rank(spec, method, ratio)
                a = aligned(r, 8)
                if r != a and (r, a) not in ranks:
                    ranks.append((r, a))
            for r, a in ranks:
                mods = {"dense": dep.layer(conv)}
                macs = {"dense": dense_macs}
                for key, rank in (("r", r), ("a", a)):
                    d = decompose_layer(conv, method, rank, input_size=(size, size))
                    mods[key] = dep.layer(d.module)
                    macs[key] = count(d.module, x[:1]).total.macs
                t = compare({n: (lambda m=m, x=x: m(x)) for n, m in mods.items()}, warmup=2,
                            repeats=args.repeats)  # fmt: skip
                rate = {n: macs[n] / t[n].ms for n in mods}
                rel = {n: rate[n] / rate["dense"] for n in ("r", "a")}
                gains.append(rel["a"] / rel["r"])
                print(f"| {label} | {method} | {r} | {macs['r'] / dense_macs:.2f} | "
                      f"{t['r'].ms:.2f} | {rel['r']:.2f} | {a} | {t['a'].ms:.2f} | "
                      f"{rel['a']:.2f} |")  # fmt: skip
    print(f"median rate of the aligned rank / the ratio's rank: {statistics.median(gains):.3f} "
          f"over {len(gains)} pairs (min {min(gains):.3f}, max {max(gains):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
