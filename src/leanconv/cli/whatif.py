"""``leanconv whatif C_IN C_OUT K --size H,W``: cheaper forms of one convolution side by side."""

from __future__ import annotations

import json

import typer

from ..cost.whatif import whatif as compare
from ..errors import InvalidSpecError
from ..spec import ConvSpec, normalise_padding
from .common import command, console


def _ints(text: str, arg: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InvalidSpecError(f"{arg} {text!r} is not a list of integers") from None
    if not values:
        raise InvalidSpecError(f"{arg} {text!r} is empty")
    return values


def _padding(text: str):
    """``same``, ``valid``, one int or one per dimension (for :class:`ConvSpec`), or
    ``left,right,top,bottom`` in the order of ``F.pad``."""
    if text in ("same", "valid"):
        return text
    values = _ints(text, "--padding")
    if len(values) == 4:  # 2-D; kernel, dilation and stride matter to "same" only
        return normalise_padding(values, 2, (), (), (), "", strict=True)
    return values


def register(app: typer.Typer) -> None:
    @command(app, "whatif")
    def whatif(
        in_channels: int = typer.Argument(..., help="input channels"),
        out_channels: int = typer.Argument(..., help="output channels"),
        kernel: str = typer.Argument(..., help="kernel size, e.g. 5 or 7,1"),
        size: str = typer.Option("56,56", "--size", help="spatial input size, e.g. 56,56"),
        stride: str = typer.Option("1", "--stride"),
        padding: str = typer.Option(
            "same", "--padding", help="same, valid, an int, per-dim h,w, or left,right,top,bottom"
        ),
        dilation: str = typer.Option("1", "--dilation"),
        groups: int = typer.Option(1, "--groups"),
        bias: bool = typer.Option(False, "--bias/--no-bias"),
        batch: int = typer.Option(1, "--batch"),
        squeeze: int = typer.Option(4, "--squeeze", help="1x1 bottleneck squeeze ratio"),
        multiplier: int = typer.Option(1, "--multiplier", help="depthwise depth multiplier"),
        alt_groups: int = typer.Option(8, "--alt-groups", help="groups of the grouped variant"),
        depth: int = typer.Option(2, "--depth", help="layers a wider-but-fewer layer replaces"),
        json_out: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Compare one convolution with its stacked, separable, bottleneck, depthwise, grouped,
        Winograd and wider-but-fewer forms (params, MACs, multiplications per output)."""
        spatial = _ints(size, "--size")
        spec = ConvSpec(
            in_channels,
            out_channels,
            _ints(kernel, "kernel"),
            input_size=spatial,
            stride=_ints(stride, "--stride"),
            padding=_padding(padding),
            dilation=_ints(dilation, "--dilation"),
            groups=groups,
            bias=bias,
            batch=batch,
        )
        table = compare(
            spec, squeeze=squeeze, multiplier=multiplier, groups=alt_groups, depth=depth
        )
        if json_out:
            typer.echo(json.dumps(table.as_dict(), indent=2))
        else:
            console.print(table.to_table())
