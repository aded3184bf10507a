"""Decompositions of trained convolution kernels: pure functions on tensors that return small
factor containers (:mod:`.factors`); the layers that run them live in :mod:`leanconv.nn`."""

from .factors import (
    CPFactors,
    TTFactors,
    Tucker2Factors,
    cp_to_dense,
    tt_to_dense,
    tucker2_to_dense,
)

__all__ = [
    "CPFactors",
    "TTFactors",
    "Tucker2Factors",
    "cp_to_dense",
    "tt_to_dense",
    "tucker2_to_dense",
]
