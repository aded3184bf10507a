"""Closing the loop on a speedup target: measure the planned model itself, and re-plan.

The allocation of :mod:`.allocate` predicts a model's latency as the sum of its layers measured one
by one plus a constant, and the whole network can differ from that sum either way: layers ran
20-25 % slower inside the compressed VGG-16 than alone before ReLUs were fused (weights and
inputs out of cache); since then most plans measure within 5 % of their layer sum, but a machine
that slows while the candidates are timed makes the sum pessimistic (one VGG-16 plan with a
layer sum of 4.20x measured 6.33x assembled). Latency does not depend on the weights' values, so
the planned model can be built
and timed before any fine-tuning: decompose by the plan, put it in its deployment form
(:class:`..deploy.Deployment`: batch norms folded, the planned algorithms, ReLUs fused), and
time it in both memory layouts interleaved with the original, crediting the faster layout as the
pipeline deploys it. If it misses the target (plus a margin,
:data:`MARGIN`), the latency budget is tightened by the shortfall (raised to the power 1.5:
the penalty grows as plans get leaner) and the allocation runs again; if it beats the aim by
more than :data:`TOLERANCE`, the budget is relaxed (a leaner plan than needed gives accuracy
away, and its MACs fall faster than its time: memory-bound layers); once a budget below and one
above the aim are known, the next is interpolated between them (a budget that gives a plan
already measured narrows the bracket without timing it again). At most ``rounds`` plans are
timed. Every plan is timed twice and credited with their mean when the two agree within
:data:`AGREE`; otherwise a third measurement decides (the median): one short measurement of a
~20 ms model on a shared machine can be 15-30 % off, and a burst of load that slows one
measurement would otherwise send the loop to a much leaner plan than the target needs (it did:
a VGG-16 plan measured 4.28x while planning, 5.4-5.7x when re-timed). The most accurate plan
(least summed sensitivity) that measured at the aim or above is kept, else the fastest; with the
one-standard-error rule (:mod:`.capacity`, the default), the plan with the most MACs among those
at the aim whose summed sensitivity is within one standard error of that most accurate plan's.
The plan returned keeps what was measured: ``assembled_ms`` and ``original_ms``, from which its
predicted speedup is then computed (plans are frozen: each measurement makes a new one).

Three guards keep the loop on the target (a user's model once went from a 2.1x plan through
2.29x to 4.23x for a 2x target, on one measurement of 1.40x against a layer sum of 2.30x):

- a measurement that disagrees with the plan's layer sum by more than the machine's run-to-run
  spread (the largest disagreement seen between the repeated timings of one plan, at least
  :data:`SPREAD_FLOOR`) is repeated, and the two averaged, before the plan is changed;
- a round's step (the ratio of its latency budget to the previous one's) is at most twice the
  previous step in log scale, and the first at most :data:`FIRST_STEP`;
- of the plans measured at the aim, those at most :data:`CEILING` times the target are preferred;
  when every plan overshoots, the mildest is kept: the final measurement, after fine-tuning, then
  lands between the target and 1.25 times it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...bench.timing import compare
from ...modules import input_at_batch
from ..deploy import Deployment
from ..measure import FORMATS, in_format
from ..verify import decompose_model
from . import capacity
from .allocate import allocate
from .plan import Candidate, Plan

#: The assembled plan must measure this much above the target: the final measurement, after
#: fine-tuning, repeats the timing with its own noise (a plan at exactly 2.51x for a 2.5x target
#: measured 2.30x at the end of one demo run).
MARGIN = 0.05
#: A plan measured more than this far above the aim is compressed more than the target needs
#: (accuracy given away for speed nobody asked for): the loop plans for less.
TOLERANCE = 0.04
#: Two timings of a plan whose speedups differ by less than this are taken as agreeing (their
#: mean is kept); otherwise a third decides.
AGREE = 0.05
#: The smallest run-to-run spread assumed for the machine (relative, of a measured speedup).
SPREAD_FLOOR = 0.03
#: The first re-planning step changes the latency budget by at most this factor.
FIRST_STEP = 1.5
#: Plans measured above this multiple of the target are kept only when none lands below it.
CEILING = 1.2

__all__ = [
    "AGREE",
    "CEILING",
    "FIRST_STEP",
    "MARGIN",
    "SPREAD_FLOOR",
    "TOLERANCE",
    "faster_layout",
    "plan_for_speedup",
    "robust_timing",
    "time_assembled",
]


def faster_layout(
    original: nn.Module, x: torch.Tensor, deployment: Deployment, repeats: int = 3
) -> nn.Module:
    """The original as given or in the deployment's layout, whichever runs ``x`` faster."""
    given = original.eval()
    moved = in_format(original, deployment.memory_format).eval()
    with torch.no_grad():
        t = compare({"given": lambda: given(x), "layout": lambda: moved(x)}, warmup=1,
                    repeats=repeats)  # fmt: skip
    return given if t["given"].ms <= t["layout"].ms else moved


