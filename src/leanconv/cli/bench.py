"""``leanconv bench conv ...`` and ``leanconv bench model NAME``: algorithms against F.conv2d."""

from __future__ import annotations

import json

import torch
import typer
from rich.table import Table

from ..bench.timing import threads as fixed_threads
from ..cost import parse_shape
from ..errors import InputShapeError
from ..loading import load_model
from ..selection.benchmark import benchmark_conv
from ..spec import ConvSpec, normalise_tuple
from .arguments import Model, TrustCode, input_shape
from .common import command, console


def _table(title: str, rows) -> Table:
    from ..algorithms import native

    path = "compiled" if native.available() else f"PyTorch ({native.status()})"
    table = Table(title=title, caption="medians, interleaved with F.conv2d in the same run; "
                  "error relative to the largest float64 output; Winograd and FFT filters "
                  f"transformed once; Winograd transforms: {path}")  # fmt: skip
    for col in ("algorithm", "ms", "speedup", "max rel. error", "mean rel. error"):
        table.add_column(col, justify="left" if col == "algorithm" else "right")
    for r in rows:
        if r.skipped:
            table.add_row(r.name, f"[dim]n/a: {r.skipped[:70]}[/]", "", "", "")
            continue
        table.add_row(
            r.name, f"{r.ms:.3f}", f"{r.speedup:.2f}x",
            "" if r.max_error is None else f"{r.max_error:.1e}",
            "" if r.mean_error is None else f"{r.mean_error:.1e}",
        )  # fmt: skip
    return table


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Time the fast algorithms against F.conv2d.", no_args_is_help=True)
    app.add_typer(bench, name="bench")

    @command(bench, "conv")
    def bench_conv(
        in_channels: int = typer.Argument(...),
        out_channels: int = typer.Argument(...),
        kernel: int = typer.Argument(..., help="square kernel size"),
        size: str = typer.Option("56,56", "--size", help="spatial input size"),
        batch: int = typer.Option(1, "--batch"),
        stride: int = typer.Option(1, "--stride"),
        padding: str = typer.Option("same", "--padding", help="same, valid or an int"),
        groups: int = typer.Option(1, "--groups"),
        threads: int = typer.Option(None, "--threads"),
        repeats: int = typer.Option(7, "--repeats"),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """One convolution: every algorithm's latency, speedup and error."""
        spatial = parse_shape(size) if "," in size or "x" in size else int(size)
        h, w = normalise_tuple(spatial, 2, "--size", "")
        if groups < 1:
            raise ValueError(f"--groups {groups}: must be at least 1")
        if in_channels % groups or out_channels % groups:
            raise InputShapeError(
                f"channels {in_channels}->{out_channels} not divisible by groups={groups}"
            )
        pad = padding if padding in ("same", "valid") else int(padding)
        if pad == "same" and stride != 1:
            pad = kernel // 2
        spec = ConvSpec(in_channels, out_channels, kernel, (h, w), stride, pad, groups=groups,
                        batch=batch)  # fmt: skip
        g = torch.Generator().manual_seed(0)
        x = torch.randn(spec.input_shape, generator=g)
        wt = torch.randn(spec.weight_shape, generator=g)
        with fixed_threads(threads):
            rows = benchmark_conv(x, wt, None, stride, pad, 1, groups, repeats)
        if json_out:
            typer.echo(json.dumps([r.__dict__ for r in rows], indent=2))
            return
        console.print(_table(f"{in_channels}->{out_channels} {kernel}x{kernel} s{stride} g{groups} "
                             f"on {batch}x{in_channels}x{h}x{w}", rows))  # fmt: skip

    @command(bench, "model")
    def bench_model(
        model: Model,
        input: str = typer.Option(None, "--input", "-i"),
        threads: int = typer.Option(None, "--threads"),
        repeats: int = typer.Option(5, "--repeats"),
        json_out: bool = typer.Option(False, "--json"),
        trust_code: TrustCode = False,
    ) -> None:
        """Every convolution of MODEL: each algorithm's speedup against F.conv2d."""
        from torch import nn

        from ..compress.verify import capture_inputs

        loaded = load_model(
            model, deployed=False, trust_code=trust_code
        )  # a compressed model's factors as nn.Conv2d
        shape = input_shape(input, loaded, model, example=False)
        net = loaded.module.eval()
        names = [n for n, m in net.named_modules() if type(m) is nn.Conv2d]
        inputs = capture_inputs(net, names, torch.randn(shape))
        report = {}
        with fixed_threads(threads):
            for name in names:
                conv = net.get_submodule(name)
                x, w = inputs[name], conv.weight.detach()
                rows = benchmark_conv(x, w, None, conv.stride, conv.padding, conv.dilation,
                                      conv.groups, repeats)  # fmt: skip
                report[name] = rows
                if not json_out:
                    title = f"{name}: {tuple(w.shape)} s{conv.stride[0]} @ {tuple(x.shape)}"
                    console.print(_table(title, rows))
        if json_out:
            typer.echo(
                json.dumps({n: [r.__dict__ for r in rs] for n, rs in report.items()}, indent=2)
            )
