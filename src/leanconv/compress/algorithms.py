"""Fast convolution algorithms as planner candidates: which layer runs by which algorithm.

A plan may give a layer an algorithm besides its rewrite, ``"winograd2"``, ``"winograd4"`` or
``"winograd6"`` (Winograd F(m x m, 3x3), :class:`leanconv.nn.WinogradConv2d`), chosen like a rank
from the latency measured on this machine. It applies to every eligible convolution inside the
layer's module: the layer itself when it is kept, or the 3x3 core of its Tucker-2 chain. Eligible:
a plain ``nn.Conv2d`` with a 3x3 kernel, stride 1, dilation 1, one group, zero padding and at
least ``MIN_CHANNELS`` channels in and out: the Winograd rule the tuner and ``"auto"`` apply too,
with the planner's limits (:data:`leanconv.selection.eligibility.WINOGRAD_PLANNER`).

The deployment adds one more, per convolution: ``"narrow"``, the narrow direct kernel
(:class:`leanconv.nn.NarrowConv2d`) for a factor of a decomposed layer, kept where it is measured
faster (:func:`narrow_candidates`, then :func:`leanconv.selection.batch_switch.fit_min_batch`).
It is not a choice of the plan but a form of each rewrite: the planner times a rewrite with its
factors on oneDNN and on the kernel, and credits the faster (:mod:`.planning.latency`). And
``"gemv"``, per fully
connected layer: :class:`leanconv.nn.GemvLinear`, the streaming matrix-vector kernel for at most
8 rows (batch 1 reads the whole weight for one multiply-add per value), offered to every
``nn.Linear`` (:func:`gemv_candidates`) and kept only where it is measured at least as fast as
``F.linear`` at every batch size it runs at (:func:`leanconv.selection.batch_switch.gemv_wins`,
then :func:`leanconv.compress.deploy.settle_gemv`).

The algorithm computes the same function up to float32 rounding (docs/algorithms.md, "Accuracy"),
so the compress pipeline fine-tunes and folds batch norms on plain convolutions and applies the
algorithms last, to the deployed model; the saved model records them (``model.json``,
``"algorithms"``) and :func:`leanconv.load` applies them again, and ONNX gets plain convolutions.
"""

from __future__ import annotations

import copy

from torch import nn

from ..algorithms import native
from ..modules import get_layer, replace_modules
from ..selection.eligibility import WINOGRAD_PLANNER, narrow, winograd

ALGORITHMS = {"winograd2": 2, "winograd4": 4, "winograd6": 6}
#: Every algorithm a deployed layer may run by: the planner's, the narrow direct kernel and the
#: streaming matrix-vector kernel.
DEPLOYED = (*ALGORITHMS, "narrow", "gemv")
MIN_CHANNELS = WINOGRAD_PLANNER.min_channels  # below it Winograd does not pay

__all__ = ["ALGORITHMS", "DEPLOYED", "apply_algorithms", "eligible", "gemv_candidates",
           "narrow_candidates", "with_algorithm"]  # fmt: skip


def eligible(conv: nn.Module) -> bool:
    """A convolution the planner runs by Winograd F(m x m, 3x3) (see the module docstring)."""
    return bool(winograd(conv, WINOGRAD_PLANNER))


def with_algorithm(module: nn.Module, algorithm: str) -> nn.Module | None:
    """A copy of ``module`` whose eligible convolutions run by ``algorithm``; ``None`` when it has
    none (the candidate would be the module itself)."""
    from ..nn.fast import NarrowConv2d, WinogradConv2d
    from ..nn.gemv_linear import GemvLinear

    if algorithm not in DEPLOYED:
        raise ValueError(f"algorithm={algorithm!r} is not one of {', '.join(DEPLOYED)}")
    if algorithm == "narrow":
        return NarrowConv2d.from_conv(module) if narrow(module) else None
    if algorithm == "gemv":
        return GemvLinear.from_linear(module) if type(module) is nn.Linear else None
    tile = ALGORITHMS[algorithm]
    if eligible(module):
        return WinogradConv2d.from_conv(module, tile=tile).train(module.training)
    names = [n for n, m in module.named_modules() if n and eligible(m)]
    if not names:
        return None
    out = copy.deepcopy(module)
    fast = {n: WinogradConv2d.from_conv(out.get_submodule(n), tile=tile) for n in names}
    return replace_modules(out, fast, inplace=True)


def apply_algorithms(
    model: nn.Module, choices: dict[str, str], inplace: bool = False
) -> tuple[nn.Module, dict[str, str]]:
    """Run the layers named in ``choices`` (qualified name -> algorithm) by their algorithm.

    Returns the model and the choices that applied (a layer with no eligible convolution, for
    example one whose rewrite was rolled back to a strided layer, is left as it is and omitted).
    """
    model = model if inplace else copy.deepcopy(model)
    applied, replacements = {}, {}
    for name, algorithm in choices.items():
        fast = with_algorithm(model.get_submodule(name), algorithm)
        if fast is not None:
            replacements[name] = fast
            applied[name] = algorithm
    return replace_modules(model, replacements, inplace=True), applied


def narrow_candidates(
    model: nn.Module, layers, planned: dict[str, str] | None = None
) -> dict[str, str]:
    """The convolutions inside the decomposed ``layers`` of ``model`` that the narrow direct
    kernel computes (:func:`leanconv.selection.eligibility.narrow`), each mapped to ``"narrow"``;
    none where the compiled kernels are not available. A convolution that a ``planned``
    algorithm (layer name -> algorithm) runs, such as a Tucker-2 core by Winograd, is not
    offered: the plan chose it over oneDNN, and the narrow kernel is measured against oneDNN."""
    if not native.available():
        return {}
    planned = planned or {}
    out = {}
    for name in layers:
        for sub, module in get_layer(model, name).named_modules():
            if sub and narrow(module) and not (name in planned and eligible(module)):
                out[f"{name}.{sub}"] = "narrow"
    return out


def gemv_candidates(model: nn.Module) -> dict[str, str]:
    """Every plain ``nn.Linear`` of ``model`` mapped to ``"gemv"`` (the streaming matrix-vector
    kernel, :class:`leanconv.nn.GemvLinear`); none where the compiled kernels are not available.
    Whether each keeps it is measured afterwards (see the module docstring)."""
    if not native.available():
        return {}
    return {name: "gemv" for name, m in model.named_modules() if type(m) is nn.Linear}
