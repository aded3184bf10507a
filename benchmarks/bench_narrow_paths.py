"""The narrow kernel's two newer forms against the form each replaces, and against oneDNN.

- Channel-reducing layers (at most 4 output channels from a whole number of vectors of input
  channels: the first factor of a low-rank spatial SVD or Tucker-2 chain) run vectorised over
  their input channels (``kernels/narrow_reduce.h``); the form before vectorised over the output
  channels, 4 of a vector's 8 or 16 lanes used (``native.narrow_reduce_from(0)``).
- Layers of more than 8 output channels run with 16-float vectors where the machine has them
  (``kernels/narrow_width.h`` built for VW 16); the form before used vectors of 8 everywhere
  (``native.narrow_widest(8)``).
- Whole chains (a rank-2/4 spatial SVD, a rank-4 Tucker-2) with both changes, against the chain
  with neither.

Each layer as deployed (channels-last float32, bias and ReLU fused), the three forms interleaved
in one run, medians of ``--repeats`` rounds; ``--runs`` whole runs give the spread of each ratio.

    .venv/bin/python benchmarks/bench_narrow_paths.py --batch 64 1
"""

from __future__ import annotations

import contextlib
import statistics

import torch
from _interleave import kernel_args
from bench_narrow_chain import SVD, TUCKER, _convs
from torch import nn

from leanconv.algorithms import native
from leanconv.bench.timing import compare
from leanconv.nn import ChainConv2d, NarrowConv2d, PackedConv2d

# (in, out, kernel, spatial size): channel-reducing layers, then wider ones
REDUCING = [
    (32, 4, (3, 1), 32), (32, 2, (3, 1), 32), (32, 4, (1, 1), 32), (32, 4, (3, 3), 32),
    (16, 4, (3, 1), 32), (64, 4, (3, 1), 16), (64, 3, (3, 3), 16), (48, 4, (3, 1), 20),
    (128, 4, (1, 1), 8),
]  # fmt: skip
WIDE = [
    (4, 32, (1, 3), 32), (8, 32, (1, 3), 32), (16, 16, (3, 3), 32), (16, 32, (3, 3), 32),
    (32, 24, (3, 3), 32), (64, 12, (3, 3), 16), (16, 64, (3, 3), 16), (48, 48, (3, 3), 20),
    (16, 128, (3, 3), 8),
]  # fmt: skip
# (kind, in, rank, out, spatial size)
CHAINS = [(SVD, 32, 4, 32, 32), (SVD, 32, 2, 32, 32), (TUCKER, 32, 4, 32, 32),
          (SVD, 64, 4, 64, 16)]  # fmt: skip


def _before():
    """The kernel as it was: the output-channel path only, vectors of 8."""
    stack = contextlib.ExitStack()
    stack.enter_context(native.narrow_reduce_from(0))
    stack.enter_context(native.narrow_widest(8))
    return stack


def _row(label, batch, forms, runs, repeats):
    """Interleaved runs of the forms ``before``, ``now``, ``oneDNN``: one table row."""
    now, dnn, last = [], [], {}
    with torch.no_grad():
        for _ in range(runs):
            t = compare(forms, warmup=3, repeats=repeats)
            now.append(t["before"].ms / t["now"].ms)
            dnn.append(t["oneDNN"].ms / t["now"].ms)
            last = {k: v.ms for k, v in t.items()}
    spread = ", ".join(f"{r:.2f}" for r in now)
    print(f"{label} | {batch} | {last['before']:.3f} | {last['now']:.3f} | {last['oneDNN']:.3f} | "
          f"{statistics.median(now):.2f}x ({spread}) | {statistics.median(dnn):.2f}x")  # fmt: skip


def main() -> None:
    args = kernel_args([64, 1])
    wide = native.narrow_vector(64)
    print(f"widest vectors here: {wide} floats")
    print("layer (in->out kernel @ size) | batch | before ms | now ms | oneDNN ms | "
          "now vs before (runs) | now vs oneDNN")  # fmt: skip
    for shapes in (REDUCING, WIDE if wide > 8 else []):
        for cin, cout, kernel, size in shapes:
            torch.manual_seed(0)
            conv = nn.Conv2d(cin, cout, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
            onednn = PackedConv2d.from_conv(conv, activation="relu").eval()
            narrow = NarrowConv2d.from_conv(conv, activation="relu").eval()
            old = NarrowConv2d.from_conv(conv, activation="relu").eval()  # its own packing
            for batch in args.batch:
                x = torch.randn(batch, cin, size, size).contiguous(
                    memory_format=torch.channels_last
                )

                def before(old=old, x=x):
                    with _before():
                        return old(x)

                forms = {"before": before, "now": lambda n=narrow, x=x: n(x),
                         "oneDNN": lambda o=onednn, x=x: o(x)}  # fmt: skip
                with torch.no_grad():
                    assert (before() - narrow(x)).abs().max() <= 1e-4 * narrow(x).abs().max()
                _row(f"{cin}->{cout} {kernel[0]}x{kernel[1]} @ {size}", batch, forms, args.runs,
                     args.repeats)  # fmt: skip
    for kind, cin, rank, cout, size in CHAINS:
        torch.manual_seed(0)
        convs = _convs(kind, cin, rank, cout, 1)
        last = len(convs) - 1
        factors = [NarrowConv2d.from_conv(c, "relu" if i == last else None) for i, c in
                   enumerate(convs)]  # fmt: skip
        chain = ChainConv2d.from_chain(nn.Sequential(*factors)).eval()
        old = ChainConv2d.from_chain(nn.Sequential(*(NarrowConv2d.from_conv(
            c, "relu" if i == last else None) for i, c in enumerate(convs)))).eval()  # fmt: skip
        onednn = nn.Sequential(*(PackedConv2d.from_conv(c, "relu" if i == last else None)
                                 for i, c in enumerate(convs))).eval()  # fmt: skip
        for batch in args.batch:
            x = torch.randn(batch, cin, size, size).contiguous(memory_format=torch.channels_last)

            def before(old=old, x=x):
                with _before():
                    return old(x)

            forms = {"before": before, "now": lambda c=chain, x=x: c(x),
                     "oneDNN": lambda o=onednn, x=x: o(x)}  # fmt: skip
            _row(f"{kind} chain {cin}->{rank}->{cout} @ {size}", batch, forms, args.runs,
                 args.repeats)  # fmt: skip


if __name__ == "__main__":
    main()
