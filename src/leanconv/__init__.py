"""leanconv: exact convolution costs, fast convolution algorithms, compression of trained CNNs."""

from . import decompose, errors
from .cost import Convention, CostReport, conv_cost, count
from .cost.whatif import whatif
from .spec import ConvSpec

__version__ = "0.1.0"

__all__ = [
    "ConvSpec",
    "Convention",
    "CostReport",
    "conv_cost",
    "count",
    "decompose",
    "errors",
    "whatif",
    "__version__",
]
