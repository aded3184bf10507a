"""Residual sums fused into the convolution before them (``rewrite.residual``), A/B.

Each model is deployed twice (batch norms folded, ReLUs fused, channels-last), with and without
the residual sums and the ReLUs after them taken by the convolutions before them (the narrow
kernel's output pass, else an in-place pass on the layer's fresh output), and the two are timed
interleaved at each batch size; the ratio is ``time without / time with``. Models:

- ``resnet18_cifar``: the zoo's CIFAR ResNet-18 (width 0.5, 32x32), as the demo trains it;
- ``user``: a torchvision-style user model written as users write it (``out += identity``,
  ``F.relu`` in ``forward``, sibling batch norms), 64x64;
- ``saved:PATH``: a model saved by ``leanconv compress`` (``PATH`` its ``model`` directory,
  e.g. ``demo-out/model``), whose input size comes from its ``model.json``;

    .venv/bin/python benchmarks/bench_residual.py --models resnet18_cifar user saved:demo-out/model
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

import leanconv
from leanconv import zoo
from leanconv.bench.allocator import retain_freed_memory
from leanconv.bench.timing import compare
from leanconv.compress.deploy import Deployment
from leanconv.rewrite import fuse as _fuse


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out)


class UserNet(nn.Module):
    """A small torchvision-style ResNet, 64x64 input."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        widths = [(32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
        self.layers = nn.Sequential(*(_Block(*w) for w in widths))
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.layers(x).mean((2, 3)))


def _models(name: str) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    """``(without, with)`` the residual fusion, and one image's shape."""

    def deployed(model: nn.Module) -> nn.Module:
        return Deployment().apply(model.eval())

    def loaded(path: str) -> nn.Module:
        return leanconv.load(path, trust_code=True)  # the user's own saved model

    if name.startswith("saved:"):
        path = name.split(":", 1)[1]
        with_ = loaded(path)
        with mock.patch.object(_fuse, "fuse_residual_sums", lambda *a: ({}, [])):
            without = loaded(path)
        shape = tuple(with_.expected_input.get("shape", (3, 32, 32)))[-3:]
        return without, with_, shape
    torch.manual_seed(0)
    if name == "user":
        model, shape = UserNet(), (3, 64, 64)
    else:
        model, shape = zoo.create(name, num_classes=10, width=0.5), (3, 32, 32)
    with_ = deployed(model)
    with mock.patch.object(_fuse, "fuse_residual_sums", lambda *a: ({}, [])):
        without = deployed(model)
    return without, with_, shape


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["resnet18_cifar", "user"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(2)
    retain_freed_memory()
    print("model | batch | without (ms) | with (ms) | ratio | max difference")
    for name in args.models:
        without, with_, shape = _models(name)
        for b in args.batch:
            x = torch.randn(b, *shape).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                diff = (without(x) - with_(x)).abs().max().item()
                forms = {"without": lambda m=without, x=x: m(x), "with": lambda m=with_, x=x: m(x)}
                t = compare(forms, warmup=2, repeats=args.repeats)
            a, c = t["without"].ms, t["with"].ms
            print(f"{name} | {b} | {a:.2f} | {c:.2f} | {a / c:.3f}x | {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
