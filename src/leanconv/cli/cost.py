"""``leanconv cost MODEL --input SHAPE``: per-layer parameters, MACs, FLOPs, bytes, intensity."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cost import Convention, count, parse_shape
from ..errors import InputShapeError
from ..loading import load_model
from ..report.files import write_text_atomic
from .common import console, handle_errors

# More rows than this are folded in the printed table (not in --json or --csv) unless --all or
# --depth: an RNN over 100 steps makes thousands of rows.
MAX_ROWS = 200


def _fold_message(total: int, shown: int, depth: int | None) -> str:
    by = "module" if depth is None else f"module cut to depth {depth}"
    return (
        f"{total:,} rows folded into {shown} (rows of one {by} and kind summed); --all prints "
        "every row, --json and --csv hold them all"
    )


def register(app: typer.Typer) -> None:
    @app.command("cost")
    @handle_errors
    def cost(
        model: str = typer.Argument(
            ..., help="zoo name, file.py:factory, TorchScript or .pt2 file"
        ),
        input: str = typer.Option(None, "--input", "-i", help="input shape, e.g. 1,3,224,224"),
        json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
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
        loaded = load_model(model, device="meta")
        shape = parse_shape(input) if input else loaded.default_input
        if shape is None:
            raise InputShapeError(f"model {model!r} needs --input, e.g. --input 1,3,224,224")
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
        report = count(loaded.module, shape, convention, name=loaded.name)
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
        if shown is not report:
            console.print(_fold_message(len(report.rows), len(shown.rows), fold_depth))
        if report.uncounted:
            ops = ", ".join(sorted({r.detail for r in report.uncounted}))
            console.print(f"[bold red]uncounted ops[/] (their MACs are unknown, not zero): {ops}")
