"""Finding and replacing layers inside any model, by qualified name.

Replacement works through the parent's ``_modules`` entry, so it reaches inside ``nn.Sequential``,
``nn.ModuleList``, ``nn.ModuleDict`` and any custom container; everything else about the model
(its type, hooks, buffers, the state dict keys of untouched layers) stays as it was.

Convolutions called functionally (``F.conv2d(x, self.weight)``) have no module to replace.
:func:`lift_functional_convs` traces such a model with ``torch.fx`` and turns each such call whose
weight is a parameter into an ``nn.Conv2d`` submodule, so the usual surgery applies; where tracing
fails, or the weight is not a parameter, the calls are listed as skipped with the reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LeanconvError


class LayerNotFoundError(LeanconvError, KeyError):
    """A qualified layer name that does not exist in the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def get_layer(model: nn.Module, name: str) -> nn.Module:
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


@dataclass
class LiftResult:
    model: nn.Module
    lifted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def lift_functional_convs(model: nn.Module) -> LiftResult:
    """Turn ``F.conv2d(x, <parameter>, <parameter or None>, ...)`` calls into ``nn.Conv2d``
    submodules of an ``fx.GraphModule`` (a new model; ``model`` is untouched)."""
    try:
        gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:  # tracing is best effort by nature
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return LiftResult(model, skipped={"(model)": f"torch.fx could not trace it: {msg}"})
    result = LiftResult(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (F.conv2d, torch.conv2d):
            continue
        args = list(node.args) + [None] * (7 - len(node.args))
        kw = dict(node.kwargs)
        x, w, b = args[0], kw.get("weight", args[1]), kw.get("bias", args[2])
        stride = kw.get("stride", args[3] if args[3] is not None else 1)
        padding = kw.get("padding", args[4] if args[4] is not None else 0)
        dilation = kw.get("dilation", args[5] if args[5] is not None else 1)
        groups = kw.get("groups", args[6] if args[6] is not None else 1)
        where = node.name
        if getattr(w, "op", None) != "get_attr" or (
            b is not None and getattr(b, "op", None) != "get_attr"
        ):
            result.skipped[where] = "its weight is computed, not a parameter"
            continue
        if any(isinstance(v, torch.fx.Node) for v in (stride, padding, dilation, groups)):
            result.skipped[where] = "its geometry is computed at run time"
            continue
        weight = gm.get_parameter(w.target) if _is_param(gm, w.target) else None
        bias = gm.get_parameter(b.target) if b is not None and _is_param(gm, b.target) else None
        if weight is None or (b is not None and bias is None):
            result.skipped[where] = "its weight is a buffer or constant, not a parameter"
            continue
        k, c_g = weight.shape[:2]
        conv = nn.Conv2d(c_g * groups, k, tuple(weight.shape[2:]), stride, padding, dilation,
                         groups, bias=bias is not None, device=weight.device,
                         dtype=weight.dtype)  # fmt: skip
        conv.weight = weight
        if bias is not None:
            conv.bias = bias
        name = f"lifted_{w.target.replace('.', '_')}"
        gm.add_submodule(name, conv)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (x,))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        result.lifted.append(name)
    gm.graph.eliminate_dead_code()
    still_used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in result.lifted:  # drop the old attribute: the parameter now lives in the conv
        for attr in ("weight", "bias"):
            param = getattr(gm.get_submodule(name), attr)
            for target in [t for t, p in gm.named_parameters(remove_duplicate=False) if p is param]:
                if target.startswith(name + ".") or target in still_used:
                    continue
                owner, _, leaf = target.rpartition(".")
                delattr(gm.get_submodule(owner) if owner else gm, leaf)
    gm.graph.lint()
    gm.recompile()
    return result


def _is_param(gm: nn.Module, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False
