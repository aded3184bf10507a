"""How fast can a plan's MACs reduction turn into speed, given the machine's measured candidates?

Reads the ``plan.json`` that ``leanconv compress`` writes (every candidate of every layer with its
measured latency, MACs and sensitivity) and, for speedup targets around the plan's, allocates
again, without timing anything:

- ``accurate``: the most accurate plan for the target (least summed sensitivity);
- ``one-SE``: the planner's choice, the plan with the most MACs within one standard error of it
  (``compress.planning.capacity``; ``plan.json`` does not keep the per-image divergences, so
  the standard error here is the candidates' own added in quadrature, not the planner's);
- ``most MACs``: the plan that keeps the most MACs whatever its sensitivity: the highest
  ``speedup / MACs reduction`` these candidates allow at that target (an upper bound on issue
  18's rate, on layer sums).

Each row: the layer-sum speedup (``total_before_ms / (fixed_ms + sum of layer latencies)``), the
MACs reduction, their ratio (the rate on layer sums) and the summed sensitivity in nats. The
assembled model usually measures a little faster than its layer sum, and the final speedup is
taken against the original as given, so measured rates run 10-20 % above these.

    .venv/bin/python benchmarks/rate_bound.py demo-out/plan.json --targets 2.3 2.5 2.8
"""

from __future__ import annotations

import argparse
import json

from leanconv.compress.planning import units
from leanconv.compress.planning.allocate import _lagrangian, allocate
from leanconv.compress.planning.plan import Candidate


def _candidates(plan: dict) -> dict[str, list[Candidate]]:
    def one(c: dict) -> Candidate:
        rank = tuple(c["rank"]) if isinstance(c["rank"], list) else c["rank"]
        return Candidate(**{**c, "rank": rank})

    return {name: [one(c) for c in cs] for name, cs in plan["candidates"].items()}


def _row(label: str, choice: dict, plan: dict, candidates: dict) -> str:
    untouched = plan["macs_before"] - sum(cs[0].macs for cs in candidates.values())
    macs = untouched + sum(c.macs for c in choice.values())
    speedup = plan["total_before_ms"] / (
        plan["fixed_ms"] + sum(c.latency_ms for c in choice.values())
    )
    reduction = plan["macs_before"] / macs
    sensitivity = sum(c.sensitivity for c in choice.values())
    return (f"| {label} | {speedup:.2f}x | {reduction:.2f}x | {speedup / reduction:.2f} | "
            f"{sensitivity:.3f} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("plan", help="a plan.json written by leanconv compress")
    p.add_argument("--targets", type=float, nargs="+", default=[2.0, 2.5, 3.0])
    args = p.parse_args()
    with open(args.plan) as f:
        plan = json.load(f)
    candidates = _candidates(plan)
    fixed, total = plan["fixed_ms"], plan["total_before_ms"]
    print(f"fixed (no candidate changes it): {fixed:.2f} ms of {total:.2f} ms "
          f"({fixed / total:.1%})")  # fmt: skip
    print("| target, plan | layer-sum speedup | MACs reduction | rate | sensitivity (nats) |")
    print("|---|---|---|---|---|")
    for target in args.targets:
        for label, prefer in (("accurate", False), ("one-SE", True)):
            chosen = allocate(candidates, fixed, total, plan["macs_before"], speedup=target,
                              prefer_capacity=prefer)  # fmt: skip
            print(_row(f"{target:g}x, {label}", chosen.choices, plan, candidates))
        most, _ = _lagrangian(units.group(candidates), lambda c: -c.macs,
                              lambda c: c.latency_ms, total / target - fixed)  # fmt: skip
        print(_row(f"{target:g}x, most MACs", units.expand(most, candidates), plan, candidates))


if __name__ == "__main__":
    main()
