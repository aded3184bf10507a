"""An accuracy budget as the target (``--max-drop`` alone): the fastest plan that stays within it.

The Lagrangian allocation of :mod:`.allocate` gives, for any speedup target, the least sensitive
plan that meets it, but accuracy is not additive over layers and fine-tuning recovers part of the
loss, so the budget is checked by trials. The targets form a geometric ladder from ``1.2x`` to the
fastest plan the candidates allow; a binary search over the ladder runs one trial per step:
decompose the model by the plan, fine-tune it briefly with distillation (``search_epochs``) on 80 %
of the training data, and measure the accuracy drop on the other 20 %. The test split is never
looked at, so the final report's accuracy stays an unbiased estimate. The fastest target whose
trial stayed within the budget is the plan (its predicted speedup the assembled plan timed, as in
:mod:`.closed_loop`); the pipeline then fine-tunes it in full, which usually
recovers more than the short trial did (the report gives the measured drop either way).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ...data.bundle import DataBundle
from ..deploy import Deployment
from ..evaluate import ACCURACY, Metric
from ..finetune import FinetuneConfig, finetune
from ..verify import decompose_model
from .allocate import allocate
from .closed_loop import time_assembled
from .plan import Candidate, Plan

LADDER_START = 1.2
LADDER_STEPS = 7
VALIDATION_FRACTION = 0.2

__all__ = ["Trial", "plan_for_accuracy"]


@dataclass
class Trial:
    target_speedup: float
    predicted_speedup: float
    accuracy: float  # on the validation part of the training data, after the short fine-tune
    drop: float
    within_budget: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _ladder(fastest: float) -> list[float]:
    """Speedup targets from ``LADDER_START`` to ``fastest``, geometric (just ``fastest`` when it
    is below the start: one trial of the fastest plan)."""
    if fastest <= LADDER_START:
        return [fastest]
    ratio = (fastest / LADDER_START) ** (1 / (LADDER_STEPS - 1))
    return [LADDER_START * ratio**i for i in range(LADDER_STEPS)]


def _exact_only(candidates: dict[str, list[Candidate]], fixed, total, macs, target) -> Plan:
    """No rewrite; each layer by its fastest exact algorithm (direct or Winograd)."""
    choices = {n: min((c for c in cs if c.method == "keep"), key=lambda c: c.latency_ms)
               for n, cs in candidates.items()}  # fmt: skip
    return Plan(
        choices,
        candidates,
        fixed,
        total,
        macs,
        target,
        met=False,
        notes=(
            "no decomposed plan stayed within the accuracy budget in its trial; no layer is "
            "decomposed, only exact fast algorithms are used where they were faster (a larger "
            "--max-drop, more --search-epochs or an explicit --speedup helps)",
        ),
    )


def plan_for_accuracy(
    original: nn.Module,
    candidates: dict[str, list[Candidate]],
    fixed_ms: float,
    total_ms: float,
    macs_before: int,
    data: DataBundle,
    calibration: torch.Tensor,
    max_drop: float,
    finetune_config: FinetuneConfig,
    search_epochs: int = 1,
    max_layer_error: float = 0.9,
    seed: int = 0,
    batch: int = 64,
    deployment: Deployment = Deployment(),
    log=None,
    metric: Metric = ACCURACY,
    loss=None,
) -> Plan:
    """The fastest plan whose short-fine-tune trial loses at most ``max_drop`` points of
    ``metric`` (see the module docstring); its ``search`` lists every trial."""
    if max_drop < 0:
        raise ValueError(f"max_drop={max_drop} must not be negative")
    say = log or (lambda _m: None)
    target = f"{metric.name} drop <= {max_drop:g} points"
    split = data.holdout(VALIDATION_FRACTION, seed)
    base_accuracy = metric(original, split.test)
    fastest = allocate(candidates, fixed_ms, total_ms, macs_before, speedup=1e9)
    ladder = _ladder(fastest.predicted_speedup)
    say(f"      {metric.name} budget {max_drop:g} points: original {base_accuracy:.2f}"
        f"{metric.unit} on held-out training images; targets "
        + ", ".join(f"{s:.2f}x" for s in ladder))  # fmt: skip
    trials: list[Trial] = []
    plans: dict[int, Plan] = {}
    lo, hi = -1, len(ladder)  # ladder[lo] is within the budget (-1: no rewrite), ladder[hi] not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        plan = allocate(candidates, fixed_ms, total_ms, macs_before, speedup=ladder[mid])
        model, _ = decompose_model(original, plan.rewrites(), calibration,
                                   max_error=max_layer_error)  # fmt: skip
        short = copy.copy(finetune_config)
        short.epochs, short.checkpoint, short.resume = search_epochs, None, False
        short.progress, short.patience = False, None
        finetune(model, split, original, short, log=None, metric=metric, loss=loss)
        acc = metric(model, split.test)
        ok = base_accuracy - acc <= max_drop
        trials.append(Trial(ladder[mid], plan.predicted_speedup, acc, base_accuracy - acc, ok))
        say(f"      trial {ladder[mid]:.2f}x (predicted {plan.predicted_speedup:.2f}x): "
            f"{acc:.2f}{metric.unit} after {search_epochs} epoch(s), "
            f"drop {base_accuracy - acc:+.2f} -> "
            + ("within" if ok else "over") + " budget")  # fmt: skip
        if ok:
            lo, plans[mid] = mid, plan
        else:
            hi = mid
    if lo >= 0:
        # its predicted speedup: the assembled plan timed, as for a speedup target
        plan = time_assembled(original, plans[lo].replace(target=target, met=True), calibration,
                              batch, deployment, max_layer_error)  # fmt: skip
        say(f"      chosen: {ladder[lo]:.2f}x target, the assembled plan measures "
            f"{plan.predicted_speedup:.2f}x")  # fmt: skip
    else:
        plan = _exact_only(candidates, fixed_ms, total_ms, macs_before, target)
    return plan.replace(search=tuple(t.as_dict() for t in trials))
