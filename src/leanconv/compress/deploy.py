"""The deployment form of a model: how the compressed model runs, and how everything is timed.

A rewritten model is deployed after exact rewrites that change its speed but not its function
(up to float32 rounding), in this order:

1. batch norms folded into the convolutions before them (:mod:`.fold`, ``fold_bn``);
2. the planned fast algorithms switched on (:mod:`.algorithms`);
3. ReLUs fused into the convolutions before them, plain convolutions packed for oneDNN
   (:mod:`.fuse`, ``fuse``);
4. weights in ``memory_format`` (NCHW ``"contiguous"`` or ``"channels_last"``), which the
   activations then follow.

The planner times candidates in this form (:meth:`Deployment.layer`), the closed loop times the
assembled plan in it (:meth:`Deployment.apply`), and the pipeline deploys and saves it, so that
what is predicted is what runs. The original model is measured as given (in the faster of the two
layouts) and, for comparison, in this same form (``baseline`` in the report): the second ratio is
what the rewrites of the plan alone bring.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .algorithms import apply_algorithms
from .fold import fold_batchnorm
from .fuse import fuse_activations
from .measure import FORMATS, in_format

__all__ = ["Deployment"]


@dataclass(frozen=True)
class Deployment:
    """Which of the exact deployment rewrites apply (see the module docstring)."""

    fold_bn: bool = True
    fuse: bool = True
    memory_format: str = "channels_last"

    def __post_init__(self):
        if self.memory_format not in FORMATS:
            raise ValueError(
                f"memory_format={self.memory_format!r} is not one of {', '.join(FORMATS)}"
            )

    def apply(self, model: nn.Module, algorithms: dict[str, str] | None = None) -> nn.Module:
        """A deployed copy of ``model``, with ``algorithms`` (layer name -> algorithm)."""
        if self.fold_bn:
            model = fold_batchnorm(model)[0]
        model = apply_algorithms(model, algorithms or {})[0]
        if self.fuse:
            model = fuse_activations(model)[0]
        return in_format(model, self.memory_format).eval()

    def layer(self, module: nn.Module) -> nn.Module:
        """One layer (or a candidate's chain) as it runs deployed: convolutions packed, weights
        in the layout (its activation is timed with the rest of the model)."""
        if self.fuse:
            module = fuse_activations(module)[0]
        return in_format(module, self.memory_format).eval()
