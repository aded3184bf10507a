"""Pruned convolution pairs against decompositions: speed per MAC removed, and accuracy.

Two parts, each ratio measured in one run (medians of interleaved timings, ``bench.compare``):

1. **Rate.** A pair of 3x3 convolutions (C -> C -> C channels, ReLU between, batch 64, the
   deployment form: packed for oneDNN, channels-last) pruned to 3/4, 1/2 and 1/4 of its inner
   channels, against the pair kept: time ratio, MACs ratio and their quotient (the rate: 1.0
   means the pair runs exactly as much faster as it has fewer multiplications).
2. **Accuracy.** The demo's reference CNN (ResNet-18 at half width on the digits; trained here
   for 5 epochs, or read with ``--weights``, the ``reference.safetensors`` that ``leanconv demo``
   writes): for each residual block's inner pair, test accuracy with the pair pruned to 1/2 and
   1/4 of its channels (refitted on 64 training images), against both layers decomposed by
   spatial SVD at the same rank, no fine-tuning, and the pair's time against the kept pair.

    .venv/bin/python benchmarks/bench_pruning.py [--weights demo-out/reference.safetensors]
"""

from __future__ import annotations

import argparse
import copy
import platform

import torch
from torch import nn

import leanconv
from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare
from leanconv.compress.deploy import Deployment
from leanconv.compress.finetune import FinetuneConfig, finetune
from leanconv.data import digits
from leanconv.prune import find_pairs, prune_pairs


def _pair(c_in: int, mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, mid, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(mid, c_out, 3, padding=1)).eval()  # fmt: skip


def rate(repeats: int) -> None:
    dep = Deployment()
    print("| channels, size | kept | time | MACs | rate |\n|---|---|---|---|---|")
    for c, size in ((32, 32), (64, 16), (128, 8)):
        x = torch.randn(64, c, size, size).contiguous(memory_format=torch.channels_last)
        calls = {c: dep.layer(_pair(c, c, c))}
        for r in (c * 3 // 4, c // 2, c // 4):
            calls[r] = dep.layer(_pair(c, r, c))
        t = compare(
            {k: (lambda m=m, x=x: m(x)) for k, m in calls.items()}, warmup=2, repeats=repeats
        )
        for r in list(calls)[1:]:
            ratio = t[r].ms / t[c].ms
            print(f"| {c}, {size}x{size} | {r} | {ratio:.2f} | {r / c:.2f} | {r / c / ratio:.2f} |")


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean() * 100)


def _svd_both(model: nn.Module, pair, rank: int) -> nn.Module:
    out = copy.deepcopy(model)
    for name in (pair.producer, pair.consumer):
        parent, _, child = name.rpartition(".")
        new = leanconv.decompose(out.get_submodule(name), method="spatial_svd", rank=rank)
        out.get_submodule(parent)._modules[child] = new
    return out


def _pair_time(model: nn.Module, pair, x: torch.Tensor) -> float:
    """The pair's two layers (and what lies between them in the block) on their real input."""
    block = model.get_submodule(pair.producer.rsplit(".", 2)[0])
    inner = nn.Sequential(block.conv1, block.conv2).eval()
    seen = {}
    hook = block.conv1.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    deployed = Deployment().apply(inner)
    xb = seen["x"].contiguous(memory_format=torch.channels_last)
    return compare({"p": lambda: deployed(xb)}, warmup=2, repeats=7)["p"].ms


def accuracy(weights: str | None) -> None:
    torch.manual_seed(0)
    data = digits(seed=0)
    model = zoo.create("resnet18_cifar", num_classes=10, width=0.5)
    if weights:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(weights))
    else:
        finetune(model, data, None, FinetuneConfig(epochs=5, lr=0.05, warmup_epochs=1, seed=0,
                                                   progress=False))  # fmt: skip
    model.eval()
    cal = torch.stack([data.train[i][0] for i in range(64)])
    xt = torch.stack([data.test[i][0] for i in range(len(data.test))])
    yt = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    xb = torch.stack([data.test[i % len(data.test)][0] for i in range(64)])
    print(f"\nreference accuracy {_accuracy(model, xt, yt):.2f} %")
    print("| pair | rewrite of both layers | test accuracy (%) | pair time |\n|---|---|---|---|")
    for pair in find_pairs(model):
        base = _pair_time(model, pair, xb)
        for r in (pair.channels // 2, pair.channels // 4):
            pruned = prune_pairs(model, {pair.producer: r}, cal).model.eval()
            svd = _svd_both(model, pair, r).eval()
            for label, m in ((f"pruned to {r}", pruned), (f"spatial SVD {r}", svd)):
                t = _pair_time(m, pair, xb) / base
                print(f"| {pair.producer} | {label} | {_accuracy(m, xt, yt):.2f} | {t:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", help="the demo's reference.safetensors (else trained here)")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(2)
    retain_freed_memory()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads")
    rate(args.repeats)
    accuracy(args.weights)


if __name__ == "__main__":
    main()
