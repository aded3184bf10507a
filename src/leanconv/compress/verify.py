"""Decompose the layers of a model, check each replacement on real activations, roll back the
ones that fail, and report.

For each layer the calibration inputs are run once through the original model with hooks that
keep the layer's own input. The replacement's output on those activations is compared with the
original layer's: the relative error ``||y_hat - y||_F / ||y||_F`` must be finite and at most
``max_error``, otherwise the layer is rolled back (kept as it was) and the report says why. The
whole model's output error on the calibration inputs is reported at the end.

A layer planned as ``("prune", r)`` is half of a pruned pair (:mod:`leanconv.prune`): the pair is
pruned when both of its layers are planned so with the same ``r``, and judged by the second
layer's output error after its refit (both rolled back together when it is too large).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..cost import count
from ..decompose.rank import output_error
from ..errors import LeanconvError
from ..modules import capture_inputs, get_layer, replace_modules
from ..prune import PRUNE, disjoint, find_pairs, prune_pairs
from .outputs import relative_error
from .replace import decompose_layer

__all__ = ["LayerOutcome", "SurgeryReport", "capture_inputs", "decompose_model"]


@dataclass
class LayerOutcome:
    name: str
    method: str
    rank: object
    status: str  # "replaced", "rolled back", "skipped"
    reason: str = ""
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    weight_error: float = float("nan")
    output_error: float = float("nan")


@dataclass
class SurgeryReport:
    layers: list[LayerOutcome] = field(default_factory=list)
    model_output_error: float = float("nan")
    replaced: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        rows = []
        for layer in self.layers:
            d = asdict(layer)
            d["rank"] = list(layer.rank) if isinstance(layer.rank, tuple) else layer.rank
            rows.append(d)
        return {"model_output_error": self.model_output_error, "layers": rows}


def _pruned_pairs(work, pruned: dict[str, object], inputs, calibration, max_error, strict,
                  report: SurgeryReport) -> dict[str, nn.Module]:  # fmt: skip
    """The planned pairs pruned (see the module docstring): the modules to put in place (the two
    convolutions and the norm between); each layer's outcome appended to ``report``."""
    if not pruned:
        return {}
    pairs = {p.producer: p for p in find_pairs(work)}
    planned = [pairs[n] for n, r in pruned.items() if n in pairs
               and pruned.get(pairs[n].consumer) == r
               and isinstance(r, int) and 1 <= r <= pairs[n].channels]  # fmt: skip
    keep = {p.producer: pruned[p.producer] for p in disjoint(planned)}
    paired = set(keep) | {pairs[n].consumer for n in keep}
    for name in pruned:
        if name not in paired:
            reason = ("not one of a prunable pair of convolutions planned with the same "
                      "channel count, within the pair's channels, sharing no layer with "
                      "another pair")  # fmt: skip
            if strict:
                raise LeanconvError(f"{name}: {reason}")
            report.layers.append(LayerOutcome(name, PRUNE, pruned[name], "skipped", reason))
    if not keep:
        return {}
    result = prune_pairs(work, {n: int(r) for n, r in keep.items()}, calibration)
    replacements: dict[str, nn.Module] = {}
    for outcome in result.outcomes:
        pair, err = outcome.pair, outcome.output_error
        ok = math.isfinite(err) and err <= max_error
        new = {n: result.model.get_submodule(n) for n in (pair.producer, pair.consumer)}
        kept = torch.tensor(outcome.kept)
        for name in (pair.producer, pair.consumer):
            x = inputs[name]
            before = count(get_layer(work, name), x)
            after = count(new[name], x[:, kept] if name == pair.consumer else x)
            layer_err = err if name == pair.consumer else 0.0
            reason = "" if ok else (f"output error of {pair.consumer} {err:.3g} > {max_error:g}"
                                    if math.isfinite(err) else "non-finite output")  # fmt: skip
            report.layers.append(LayerOutcome(
                name, PRUNE, len(outcome.kept), "replaced" if ok else "rolled back", reason,
                before.total.params, after.total.params, before.total.macs, after.total.macs,
                layer_err, layer_err,
            ))  # fmt: skip
        if ok:
            replacements.update(new)
            if pair.norm is not None:
                replacements[pair.norm] = result.model.get_submodule(pair.norm)
    return replacements


def decompose_model(
    model: nn.Module,
    plan: dict[str, tuple[str, object]],
    calibration: torch.Tensor,
    max_error: float = 0.5,
    strict: bool = False,
    inplace: bool = False,
    policy: str | None = None,
) -> tuple[nn.Module, SurgeryReport]:
    """Replace every ``name -> (method, rank)`` of ``plan``; returns the new model and a report.

    With ``strict`` a layer that cannot be decomposed (unknown name, bad rank, unsupported type)
    raises; otherwise it is skipped and listed. ``model`` is copied unless ``inplace``.
    """
    if not (max_error > 0):
        raise ValueError(f"max_error={max_error} must be positive")
    work = model if inplace else copy.deepcopy(model)
    work.eval()
    report = SurgeryReport()
    valid: list[str] = []
    for name in plan:
        try:
            get_layer(work, name)
            valid.append(name)
        except LeanconvError as exc:
            if strict:
                raise
            method, rank = plan[name]
            report.layers.append(LayerOutcome(name, method, rank, "skipped", str(exc)))
    inputs = capture_inputs(work, valid, calibration)
    with torch.no_grad():
        reference = work(calibration)
    pruned = {n: plan[n][1] for n in valid if plan[n][0] == PRUNE}
    replacements = _pruned_pairs(work, pruned, inputs, calibration, max_error, strict, report)
    for name in valid:
        if name in pruned:
            continue
        method, rank = plan[name]
        layer = get_layer(work, name)
        x = inputs[name]
        outcome = LayerOutcome(name, method, rank, "skipped")
        report.layers.append(outcome)
        try:
            size = tuple(x.shape[2:]) if x.dim() == 4 else (1, 1)
            d = decompose_layer(layer, method, rank, policy=policy, name=name, input_size=size)
        except (LeanconvError, ValueError) as exc:
            if strict:
                raise
            outcome.reason = str(exc)
            continue
        outcome.method, outcome.rank, outcome.weight_error = d.method, d.rank, d.weight_error
        before, after = count(layer, x), count(d.module, x)
        outcome.params_before, outcome.params_after = before.total.params, after.total.params
        outcome.macs_before, outcome.macs_after = before.total.macs, after.total.macs
        err = output_error(layer, d.module, x, name=name)
        outcome.output_error = err
        if not math.isfinite(err) or err > max_error:
            outcome.status = "rolled back"
            outcome.reason = f"output error {err:.3g} > {max_error:g}" if math.isfinite(err) else (
                "non-finite output"
            )  # fmt: skip
            continue
        outcome.status = "replaced"
        replacements[name] = d.module
    work = replace_modules(work, replacements, inplace=True)
    report.replaced = replacements
    with torch.no_grad():
        out = work(calibration)
    report.model_output_error = relative_error(out, reference)
    return work, report
