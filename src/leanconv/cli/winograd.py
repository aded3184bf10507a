"""``leanconv winograd M R``: the exact Toom-Cook transforms of F(m, r) and their multiplication
counts (per tile, per output, against direct correlation; 1-D and nested 2-D)."""

from __future__ import annotations

import json
from contextlib import nullcontext
from fractions import Fraction

import typer
from rich.table import Table

from ..algorithms.toomcook import nest, verify, winograd_transform
from ..cost.algorithms import TileMultiplications
from ..errors import InvalidSpecError
from .common import console, err_console, handle_errors

# The largest m + r (tile plus kernel; F(m, r) interpolates at m + r - 1 points) the command
# derives. The exact Fraction derivation is not what limits it: describe() takes 0.01 s at
# m + r = 16, 0.11 s at 32, 0.26 s at 40, 1.3 s at 56, 34 s at 112 (m = r = 56) and minutes at
# m = r = 100 (measured on this machine; most of it in verify). The transforms are useless in
# floating point long before: the default points reach +-8 at m + r = 33 (+-9 from 34) and the
# entries of F(29,3) span 1e-34 to 1e25, so the relative error of the convolution computed with
# them (random inputs against the exact result, F(m + r - 3, 3); other splits of m + r within 3x)
# grows about 10x per added point:
#   m + r              16       22       24       26       32       33       34       40
#   1-D float32     4e-04    2e-01    2e+00    4e+01    2e+04        -    4e+05    1e+15
#   1-D float64     8e-13    3e-10    3e-09    5e-08    5e-05    8e-05    1e-03    1e+00
#   2-D float64     1e-09    7e-04    1e-02    7e+00    2e+06        -    3e+09    1e+16
# Up to 33 the 1-D algorithm keeps 4 correct digits in float64; from 34 on at most 3.
MAX_M_PLUS_R = 33


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


def _counts(counts: TileMultiplications) -> dict:
    return {
        "per_tile": counts.per_tile,
        "per_output": _fmt(counts.per_output),
        "direct_per_tile": counts.direct_per_tile,
        "direct_per_output": _fmt(counts.direct_per_output),
        "reduction": _fmt(counts.reduction),
    }


def check_size(m: int, r: int) -> None:
    """Refuse ``m + r > MAX_M_PLUS_R``: such transforms are useless in float (see the bound)."""
    if m >= 1 and r >= 1 and m + r > MAX_M_PLUS_R:
        raise InvalidSpecError(
            f"F({m},{r}): m + r = {m + r} is above {MAX_M_PLUS_R}. Its transforms interpolate at "
            f"m + r - 1 = {m + r - 1} points; derived exactly (fractions.Fraction), their entries "
            f"grow so fast that beyond {MAX_M_PLUS_R - 1} points a convolution computed with them "
            "in float arithmetic keeps no correct digit in float32 and at most 3 of float64's 16 "
            f"(none from m + r = 40). Choose m + r <= {MAX_M_PLUS_R} (e.g. F(6,3) or F(4,5))"
        )


def describe(m: int, r: int, points: list[str] | None = None, fractions: str = "G") -> dict:
    """Everything the command prints, as plain data (strings for fractions)."""
    check_size(m, r)
    t = winograd_transform(m, r, points, fractions)  # type: ignore[arg-type]
    verify(t)
    t2 = nest(t)
    one_d, two_d = _counts(t.counts), _counts(t2.counts)
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


def _matrix_table(rows: list[list[str]]) -> Table:
    """The matrix alone: a table's title wraps to the table's width (``A^T`` over a 1 x 1 matrix
    printed one letter per line), so callers print the title on its own line."""
    table = Table(show_header=False, box=None, pad_edge=False)
    for _ in rows[0]:
        table.add_column(justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def _stderr_is_tty() -> bool:
    """A spinner on stderr while deriving, only on a terminal (the largest sizes allowed take
    about 0.1 s here; a slower machine still shows it is working)."""
    return err_console.is_terminal


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
        check_size(m, r)
        progress = err_console.status(f"deriving F({m},{r}) ...") if _stderr_is_tty() else None
        with progress or nullcontext():
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
            console.print(title, highlight=False)
            console.print(_matrix_table(info[key]))
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
