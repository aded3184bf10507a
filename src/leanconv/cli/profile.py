"""``leanconv profile MODEL --input SHAPE``: cost next to measured latency, per layer."""

from __future__ import annotations

import json

import torch
import typer

from ..bench.layers import profile as run_profile
from ..bench.timing import threads as fixed_threads
from ..errors import InputShapeError
from ..loading import load_model
from .arguments import Model, TrustCode, input_shape
from .common import command, console


def register(app: typer.Typer) -> None:
    @command(app, "profile")
    def profile(
        model: Model,
        input: str = typer.Option(None, "--input", "-i", help="input shape, e.g. 1,3,224,224"),
        threads: int = typer.Option(None, "--threads", help="torch threads (default: all)"),
        repeats: int = typer.Option(10, "--repeats", help="timed runs per layer (median)"),
        json_out: bool = typer.Option(False, "--json", help="print JSON"),
        trust_code: TrustCode = False,
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Measure every layer of MODEL on this machine: latency, GFLOP/s, share of time,
        fraction of the machine's peak and whether it is compute- or memory-bound."""
        if repeats < 1:
            raise InputShapeError(f"--repeats {repeats} must be at least 1")
        if threads is not None and threads < 1:
            raise InputShapeError(f"--threads {threads} must be at least 1")
        loaded = load_model(model, device="cpu", trust_code=trust_code)
        torch.manual_seed(seed)
        x = torch.randn(input_shape(input, loaded, model))
        with fixed_threads(threads):
            report = run_profile(loaded.module, x, loaded.name, repeats=repeats)
        if json_out:
            typer.echo(json.dumps(report.as_dict(), indent=2))
            return
        console.print(report.to_table())
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in report.share_by_kind().items())
        if shares:
            console.print(f"time by layer kind: {shares}")
        for note in report.notes:
            console.print(f"note: {note}", soft_wrap=True, highlight=False)
