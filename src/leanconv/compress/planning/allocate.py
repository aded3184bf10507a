"""The allocation: one candidate per layer, chosen together to meet a budget.

The allocation minimises a summed value (the sensitivity; for a sensitivity budget, the latency)
subject to a budget on a summed cost (latency for a ``speedup``, MACs for a ``macs_ratio``,
sensitivity for ``max_sensitivity``), by Lagrangian relaxation: for a multiplier ``lam`` each
layer independently takes ``argmin(value + lam * cost)``; bisection on ``lam`` finds the
least-valued plan that meets the budget (Everett 1963; the standard rate-distortion allocation),
and what it leaves of the budget is spent greedily on the layers whose better candidates buy the
most value per unit of cost (the greedy repair of multiple-choice knapsack). Latency that no
candidate changes (pooling, activations, the classifier) is measured once, on the model in its
deployment form, and added as a constant, so the predicted speedup is
``total_before / (fixed + sum of chosen layer latencies)``. If the target cannot be met, the
cheapest plan found is returned with ``met = False``. For a speedup target the plan is then the
one with the most MACs among those within one standard error of the most accurate plan's summed
sensitivity (:mod:`.capacity`).

The allocation runs on units (:mod:`.units`): a layer, or a prunable pair of layers whose two
candidates are chosen together; the plan has one candidate per layer.
"""

from __future__ import annotations

from collections.abc import Callable

from . import capacity, units
from .plan import Candidate, Plan

__all__ = ["allocate"]

Choice = dict[str, Candidate]
Measure = Callable[[Candidate], float]


def _pick(cands: dict[str, list[Candidate]], lam: float, value: Measure, cost: Measure) -> Choice:
    """Each layer's ``argmin value + lam * cost``; ties go to the lower cost, then to the lower
    latency (a Winograd variant ties with its rewrite on sensitivity and MACs)."""
    return {
        n: min(cs, key=lambda c: (value(c) + lam * cost(c), cost(c), c.latency_ms))
        for n, cs in cands.items()
    }


def _fill(plan: Choice, cands: dict[str, list[Candidate]], value: Measure, cost: Measure,
          spare: float) -> Choice:  # fmt: skip
    """Spend what the Lagrangian plan leaves of the budget: it only reaches plans on the convex
    hull of (cost, value), so it can stop well under the budget. Repeatedly switch the layer
    whose better candidate buys the most value per unit of cost and still fits."""
    plan = dict(plan)
    while True:
        best, best_rate = None, 0.0
        for name, cs in cands.items():
            now = plan[name]
            for c in cs:
                extra = cost(c) - cost(now)
                gain = value(now) - value(c)
                if gain > 0 and 0 < extra <= spare and gain / extra > best_rate:
                    best, best_rate = (name, c, extra), gain / extra
        if best is None:
            return plan
        name, c, extra = best
        plan[name] = c
        spare -= extra


def _lagrangian(cands: dict[str, list[Candidate]], value: Measure, cost: Measure,
                budget: float) -> tuple[Choice, bool]:  # fmt: skip
    """The least-valued plan whose summed cost meets ``budget`` (the multiplier found by
    bisection, what it leaves spent by :func:`_fill`), and whether it meets it; else the
    cheapest plan found."""

    def total(plan: Choice) -> float:
        return sum(cost(c) for c in plan.values())

    lo, hi = 0.0, 1.0
    best = _pick(cands, hi, value, cost)
    for _ in range(60):  # grow the multiplier until the budget is met (or cannot be)
        if total(best) <= budget:
            break
        hi *= 4
        best = _pick(cands, hi, value, cost)
    met = total(best) <= budget + 1e-12
    if met:
        for _ in range(60):  # bisection: the smallest multiplier that still meets the budget
            mid = (lo + hi) / 2
            trial = _pick(cands, mid, value, cost)
            if total(trial) <= budget:
                hi, best = mid, trial
            else:
                lo = mid
        best = _fill(best, cands, value, cost, budget - total(best))
    return best, met


def _sensitivity(c: Candidate) -> float:
    return c.sensitivity


def _latency(c: Candidate) -> float:
    return c.latency_ms


def _macs(c: Candidate) -> float:
    return c.macs


def _budget(candidates, fixed_ms, total_ms, macs_before, speedup, macs_ratio, max_sensitivity):
    """``(label, value, cost, budget)`` of the one target given."""
    if sum(v is not None for v in (speedup, macs_ratio, max_sensitivity)) != 1:
        raise ValueError("give exactly one target: speedup, macs_ratio or max_sensitivity")
    if speedup is not None:
        if speedup <= 0:
            raise ValueError(f"speedup={speedup} must be positive")
        return f"speedup {speedup:g}x", _sensitivity, _latency, total_ms / speedup - fixed_ms
    if macs_ratio is not None:
        if not 0 < macs_ratio <= 1:
            raise ValueError(f"macs_ratio={macs_ratio} must be in (0, 1]")
        other = macs_before - sum(cs[0].macs for cs in candidates.values())
        return f"MACs ratio {macs_ratio:g}", _sensitivity, _macs, macs_ratio * macs_before - other
    # the fastest plan whose summed sensitivity stays within the budget: the roles swap
    return f"sensitivity <= {max_sensitivity:g}", _latency, _sensitivity, max_sensitivity


def _capacity_note(accurate: Choice, chosen: Choice) -> str:
    s0, se0 = capacity.plan_sensitivity(accurate.values())
    s1 = capacity.plan_sensitivity(chosen.values())[0]
    more = capacity.macs_kept(chosen.values()) / capacity.macs_kept(accurate.values())
    return (f"one-standard-error rule: the layers keep {more:.2f}x the MACs of the most "
            f"accurate plan for the budget, at a summed sensitivity of {s1:.4g} nats against its "
            f"{s0:.4g} +- {se0:.2g}")  # fmt: skip


def allocate(
    candidates: dict[str, list[Candidate]],
    fixed_ms: float,
    total_ms: float,
    macs_before: int,
    speedup: float | None = None,
    macs_ratio: float | None = None,
    max_sensitivity: float | None = None,
    prefer_capacity: bool = True,
) -> Plan:
    """Choose one candidate per layer for the one target given (see the module docstring). For
    a ``speedup`` target with ``prefer_capacity``, the plan is the one with the most MACs among
    those within one standard error of the most accurate plan's sensitivity
    (:mod:`.capacity`)."""
    unit_cands = units.group(candidates, macs_budget=macs_ratio is not None)
    target, value, cost, budget = _budget(unit_cands, fixed_ms, total_ms, macs_before, speedup,
                                          macs_ratio, max_sensitivity)  # fmt: skip
    best, met = _lagrangian(unit_cands, value, cost, budget)
    notes: list[str] = []
    if met and speedup is not None and prefer_capacity:
        accurate = best
        best = capacity.prefer_capacity(
            best, unit_cands, lambda weighted: _lagrangian(unit_cands, weighted, cost, budget)[0]
        )
        if best is not accurate:
            notes.append(_capacity_note(accurate, best))
    if not met:
        notes.append(f"the target ({target}) cannot be met with these candidates; "
                     "this is the cheapest plan found")  # fmt: skip
    choices = units.expand(best, candidates)
    return Plan(choices, candidates, fixed_ms, total_ms, macs_before, target, met, tuple(notes))
