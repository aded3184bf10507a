"""Narrow pairs: two factors of a decomposed chain in one pass, against the same two factors in
two calls and against oneDNN.

Three forms of the same chain (a spatial SVD's ``kh x 1`` then ``1 x kw``, or a ``low_rank``
chain's ``3 x 3`` core then its 1x1), each as deployed, channels-last float32, ReLU on the last
factor: the factors on oneDNN (``nn.PackedConv2d``), the factors on the narrow kernel called one
after the other (``nn.NarrowConv2d`` in an ``nn.Sequential``), and the deployed chain
(``nn.ChainConv2d``), which runs the two narrow factors by the pair kernel
(``algorithms.narrow.conv2d_pair``). Interleaved in one run, medians of ``--repeats`` rounds;
``--runs`` whole runs give the spread of each ratio. The default shapes are the demo's
(ResNet-18 at half width on 32x32 inputs, ranks 8 and 16) and wider ones.

    .venv/bin/python benchmarks/bench_narrow_pair.py --batch 64 1
"""

from __future__ import annotations

import statistics

import torch
from _interleave import kernel_args
from torch import nn

from leanconv.bench.timing import compare
from leanconv.nn import ChainConv2d, NarrowConv2d, PackedConv2d

# (in, rank, out, first kernel, second kernel, spatial size, stride of the pair)
SHAPES = [
    (32, 8, 32, (3, 1), (1, 3), 32, 1), (32, 16, 32, (3, 1), (1, 3), 32, 1),
    (32, 16, 64, (3, 1), (1, 3), 32, 2), (64, 16, 64, (3, 1), (1, 3), 16, 1),
    (64, 32, 64, (3, 1), (1, 3), 16, 1), (128, 64, 128, (3, 1), (1, 3), 8, 1),
    (32, 8, 32, (3, 3), (1, 1), 32, 1), (64, 16, 64, (3, 3), (1, 1), 16, 1),
    (128, 16, 128, (3, 3), (1, 1), 8, 1),
]  # fmt: skip


def _forms(cin, rank, cout, k1, k2, stride):
    first = nn.Conv2d(cin, rank, k1, stride=(stride, 1) if k2 != (1, 1) else stride,
                      padding=(k1[0] // 2, k1[1] // 2), bias=False)  # fmt: skip
    second = nn.Conv2d(rank, cout, k2, stride=(1, stride) if k2 != (1, 1) else 1,
                       padding=(0, k2[1] // 2))  # fmt: skip
    onednn = nn.Sequential(PackedConv2d.from_conv(first),
                           PackedConv2d.from_conv(second, activation="relu"))  # fmt: skip
    factors = [NarrowConv2d.from_conv(first), NarrowConv2d.from_conv(second, activation="relu")]
    two_calls = nn.Sequential(*factors)
    pair = ChainConv2d.from_chain(nn.Sequential(*factors))
    return {"oneDNN": onednn.eval(), "two calls": two_calls.eval(), "pair": pair.eval()}


def main() -> None:
    args = kernel_args([64, 1])
    print(
        "chain (in->rank->out kernels @ size, stride) | batch | oneDNN ms | two calls ms | "
        "pair ms | pair vs two calls (runs) | pair vs oneDNN (runs) | GMAC/s of the pair"
    )
    for cin, rank, cout, k1, k2, size, stride in SHAPES:
        torch.manual_seed(0)
        forms = _forms(cin, rank, cout, k1, k2, stride)
        for batch in args.batch:
            x = torch.randn(batch, cin, size, size).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                y = forms["pair"](x)
                err = max((f(x) - y).abs().max().item() for f in forms.values())
                calls, dnn = [], []
                for _ in range(args.runs):
                    t = compare({k: (lambda f=f, x=x: f(x)) for k, f in forms.items()}, warmup=3,
                                repeats=args.repeats)  # fmt: skip
                    calls.append(t["two calls"].ms / t["pair"].ms)
                    dnn.append(t["oneDNN"].ms / t["pair"].ms)
            mid = forms["two calls"][0](x)
            macs = mid.numel() * cin * k1[0] * k1[1] + y.numel() * rank * k2[0] * k2[1]
            spread = ", ".join(f"{r:.2f}" for r in calls)
            spread_dnn = ", ".join(f"{r:.2f}" for r in dnn)
            print(f"{cin}->{rank}->{cout} {k1[0]}x{k1[1]}+{k2[0]}x{k2[1]} @ {size}, s{stride} | "
                  f"{batch} | {t['oneDNN'].ms:.3f} | {t['two calls'].ms:.3f} | "
                  f"{t['pair'].ms:.3f} | {statistics.median(calls):.2f}x ({spread}) | "
                  f"{statistics.median(dnn):.2f}x ({spread_dnn}) | "
                  f"{macs / (t['pair'].ms * 1e-3) / 1e9:.0f} (max diff {err:.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
