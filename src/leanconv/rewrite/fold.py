"""Folding inference batch norm into the convolution before it (an exact rewrite).

``BN(conv(x)) = gamma (W x + b - mu) / sqrt(var + eps) + beta`` is the convolution with weight
``W' = W * s`` and bias ``b' = (b - mu) s + beta`` per output channel, ``s = gamma / sqrt(var +
eps)``. The batch norm becomes an ``nn.Identity``. Folded here: a ``BatchNorm2d`` that directly
follows, inside an ``nn.Sequential``, an ``nn.Conv2d`` or an ``nn.Sequential`` ending in one (the
chains that decomposition builds). Other placements are left as they are and listed.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..modules import replace_modules
from ._trace import module_calls, trace_forward


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    if type(module) is nn.Conv2d:
        return module
    if type(module) is nn.Sequential and len(module):
        return _last_conv(module[-1])
    return None


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` in place (``conv`` gains a bias if it had none)."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else (
            1 / torch.sqrt(bn.running_var + bn.eps)
        )  # fmt: skip
        shift = bn.bias if bn.affine else torch.zeros_like(scale)
        conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))).to(conv.weight))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        new_bias = (bias - bn.running_mean) * scale + shift
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias.to(conv.weight))
        else:
            conv.bias.copy_(new_bias)


def fold_batchnorm(
    model: nn.Module, inplace: bool = False
) -> tuple[nn.Module, list[str], list[str]]:
    """Fold every foldable batch norm; returns the model, the names of the folded norms (now
    ``nn.Identity``) and the names of the convolutions that absorbed them."""
    model = model if inplace else copy.deepcopy(model)
    names = {id(m): n for n, m in model.named_modules()}
    folded, convs = [], []
    for name, seq in list(model.named_modules()):
        if type(seq) is not nn.Sequential:
            continue
        for i in range(1, len(seq)):
            bn, conv = seq[i], _last_conv(seq[i - 1])
            if type(bn) is nn.BatchNorm2d and conv is not None and bn.track_running_stats:
                if conv.out_channels != bn.num_features:
                    continue
                fold_conv_bn(conv, bn)
                seq[i] = nn.Identity()
                folded.append(f"{name}.{i}" if name else str(i))
                convs.append(names[id(conv)])
    if not isinstance(model, nn.Sequential | nn.Conv2d):
        for norm, conv in _fold_called_norms(model):
            folded.append(norm)
            convs.append(names[id(conv)])
    return model.eval(), folded, convs


def _fold_called_norms(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The batch norms called in ``model.forward`` on a convolution's output folded into it (in
    place; see the module docstring): each norm's name and the convolution."""
    graph = trace_forward(model)
    if graph is None:
        return []
    calls = module_calls(graph)
    out = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or node.kwargs:
            continue
        bn = model.get_submodule(node.target)
        if type(bn) is not nn.BatchNorm2d or not bn.track_running_stats or len(node.args) != 1:
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                and calls[src.target] == 1):  # fmt: skip
            continue
        conv = _last_conv(model.get_submodule(src.target))
        if conv is None or conv.out_channels != bn.num_features:
            continue
        fold_conv_bn(conv, bn)
        replace_modules(model, {node.target: nn.Identity()}, inplace=True)
        out.append((node.target, conv))
    return out
