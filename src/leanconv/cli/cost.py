"""``leanconv cost MODEL --input SHAPE``: per-layer parameters, MACs, FLOPs, bytes, intensity."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from ..atomic import write_text_atomic
from ..cost import Convention, count
from ..errors import ForwardError, InputShapeError
from ..loading import load_model
from .arguments import Model, TrustCode, input_spec, key_values, needs_input
from .common import command, console

# More rows than this are folded in the printed table (not in --json or --csv) unless --all or
# --depth: an RNN over 100 steps makes thousands of rows.
MAX_ROWS = 200


def _fold_message(total: int, shown: int, depth: int | None) -> str:
    by = "module" if depth is None else f"module cut to depth {depth}"
    return (
        f"{total:,} rows folded into {shown} (rows of one {by} and kind summed); --all prints "
        "every row, --json and --csv hold them all"
    )


def _count(spec: str, loaded, values: list, kwargs: dict, convention):
    """Count ``loaded``; a TorchScript archive loaded onto ``meta`` whose forward needs its
    constants' values (``.item()`` of a traced constant) is loaded again onto the CPU."""
    try:
        return count(loaded.module, *values, convention=convention, name=loaded.name, **kwargs)
    except ForwardError as first:
        if not isinstance(loaded.module, torch.jit.ScriptModule):
            raise
        on_cpu = load_model(spec, device="cpu")
        try:
            report = count(on_cpu.module, *values, convention=convention, name=loaded.name,
                           **kwargs)  # fmt: skip
        except ForwardError:
            raise first from None
        report.notes.append(f"loaded onto the CPU: on meta, {first}")
        return report


def register(app: typer.Typer) -> None:
    @command(app, "cost")
    def cost(
        model: Model,
        inputs: list[str] = typer.Option(
            None,
            "--input",
            "-i",
            help="input shape, e.g. 1,3,224,224, or 1,128:int64; "
            "once per positional tensor argument",
        ),  # fmt: skip
        arg: list[str] = typer.Option(
            None, "--arg", help="NAME=VALUE keyword argument of forward, a Python literal"
        ),
        json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
        trust_code: TrustCode = False,
        csv: Path = typer.Option(None, "--csv", help="also write the rows as CSV to this file"),
        depth: int = typer.Option(None, "--depth", help="merge rows below this module depth"),
        valid_taps: bool = typer.Option(
            False, "--valid-taps", help="count only taps on real input"
        ),
        count_bias: bool = typer.Option(False, "--count-bias", help="add bias additions to FLOPs"),
        count_norm: bool = typer.Option(False, "--count-norm", help="add normalisation to FLOPs"),
        count_act: bool = typer.Option(
            False, "--count-activations", help="add activations to FLOPs"
        ),
        count_all: bool = typer.Option(
            False, "--count-all", help="add bias, norm, activation, element-wise and pooling FLOPs"
        ),
        force: bool = typer.Option(False, "--force", help="overwrite an existing --csv file"),
        all_rows: bool = typer.Option(
            False, "--all", help=f"print every row (above {MAX_ROWS}, rows are folded by module)"
        ),
    ) -> None:
        """Count what every layer of MODEL costs on an input of the given shape."""
        values = [input_spec(text) for text in inputs or []]
        kwargs = key_values(arg, "--arg")
        loaded = load_model(model, device="meta", trust_code=trust_code)
        if not values and loaded.default_input is not None:
            values = [loaded.default_input]
        if not values and not kwargs:
            raise needs_input(model)
        if depth is not None and depth < 0:
            raise InputShapeError(f"--depth {depth} must be 0 or more")
        convention = Convention(
            count_bias=count_bias or count_all,
            count_norm=count_norm or count_all,
            count_activations=count_act or count_all,
            count_elementwise=count_all,
            count_pooling=count_all,
            valid_taps=valid_taps,
        )
        report = _count(model, loaded, values, kwargs, convention)
        if depth is not None:
            report = report.aggregate(depth)
        if csv is not None:
            write_text_atomic(csv, report.to_csv(), force=force)
        if json_out:
            typer.echo(report.to_json())
            return
        shown, fold_depth = report, None
        if depth is None and not all_rows and len(report.rows) > MAX_ROWS:
            shown, fold_depth = report.fold(MAX_ROWS)
        console.print(shown.to_table())
        for note in report.notes:
            console.print(f"note: {note}", soft_wrap=True, highlight=False)
        if shown is not report:
            console.print(_fold_message(len(report.rows), len(shown.rows), fold_depth))
        if report.uncounted:
            ops = ", ".join(sorted({r.detail for r in report.uncounted}))
            console.print(f"[bold red]uncounted ops[/] (their MACs are unknown, not zero): {ops}")
