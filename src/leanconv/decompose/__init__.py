"""Decompositions of trained convolution kernels: pure functions on tensors that return small
factor containers (:mod:`.factors`); the layers that run them live in :mod:`leanconv.nn`.

The package is also callable: ``leanconv.decompose(module, method=..., rank=...)`` returns a
drop-in replacement for one layer (see :func:`leanconv.compress.replace.decompose`; the call is
attached in ``leanconv/__init__.py``, which stands above both packages); the layer itself is left
untouched.
"""

from ..errors import (
    DecompositionError,
    DegenerateDecompositionError,
    InvalidRankError,
    InvalidWeightError,
)
from .cp import CPResult, cp_als, max_cp_rank
from .depthwise import DepthwiseSeparableFactors, depthwise_separable
from .factors import (
    CPFactors,
    TTFactors,
    Tucker2Factors,
    cp_to_dense,
    tt_to_dense,
    tucker2_to_dense,
)
from .grouped import GroupedFactors
from .rank import (
    VBMFResult,
    budget_rank,
    energy_rank,
    factor_specs,
    output_error,
    vbmf,
    vbmf_rank,
)
from .svd import LowRankFactors, SpatialSVDFactors, low_rank, spatial_svd
from .tt import max_tt_ranks, tensor_train
from .tucker import tucker2

# ``cp`` stays the submodule (``leanconv.decompose.cp.cp`` is the function); ``cp_als`` returns
# the diagnostics as well.
__all__ = [
    "CPFactors",
    "CPResult",
    "DecompositionError",
    "DegenerateDecompositionError",
    "DepthwiseSeparableFactors",
    "GroupedFactors",
    "InvalidRankError",
    "InvalidWeightError",
    "LowRankFactors",
    "METHODS",
    "Method",
    "register",
    "SpatialSVDFactors",
    "TTFactors",
    "Tucker2Factors",
    "VBMFResult",
    "budget_rank",
    "cp_als",
    "cp_to_dense",
    "depthwise_separable",
    "energy_rank",
    "factor_specs",
    "low_rank",
    "max_cp_rank",
    "max_tt_ranks",
    "output_error",
    "spatial_svd",
    "tensor_train",
    "tt_to_dense",
    "tucker2",
    "tucker2_to_dense",
    "vbmf",
    "vbmf_rank",
]

from . import methods as _registry  # noqa: E402 (every method above has registered)
from .methods import Method, register  # noqa: E402

#: The decomposition methods, in the order their modules registered them (see :mod:`.methods`).
METHODS = _registry.names()
