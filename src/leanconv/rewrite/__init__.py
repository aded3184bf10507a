"""Exact rewrites of a whole model for inference: they change its speed, not its function (up to
float32 rounding).

- :mod:`.fold`: each inference batch norm folded into the convolution before it;
- :mod:`.fuse`: each ReLU that follows a convolution computed by it, plain convolutions packed
  for oneDNN;
- :mod:`.residual` (applied by :mod:`.fuse`): each residual sum written in ``forward``, and the
  ReLU after it, computed by the layer before it.

All three ``leanconv.accelerate`` (:mod:`leanconv.selection.tuner`) and the compressed model's
deployment form (:mod:`leanconv.compress.deploy`) apply them.
"""

from .fold import fold_batchnorm, fold_conv_bn
from .fuse import fuse_activations

__all__ = ["fold_batchnorm", "fold_conv_bn", "fuse_activations"]
