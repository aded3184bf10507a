"""``leanconv winograd M R``: the exact Toom-Cook transforms of F(m, r) and their multiplication
counts (per tile, per output, against direct correlation; 1-D and nested 2-D)."""

from __future__ import annotations

import json
from fractions import Fraction

import typer
from rich.table import Table

from ..algorithms.toomcook import nest, verify, winograd_transform
from ..errors import InvalidSpecError
from .common import console, handle_errors


def _fmt(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _parse_points(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [p.strip() for p in text.replace(";", ",").split(",")]
    if any(not p for p in items):
        raise InvalidSpecError(
            f"--points {text!r}: give comma-separated numbers such as 0,-1,1,1/2"
        )
    return items


def _counts(m: int, r: int, per_tile: int, direct: int) -> dict:
    per_output = Fraction(per_tile, m)
    return {
        "per_tile": per_tile,
        "per_output": _fmt(per_output),
        "direct_per_tile": direct,
        "direct_per_output": _fmt(Fraction(direct, m)),
        "reduction": _fmt(Fraction(direct, per_tile)),
    }


def describe(m: int, r: int, points: list[str] | None = None, fractions: str = "G") -> dict:
    """Everything the command prints, as plain data (strings for fractions)."""
    t = winograd_transform(m, r, points, fractions)  # type: ignore[arg-type]
    verify(t)
    t2 = nest(t)
    one_d = _counts(m, r, t.multiplications, t.direct_multiplications)
    two_d = _counts(m * m, r * r, t2.multiplications, t2.direct_multiplications)
    return {
        "name": t.name,
        "m": m,
        "r": r,
        "points": [_fmt(p) for p in t.points],
        "infinity": True,
        "fractions": fractions,
        **t.as_strings(),
        "multiplications": {**one_d, "2d": {"name": t2.name, **two_d}},
        "verified": True,
    }


def _matrix_table(title: str, rows: list[list[str]]) -> Table:
    table = Table(title=title, show_header=False, box=None, pad_edge=False, title_justify="left")
    for _ in rows[0]:
        table.add_column(justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def register(app: typer.Typer) -> None:
    @app.command("winograd")
    @handle_errors
    def winograd(
        m: int = typer.Argument(..., help="Outputs per tile (m >= 1)."),
        r: int = typer.Argument(..., help="Filter taps (r >= 1)."),
        points: str | None = typer.Option(
            None,
            "--points",
            help="Comma-separated finite interpolation points (m + r - 2 of them), e.g. "
            "'0,-1,1,1/2,-2' (write --points=-1,0,1 when the first is negative); infinity is "
            "always added. Default: Barabasz et al. 2020.",
        ),
        fractions: str = typer.Option(
            "G", "--fractions", help="Matrix that carries the fractions: G, BT or AT."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Exact Toom-Cook transforms of F(M, R), verified, with multiplication counts."""
        info = describe(m, r, _parse_points(points), fractions)
        if as_json:
            print(json.dumps(info, indent=2))
            return
        console.print(
            f"[bold]{info['name']}[/]  points: {', '.join(info['points'] + ['inf'])}  "
            f"(fractions in {fractions}; verified exactly)",
            highlight=False,
        )
        for key, title in (("AT", "A^T"), ("G", "G"), ("BT", "B^T")):
            console.print(_matrix_table(title, info[key]))
        mul = info["multiplications"]
        table = Table(title="multiplications", title_justify="left")
        for col in (
            "algorithm",
            "per tile",
            "per output",
            "direct per tile",
            "direct per output",
            "fewer",
        ):
            table.add_column(col, justify="right" if col != "algorithm" else "left")
        for name, row in ((info["name"], mul), (mul["2d"]["name"], mul["2d"])):
            table.add_row(
                name,
                str(row["per_tile"]),
                row["per_output"],
                str(row["direct_per_tile"]),
                row["direct_per_output"],
                f"{float(Fraction(row['reduction'])):.2f}x",
            )
        console.print(table)
