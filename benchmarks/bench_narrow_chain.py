"""Narrow chains: a decomposed layer's factors in one pass, against the same factors in one call
each and against oneDNN.

Three forms of the same chain (a spatial SVD's ``kh x 1`` then ``1 x kw``, a ``low_rank`` chain's
``3 x 3`` core then its 1x1, a Tucker-2 chain's 1x1, ``3 x 3`` core and 1x1), each as deployed,
channels-last float32, ReLU on the last factor: the factors on oneDNN (``nn.PackedConv2d``), the
factors on the narrow kernel called one after the other (``nn.NarrowConv2d`` in an
``nn.Sequential``), and the deployed chain (``nn.ChainConv2d``), which runs its narrow factors in
one pass (``algorithms.narrow.conv2d_chain``). Interleaved in one run, medians of ``--repeats``
rounds; ``--runs`` whole runs give the spread of each ratio. The default shapes are the demo's
(ResNet-18 at half width on 32x32 inputs, ranks 8 and 16), a 64x64 user-style model's (24 and
48 channels at 40x40 and 20x20) and wider ones.

    .venv/bin/python benchmarks/bench_narrow_chain.py --batch 64 1
"""

from __future__ import annotations

import statistics

import torch
from _interleave import kernel_args
from torch import nn

from leanconv.bench.timing import compare
from leanconv.nn import ChainConv2d, NarrowConv2d, PackedConv2d

SVD, CORE, TUCKER = "svd", "core+1x1", "tucker2"
# (kind, in, rank, out, spatial size, stride)
SHAPES = [
    (SVD, 32, 8, 32, 32, 1), (SVD, 32, 16, 32, 32, 1), (SVD, 32, 16, 64, 32, 2),
    (SVD, 24, 8, 24, 40, 1), (SVD, 64, 16, 64, 16, 1), (SVD, 128, 64, 128, 8, 1),
    (CORE, 32, 8, 32, 32, 1), (CORE, 64, 16, 64, 16, 1), (CORE, 128, 16, 128, 8, 1),
    (TUCKER, 32, 8, 32, 32, 1), (TUCKER, 24, 16, 24, 40, 1), (TUCKER, 48, 16, 48, 20, 1),
    (TUCKER, 64, 16, 64, 16, 1), (TUCKER, 128, 32, 128, 8, 1),
]  # fmt: skip


def _convs(kind, cin, rank, cout, stride) -> list[nn.Conv2d]:
    if kind == SVD:
        return [nn.Conv2d(cin, rank, (3, 1), (stride, 1), (1, 0), bias=False),
                nn.Conv2d(rank, cout, (1, 3), (1, stride), (0, 1))]  # fmt: skip
    core = nn.Conv2d(cin if kind == CORE else rank, rank, 3, stride, 1, bias=False)
    last = nn.Conv2d(rank, cout, 1)
    return [core, last] if kind == CORE else [nn.Conv2d(cin, rank, 1, bias=False), core, last]


def _forms(convs: list[nn.Conv2d]) -> dict[str, nn.Module]:
    def act(i):
        return "relu" if i == len(convs) - 1 else None

    onednn = nn.Sequential(*(PackedConv2d.from_conv(c, act(i)) for i, c in enumerate(convs)))
    factors = [NarrowConv2d.from_conv(c, act(i)) for i, c in enumerate(convs)]
    one_by_one = nn.Sequential(*factors)
    chain = ChainConv2d.from_chain(nn.Sequential(*factors))
    return {"oneDNN": onednn.eval(), "one by one": one_by_one.eval(), "chain": chain.eval()}


def main() -> None:
    args = kernel_args([64, 1])
    print(
        "chain (in->rank->out @ size, stride) | batch | oneDNN ms | one by one ms | chain ms | "
        "chain vs one by one (runs) | chain vs oneDNN (runs) | GMAC/s of the chain"
    )
    for kind, cin, rank, cout, size, stride in SHAPES:
        torch.manual_seed(0)
        convs = _convs(kind, cin, rank, cout, stride)
        forms = _forms(convs)
        for batch in args.batch:
            x = torch.randn(batch, cin, size, size).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                y = forms["chain"](x)
                err = max((f(x) - y).abs().max().item() for f in forms.values())
                calls, dnn = [], []
                for _ in range(args.runs):
                    t = compare({k: (lambda f=f, x=x: f(x)) for k, f in forms.items()}, warmup=3,
                                repeats=args.repeats)  # fmt: skip
                    calls.append(t["one by one"].ms / t["chain"].ms)
                    dnn.append(t["oneDNN"].ms / t["chain"].ms)
                macs, h = 0, x
                for conv in convs:
                    h = conv(h)
                    macs += h.numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            spread = ", ".join(f"{r:.2f}" for r in calls)
            spread_dnn = ", ".join(f"{r:.2f}" for r in dnn)
            print(f"{kind} {cin}->{rank}->{cout} @ {size}, s{stride} | {batch} | "
                  f"{t['oneDNN'].ms:.3f} | {t['one by one'].ms:.3f} | {t['chain'].ms:.3f} | "
                  f"{statistics.median(calls):.2f}x ({spread}) | "
                  f"{statistics.median(dnn):.2f}x ({spread_dnn}) | "
                  f"{macs / (t['chain'].ms * 1e-3) / 1e9:.0f} (max diff {err:.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
