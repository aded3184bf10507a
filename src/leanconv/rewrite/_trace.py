"""The forward of a user's model as a graph of calls (``torch.fx``), for the exact rewrites that
need to see what a ``forward`` calls: a batch norm applied to a convolution's output
(:mod:`.fold`), a ReLU applied to it (:mod:`.fuse`), a residual sum taken of it
(:mod:`.residual`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..nn.fast import _FastConv2d

__all__ = ["module_calls", "producer", "relu_input", "trace_forward"]


class _Tracer(fx.Tracer):
    """Traces down to convolutions: a plain, packed or fast convolution is one call (its own
    forward has shape checks that a trace cannot follow), and so are a fully connected layer
    (:class:`leanconv.nn.GemvLinear`'s forward checks its input's rows) and a decomposed
    layer's chain (the forward keeps calling it by its name, where the deployment may put a
    switchable chain, :class:`leanconv.nn.ChainConv2d`)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, nn.Conv2d | _FastConv2d | nn.Linear):
            return True
        if isinstance(m, nn.Sequential):  # by type only: while tracing, parameters are proxies
            kids = [k for k in m._modules.values() if type(k) is not nn.Identity]
            if len(kids) >= 2 and all(isinstance(k, nn.Conv2d | _FastConv2d) for k in kids):
                return True
        return super().is_leaf_module(m, qualname)


def trace_forward(model: nn.Module) -> fx.Graph | None:
    """``model``'s forward traced down to convolutions and chains, in eval mode and without
    gradients (as it will run: the rewrites are for inference, and Python branches on
    ``self.training`` or the grad mode are fixed as traced; the model is left in eval mode);
    ``None`` for a forward that does not trace (data-dependent control flow, say)."""
    model.eval()
    try:
        with torch.no_grad():  # as it will run (a forward may branch on the grad mode)
            return _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - any forward that does not trace is left as it is
        return None


def module_calls(graph: fx.Graph) -> dict[str, int]:
    """How many times the traced forward calls each module, by name (a module called more than
    once cannot take a rewrite meant for one of its calls)."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)


def _is_relu(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    return node.op == "call_module" and type(root.get_submodule(node.target)) is nn.ReLU


def relu_input(node: fx.Node, root: nn.Module) -> fx.Node | None:
    """The input of ``node`` if ``node`` applies a ReLU (and nothing else) to it."""
    if not _is_relu(node, root):
        return None
    extra = set(node.kwargs) - {"inplace"}
    args = [a for a in node.args[1:] if a is not False]  # F.relu(x, False) / (x, True)
    src = node.args[0] if node.args else None
    return src if isinstance(src, fx.Node) and not extra and len(args) <= 1 else None


def producer(node: fx.Node, model: nn.Module) -> fx.Node:
    """``node``, or the node whose output it passes on through ``nn.Identity`` calls (a folded
    batch norm), each used once."""
    while (node.op == "call_module" and len(node.users) == 1 and node.args
           and type(model.get_submodule(node.target)) is nn.Identity
           and isinstance(node.args[0], fx.Node)):  # fmt: skip
        node = node.args[0]
    return node