def time_assembled(
    original: nn.Module,
    plan: Plan,
    calibration: torch.Tensor,
    batch: int = 64,
    deployment: Deployment = Deployment(),
    max_layer_error: float = 0.9,
    repeats: int = 5,
    reference: nn.Module | None = None,
    spreads: list[float] | None = None,
) -> Plan:
    """Build ``plan`` as it will be deployed (untrained), time it in both memory layouts
    interleaved with the original in its faster layout (``reference``, from
    :func:`faster_layout`; found here when not given) at ``batch`` (:func:`robust_timing`),
    the planned model credited with its faster layout, as the pipeline deploys it; return the
    plan with both latencies (its
    ``predicted_speedup`` is then the measured one). The relative disagreement of the timings is
    appended to ``spreads``."""
    x = input_at_batch(calibration, batch)
    if reference is None:
        reference = faster_layout(original, x, deployment)
    model, _ = decompose_model(original, plan.rewrites(), calibration, max_error=max_layer_error)
    # with the narrow kernel where it wins at this batch, as the final deployment has it
    # (without, the demo's plan measured 2.92x here against 3.00x deployed, in one process:
    # the loop asked for more than the target needed)
    model = deployment.measured(model.eval(), plan.algorithms(), plan.rewrites(), x, [batch],
                                repeats, switchable=False).model  # fmt: skip
    # in both layouts: the pipeline deploys the faster (a user's VGG-style model compressed
    # 2.6x ran 10 % faster contiguous than channels-last, and the loop, timing channels-last
    # only, asked for more than the target needed)
    # (the model is already in the deployment's layout: only the other one is a copy)
    layouts = {fmt: model if fmt == deployment.memory_format else in_format(model, fmt)
               for fmt in FORMATS}  # fmt: skip

    def once() -> tuple[float, float]:
        calls = {"original": lambda: reference(x)}
        calls |= {fmt: (lambda m=m: m(x)) for fmt, m in layouts.items()}
        with torch.no_grad():
            t = compare(calls, warmup=1, repeats=repeats)
        return t["original"].ms, min(t[fmt].ms for fmt in layouts)

    original_ms, assembled_ms = robust_timing(once, spreads)
    return plan.replace(original_ms=original_ms, assembled_ms=assembled_ms)


def robust_timing(timed, spreads: list[float] | None = None) -> tuple[float, float]:
    """``(original_ms, planned_ms)`` from two calls of ``timed()``, or three when they disagree.

    When the two speedups agree within :data:`AGREE`, their mean is kept (both latencies
    averaged: the safety against a short measurement is :data:`MARGIN`, not a pessimistic pick;
    keeping the lower of the two made the loop's figure 4-5 % slower than the final measurement
    on VGG-16 and its plans leaner than needed); otherwise a third call decides and the pair with
    the median speedup is kept, so that one measurement hit by a burst of load, in either
    direction, is outvoted.
    """
    pairs = [timed(), timed()]
    speedups = [o / p for o, p in pairs]
    if spreads is not None:
        spreads.append(abs(speedups[0] / speedups[1] - 1))
    if abs(speedups[0] / speedups[1] - 1) > AGREE:
        pairs.append(timed())
        return sorted(pairs, key=lambda t: t[0] / t[1])[1]
    return (pairs[0][0] + pairs[1][0]) / 2, (pairs[0][1] + pairs[1][1]) / 2


def _signature(plan: Plan) -> tuple:
    return tuple((n, c.method, str(c.rank), c.algorithm) for n, c in sorted(plan.choices.items()))


def _next_budget(tried: list[tuple[float, float, Plan]], aim: float) -> float:
    """The next latency budget from the rounds so far, ``(budget, measured, plan)`` each."""
    budget, measured, plan = tried[-1]
    slow = [t for t in tried if t[1] < aim]
    fast = [t for t in tried if t[1] >= aim]
    if slow and fast:
        # bracketed: interpolate between the leanest slow plan and the mildest fast one, kept
        # inside the bracket so that each round narrows it
        (b0, m0, _), (b1, m1, _) = max(slow, key=lambda t: t[0]), min(fast, key=lambda t: t[0])
        step = (aim - m0) / (m1 - m0) if m1 > m0 else 0.5
        return b0 + min(0.9, max(0.1, step)) * (b1 - b0)
    if slow:
        # the in-network penalty grows as plans get leaner (what no rewrite touches weighs
        # more), so step past the plain ratio: aim the layer sum at (aim / measured)^1.5
        return max(budget, plan.layer_sum_speedup) * (aim / measured) ** 1.5
    return budget * aim / measured  # all faster than needed: plan for less, keep accuracy


