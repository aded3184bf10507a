"""What every command shares: the console, its registration, and turning errors into one line
and exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps

import typer
from rich.console import Console

from ..errors import LeanconvError

console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code`` (2 for a user's error)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn :class:`LeanconvError` (and ``ValueError`` from arguments) into a one-line error.

    Anything else is a bug in leanconv: one line too, and the traceback with LEANCONV_DEBUG=1.
    """

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (LeanconvError, ValueError) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except Exception as exc:
            if os.environ.get("LEANCONV_DEBUG"):
                raise
            fail(
                f"internal error ({type(exc).__name__}: {exc}); rerun with LEANCONV_DEBUG=1 "
                "for the traceback",
                code=1,
            )

    return wrapper


def command(app: typer.Typer, name: str) -> Callable[[Callable], Callable]:
    """Decorator: the function becomes the command ``name`` of ``app``, its errors handled by
    :func:`handle_errors`."""

    def register(fn: Callable) -> Callable:
        return app.command(name)(handle_errors(fn))

    return register
