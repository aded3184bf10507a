"""The deployment form of the convolutions: ReLUs fused into them, weights packed for oneDNN.

Exact rewrites, applied to a model whose batch norms are already folded (:mod:`.fold`):

- **Activation fusion.** Inside an ``nn.Sequential``, an ``nn.ReLU`` that follows a convolution
  (directly, or through the ``nn.Identity`` a folded batch norm left) is computed by that
  convolution, ``relu(conv(x))`` in the pass that writes its output, and becomes ``nn.Identity``.
  The convolution may be a plain ``nn.Conv2d``, a fast layer (Winograd, FFT) or a chain that
  decomposition built (an ``nn.Sequential`` ending in one).
- **ReLUs called in ``forward``** (``F.relu(self.block(x))``, ``torch.relu``, ``x.relu()``, or
  an ``nn.ReLU`` module called there), as user models write them: the forward is traced
  (``torch.fx``), and a ReLU whose input is the output of a module called once, used by nothing
  else, and able to absorb it (the cases above) is computed by that module and dropped from the
  forward. The model becomes an instance of a subclass of its own class (same name, attributes
  and methods) whose ``forward`` is the traced one without those ReLUs. A forward that does
  not trace (data-dependent control flow, say) is left as it is. Like every rewrite here it is
  for inference: Python branches of the forward (``if self.training:``) are fixed as they ran
  when traced, in eval mode. On the 64x64 user-style model of ``benchmarks/bench_byo.py`` its
  eight ``F.relu`` calls took 22.6 ms of 170.5 ms at batch 64, deployed.
- **Residual sums called in ``forward``** (``out += identity; out = F.relu(out)``), with the
  ReLU after them, computed by the convolution or chain before them in the same traced forward
  (:mod:`.residual`).
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
from ._trace import module_calls, producer, relu_input, trace_forward
from .residual import fuse_residual_sums

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
    model: nn.Module, inplace: bool = False, pack: bool = True, traced: bool = True
) -> tuple[nn.Module, list[str]]:
    """Fuse each ReLU that follows a convolution into it and, with ``pack``, pack every plain
    ``nn.Conv2d`` (see the module docstring; without it, only a plain convolution that absorbs a
    ReLU becomes packed); with ``traced``, also the ReLUs called in ``forward``. Returns the
    model (in eval mode) and the names of the ReLUs fused (``"block (relu in forward)"`` for one
    called in ``forward`` on the output of ``block``)."""
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
    if traced and not isinstance(model, nn.Sequential | nn.Conv2d | _FastConv2d):
        fused += _fuse_in_forward(model)
    plain = {
        n: PackedConv2d.from_conv(m)
        for n, m in model.named_modules()
        if pack and n and type(m) is nn.Conv2d and m.padding_mode == "zeros"
    }
    return replace_modules(model, plain, inplace=True).eval(), fused


def _fuse_in_forward(model: nn.Module) -> list[str]:
    """The residual sums (:mod:`.residual`) and ReLUs called in ``model.forward`` fused into the
    convolutions whose output they take (in place; see the module docstring); what was fused,
    by the convolutions' names."""
    graph = trace_forward(model)
    if graph is None:
        return []
    if any(n.op == "get_attr" and not _has(model, n.target) for n in graph.nodes):
        return []  # the traced forward needs what the model does not hold
    calls = module_calls(graph)
    replacements, fused = fuse_residual_sums(graph, model, calls)
    replace_modules(model, replacements, inplace=True)
    for node in list(graph.nodes):
        given = relu_input(node, model)
        if given is None or len(given.users) != 1:
            continue
        src = producer(given, model)
        if src.op != "call_module" or len(src.users) != 1 or calls.get(src.target) != 1:
            continue  # a module called twice would apply the ReLU to both calls
        absorbed = _absorb_relu(model.get_submodule(src.target))
        if absorbed is None:
            continue
        replace_modules(model, {src.target: absorbed}, inplace=True)
        node.replace_all_uses_with(given)
        graph.erase_node(node)
        fused.append(f"{src.target} (relu in forward)")
    if fused:
        # the traced forward (compiled from the graph's code alone: it holds no module) on a
        # subclass of the model's own class, so that its attributes and methods stay
        code = graph.python_code(root_module="self")
        namespace = dict(code.globals)
        exec(compile(code.src, f"<{type(model).__name__}.forward, fused>", "exec"), namespace)
        cls = type(model)
        model.__class__ = type(cls.__name__, (cls,), {
            "forward": namespace["forward"], "__module__": cls.__module__,
            "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})  # fmt: skip
    return fused


def _has(model: nn.Module, target: str) -> bool:
    obj = model
    for part in target.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True
