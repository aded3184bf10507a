"""``leanconv accelerate MODEL --input SHAPE``: what ``leanconv.accelerate(model, x)`` keeps for
MODEL on this machine, layer by layer and end to end."""

from __future__ import annotations

import json

import torch
import typer
from rich.table import Table

from ..bench.timing import threads as fixed_threads
from ..errors import ForwardError, InputShapeError, LeanconvError, first_line
from ..loading import load_model
from ..selection.tuner import TuneReport, accelerate
from ..weights import load_weights
from .arguments import Model, TrustCode, input_shape
from .common import command, console, err_console


def _table(report: TuneReport, name: str, shape: tuple[int, ...]) -> Table:
    table = Table(
        title=f"{name} at {shape}: the fastest exact form of each layer",
        caption="medians, each layer's forms interleaved with it on its own input; error "
        "relative to the layer's largest output",
    )
    for col in ("layer", "geometry", "native ms", "kept", "ms", "speedup", "error"):
        table.add_column(col, justify="left" if col in ("layer", "geometry", "kept") else "right")
    for layer in report.layers:
        fast = layer.chosen != "native"
        table.add_row(
            layer.name, layer.geometry, f"{layer.native_ms:.3f}", layer.chosen,
            f"{layer.candidates[layer.chosen]:.3f}" if fast else "",
            f"{layer.speedup:.2f}x" if fast else "",
            f"{layer.errors[layer.chosen]:.1e}" if fast else "",
        )  # fmt: skip
    return table


def _summary(report: TuneReport) -> list[str]:
    if not report.native_ms:  # nothing folded, fused, moved or replaced: nothing to time
        return ["nothing changed: no layer ran faster in another form, and there was no batch "
                "norm to fold and no ReLU to fuse"]  # fmt: skip
    outcome = "kept the original (the accelerated model was slower)" if report.reverted else (
        f"{report.speedup:.2f}x faster, {len(report.chosen())} layers replaced, "
        f"{report.memory_format} layout")  # fmt: skip
    return [
        f"end to end: native {report.native_ms:.3f} ms, accelerated {report.accelerated_ms:.3f} "
        f"ms: {outcome}",
        f"batch norms folded: {len(report.folded)}, ReLUs fused: {len(report.fused)}; largest "
        f"deviation from the original: {report.max_error:.1e} of its largest output",
    ]


def _check_runs(net: torch.nn.Module, x: torch.Tensor) -> None:
    """A model that fails on ``x`` (a wrong ``--input``) is the user's error, said in one line."""
    try:
        with torch.no_grad():
            net.eval()(x)
    except Exception as exc:
        raise ForwardError(
            f"the model fails on an input of shape {tuple(x.shape)} (--input): {first_line(exc)}"
        ) from None


def register(app: typer.Typer) -> None:
    @command(app, "accelerate")
    def accelerate_cmd(
        model: Model,
        input: str = typer.Option(
            None, "--input", "-i", help="input shape, e.g. 1,3,224,224 (the batch it is tuned at)"
        ),
        weights: str = typer.Option(
            None,
            "--weights",
            help="trained weights (.safetensors, or a .pt/.pth state dict or checkpoint read with "
            "torch.load(weights_only=True)); without them the deviation is that of random ones",
        ),
        tolerance: float = typer.Option(
            1e-4, "--tolerance", help="a form's largest error, relative to the largest output"
        ),
        threads: int = typer.Option(None, "--threads", help="torch threads (default: all)"),
        repeats: int = typer.Option(7, "--repeats", help="timed runs per form (median)"),
        json_out: bool = typer.Option(False, "--json", help="print JSON"),
        trust_code: TrustCode = False,
        seed: int = typer.Option(0, "--seed", help="seed of the random example input"),
    ) -> None:
        """Time every exact fast form of each convolution and fully connected layer of MODEL on
        this machine (packed oneDNN, narrow kernel, Winograd, FFT, streaming matrix-vector),
        keep the fastest within --tolerance, and time the model end to end, as
        leanconv.accelerate(model, x) does in Python."""
        if repeats < 1:
            raise InputShapeError(f"--repeats {repeats} must be at least 1")
        if threads is not None and threads < 1:
            raise InputShapeError(f"--threads {threads} must be at least 1")
        if not tolerance > 0:
            raise InputShapeError(f"--tolerance {tolerance} must be positive")
        loaded = load_model(model, device="cpu", trust_code=trust_code)
        if isinstance(loaded.module, torch.jit.ScriptModule):
            raise LeanconvError(
                f"{model!r} is a TorchScript program: its layers cannot be replaced; give the "
                "model's file.py:factory"
            )
        net = loaded.module
        if weights is not None:
            say = err_console.print if json_out else console.print  # stdout: the JSON alone
            load_weights(net, weights, log=say)
        shape = input_shape(input, loaded, model)
        torch.manual_seed(seed)
        x = torch.randn(shape)
        _check_runs(net, x)
        with fixed_threads(threads):
            _, report = accelerate(net, x, tolerance=tolerance, repeats=repeats,
                                   num_threads=threads)  # fmt: skip
        if json_out:
            typer.echo(json.dumps(report.as_dict(), indent=2))
            return
        console.print(_table(report, loaded.name, tuple(shape)))
        for line in [*_summary(report), *report.notes]:
            console.print(line, soft_wrap=True, highlight=False)
