"""Decompose the layers of a model, check each replacement on real activations, roll back the
ones that fail, and report.

For each layer the calibration inputs are run once through the original model with hooks that
keep the layer's own input. The replacement's output on those activations is compared with the
original layer's: the relative error ``||y_hat - y||_F / ||y||_F`` must be finite and at most
``max_error``, otherwise the layer is rolled back (kept as it was) and the report says why. The
whole model's output error on the calibration inputs is reported at the end.
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
    replacements: dict[str, nn.Module] = {}
    for name in valid:
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
