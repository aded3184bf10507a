"""Errors of the decompositions (defined in :mod:`leanconv.errors`, re-exported here)."""

from ..errors import (
    DecompositionError,
    DegenerateDecompositionError,
    InvalidRankError,
    InvalidWeightError,
)

__all__ = [
    "DecompositionError",
    "DegenerateDecompositionError",
    "InvalidRankError",
    "InvalidWeightError",
]
