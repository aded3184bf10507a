"""``leanconv demo [--out DIR]``: train a reference CNN on the digits, compress it, report."""

from __future__ import annotations

from pathlib import Path

import typer

from ..demo import FINETUNE_EPOCHS, TRAIN_EPOCHS, run_demo
from .common import command, console
from .tables import before_after_table


def register(app: typer.Typer) -> None:
    @command(app, "demo")
    def demo(
        out: Path = typer.Option(Path("demo-out"), "--out", help="output directory"),
        force: bool = typer.Option(False, "--force", help="replace an existing --out"),
        speedup: float = typer.Option(2.5, "--speedup", help="target measured speedup"),
        train_epochs: int = typer.Option(TRAIN_EPOCHS, "--train-epochs"),
        epochs: int = typer.Option(FINETUNE_EPOCHS, "--epochs", help="fine-tuning epochs"),
    ) -> None:
        """The built-in default run: digits -> reference CNN -> compressed CNN, with a report."""
        result = run_demo(out, force, train_epochs, epochs, speedup, log=console.print)
        console.print(before_after_table(result))
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}")
