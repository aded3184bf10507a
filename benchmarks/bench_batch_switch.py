"""Every batch size at least as fast: a plan made for batch 64, at batch 1 and 64, without and
with the per-layer batch switch (``selection.batch_switch.fit_min_batch``).

The model: the demo's CIFAR-style ResNet-18 (width 0.5, 32x32) or VGG-16, in the deployment form
(batch norms folded, ReLUs fused, channels-last), with one of two plans:

- ``--plan winograd``: every eligible 3x3 layer by Winograd F(4x4) (a Winograd-only plan); the
  switch runs the direct convolution below a layer's ``min_batch``;
- ``--plan tucker2`` (or ``spatial_svd``, ``low_rank``): every 3x3 layer but the first
  decomposed at the rank of ``--budget`` of its MACs (thin chains); the switch runs each chain's
  composed convolution below its ``min_batch`` (:class:`leanconv.nn.ChainConv2d`).

Ratios against the same model with no algorithm and no decomposition (deployed the same way),
each form in a comparison of its own: the two models called in turn, their order swapped every
other time, and the median of the per-pair ratios reported with its quartiles; and the switched
model against the original as a user has it (batch norms and ReLUs as modules, NCHW), the same
way.

    .venv/bin/python benchmarks/bench_batch_switch.py --model resnet18_cifar
    .venv/bin/python benchmarks/bench_batch_switch.py --plan tucker2 --budget 0.1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory
from leanconv.compress.algorithms import eligible
from leanconv.compress.deploy import Deployment
from leanconv.compress.replace import decompose_layer
from leanconv.decompose.rank import budget_rank
from leanconv.modules import capture_inputs, replace_modules
from leanconv.selection.batch_switch import fit_min_batch
from leanconv.spec import ConvSpec

sys.path.insert(0, str(Path(__file__).parent))
from _interleave import interleaved, ms  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet18_cifar")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--plan", default="winograd", help="winograd, tucker2, spatial_svd, low_rank")
    p.add_argument("--budget", type=float, default=0.1, help="a decomposed layer's MACs share")
    args = p.parse_args()
    torch.set_num_threads(2)
    retain_freed_memory()
    torch.manual_seed(0)
    model = zoo.create(args.model, num_classes=10, width=args.width).eval()
    dep = Deployment()
    x = torch.randn(max(args.batch), 3, args.size, args.size)
    plain = dep.apply(model)
    if args.plan == "winograd":
        plan = {n: "winograd4" for n, m in model.named_modules() if n and eligible(m)}
        fixed = dep.apply(model, plan)  # the algorithm at every batch size
    else:
        plan = _decomposed(model, args.plan, args.budget, x)
        fixed = dep.deploy(replace_modules(model, plan), chains=list(plan)).model
    switched = copy.deepcopy(fixed)
    chosen = fit_min_batch(switched, x, args.batch)
    label = "Winograd" if args.plan == "winograd" else f"{args.plan} ({args.budget:g} of MACs)"
    print(f"{args.model} width {args.width} at {args.size}x{args.size}: {len(plan)} {label} "
          f"layers; switched below a batch size: {chosen or 'none'}")  # fmt: skip
    for b in args.batch:
        # each form against the original in a comparison of its own: interleaved with a third
        # model, a form would always run right after it (the Winograd-everywhere model at batch
        # 1 leaves the caches full of its transforms: the next model in the round ran 5-12 %
        # slower there); and the two in alternating order, for the same reason
        cells, base = {}, []
        for name, m, original in (("planned", fixed, plain), ("switched", switched, plain),
                                  ("as given", switched, model)):  # fmt: skip
            forms = {"plain": original, name: m}
            repeats = args.repeats * (20 if b <= 8 else 3)  # pairs: more for calls of a few ms
            with torch.no_grad():
                t = interleaved({n: (lambda m=m, xb=x[:b]: m(xb)) for n, m in forms.items()},
                                repeats, alternate=True)  # fmt: skip
            ratios = [p / f for p, f in zip(t["plain"], t[name], strict=True)]
            low, _, high = statistics.quantiles(ratios, n=4)
            cells[name] = f"{statistics.median(ratios):.2f}x ({low:.2f}-{high:.2f})"
            if original is plain:
                base.append(ms(t["plain"]))
        print(f"batch {b}: original {min(base):.2f} ms; {label} everywhere "
              f"{cells['planned']}; with the batch switch {cells['switched']}, against the "
              f"original as given {cells['as given']} (median of per-pair ratios, "
              f"quartiles)")  # fmt: skip


def _decomposed(model, method: str, budget: float, x) -> dict:
    """Every 3x3 convolution but the first, decomposed by ``method`` at ``budget`` of its MACs."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)][1:]  # fmt: skip
    inputs = capture_inputs(model, names, x[:1])
    out = {}
    for name in names:
        layer = model.get_submodule(name)
        spec = ConvSpec.from_module(layer, tuple(inputs[name].shape), name)
        rank = budget_rank(spec, method, budget)
        out[name] = decompose_layer(layer, method, rank, name=name,
                                    input_size=tuple(inputs[name].shape[2:])).module  # fmt: skip
    return out


if __name__ == "__main__":
    main()
