"""The convolution pairs whose inner channels can be pruned: found in the traced ``forward``.

A pair is a convolution (the producer) whose output reaches exactly one other convolution (the
consumer) through nothing but per-channel operations: at most one batch norm, elementwise
activations (``ReLU`` and its kin) and pooling, as modules or functions, each used once. Then an
input channel of the consumer is an output channel of the producer and of nothing else, and removing
it from both (and from the batch norm) removes a channel of the network: the producer computes
fewer outputs, the consumer reads fewer inputs, and both stay dense convolutions
(:mod:`.channels` refits the consumer on what is kept). The inner pair of a residual basic
block (``conv1 -> bn -> relu -> conv2``) is one; a convolution whose output is also a residual
sum's operand, or is concatenated, is not.

Both convolutions must be plain ``nn.Conv2d`` (one group, zero padding given as numbers), each
called once, and none of the three modules registered under a second name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..rewrite._trace import module_calls, relu_input, trace_forward

__all__ = ["Pair", "disjoint", "find_pairs"]

#: Modules that act on each channel alone (elementwise activations, the identity, pooling), so a
#: pruned channel is removed from them without changing the others.
PER_CHANNEL = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Identity,
               nn.Dropout, nn.ELU, nn.Tanh, nn.Sigmoid, nn.MaxPool2d, nn.AvgPool2d)  # fmt: skip
_PER_CHANNEL_FUNCTIONS = (F.relu6, F.silu, F.gelu, F.hardswish, F.leaky_relu, torch.sigmoid,
                          torch.tanh, F.max_pool2d, F.avg_pool2d)  # fmt: skip


@dataclass(frozen=True)
class Pair:
    """A producer convolution, the batch norm between (or ``None``), and the consumer, by their
    module names; ``channels`` the producer's output channels (the consumer's input)."""

    producer: str
    consumer: str
    norm: str | None
    channels: int


def _plain_conv(module: nn.Module) -> bool:
    """One group, zero padding given as numbers (not ``"same"``/``"valid"``)."""
    return (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))  # fmt: skip


def _passes_through(node: fx.Node, model: nn.Module) -> str | None:
    """What ``node`` is if the walk from a producer may pass it: ``"norm"``, ``"per-channel"``,
    else ``None``."""
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        if type(module) is nn.BatchNorm2d:
            return "norm"
        if isinstance(module, PER_CHANNEL):
            return "per-channel"
        return None
    if relu_input(node, model) is not None:
        return "per-channel"
    if node.op == "call_function" and node.target in _PER_CHANNEL_FUNCTIONS:
        return "per-channel" if len(node.all_input_nodes) == 1 else None
    return None


def _consumer_of(node: fx.Node, model: nn.Module) -> tuple[fx.Node, str | None] | None:
    """The convolution that ``node``'s output alone reaches through per-channel operations, and
    the batch norm passed (see the module docstring); ``None`` if there is none."""
    norm = None
    while len(node.users) == 1:
        (user,) = node.users
        if user.op == "call_module" and _plain_conv(model.get_submodule(user.target)):
            return user, norm
        kind = _passes_through(user, model)
        if kind is None or (kind == "norm" and norm is not None):
            return None
        if kind == "norm":
            norm = user.target
        node = user
    return None


def find_pairs(model: nn.Module) -> list[Pair]:
    """Every pair of ``model`` whose inner channels can be pruned (see the module docstring), in
    the order of the forward; none for a forward that does not trace."""
    graph = trace_forward(model)
    if graph is None:
        return []
    calls = module_calls(graph)
    # a module registered under two names is replaced under one only: a pruned copy would still
    # run the other (and its channels would no longer match)
    names: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        names[id(module)] = names.get(id(module), 0) + 1

    def aliased(name: str | None) -> bool:
        return name is not None and names.get(id(model.get_submodule(name)), 0) > 1

    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        producer = model.get_submodule(node.target)
        if not _plain_conv(producer):
            continue
        found = _consumer_of(node, model)
        if found is None:
            continue
        consumer_node, norm = found
        consumer = model.get_submodule(consumer_node.target)
        if calls[consumer_node.target] != 1 or consumer.in_channels != producer.out_channels:
            continue
        if norm is not None and (
            calls[norm] != 1 or model.get_submodule(norm).num_features != producer.out_channels
        ):
            continue
        if any(aliased(n) for n in (node.target, norm, consumer_node.target)):
            continue
        pairs.append(Pair(node.target, consumer_node.target, norm, producer.out_channels))
    return pairs


def disjoint(pairs: list[Pair]) -> list[Pair]:
    """Of ``pairs``, in their order, each that shares no convolution with one taken before it.
    In a chain of convolutions every inner one is the consumer of one pair and the producer of
    the next; pruning both would change its inputs and its outputs, and the two prunings could
    no longer be chosen apart. A residual network's inner pairs are disjoint already."""
    used: set[str] = set()
    out = []
    for pair in pairs:
        if pair.producer in used or pair.consumer in used:
            continue
        used |= {pair.producer, pair.consumer}
        out.append(pair)
    return out
