"""leanconv: exact convolution costs, fast convolution algorithms, compression of trained CNNs."""

from . import algorithms, compress, decompose, errors, nn, zoo
from .compress.serialize import load, save
from .cost import Convention, CostReport, conv_cost, count
from .cost.whatif import whatif
from .selection.tuner import accelerate
from .spec import ConvSpec

__version__ = "0.1.0"

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