def plan_for_speedup(
    original: nn.Module,
    candidates: dict[str, list[Candidate]],
    fixed_ms: float,
    total_ms: float,
    macs_before: int,
    speedup: float,
    calibration: torch.Tensor,
    batch: int = 64,
    deployment: Deployment = Deployment(),
    max_layer_error: float = 0.9,
    repeats: int = 5,
    rounds: int = 6,
    log=None,
    prefer_capacity: bool = True,
) -> Plan:
    """The allocation for ``speedup``, checked on the assembled model and re-planned (see the
    module docstring); the most accurate plan measured at the aim or above, else the fastest.
    With ``prefer_capacity`` every allocation, and the final choice, follow the
    one-standard-error rule (:mod:`.capacity`): of the plans at the aim within one standard error
    of the most accurate one's sensitivity, the one with the most MACs."""
    say = log or (lambda _m: None)
    aim = speedup * (1 + MARGIN)
    budget = aim
    reference = faster_layout(original, input_at_batch(calibration, batch), deployment)
    tried: list[tuple[float, float, Plan]] = []
    known: dict[tuple, tuple[float, Plan]] = {}  # plan -> its measurement
    spreads: list[float] = []  # disagreements between repeated timings of one plan

    def measure(plan: Plan) -> Plan:
        return time_assembled(original, plan, calibration, batch, deployment, max_layer_error,
                              repeats, reference, spreads=spreads)  # fmt: skip

    for _ in range(8 * rounds):  # allocations are cheap; at most `rounds` are timed
        plan = allocate(candidates, fixed_ms, total_ms, macs_before, speedup=budget,
                        prefer_capacity=prefer_capacity)  # fmt: skip
        signature = _signature(plan)
        if signature in known:
            measured, plan = known[signature]  # this budget gives a plan already timed
        elif len(known) == rounds:
            break
        else:
            plan = _timed(plan, measure, spreads, say)
            measured = plan.predicted_speedup
            known[signature] = (measured, plan)
            say(f"      round {len(known)}: planned for {budget:.2f}x, layer sum predicts "
                f"{plan.layer_sum_speedup:.2f}x, the assembled model measures "
                f"{measured:.2f}x")  # fmt: skip
        tried.append((budget, measured, plan))
        if not plan.met or aim <= measured <= aim * (1 + TOLERANCE):
            break
        if measured >= aim and not plan.rewrites():
            break  # faster than needed with no layer decomposed: nothing to give back
        budget = _bounded_step(tried, _next_budget(tried, aim))
        if any(abs(budget - b) < 0.005 * aim for b, _, _ in tried):
            break  # the bracket has closed: no plan between those measured
    return _choose(tried, speedup, aim, prefer_capacity)


def _timed(plan: Plan, measure, spreads: list[float], say) -> Plan:
    """``plan`` timed assembled (``measure``); timed twice, and the two averaged, when the first
    disagrees with its layer sum by more than the machine's spread (see the module docstring)."""
    first = measure(plan)
    spread = max([SPREAD_FLOOR, *spreads])
    predicted, measured = plan.layer_sum_speedup, first.predicted_speedup
    if abs(measured / predicted - 1) <= spread:
        return first
    # far from the layer sum: measure again before the plan is changed on it
    again = measure(plan)
    spreads.append(abs(again.predicted_speedup / measured - 1))
    both = plan.replace(original_ms=(first.original_ms + again.original_ms) / 2,
                        assembled_ms=(first.assembled_ms + again.assembled_ms) / 2)  # fmt: skip
    say(f"      ({measured:.2f}x measured against a layer sum of {predicted:.2f}x, beyond the "
        f"machine's spread of {spread:.0%}: measured again, {again.predicted_speedup:.2f}x; "
        f"the two averaged: {both.predicted_speedup:.2f}x)")  # fmt: skip
    return both


def _bounded_step(tried: list[tuple[float, float, Plan]], budget: float) -> float:
    """``budget``, its step from the last round's limited to twice the previous step (log
    scale), the first step to :data:`FIRST_STEP`."""
    last = tried[-1][0]
    limit = math.log(FIRST_STEP)
    if len(tried) >= 2 and tried[-2][0] != last:
        limit = 2 * abs(math.log(last / tried[-2][0]))
    step = math.log(budget / last)
    return last * math.exp(max(-limit, min(limit, step)))


def _choose(tried, speedup: float, aim: float, prefer_capacity: bool) -> Plan:
    """The plan to keep of those measured (see the module docstring)."""
    fast = [t for t in tried if t[1] >= aim]
    within = [t for t in fast if t[1] <= speedup * CEILING]
    if within:
        plans = [t[2] for t in within]
        best = (
            capacity.choose(plans) if prefer_capacity else min(plans, key=lambda p: p.sensitivity)
        )
    elif fast:
        best = min(fast, key=lambda t: t[1])[2]  # all overshoot: the mildest
    else:
        best = max((t[2] for t in tried), key=lambda p: p.predicted_speedup)
    # the allocation's own notes name the loop's internal budgets, not the user's target
    best = best.replace(
        target=f"speedup {speedup:g}x",
        met=best.predicted_speedup >= speedup,
        notes=tuple(n for n in best.notes if "cannot be met" not in n),
    )
    if not best.met:
        best = best.with_note(
            f"the {speedup:g}x target cannot be reached on this machine: the fastest plan found "
            f"measured {best.predicted_speedup:.2f}x assembled, before fine-tuning, and is the "
            "one used (it rewrites the layers at their lowest ranks; ask for less to keep more "
            "accuracy)"
        )
    return best
