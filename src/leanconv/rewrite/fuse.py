"""The deployment form of the convolutions: ReLUs fused into them, weights packed for oneDNN.

Two exact rewrites, applied to a model whose batch norms are already folded (:mod:`.fold`):

- **Activation fusion.** Inside an ``nn.Sequential``, an ``nn.ReLU`` that follows a convolution
  (directly, or through the ``nn.Identity`` a folded batch norm left) is computed by that
  convolution, ``relu(conv(x))`` in the pass that writes its output, and becomes ``nn.Identity``.
  The convolution may be a plain ``nn.Conv2d``, a fast layer (Winograd, FFT) or a chain that
  decomposition built (an ``nn.Sequential`` ending in one). A ReLU elsewhere (called in a
  ``forward``, after a residual sum) is left as it is.
- **Packing.** Every plain ``nn.Conv2d`` becomes an :class:`leanconv.nn.PackedConv2d`: oneDNN on a
  weight reordered once instead of on every call (:mod:`leanconv.algorithms.packed`).

On the compressed VGG-16 of docs/benchmarks.md at batch 64 the 13 ReLU passes took 1.1 ms of
19 ms and the per-call weight reorders of the decomposed chains most of another; both are gone.
The result equals the model up to float32 rounding; the saved model records ``"fused": true``
and :func:`leanconv.load` fuses again (the weights stay those of the plain layers).
"""

from __future__ import annotations

import copy

from torch import nn

from ..modules import replace_modules
from ..nn.fast import PackedConv2d, _FastConv2d

__all__ = ["fuse_activations"]


def _absorb_relu(module: nn.Module) -> nn.Module | None:
    """``module`` computing ``relu(module(x))`` (changed in place, or a replacement), or ``None``
    when it cannot."""
    if isinstance(module, _FastConv2d) and module.activation is None:
        module.activation = "relu"
        return module
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return PackedConv2d.from_conv(module, activation="relu")
    if type(module) is nn.Sequential:
        last = _last_computing(module, len(module))
        if last >= 0:
            conv = _absorb_relu(module[last])
            if conv is not None:
                module[last] = conv
                return module
    return None


def _last_computing(seq: nn.Sequential, end: int) -> int:
    """The index of the last module before ``end`` that is not an ``nn.Identity`` (-1: none)."""
    j = end - 1
    while j >= 0 and type(seq[j]) is nn.Identity:
        j -= 1
    return j


def fuse_activations(
    model: nn.Module, inplace: bool = False, pack: bool = True
) -> tuple[nn.Module, list[str]]:
    """Fuse each ReLU that follows a convolution into it and, with ``pack``, pack every plain
    ``nn.Conv2d`` (see the module docstring; without it, only a plain convolution that absorbs a
    ReLU becomes packed). Returns the model (in eval mode) and the names of the ReLUs fused."""
    if pack and type(model) is nn.Conv2d and model.padding_mode == "zeros":
        return PackedConv2d.from_conv(model).eval(), []
    model = model if inplace else copy.deepcopy(model)
    fused = []
    for name, seq in list(model.named_modules()):
        if type(seq) is not nn.Sequential:
            continue
        for i in range(1, len(seq)):
            if type(seq[i]) is not nn.ReLU:
                continue
            j = _last_computing(seq, i)
            conv = _absorb_relu(seq[j]) if j >= 0 else None
            if conv is not None:
                seq[j] = conv
                seq[i] = nn.Identity()
                fused.append(f"{name}.{i}" if name else str(i))
    plain = {
        n: PackedConv2d.from_conv(m)
        for n, m in model.named_modules()
        if pack and n and type(m) is nn.Conv2d and m.padding_mode == "zeros"
    }
    return replace_modules(model, plain, inplace=True).eval(), fused
