"""Decompositions of trained convolution kernels: pure functions on tensors that return small
factor containers (:mod:`.factors`); the layers that run them live in :mod:`leanconv.nn`.

The package is also callable: ``leanconv.decompose(module, method=..., rank=...)`` returns a
drop-in replacement for one layer (see :func:`leanconv.compress.replace.decompose`); the layer
itself is left untouched.
"""

import sys
import types

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


class _CallablePackage(types.ModuleType):
    def __call__(self, module, method: str = "tucker2", rank="auto", **kwargs):
        from ..compress.replace import decompose

        return decompose(module, method, rank, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
