"""A residual block's sum (and the ReLU after it) computed by the convolution before it.

A residual block ends in ``relu(F(x) + shortcut)`` (He et al. 2016): written out, a convolution
writes ``F(x)``, one pass adds the shortcut and one more applies the ReLU. The layer before the
sum can take both in the pass that writes its output:

    y = relu(conv(h) + b + shortcut)

the narrow direct kernel as it writes each output vector (:mod:`leanconv.algorithms.narrow`: the
last factor of most decomposed layers), and Winograd's compiled output transforms likewise; the
other layers add it in place on their fresh output, then apply the ReLU (oneDNN's binary
post-operation, which takes the sum in the convolution's pass, measured 0.93-0.98x of that). On
a user's ResNet-style model compressed 2.4x (three blocks, 32x32 inputs, batch 64, 2-core AMD
EPYC) the sums and ReLUs took 11-19 % of the compressed model's time; with this rewrite it runs
1.08-1.11x faster (docs/benchmarks.md).

In the traced forward (:mod:`._trace`) this rewrite finds a sum ``a + b`` (``+``,
``torch.add``, ``.add()``, ``.add_()``) one of whose operands is the output of a convolution, a
decomposed layer's chain, or either followed by ``nn.Identity`` calls (a folded batch norm), used
by nothing else and produced by a module called once; the ReLU that takes the sum, when the sum
is used by nothing else, goes with it. The module is then called as ``module(h, shortcut)`` at
the sum's place. It must be able to take the shortcut:

- a plain ``nn.Conv2d`` (zero padding) becomes an :class:`leanconv.nn.PackedConv2d`;
- a fast layer (:mod:`leanconv.nn.fast`) with no activation of its own;
- a decomposed layer's chain that composes into one convolution, ending in one of the above,
  becomes a :class:`leanconv.nn.ChainConv2d` (it keeps switching to its composite by batch size).

The result is exact up to float32 rounding (the sum is taken in float32 before the ReLU, as the
forward did). Where the shortcut does not have the output's shape, or no kernel applies (autograd
recording, other devices or dtypes), the module computes the same sum with PyTorch (broadcast as
``+``).
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from ..nn.chain import ChainConv2d
from ..nn.fast import PackedConv2d, _FastConv2d
from ._trace import producer, relu_input

__all__ = ["fuse_residual_sums", "residual_sums"]

_SUM_FUNCTIONS = (operator.add, operator.iadd, torch.add)
#: How a fused sum's entry in a list of fusions begins, after the layer's name.
_LABEL = "(residual "
_SUM_METHODS = ("add", "add_")


def _sum_operands(node: fx.Node) -> tuple[object, object] | None:
    """``(a, b)`` when ``node`` computes ``a + b`` and nothing else (no ``alpha``, no ``out``)."""
    plain = (node.op == "call_function" and node.target in _SUM_FUNCTIONS) or (
        node.op == "call_method" and node.target in _SUM_METHODS
    )
    if not plain or node.kwargs or len(node.args) != 2:
        return None
    return node.args[0], node.args[1]


def _absorb_residual(module: nn.Module, relu: bool) -> nn.Module | None:
    """``module`` taking a residual as ``module(h, residual)`` and computing
    ``act(module(h) + residual)`` (changed in place, or a replacement); ``None`` when it
    cannot."""
    activation = "relu" if relu else None
    if isinstance(module, _FastConv2d) and module.activation is None:
        module.activation = activation
        return module
    if type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return PackedConv2d.from_conv(module, activation=activation)
    if type(module) in (nn.Sequential, ChainConv2d):
        layers = list(module._modules.items())
        computing = [k for k, m in layers if type(m) is not nn.Identity]
        last = module[int(computing[-1])] if computing else None
        if not (type(last) is nn.Conv2d or isinstance(last, _FastConv2d)):
            return None
        switch = module if type(module) is ChainConv2d else ChainConv2d.from_chain(module)
        if switch is None:
            return None
        last = _absorb_residual(switch[int(computing[-1])], relu)
        if last is None:
            return None
        switch[int(computing[-1])] = last
        return switch
    return None


def fuse_residual_sums(
    graph: fx.Graph, model: nn.Module, calls: dict[str, int]
) -> tuple[dict[str, nn.Module], list[str]]:
    """Rewrite ``graph`` (``model``'s traced forward) so that each fusable sum (see the module
    docstring) is computed by the module before it. ``calls``: how many times the forward calls
    each module (:func:`._trace.module_calls`). Returns the modules to put in place (name ->
    module) and the names of the sums fused."""
    replacements: dict[str, nn.Module] = {}
    fused: list[str] = []
    for node in list(graph.nodes):
        operands = _sum_operands(node)
        if operands is None:
            continue
        for given, shortcut in (operands, operands[::-1]):
            if not isinstance(given, fx.Node) or not isinstance(shortcut, fx.Node):
                continue
            if given is shortcut or len(given.users) != 1:
                continue
            src = producer(given, model)
            if (src.op != "call_module" or len(src.users) != 1 or calls.get(src.target) != 1
                    or len(src.args) != 1 or src.kwargs or src.target in replacements):  # fmt: skip
                continue
            relu = _only_relu_user(node, model)
            absorbed = _absorb_residual(model.get_submodule(src.target), relu is not None)
            if absorbed is None:
                continue
            replacements[src.target] = absorbed
            with graph.inserting_before(node):
                call = graph.call_module(src.target, (src.args[0], shortcut))
            (relu if relu is not None else node).replace_all_uses_with(call)
            for dead in [relu, node, *_passed_through(given, src)]:
                if dead is not None:
                    graph.erase_node(dead)
            kind = "sum and relu" if relu is not None else "sum"
            fused.append(f"{src.target} {_LABEL}{kind} in forward)")
            break
    return replacements, fused


def residual_sums(fused: list[str]) -> int:
    """How many of the fusions listed (``fuse_activations``' second result) are residual sums."""
    return sum(f" {_LABEL}" in entry for entry in fused)


def _only_relu_user(node: fx.Node, model: nn.Module) -> fx.Node | None:
    """The ReLU that is the only user of ``node``, if there is one."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    return user if relu_input(user, model) is node else None


def _passed_through(given: fx.Node, src: fx.Node) -> list[fx.Node]:
    """``given`` and the ``nn.Identity`` calls back to ``src``, ``src`` last (users first)."""
    nodes = [given]
    while nodes[-1] is not src:
        nodes.append(nodes[-1].args[0])
    return nodes
