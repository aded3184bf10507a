"""How long ``leanconv.count`` takes on the reference models, and how much memory it holds.

Target (issue 2): ResNet-50 at 224x224 analysed in under 1 s on the 2-core CPU, memory flat.
Prints the median of several runs per model, and the ratio against a real forward pass measured in
the same run (what a counter that materialises tensors would cost at least).

    .venv/bin/python benchmarks/bench_cost.py
"""

from __future__ import annotations

import resource
import statistics
import time

import torch

import leanconv
from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory

REPEATS = 7


def median_seconds(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    retain_freed_memory()  # no page faults per forward pass (bench/allocator.py)
    print(
        f"{'model':<16}{'input':>18}{'count (s)':>12}{'forward (s)':>13}{'ratio':>8}"
        f"{'RSS +MiB':>10}"
    )
    for name in ["resnet18", "resnet50", "vgg16", *[n for n in zoo.names() if n.endswith("cifar")]]:
        shape = zoo.default_input(name)
        with torch.device("meta"):
            meta_model = zoo.create(name)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t_count = median_seconds(lambda m=meta_model, s=shape: leanconv.count(m, s))
        rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        real = zoo.create(name).eval()
        x = torch.randn(shape)
        with torch.no_grad():
            t_fwd = median_seconds(lambda m=real, x=x: m(x), repeats=3)
        print(f"{name:<16}{str(shape):>18}{t_count:>12.3f}{t_fwd:>13.3f}{t_fwd / t_count:>7.1f}x"
              f"{rss:>10.1f}")  # fmt: skip
    with torch.device("meta"):
        big = zoo.create("resnet50")
    t_big = median_seconds(lambda: leanconv.count(big, (256, 3, 224, 224)))
    print(f"resnet50 at batch 256 (activations would need ~77 GiB): {t_big:.3f} s")
    t50 = median_seconds(lambda: leanconv.count(big, (1, 3, 224, 224)))
    verdict = "met" if t50 < 1.0 else "NOT met"
    print(f"target: resnet50 at 1x3x224x224 under 1 s -> {t50:.3f} s ({verdict})")
    fallback_paths()


class _Arange(torch.nn.Module):
    """A ResNet-18 that adds a CPU ``torch.arange`` to its logits: fails on meta."""

    def __init__(self):
        super().__init__()
        self.net = zoo.create("resnet18")

    def forward(self, x):
        y = self.net(x)
        return y + torch.arange(y.shape[-1], dtype=y.dtype)


class _Item(_Arange):
    """A ResNet-18 that branches on ``.item()``: needs values, so a real run."""

    def forward(self, x):
        y = self.net(x)
        return y * 2 if y.abs().max().item() > 1e30 else y


def fallback_paths() -> None:
    """The three ways of counting, on the same ResNet-18 at batch 1 and 16: the time of each and
    its ratio to counting on meta (what a forward that cannot run on meta costs)."""
    print(f"\n{'way':<44}{'batch':>6}{'count (s)':>12}{'vs meta':>9}{'MACs equal':>12}")
    for batch in (1, 16):
        shape = (batch, 3, 224, 224)
        meta = zoo.create("resnet18").eval()
        arange, item = _Arange().eval(), _Item().eval()
        t_meta = median_seconds(lambda m=meta, s=shape: leanconv.count(m, s), repeats=3)
        want = leanconv.count(meta, shape).total.macs
        for label, model in (("on meta (plain ResNet-18)", meta),
                             ("FakeTensorMode (torch.arange in forward)", arange),
                             ("CPU, batch 1, scaled (.item() in forward)", item)):  # fmt: skip
            report = leanconv.count(model, shape)
            t = median_seconds(lambda m=model, s=shape: leanconv.count(m, s), repeats=3)
            same = report.total.macs == want  # the extra ops do no multiply-accumulates
            print(f"{label:<44}{batch:>6}{t:>12.3f}{t / t_meta:>8.1f}x{str(same):>12}"
                  f"   ({report.method})")  # fmt: skip


if __name__ == "__main__":
    main()
