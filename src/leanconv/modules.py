"""The submodules of any model, by qualified name: finding, replacing, and the inputs they receive.

Shared by the tuner (:mod:`leanconv.selection`), the per-layer profile (:mod:`leanconv.bench`) and
model surgery (:mod:`leanconv.compress`). Replacement works through the parent's ``_modules``
entry, so it reaches inside ``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict`` and any custom
container; everything else about the model (its type, hooks, buffers, the state dict keys of
untouched layers) stays as it was. Inputs are captured by forward pre-hooks during one forward
pass under ``torch.no_grad`` (not ``inference_mode``: the fast modules track the weight's version).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .errors import LeanconvError

__all__ = [
    "FORMATS",
    "LayerNotFoundError",
    "capture_calls",
    "capture_inputs",
    "conv_layers",
    "get_layer",
    "input_at_batch",
    "replace_modules",
]


#: The memory layouts a model may run in, by the name reports and saved models use.
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def input_at_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Images (or a captured activation) repeated or cut to ``batch`` along the first
    dimension."""
    reps = -(-batch // x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch].contiguous()


class LayerNotFoundError(LeanconvError, KeyError):
    """A qualified layer name that does not exist in the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at ``name``; raises :class:`LayerNotFoundError` listing similar names."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        close = [
            n for n, _ in model.named_modules() if n and n.split(".")[-1] == name.split(".")[-1]
        ]
        hint = f"; similar: {', '.join(close[:5])}" if close else ""
        raise LayerNotFoundError(f"the model has no layer {name!r}{hint}") from None


def replace_modules(
    model: nn.Module, replacements: dict[str, nn.Module], inplace: bool = False
) -> nn.Module:
    """Put ``replacements[name]`` at each qualified ``name``; returns the (copied) model."""
    if not inplace:
        model = copy.deepcopy(model)
    for name in replacements:
        get_layer(model, name)  # all names checked before anything changes
    for name, module in replacements.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[child] = module
    return model


def conv_layers(model: nn.Module, types: tuple[type, ...] = (nn.Conv2d,)) -> list[str]:
    """Qualified names of the modules of exactly these types, in definition order."""
    return [n for n, m in model.named_modules() if n and type(m) in types]


def _capture(
    model: nn.Module, names: list[str], x, keep: Callable[[tuple], object], strict: bool
) -> dict[str, object]:
    """``keep(args)`` of the first call of each named layer while ``model(x)`` runs, in call
    order; with ``strict`` a layer that does not run raises."""
    captured: dict[str, object] = {}
    handles = [
        get_layer(model, n).register_forward_pre_hook(
            lambda m, a, n=n: captured.setdefault(n, keep(a))
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in captured]
    if strict and missing:
        raise LeanconvError(f"layers {missing} did not run on the calibration input")
    return captured


def capture_inputs(
    model: nn.Module, names: list[str], x, strict: bool = True
) -> dict[str, torch.Tensor]:
    """The input (first argument, detached) each named layer receives when ``model`` runs on
    ``x``. With ``strict`` (the default) a named layer that does not run raises; otherwise it is
    left out."""
    return _capture(model, names, x, lambda a: a[0].detach(), strict)


def capture_calls(model: nn.Module, names: list[str], x) -> dict[str, tuple]:
    """Every positional argument of each named layer's first call while ``model`` runs on ``x``
    (tensors detached and copied: an in-place module after it cannot change them); layers that do
    not run are left out."""

    def keep(args: tuple) -> tuple:
        return tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args)

    return _capture(model, names, x, keep, strict=False)
