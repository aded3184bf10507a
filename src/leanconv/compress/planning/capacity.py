"""The one-standard-error rule of the allocation: of the plans as accurate as the best, keep the
one with the most multiply-accumulates.

A plan's sensitivity is a sum of per-layer KL divergences, each the mean over a calibration set of
the per-image divergence ``KL(p_i || q_i)``; as an estimate it has the standard error

    SE = std_i( sum_l KL_l(i) ) / sqrt(N)

over the ``N`` calibration images (the per-image sums, so that images every layer finds hard
count once, not once per layer). Plans whose summed sensitivities differ by less than this are
not told apart by the measurement, and on a network that tolerates its rewrites well there are
many of them: in the VGG-16 run U of docs/benchmarks.md the most accurate plan for the budget summed
0.0401 +- 0.0084 nats on 256 images, and a plan for the same budget with 1.35x its MACs 0.0420.
Which of such plans comes out most accurate is then decided by noise, and it is usually the one
of the thinnest layers, which run far below the machine's rate of multiply-accumulates (a
rank-12 Tucker-2 chain of a 128-channel VGG-16 layer: 34x fewer MACs, 8-10x less time).

The rule, as in model selection by cross-validation (Breiman et al. 1984, "the one standard
error rule"): find the most accurate plan ``P0`` for the budget (summed sensitivity ``s0``,
standard error ``se0``); then solve the allocation again with a weight on the MACs a candidate
removes,

    sensitivity(c) + w * (MACs(original layer) - MACs(c)),

for weights ``w`` on a doubling grid, and keep, of the plans whose unweighted summed sensitivity
stays within ``s0 + se0``, the one with the most MACs. Every plan tried meets the same budget;
the sensitivity given up is at most one standard error of its estimate, and the MACs kept are
capacity that fine-tuning can use. Without per-image divergences (or with
``se0 = 0``) the plan is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

__all__ = ["capacity_value", "choose", "macs_kept", "plan_sensitivity", "prefer_capacity"]

#: The weights tried, as multiples ``2**k`` of ``s0 / MACs of the layers``: from one at which all
#: the layers' MACs together weigh ``s0 / 32`` to one at which they weigh ``8192 s0`` (the MACs
#: kept almost regardless of sensitivity; the one-standard-error test then decides).
WEIGHT_STEPS = range(-5, 14)


def plan_sensitivity(choices: Iterable) -> tuple[float, float]:
    """``(summed sensitivity, its standard error)`` of a plan's chosen candidates (see the module
    docstring). The error comes from the per-image divergences (``kl_samples``) when every
    rewritten layer has them on the same images, else from the candidates' own errors added in
    quadrature. Both are those of each candidate's own measurement, also where
    ``sensitivity.monotone_sensitivity`` raised its sensitivity to a higher rank's."""
    chosen = list(choices)
    total = sum(c.sensitivity for c in chosen)
    rewritten = [c for c in chosen if c.method != "keep"]
    samples = [c.kl_samples for c in rewritten]
    n = len(samples[0]) if samples and samples[0] is not None else 0
    if n >= 2 and all(s is not None and len(s) == n for s in samples):
        per_image = torch.tensor(samples, dtype=torch.float64).sum(0)
        return total, float(per_image.std() / math.sqrt(n))
    return total, math.sqrt(sum(c.sensitivity_se**2 for c in rewritten))


def macs_kept(choices: Iterable) -> int:
    return sum(c.macs for c in choices)


def capacity_value(candidates: dict[str, list], weight: float) -> Callable:
    """A candidate's sensitivity plus ``weight`` per MAC it removes from its layer's original (the
    first candidate of each layer): the value the allocation minimises to keep capacity."""
    original = {name: cs[0].macs for name, cs in candidates.items()}
    return lambda c: c.sensitivity + weight * (original[c.layer] - c.macs)


def prefer_capacity(
    best: dict, candidates: dict[str, list], solve: Callable[[Callable], dict]
) -> dict:
    """The plan with the most MACs among those within one standard error of ``best``'s summed
    sensitivity (``best`` itself when none keeps more). ``solve`` maps a value function (of a
    candidate) to the plan that meets the budget with the least summed value (name -> chosen
    candidate); it is called with :func:`capacity_value` at each weight."""
    s0, se0 = plan_sensitivity(best.values())
    layers_macs = sum(cs[0].macs for cs in candidates.values())
    if se0 <= 0 or s0 <= 0 or layers_macs <= 0:
        return best
    chosen, most = best, macs_kept(best.values())
    for k in WEIGHT_STEPS:
        trial = solve(capacity_value(candidates, s0 / layers_macs * 2.0**k))
        kept = macs_kept(trial.values())
        if kept > most and plan_sensitivity(trial.values())[0] <= s0 + se0:
            chosen, most = trial, kept
    return chosen


def choose(plans: list):
    """Of finished plans (each with ``sensitivity`` as ``(sum, standard error)`` and
    ``macs_after``), the one with the most MACs whose summed sensitivity is within one standard
    error of the most accurate one's (the closed loop's choice among its measured plans)."""
    accurate = min(plans, key=lambda p: p.sensitivity[0])
    s0, se0 = accurate.sensitivity
    near = [p for p in plans if p.sensitivity[0] <= s0 + se0]
    return max(near, key=lambda p: (p.macs_after, -p.sensitivity[0]))
