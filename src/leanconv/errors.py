"""Errors raised by leanconv.

Every error names the problem and where it is (a layer name, an argument). The command line turns
any :class:`LeanconvError` into a one-line message and exit code 2.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """``"RuntimeError: <the first line of its message>"``: an exception from the user's code (a
    model's forward pass) as one line of a leanconv error."""
    said = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {said}"


class LeanconvError(Exception):
    """Base class of every error leanconv raises on purpose."""


class InvalidSpecError(LeanconvError, ValueError):
    """A convolution (or other operation) whose geometry PyTorch would reject."""


class InputShapeError(LeanconvError, ValueError):
    """An input shape that cannot be parsed or does not fit the model."""


class ModelLoadError(LeanconvError):
    """A model that does not exist, cannot be loaded, or whose factory raised."""


class ForwardError(LeanconvError):
    """A model whose forward pass fails on the given input."""


class UnsafeFileError(LeanconvError):
    """A file that would need an untrusted pickle to load."""


class OutputExistsError(LeanconvError):
    """An output path that exists and would be overwritten without ``--force``."""


class DecompositionError(LeanconvError):
    """A decomposition that cannot be computed or whose result cannot be trusted."""


class InvalidRankError(DecompositionError, ValueError):
    """A rank (or ranks, multiplier, fraction, target ratio) that is not a valid choice."""


class InvalidWeightError(DecompositionError, ValueError):
    """A weight of the wrong shape, all zero, or holding NaN or infinity."""


class DegenerateDecompositionError(DecompositionError):
    """CP-ALS diverged into cancelling components (Phan et al. 2020); ``result`` holds the
    diagnostics (:class:`leanconv.decompose.cp.CPResult`)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
