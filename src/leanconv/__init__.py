"""leanconv: exact convolution costs, fast convolution algorithms, compression of trained CNNs."""

from . import algorithms, compress, decompose, errors, nn, zoo
from .compress.serialize import load, save
from .cost import Convention, CostReport, conv_cost, count
from .cost.whatif import whatif
from .selection.tuner import accelerate
from .spec import ConvSpec

__version__ = "0.1.0"


class _CallableDecompose(type(decompose)):
    """``leanconv.decompose(module, method, rank)``: the package of decompositions, called, gives
    one layer's drop-in replacement (it is attached here, above both ``decompose`` and
    ``compress``, so that neither imports the other's layer)."""

    def __call__(self, module, method: str = "tucker2", rank="auto", **kwargs):
        from .compress.replace import decompose as replacement

        return replacement(module, method, rank, **kwargs)


decompose.__class__ = _CallableDecompose

__all__ = [
    "ConvSpec",
    "Convention",
    "accelerate",
    "CostReport",
    "compress",
    "conv_cost",
    "count",
    "decompose",
    "algorithms",
    "errors",
    "nn",
    "zoo",
    "load",
    "save",
    "whatif",
    "__version__",
]
