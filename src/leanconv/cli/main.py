"""Entry point of the ``leanconv`` command. Each command lives in its own module and registers
itself on the app with ``register(app)``."""

from __future__ import annotations

import warnings

import typer

from ..bench.allocator import retain_freed_memory
from . import accelerate, bench, compress, cost, demo, profile, whatif, winograd

app = typer.Typer(
    name="leanconv",
    help="Exact convolution costs, fast convolution algorithms and compression of trained CNNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _command in (cost, whatif, winograd, profile, accelerate, bench, compress, demo):
    _command.register(app)


@app.callback()
def _start() -> None:
    # every command measures or may: freed memory stays in the process, so that a forward pass
    # does not pay thousands of page faults per call (bench/allocator.py)
    retain_freed_memory()
    # torch warns about its own tree specs when a torch.export program's module is copied (as
    # counting does): a note for torch's developers, not for the user of a .pt2 file
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`",
                            category=FutureWarning)  # fmt: skip


def main() -> None:
    app()


if __name__ == "__main__":
    main()
